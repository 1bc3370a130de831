//! The plain-rustls baseline the benchmarks compare the driver stack against:
//! handshakes and records through rustls alone, in memory, on one thread.
//!
//! It uses what the model uses ([`crate::schannel`]): rustls's unbuffered API,
//! the ring provider, a [`TestPki`] CA with a `"localhost"` leaf (the same key
//! type), a server without client authentication that sends a chosen number
//! of TLS 1.3 tickets, and a client with SNI on and a real WebPKI verifier
//! over a root store holding the CA. Tokens are whole flights passed in
//! `Vec<u8>`s; nothing else (no SSPI surface, no engine, no work items) is in
//! the loop.
//!
//! Two settings of resumption, as the model's server credential has them
//! (`schannel::session_cache`): [`Baseline::new`] for full handshakes, a
//! client with resumption disabled and (without TLS 1.3 tickets) a server
//! that keeps no session (the model's server with
//! `SCH_CRED_DISABLE_RECONNECTS`); and
//! [`Baseline::resuming`], a server that keeps TLS 1.2 sessions by id and
//! TLS 1.3 tickets statefully (rustls's own in-memory store, bounded as the
//! model's at [`SERVER_SESSIONS`], no ticketer) and a client with rustls's
//! in-memory session store (bounded as the model's at [`CLIENT_SERVERS`]).

use crate::certs::TestPki;
use crate::schannel::{CLIENT_SERVERS, SERVER_SESSIONS};
use rustls::client::{ClientConnectionData, UnbufferedClientConnection, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{
    NoServerSessionStorage, ServerConnectionData, ServerSessionMemoryCache,
    UnbufferedServerConnection,
};
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncodeTlsData, EncryptError, UnbufferedStatus,
};
use rustls::{ClientConfig, HandshakeKind, ProtocolVersion, RootCertStore, ServerConfig};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Which TLS version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// TLS 1.2.
    Tls12,
    /// TLS 1.3.
    Tls13,
}

impl Version {
    fn supported(self) -> &'static rustls::SupportedProtocolVersion {
        match self {
            Version::Tls12 => &rustls::version::TLS12,
            Version::Tls13 => &rustls::version::TLS13,
        }
    }

    fn protocol(self) -> ProtocolVersion {
        match self {
            Version::Tls12 => ProtocolVersion::TLSv1_2,
            Version::Tls13 => ProtocolVersion::TLSv1_3,
        }
    }
}

