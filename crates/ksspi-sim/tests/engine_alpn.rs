//! ALPN through the engine against the model: the list goes to the
//! handshake calls as `SECBUFFER_APPLICATION_PROTOCOLS`, the server picks by
//! its own order among the client's offer, both sides report the choice
//! (`SECPKG_ATTR_APPLICATION_PROTOCOL`), and no overlap fails with
//! `SEC_E_APPLICATION_PROTOCOL_MISMATCH` and the `no_application_protocol`
//! alert, over TLS 1.2 and 1.3, in every completion mode, with flights cut
//! into single bytes.

mod engine_support;

use engine_support::*;
use ksspi::alpn::ApplicationProtocols;
use ksspi::engine::Outcome;
use ksspi::sys::*;
use ksspi::SecStatus;
use ksspi_sim::{CallbackIrql, Completion, CompletionPolicy, SimConfig};

const ONLY_TLS12: (u32, u32) = (SP_PROT_TLS1_3_SERVER, SP_PROT_TLS1_3_CLIENT);
const ONLY_TLS13: (u32, u32) = (SP_PROT_TLS1_2_SERVER, SP_PROT_TLS1_2_CLIENT);

fn list(names: &[&str]) -> Option<ApplicationProtocols> {
    Some(ApplicationProtocols::new(names.iter().map(|n| n.as_bytes())).unwrap())
}

fn modes() -> Vec<SimConfig> {
    let mut out = Vec::new();
    for (i, completion) in [
        CompletionPolicy::Always(Completion::Async),
        CompletionPolicy::Always(Completion::Inline),
        CompletionPolicy::Always(Completion::Sync),
        CompletionPolicy::Mixed,
    ]
    .into_iter()
    .enumerate()
    {
        out.push(SimConfig {
            seed: 500 + i as u64,
            completion,
            callback_irql: CallbackIrql::Mixed,
            ..SimConfig::default()
        });
    }
    out
}

/// The protocol a session reports once established (`None`: the status
/// was not Success).
fn chosen(s: &SimSession) -> Option<Vec<u8>> {
    let info = s.describe(&mut [], &passive()).expect("established");
    let p = info
        .application_protocol
        .expect("the attribute was queried");
    p.alpn().map(<[u8]>::to_vec)
}

#[test]
fn the_server_picks_by_its_own_order_in_every_mode_and_version() {
    for cfg in modes() {
        let (sim, thumb) = sim_with(cfg.clone());
        for versions in [ONLY_TLS12, ONLY_TLS13] {
            for cut in [usize::MAX, 1] {
                let pair = Pair::with_alpn(
                    &sim,
                    thumb,
                    versions,
                    (list(&["h2", "http/1.1"]), list(&["http/1.1", "h2"])),
                );
                assert_eq!(
                    pair.handshake(cut),
                    (Outcome::Established, Outcome::Established),
                    "{cfg:?} {versions:?} cut {cut}"
                );
                assert_eq!(chosen(&pair.server).as_deref(), Some(&b"h2"[..]));
                assert_eq!(chosen(&pair.client).as_deref(), Some(&b"h2"[..]));
                pair.finish_keep_sim();
            }
        }
        sim.unload().unwrap_or_else(|leaks| panic!("{leaks}"));
    }
}

#[test]
fn a_single_common_protocol_is_chosen_whatever_its_place() {
    let (sim, thumb) = sim_with(SimConfig::default());
    let pair = Pair::with_alpn(
        &sim,
        thumb,
        (0, 0),
        (list(&["h2", "http/1.1"]), list(&["acme-tls/1", "http/1.1"])),
    );
    assert_eq!(
        pair.handshake(usize::MAX),
        (Outcome::Established, Outcome::Established)
    );
    assert_eq!(chosen(&pair.client).as_deref(), Some(&b"http/1.1"[..]));
    assert_eq!(chosen(&pair.server).as_deref(), Some(&b"http/1.1"[..]));
    pair.finish();
}

#[test]
fn one_side_without_alpn_negotiates_none() {
    let (sim, thumb) = sim_with(SimConfig::default());
    // A client offering to a server without a list: no ALPN, status None.
    let pair = Pair::with_alpn(&sim, thumb, (0, 0), (None, list(&["h2"])));
    assert_eq!(
        pair.handshake(usize::MAX),
        (Outcome::Established, Outcome::Established)
    );
    let info = pair.client.describe(&mut [], &passive()).unwrap();
    let p = info.application_protocol.expect("queried");
    assert_eq!(
        p.ProtoNegoStatus,
        SecApplicationProtocolNegotiationStatus_None
    );
    assert_eq!(p.alpn(), None);
    // The server without a list did not ask.
    let info = pair.server.describe(&mut [], &passive()).unwrap();
    assert_eq!(info.application_protocol, None);
    pair.finish_keep_sim();
    // A server with a list, a client offering none: no ALPN either (RFC 7301
    // lets the server go on).
    let pair = Pair::with_alpn(&sim, thumb, (0, 0), (list(&["h2"]), None));
    assert_eq!(
        pair.handshake(usize::MAX),
        (Outcome::Established, Outcome::Established)
    );
    assert_eq!(chosen(&pair.server), None);
    pair.finish();
}

#[test]
fn no_overlap_fails_with_the_mismatch_status_and_the_alert() {
    for versions in [ONLY_TLS12, ONLY_TLS13] {
        let (sim, thumb) = sim_with(SimConfig::default());
        let pair = Pair::with_alpn(&sim, thumb, versions, (list(&["h2"]), list(&["http/1.1"])));
        let at = passive();
        pair.client.step(&[], &at).unwrap();
        let hello = pair.client_events.next().output;
        pair.server.step(&hello, &at).unwrap();
        let r = pair.server_events.next();
        assert_eq!(
            r.outcome,
            Outcome::Failed(SecStatus::SEC_E_APPLICATION_PROTOCOL_MISMATCH),
            "{versions:?}"
        );
        if versions == ONLY_TLS12 {
            // A plaintext fatal alert record: level 2, no_application_protocol (120).
            assert_eq!(r.output.first(), Some(&0x15), "{:02x?}", r.output);
            assert_eq!(&r.output[r.output.len() - 2..], &[2, 120]);
        } else {
            // TLS 1.3 decides ALPN in EncryptedExtensions, after ServerHello:
            // the alert goes out under the handshake keys, the last record
            // (application_data type, 2 bytes + content type + 16-byte tag).
            assert_eq!(r.output.first(), Some(&0x16), "{:02x?}", r.output);
            let last = &r.output[r.output.len() - 24..];
            assert_eq!(&last[..5], &[0x17, 3, 3, 0, 19], "{:02x?}", r.output);
        }
        // The client, handed the alert, fails with the server's reason.
        pair.client.step(&r.output, &at).unwrap();
        let c = pair.client_events.next();
        assert_eq!(
            c.outcome,
            Outcome::Failed(SecStatus::SEC_E_APPLICATION_PROTOCOL_MISMATCH),
            "{versions:?}"
        );
        pair.finish();
    }
}
