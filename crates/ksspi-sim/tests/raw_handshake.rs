//! Full handshakes through the raw provider calls (no engine), in every
//! completion mode and callback IRQL, TLS 1.2 and 1.3.

mod support;

use ksspi::sys::{
    SP_PROT_TLS1_2_CLIENT, SP_PROT_TLS1_2_SERVER, SP_PROT_TLS1_3_CLIENT, SP_PROT_TLS1_3_SERVER,
};
use ksspi::SecStatus;
use ksspi_sim::verifier::Tag;
use ksspi_sim::{CallbackIrql, Completion, CompletionPolicy, SimConfig, SimProvider};
use support::{handshake, pki_store, Peer};

fn sim(
    completion: CompletionPolicy,
    irql: CallbackIrql,
    seed: u64,
) -> (SimProvider, ksspi_sim::certs::Thumbprint) {
    let (store, thumb, _pki) = pki_store();
    let config = SimConfig {
        seed,
        completion,
        callback_irql: irql,
        ..SimConfig::default()
    };
    (SimProvider::new(config, store), thumb)
}

/// Disabled-protocol masks that leave exactly one version.
const ONLY_TLS12: (u32, u32) = (SP_PROT_TLS1_3_SERVER, SP_PROT_TLS1_3_CLIENT);
const ONLY_TLS13: (u32, u32) = (SP_PROT_TLS1_2_SERVER, SP_PROT_TLS1_2_CLIENT);

fn run(
    completion: CompletionPolicy,
    irql: CallbackIrql,
    (s_dis, c_dis): (u32, u32),
    allocate: bool,
) {
    let (sim, thumb) = sim(completion, irql, 7);
    {
        let mut server = Peer::server(&sim, thumb, s_dis).expect("server credential");
        let mut client = Peer::client(&sim, "localhost", c_dis).expect("client credential");
        server.allocate = allocate;
        client.allocate = allocate;
        let (c, s) = handshake(&mut client, &mut server);
        assert_eq!(
            (c, s),
            (SecStatus::SEC_E_OK, SecStatus::SEC_E_OK),
            "{completion:?} {irql:?}"
        );
        assert!(server.steps >= 2 && client.steps >= 2);
        assert_eq!(sim.verifier().live_count(Tag::SecurityContext), 2);
    }
    let stats = sim.stats();
    // One async context per peer for the whole handshake, reinitialised per call.
    assert_eq!(stats.async_contexts_created, 2);
    assert_eq!(stats.reinits, stats.calls - 2);
    match completion {
        CompletionPolicy::Always(Completion::Sync) => {
            assert_eq!(stats.completed_sync, stats.calls);
            assert_eq!(stats.callbacks_passive + stats.callbacks_dispatch, 0);
        }
        CompletionPolicy::Always(Completion::Inline) => {
            assert_eq!(stats.completed_inline, stats.calls)
        }
        CompletionPolicy::Always(_) => assert_eq!(stats.completed_async, stats.calls),
        CompletionPolicy::Mixed => {}
    }
    if completion != CompletionPolicy::Always(Completion::Sync)
        && completion != CompletionPolicy::Mixed
    {
        match irql {
            CallbackIrql::Passive => assert_eq!(stats.callbacks_passive, stats.calls),
            CallbackIrql::Dispatch => assert_eq!(stats.callbacks_dispatch, stats.calls),
            CallbackIrql::Mixed => {}
        }
    }
    sim.unload().unwrap_or_else(|leaks| panic!("{leaks}"));
}

#[test]
fn tls12_and_tls13_in_every_completion_mode_and_callback_irql() {
    for version in [ONLY_TLS12, ONLY_TLS13] {
        for mode in Completion::ALL {
            for irql in [CallbackIrql::Passive, CallbackIrql::Dispatch] {
                run(CompletionPolicy::Always(mode), irql, version, false);
            }
        }
    }
}

#[test]
fn seeded_mixes_with_provider_allocated_tokens() {
    for seed in 0..8 {
        let (sim, thumb) = sim(CompletionPolicy::Mixed, CallbackIrql::Mixed, seed);
        {
            let mut server = Peer::server(&sim, thumb, 0).unwrap();
            let mut client = Peer::client(&sim, "localhost", 0).unwrap();
            server.allocate = true;
            client.allocate = true;
            assert_eq!(
                handshake(&mut client, &mut server),
                (SecStatus::SEC_E_OK, SecStatus::SEC_E_OK),
                "seed {seed}"
            );
        }
        sim.unload()
            .unwrap_or_else(|leaks| panic!("seed {seed}: {leaks}"));
    }
}