/// The model's provider (`schannel/credentials.rs`'s `provider()`).
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server and client config pair over one test PKI (CA + "localhost"
/// leaf), the model's provider and settings.
pub struct Baseline {
    version: Version,
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    name: ServerName<'static>,
    /// Sessions are kept and resumed ([`Baseline::resuming`]).
    resuming: bool,
}

impl Baseline {
    /// Configs allowing only `version`, for full handshakes: the client's
    /// resumption is disabled; the server sends `tls13_tickets`
    /// NewSessionTickets after a TLS 1.3 handshake (the client consumes them
    /// inside [`Baseline::handshake`]) and keeps sessions only to issue them
    /// (rustls's tickets here are stateful): with 0, it keeps nothing, as
    /// the model's server credential with `SCH_CRED_DISABLE_RECONNECTS`
    /// (what the bench's full handshakes use).
    pub fn new(version: Version, tls13_tickets: usize) -> Baseline {
        Baseline::build(version, tls13_tickets, false)
    }

    /// Configs allowing only `version` that resume: the server keeps TLS 1.2
    /// sessions by id and TLS 1.3 tickets statefully, and sends
    /// `tls13_tickets` tickets after each TLS 1.3 handshake (resumed ones
    /// too); the client keeps what it gets in rustls's in-memory store. The
    /// first [`Baseline::handshake`] is full; after it, each of
    /// [`Baseline::resumed_handshakes`] must resume (TLS 1.3: while the
    /// client holds a ticket, so `tls13_tickets` must be at least 1).
    pub fn resuming(version: Version, tls13_tickets: usize) -> Baseline {
        Baseline::build(version, tls13_tickets, true)
    }

    fn build(version: Version, tls13_tickets: usize, resuming: bool) -> Baseline {
        let pki = TestPki::new("ksspi baseline CA");
        let leaf = pki.leaf(&["localhost"], false);
        let chain: Vec<CertificateDer<'static>> = leaf
            .chain_der
            .into_iter()
            .map(CertificateDer::from)
            .collect();
        let key = PrivateKeyDer::try_from(leaf.key_der).expect("a generated key is valid");
        let versions = [version.supported()];

        let mut server = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&versions)
            .expect("the ring provider supports TLS 1.2 and 1.3")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("a generated certificate is usable");
        server.send_tls13_tickets = tls13_tickets;
        server.session_storage = if resuming || tls13_tickets > 0 {
            ServerSessionMemoryCache::new(SERVER_SESSIONS)
        } else {
            Arc::new(NoServerSessionStorage {})
        };

        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from(pki.ca_der()))
            .expect("a generated CA is a valid root");
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .expect("a verifier over one root");
        let mut client = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&versions)
            .expect("the ring provider supports TLS 1.2 and 1.3")
            .with_webpki_verifier(verifier)
            .with_no_client_auth();
        client.resumption = if resuming {
            rustls::client::Resumption::in_memory_sessions(CLIENT_SERVERS)
        } else {
            rustls::client::Resumption::disabled()
        };
        client.enable_sni = true;

        Baseline {
            version,
            server: Arc::new(server),
            client: Arc::new(client),
            name: ServerName::try_from("localhost").expect("a valid name"),
            resuming,
        }
    }

    /// Run one full handshake in memory (client and server unbuffered
    /// connections, tokens passed in `Vec<u8>`s, whole flights), panicking on
    /// failure; returns the established pair for record tests.
    pub fn handshake(&self) -> Established {
        self.run_handshake().0
    }

    /// `n` handshakes back to back on this thread; returns the elapsed time.
    pub fn handshakes(&self, n: usize) -> Duration {
        let start = Instant::now();
        for _ in 0..n {
            std::hint::black_box(self.run_handshake());
        }
        start.elapsed()
    }

    /// `n` handshakes back to back on this thread, each of which must resume
    /// (a [`Baseline::resuming`] pair after its first handshake); panics
    /// naming the handshake that did not. Returns the elapsed time.
    pub fn resumed_handshakes(&self, n: usize) -> Duration {
        assert!(
            self.resuming,
            "baseline: resumed handshakes need Baseline::resuming"
        );
        let start = Instant::now();
        for i in 0..n {
            let (est, _) = self.run_handshake();
            let kinds = (est.client.handshake_kind(), est.server.handshake_kind());
            let resumed = Some(HandshakeKind::Resumed);
            assert!(
                kinds == (resumed, resumed),
                "baseline: resumed handshake {} of {n} did not resume (client {:?}, server {:?})",
                i + 1,
                kinds.0,
                kinds.1
            );
            std::hint::black_box(est);
        }
        start.elapsed()
    }

    /// `k` full handshakes whose ClientHellos all go out before any of them
    /// ends, so that each is full and a [`Baseline::resuming`] client keeps
    /// `k` TLS 1.3 tickets (one for each thread that resumes at once);
    /// panics if one resumed.
    pub fn prime(&self, k: usize) {
        let started: Vec<Hello> = (0..k).map(|_| self.hello()).collect();
        for hello in started {
            let (est, _) = self.complete(hello);
            assert_eq!(
                est.client.handshake_kind(),
                Some(HandshakeKind::Full),
                "baseline: a priming handshake resumed"
            );
        }
    }

    /// The handshake, and what went over the wire.
    fn run_handshake(&self) -> (Established, Wire) {
        self.complete(self.hello())
    }

    /// Both connections and the client's ClientHello.
    fn hello(&self) -> Hello {
        let mut client = UnbufferedClientConnection::new(self.client.clone(), self.name.clone())
            .expect("a client connection");
        let server =
            UnbufferedServerConnection::new(self.server.clone()).expect("a server connection");
        let mut to_server = Vec::with_capacity(1024);
        let mut to_client = Vec::with_capacity(4096);
        drive(&mut client, &mut to_client, &mut to_server); // the ClientHello
        Hello {
            client,
            server,
            to_server,
            to_client,
        }
    }

    /// The rest of the handshake `hello` started.
    fn complete(&self, hello: Hello) -> (Established, Wire) {
        let Hello {
            mut client,
            mut server,
            mut to_server,
            mut to_client,
        } = hello;
        let mut wire = Wire::default();
        for _ in 0..MAX_ROUNDS {
            wire.flights += usize::from(!to_server.is_empty());
            // Once the client is complete (TLS 1.3, after its Finished), what
            // the server sends is post-handshake: its tickets.
            let client_done = !client.is_handshaking();
            drive(&mut server, &mut to_server, &mut to_client);
            if client_done {
                wire.after_handshake += to_client.len();
            }
            wire.flights += usize::from(!to_client.is_empty());
            drive(&mut client, &mut to_client, &mut to_server);
            if to_server.is_empty() && !client.is_handshaking() && !server.is_handshaking() {
                let est = Established { client, server };
                let want = Some(self.version.protocol());
                assert_eq!(est.client.protocol_version(), want, "client version");
                assert_eq!(est.server.protocol_version(), want, "server version");
                return (est, wire);
            }
        }
        panic!("baseline handshake: not complete after {MAX_ROUNDS} rounds");
    }
}

/// A handshake started: both connections, the ClientHello in `to_server`.
struct Hello {
    client: UnbufferedClientConnection,
    server: UnbufferedServerConnection,
    to_server: Vec<u8>,
    to_client: Vec<u8>,
}

/// More round trips than any full handshake takes.
const MAX_ROUNDS: usize = 8;

/// More states than one flight goes through.
const MAX_STEPS: usize = 64;

/// What a handshake sent (for tests).
#[derive(Default)]
struct Wire {
    /// Non-empty flights, both ways.
    flights: usize,
    /// Bytes the server sent once the client was complete (TLS 1.3 tickets).
    after_handshake: usize,
}

/// An established client/server pair.
pub struct Established {
    client: UnbufferedClientConnection,
    server: UnbufferedServerConnection,
}

impl Established {
    /// Encrypt `msg` on the client (records of at most 16 KiB plaintext, as
    /// rustls fragments) and decrypt it on the server, `n` times; checks the
    /// bytes arrive intact (the length and first/last byte each time);
    /// returns the elapsed time. `msg` must not be empty.
    pub fn records(&mut self, msg: &[u8], n: usize) -> Duration {
        let (Some(&first), Some(&last)) = (msg.first(), msg.last()) else {
            panic!("baseline records: an empty message");
        };
        let mut wire = vec![0u8; wire_size(msg.len())];
        let start = Instant::now();
        for _ in 0..n {
            let len = seal(&mut self.client, msg, &mut wire);
            let mut got = 0usize;
            let mut end = None;
            open(&mut self.server, &mut wire[..len], |plain| {
                if got == 0 {
                    assert_eq!(plain.first(), Some(&first), "baseline: first byte");
                }
                got += plain.len();
                end = plain.last().copied().or(end);
            });
            assert_eq!(got, msg.len(), "baseline: message length");
            assert_eq!(end, Some(last), "baseline: last byte");
        }
        start.elapsed()
    }
}

/// Room for `len` plaintext bytes as records: each record of at most 16 KiB
/// adds a header, a tag and (TLS 1.2 GCM) an explicit nonce, well under 64
/// bytes.
fn wire_size(len: usize) -> usize {
    len + len.div_ceil(16 * 1024).max(1) * 64
}

/// The two unbuffered connection types, for one driver.
trait Endpoint {
    type Data;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data>;
}

impl Endpoint for UnbufferedClientConnection {
    type Data = ClientConnectionData;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, ClientConnectionData> {
        self.process_tls_records(incoming)
    }
}

impl Endpoint for UnbufferedServerConnection {
    type Data = ServerConnectionData;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, ServerConnectionData> {
        self.process_tls_records(incoming)
    }
}

/// Feed `conn` the whole flight in `input` (left empty) and append what it
/// sends to `out`, until it waits for its peer or may write traffic.
fn drive<E: Endpoint>(conn: &mut E, input: &mut Vec<u8>, out: &mut Vec<u8>) {
    let mut off = 0;
    for _ in 0..MAX_STEPS {
        // Passing the input past `off` is the discard rustls asks for.
        let UnbufferedStatus { discard, state } = conn.process(&mut input[off..]);
        let done = match state {
            Ok(ConnectionState::EncodeTlsData(mut enc)) => {
                encode(&mut enc, out);
                false
            }
            Ok(ConnectionState::TransmitTlsData(tx)) => {
                tx.done();
                false
            }
            Ok(ConnectionState::BlockedHandshake) | Ok(ConnectionState::WriteTraffic(_)) => true,
            Ok(other) => panic!("baseline handshake: unexpected state {other:?}"),
            Err(e) => panic!("baseline handshake failed: {e}"),
        };
        off += discard;
        if done {
            assert_eq!(off, input.len(), "baseline handshake: input left over");
            input.clear();
            return;
        }
    }
    panic!("baseline handshake: no end to the flight after {MAX_STEPS} states");
}