#[test]
fn a_wrong_name_fails_the_client_with_wrong_principal() {
    let (sim, thumb) = sim(
        CompletionPolicy::Always(Completion::Async),
        CallbackIrql::Dispatch,
        1,
    );
    {
        let mut server = Peer::server(&sim, thumb, 0).unwrap();
        let mut client = Peer::client(&sim, "not-the-server.example", 0).unwrap();
        let (c, _s) = handshake(&mut client, &mut server);
        assert_eq!(c, SecStatus::SEC_E_WRONG_PRINCIPAL);
    }
    sim.unload().unwrap_or_else(|leaks| panic!("{leaks}"));
}

#[test]
fn an_unknown_thumbprint_gives_no_credentials() {
    let (sim, _thumb) = sim(
        CompletionPolicy::Always(Completion::Inline),
        CallbackIrql::Passive,
        1,
    );
    assert_eq!(
        Peer::server(&sim, [0xAB; 20], 0).err(),
        Some(SecStatus::SEC_E_NO_CREDENTIALS)
    );
    sim.unload().unwrap_or_else(|leaks| panic!("{leaks}"));
}

/// The record layer through the raw provider calls: STREAM_SIZES,
/// EncryptMessage into header / data / trailer buffers, DecryptMessage in
/// place with the buffer types Schannel rewrites, MISSING, and shutdown.
#[test]
fn encrypt_and_decrypt_message_fill_the_buffers_as_schannel_does() {
    use ksspi::provider::SspiProvider;
    use ksspi::sys::*;
    for (s_dis, c_dis) in [ONLY_TLS12, ONLY_TLS13] {
        let (sim, thumb) = sim(
            CompletionPolicy::Always(Completion::Async),
            CallbackIrql::Mixed,
            3,
        );
        let mut server = Peer::server(&sim, thumb, s_dis).unwrap();
        let mut client = Peer::client(&sim, "localhost", c_dis).unwrap();
        let (c, s) = handshake(&mut client, &mut server);
        assert_eq!((c, s), (SecStatus::SEC_E_OK, SecStatus::SEC_E_OK));
        let mut cctx = client.ctx.unwrap();
        let mut sctx = server.ctx.unwrap();
        let mut sizes = SecPkgContext_StreamSizes::default();
        // SAFETY: a live context and a StreamSizes for the attribute.
        let st = unsafe {
            sim.query_context_attributes(
                &mut cctx,
                SECPKG_ATTR_STREAM_SIZES,
                (&mut sizes as *mut SecPkgContext_StreamSizes).cast(),
            )
        };
        assert_eq!(st, SecStatus::SEC_E_OK);
        assert_eq!(sizes.cbMaximumMessage, 16 * 1024);
        let message = b"through the provider";
        let (h, t) = (sizes.cbHeader as usize, sizes.cbTrailer as usize);
        let mut record = vec![0u8; h + message.len() + t];
        record[h..h + message.len()].copy_from_slice(message);
        let base = record.as_mut_ptr();
        let mut buffers = [
            SecBuffer {
                cbBuffer: h as u32,
                BufferType: SECBUFFER_STREAM_HEADER,
                pvBuffer: base.cast(),
            },
            SecBuffer {
                cbBuffer: message.len() as u32,
                BufferType: SECBUFFER_DATA,
                // SAFETY: within `record`.
                pvBuffer: unsafe { base.add(h) }.cast(),
            },
            SecBuffer {
                cbBuffer: t as u32,
                BufferType: SECBUFFER_STREAM_TRAILER,
                // SAFETY: within `record`.
                pvBuffer: unsafe { base.add(h + message.len()) }.cast(),
            },
            SecBuffer::empty(SECBUFFER_EMPTY),
        ];
        let mut desc = SecBufferDesc::new(&mut buffers);
        // SAFETY: a live context; the buffers point into `record`.
        let st = unsafe { sim.encrypt_message(&mut cctx, 0, &mut desc, 0) };
        assert_eq!(st, SecStatus::SEC_E_OK);
        assert_eq!(buffers[2].cbBuffer as usize, t);
        assert_ne!(&record[h..h + message.len()], message, "encrypted in place");
        // A second record after the first: the first decrypts, the second is EXTRA.
        record.extend_from_slice(&record.clone());
        // Only the first 3 bytes: MISSING says how many more the header needs.
        let decrypt = |input: &mut [u8], sctx: &mut SecHandle| {
            let mut buffers = [
                SecBuffer {
                    cbBuffer: input.len() as u32,
                    BufferType: SECBUFFER_DATA,
                    pvBuffer: input.as_mut_ptr().cast(),
                },
                SecBuffer::empty(SECBUFFER_EMPTY),
                SecBuffer::empty(SECBUFFER_EMPTY),
                SecBuffer::empty(SECBUFFER_EMPTY),
            ];
            let mut desc = SecBufferDesc::new(&mut buffers);
            // SAFETY: a live context; the buffers point into `input`.
            let st = unsafe { sim.decrypt_message(sctx, &mut desc, 0, std::ptr::null_mut()) };
            (st, buffers.map(|b| (b.kind(), b.cbBuffer)))
        };
        let (st, bufs) = decrypt(&mut record[..3], &mut sctx);
        assert_eq!(st, SecStatus::SEC_E_INCOMPLETE_MESSAGE);
        assert!(bufs.contains(&(SECBUFFER_MISSING, 2)), "{bufs:?}");
        let one = h + message.len() + t;
        let (st, bufs) = decrypt(&mut record[..one + 4], &mut sctx);
        assert_eq!(st, SecStatus::SEC_E_OK);
        assert_eq!(
            bufs,
            [
                (SECBUFFER_STREAM_HEADER, h as u32),
                (SECBUFFER_DATA, message.len() as u32),
                (SECBUFFER_STREAM_TRAILER, t as u32),
                (SECBUFFER_EXTRA, 4),
            ]
        );
        assert_eq!(&record[h..h + message.len()], message, "decrypted in place");
        // Shutdown: no more records after it.
        let mut control = SCHANNEL_SHUTDOWN.to_le_bytes();
        let mut token = [SecBuffer {
            cbBuffer: 4,
            BufferType: SECBUFFER_TOKEN,
            pvBuffer: control.as_mut_ptr().cast(),
        }];
        let mut desc = SecBufferDesc::new(&mut token);
        assert_eq!(
            // SAFETY: a live context and a 4-byte TOKEN buffer.
            unsafe { sim.apply_control_token(&mut cctx, &mut desc) },
            SecStatus::SEC_E_OK
        );
        drop((client, server));
        sim.unload().unwrap_or_else(|leaks| panic!("{leaks}"));
    }
}