/// Append the record `enc` holds to `out`.
fn encode<D>(enc: &mut EncodeTlsData<'_, D>, out: &mut Vec<u8>) {
    let at = out.len();
    out.resize(at + 2048, 0);
    let n = match enc.encode(&mut out[at..]) {
        Ok(n) => n,
        Err(EncodeError::InsufficientSize(e)) => {
            out.resize(at + e.required_size, 0);
            enc.encode(&mut out[at..])
                .expect("encode into the size rustls asked for")
        }
        Err(e) => panic!("baseline handshake: encode: {e}"),
    };
    out.truncate(at + n);
}

/// Encrypt `msg` on the client into `wire` (grown if too small); returns the
/// bytes written.
fn seal(client: &mut UnbufferedClientConnection, msg: &[u8], wire: &mut Vec<u8>) -> usize {
    match client.process_tls_records(&mut []).state {
        Ok(ConnectionState::WriteTraffic(mut wt)) => match wt.encrypt(msg, wire) {
            Ok(n) => n,
            Err(EncryptError::InsufficientSize(e)) => {
                wire.resize(e.required_size, 0);
                wt.encrypt(msg, wire)
                    .expect("encrypt into the size rustls asked for")
            }
            Err(e) => panic!("baseline: client encrypt failed: {e}"),
        },
        Ok(other) => panic!("baseline: client cannot write ({other:?})"),
        Err(e) => panic!("baseline: client failed: {e}"),
    }
}