/// The model reads SECBUFFER_APPLICATION_PROTOCOLS as Schannel must: a
/// well-formed buffer is taken (the client offers it, the server picks by
/// its own order), a malformed one fails the call with
/// `SEC_E_INVALID_TOKEN` and creates no context, and
/// `SECPKG_ATTR_APPLICATION_PROTOCOL` reports the choice.
#[test]
fn the_application_protocols_buffer_is_checked_and_reported() {
    use ksspi::alpn::ApplicationProtocols;
    use ksspi::provider::SspiProvider;
    use ksspi::sys::*;
    let (store, thumb, _pki) = pki_store();
    let sim = SimProvider::new(SimConfig::default(), store);
    let good = |names: &[&str]| {
        ApplicationProtocols::new(names.iter().map(|n| n.as_bytes()))
            .unwrap()
            .buffer()
            .to_vec()
    };
    let mut bad_sizes = good(&["h2"]);
    bad_sizes[8] = 40; // ProtocolListSize past the buffer
    let mut empty_name = good(&["h2"]);
    empty_name[10] = 0; // the first name's length
    for bad in [bad_sizes, empty_name, vec![1, 2, 3]] {
        let mut c = Peer::client(&sim, "localhost", 0).unwrap();
        c.alpn = Some(bad.clone());
        let out = c.step(&[]);
        assert_eq!(out.status, SecStatus::SEC_E_INVALID_TOKEN, "{bad:?}");
        assert!(c.ctx.is_none(), "no context for a refused first call");
        drop(c);
    }
    let mut c = Peer::client(&sim, "localhost", 0).unwrap();
    let mut s = Peer::server(&sim, thumb, 0).unwrap();
    c.alpn = Some(good(&["http/1.1", "h2"]));
    s.alpn = Some(good(&["h2", "http/1.1"]));
    assert_eq!(
        handshake(&mut c, &mut s),
        (SecStatus::SEC_E_OK, SecStatus::SEC_E_OK)
    );
    for peer in [&c, &s] {
        let mut info = SecPkgContext_ApplicationProtocol::ZEROED;
        let mut h = peer.ctx.unwrap();
        // SAFETY: a live context and the attribute's structure.
        let st = unsafe {
            sim.query_context_attributes(
                &mut h,
                SECPKG_ATTR_APPLICATION_PROTOCOL,
                (&mut info as *mut SecPkgContext_ApplicationProtocol).cast(),
            )
        };
        assert_eq!(st, SecStatus::SEC_E_OK);
        assert_eq!(
            info.ProtoNegoStatus,
            SecApplicationProtocolNegotiationStatus_Success
        );
        assert_eq!(info.ProtoNegoExt, SecApplicationProtocolNegotiationExt_ALPN);
        assert_eq!(info.alpn(), Some(&b"h2"[..]));
    }
    drop((c, s));
    sim.unload().unwrap_or_else(|leaks| panic!("{leaks}"));
}