/// Decrypt every record of `wire` on the server (in place), handing each
/// record's plaintext to `sink`.
fn open(server: &mut UnbufferedServerConnection, wire: &mut [u8], mut sink: impl FnMut(&[u8])) {
    let total = wire.len();
    let mut off = 0;
    while off < total {
        let UnbufferedStatus { mut discard, state } = server.process_tls_records(&mut wire[off..]);
        match state {
            Ok(ConnectionState::ReadTraffic(mut rt)) => {
                while let Some(record) = rt.next_record() {
                    let record =
                        record.unwrap_or_else(|e| panic!("baseline: server read failed: {e}"));
                    discard += record.discard;
                    sink(record.payload);
                }
            }
            Ok(ConnectionState::WriteTraffic(_)) if discard > 0 => {}
            Ok(other) => panic!(
                "baseline: server stopped ({other:?}) with {} bytes unread",
                total - off
            ),
            Err(e) => panic!("baseline: server read failed: {e}"),
        }
        off += discard;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encrypt `msg` once and decrypt it, comparing the whole buffers;
    /// returns the plaintext size of each record.
    fn round_trip_whole(est: &mut Established, msg: &[u8]) -> Vec<usize> {
        let mut wire = vec![0u8; wire_size(msg.len())];
        let len = seal(&mut est.client, msg, &mut wire);
        let mut plain = Vec::with_capacity(msg.len());
        let mut sizes = Vec::new();
        open(&mut est.server, &mut wire[..len], |p| {
            plain.extend_from_slice(p);
            sizes.push(p.len());
        });
        check_whole(&plain, msg);
        sizes
    }

    fn check_whole(plain: &[u8], msg: &[u8]) {
        assert!(plain == msg, "the plaintext differs from what was sent");
    }

    fn message(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 + i / 251) as u8).collect()
    }

    #[test]
    fn tls12_handshake_negotiates_tls12() {
        let base = Baseline::new(Version::Tls12, 2);
        let (est, wire) = base.run_handshake();
        assert_eq!(
            est.client.protocol_version(),
            Some(ProtocolVersion::TLSv1_2)
        );
        assert_eq!(
            est.server.protocol_version(),
            Some(ProtocolVersion::TLSv1_2)
        );
        assert!(est.client.negotiated_cipher_suite().is_some());
        // CH; SH..SHD; CKE CCS Fin; CCS Fin.
        assert_eq!(wire.flights, 4);
        assert_eq!(wire.after_handshake, 0, "no TLS 1.3 tickets in TLS 1.2");
        assert!(base.handshakes(3) > Duration::ZERO);
    }

    #[test]
    fn tls13_handshake_negotiates_tls13_and_consumes_tickets() {
        let base = Baseline::new(Version::Tls13, 2);
        let (est, wire) = base.run_handshake();
        assert_eq!(
            est.client.protocol_version(),
            Some(ProtocolVersion::TLSv1_3)
        );
        assert_eq!(
            est.server.protocol_version(),
            Some(ProtocolVersion::TLSv1_3)
        );
        // CH; SH..Fin; Fin; the tickets.
        assert_eq!(wire.flights, 4);
        assert!(wire.after_handshake > 0, "the server sent its tickets");
        assert!(base.handshakes(3) > Duration::ZERO);

        let (_, wire) = Baseline::new(Version::Tls13, 0).run_handshake();
        assert_eq!(wire.flights, 3);
        assert_eq!(wire.after_handshake, 0);
    }

    #[test]
    fn full_handshakes_never_resume() {
        for version in [Version::Tls12, Version::Tls13] {
            let base = Baseline::new(version, 1);
            for _ in 0..3 {
                let (est, _) = base.run_handshake();
                assert_eq!(est.client.handshake_kind(), Some(HandshakeKind::Full));
                assert_eq!(est.server.handshake_kind(), Some(HandshakeKind::Full));
            }
        }
    }

    #[test]
    fn a_resuming_pair_resumes_after_its_first_handshake() {
        for version in [Version::Tls12, Version::Tls13] {
            let base = Baseline::resuming(version, 1);
            let (est, wire) = base.run_handshake();
            assert_eq!(est.client.handshake_kind(), Some(HandshakeKind::Full));
            let full_flights = wire.flights;
            assert!(base.resumed_handshakes(4) > Duration::ZERO);
            let (est, wire) = base.run_handshake();
            assert_eq!(est.server.handshake_kind(), Some(HandshakeKind::Resumed));
            match version {
                // CH; SH CCS Fin; CCS Fin.
                Version::Tls12 => assert_eq!((full_flights, wire.flights), (4, 3)),
                // CH; SH..Fin; Fin; the ticket, as many either way.
                Version::Tls13 => assert_eq!((full_flights, wire.flights), (4, 4)),
            }
        }
    }

    #[test]
    #[should_panic(expected = "did not resume")]
    fn a_resumed_bench_without_tickets_fails_loudly() {
        // TLS 1.3 without tickets: nothing to resume with.
        let base = Baseline::resuming(Version::Tls13, 0);
        base.handshake();
        base.resumed_handshakes(1);
    }

    #[test]
    fn records_round_trip_1k_and_64k() {
        for version in [Version::Tls12, Version::Tls13] {
            let mut est = Baseline::new(version, 2).handshake();
            for len in [1024, 64 * 1024, 64 * 1024 + 1] {
                let msg = message(len);
                let sizes = round_trip_whole(&mut est, &msg);
                assert!(sizes.iter().all(|&s| s <= 16 * 1024), "{sizes:?}");
                assert_eq!(sizes.len(), len.div_ceil(16 * 1024), "{version:?} {len}");
                assert!(est.records(&msg, 5) > Duration::ZERO);
                // The connection is still in step after the timed loop.
                round_trip_whole(&mut est, &msg);
            }
        }
    }

    #[test]
    #[should_panic(expected = "server read failed")]
    fn corrupted_records_fail_loudly() {
        let mut est = Baseline::new(Version::Tls13, 0).handshake();
        let msg = message(1024);
        let mut wire = vec![0u8; wire_size(msg.len())];
        let len = seal(&mut est.client, &msg, &mut wire);
        wire[len / 2] ^= 1;
        open(&mut est.server, &mut wire[..len], |_| {});
    }

    #[test]
    #[should_panic(expected = "the plaintext differs")]
    fn the_whole_buffer_check_catches_a_difference() {
        let mut est = Baseline::new(Version::Tls12, 0).handshake();
        let msg = message(1024);
        let mut wire = vec![0u8; wire_size(msg.len())];
        let len = seal(&mut est.client, &msg, &mut wire);
        let mut plain = Vec::new();
        open(&mut est.server, &mut wire[..len], |p| {
            plain.extend_from_slice(p)
        });
        check_whole(&plain, &msg);
        plain[512] ^= 1;
        check_whole(&plain, &msg);
    }
}
