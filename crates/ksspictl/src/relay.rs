//! `connect` and `serve`: run a handshake through a driver session, relaying
//! its tokens over TCP to a real TLS peer, so the kernel path meets real
//! implementations.

use crate::backend::Driver;
use crate::Failure;
use ksspi::SecStatus;
use ksspi_abi::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// What a finished handshake looked like.
pub struct Handshake {
    pub status: SecStatus,
    pub established: bool,
    /// The negotiated protocol (`SP_PROT_*`), once established.
    pub protocol: u32,
    /// The cipher's `ALG_ID`, once established (0 if it has none).
    pub cipher: u32,
    /// A client's: the server asked for a client certificate and the session
    /// had none to give ([`step_flags::CERTIFICATE_REQUESTED`] in a step reply).
    pub certificate_requested: bool,
    /// The protocol ALPN chose (a session opened with a list; `None`: none
    /// was negotiated).
    pub alpn: Option<Vec<u8>>,
    /// Whether the handshake resumed a session, from the established reply's
    /// [`step_flags`] (unknown for a session opened with an older layout).
    pub resumed: Resumed,
}

/// Whether a handshake resumed a session: the engine's own answer
/// (`SECPKG_ATTR_SESSION_INFO`), as the driver tells it over the IOCTLs
/// (`Unknown` also for a driver that predates resumption: OPEN's older
/// layouts).
pub use ksspi::engine::Resumed;

/// From a STEP reply's flags.
pub fn resumed_from_flags(flags: u8) -> Resumed {
    if flags & step_flags::RESUMED != 0 {
        Resumed::Yes
    } else if flags & step_flags::FULL_HANDSHAKE != 0 {
        Resumed::No
    } else {
        Resumed::Unknown
    }
}

/// From QUERY's [`QueryReply::resumed`].
pub fn resumed_from_query(byte: u8) -> Resumed {
    match byte {
        resumed::RESUMED => Resumed::Yes,
        resumed::FULL => Resumed::No,
        _ => Resumed::Unknown,
    }
}

/// "yes", "no" or "unknown".
pub fn resumed_word(r: Resumed) -> &'static str {
    match r {
        Resumed::Yes => "yes",
        Resumed::No => "no",
        Resumed::Unknown => "unknown",
    }
}

impl Handshake {
    /// The negotiated protocol is TLS 1.3.
    pub fn is_tls13(&self) -> bool {
        self.protocol & ksspi::sys::SP_PROT_TLS1_3 != 0
    }

    /// "TLS 1.3", "TLS 1.2" or "unknown".
    pub fn protocol_name(&self) -> &'static str {
        use ksspi::sys::{SP_PROT_TLS1_2, SP_PROT_TLS1_3};
        if self.protocol & SP_PROT_TLS1_3 != 0 {
            "TLS 1.3"
        } else if self.protocol & SP_PROT_TLS1_2 != 0 {
            "TLS 1.2"
        } else {
            "unknown"
        }
    }

    /// The cipher by its ALG_ID.
    pub fn cipher_name(&self) -> &'static str {
        use ksspi::sys::{CALG_AES_128, CALG_AES_256};
        match self.cipher {
            CALG_AES_128 => "AES-128",
            CALG_AES_256 => "AES-256",
            0 => "ChaCha20-Poly1305 or unnamed",
            _ => "other",
        }
    }
}

fn call(driver: &dyn Driver, code: u32, input: &[u8], capacity: usize) -> Result<Vec<u8>, Failure> {
    let (status, reply) = driver.call(code, input, capacity)?;
    if status != 0 {
        return Err(Failure(format!(
            "the request failed: NTSTATUS {:#010x}",
            status as u32
        )));
    }
    Ok(reply)
}

fn encoded<'a, M: Message<'a>>(m: &M, extra: usize) -> Result<Vec<u8>, Failure> {
    let mut buf = vec![0u8; 512 + extra];
    let n = encode(m, &mut buf).map_err(|e| Failure(format!("encoding a request: {e:?}")))?;
    buf.truncate(n);
    Ok(buf)
}

/// The NTSTATUS a harness reports when the driver is older than what it
/// was asked to use.
const STATUS_REVISION_MISMATCH: u32 = 0xC000_0059;

/// GET_INFO's reply.
pub fn driver_info(driver: &dyn Driver) -> Result<InfoReply, Failure> {
    let reply = call(driver, IOCTL_KSSPI_GET_INFO, &[], 256)?;
    decode::<InfoReply>(&reply).map_err(|e| Failure(format!("a malformed GET_INFO reply: {e:?}")))
}

/// Stop with `STATUS_REVISION_MISMATCH` and the reason if the driver lacks
/// a capability an option needs: each of `needed` is the [`caps`] bit, what
/// it is ("session resumption") and the option that asked for it.
pub fn require(info: &InfoReply, needed: &[(u32, &str, &str)]) -> Result<(), Failure> {
    for &(bit, what, option) in needed {
        if info.capabilities & bit == 0 {
            let [major, minor, patch] = info.driver_version;
            return Err(Failure(format!(
                "{option}: the driver ({major}.{minor}.{patch}) predates {what}: NTSTATUS \
                 {STATUS_REVISION_MISMATCH:#010x} (STATUS_REVISION_MISMATCH); update the \
                 driver or leave {option} off"
            )));
        }
    }
    Ok(())
}

/// The OPEN layout [`open`] sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// The client-certificate fields (`None`: OPEN's first layout).
    pub auth: Option<ClientAuth>,
    /// The session options (`Some`: OPEN's fourth layout).
    pub resumption: Option<Resumption>,
}

/// Which OPEN layout to send, from GET_INFO's [`caps`]: the grown one
/// (`Some(auth)`, which also brings [`step_flags`] back) when the driver
/// takes it, the first one (`None`) when it does not and nothing new is
/// asked; the fourth (session resumption `resume`, or on when `None`) when
/// the driver has [`caps::RESUMPTION`]. A driver older than a layout refuses
/// it by its size, so when `auth`, ALPN or an explicit `resume` needs one
/// the driver lacks, the harness stops here with `STATUS_REVISION_MISMATCH`
/// and the reason instead; `resume: None` (the option not given) then sends
/// the older layout, whose sessions resume as the driver always let them.
pub fn open_layout(
    driver: &dyn Driver,
    auth: ClientAuth,
    alpn: bool,
    resume: Option<Resumption>,
) -> Result<Layout, Failure> {
    let info = driver_info(driver)?;
    let mut needed = Vec::new();
    if auth != ClientAuth::NONE {
        needed.push((
            caps::CLIENT_AUTH,
            "client certificates",
            "--cert/--client-cert",
        ));
    }
    if alpn {
        needed.push((caps::ALPN, "ALPN", "--alpn"));
    }
    if resume.is_some() {
        needed.push((caps::RESUMPTION, "session resumption", "--resume"));
    }
    require(&info, &needed)?;
    let resumption =
        (info.capabilities & caps::RESUMPTION != 0).then(|| resume.unwrap_or(Resumption::On));
    Ok(Layout {
        // The fourth layout carries the client-certificate fields too.
        auth: (info.capabilities & caps::CLIENT_AUTH != 0 || resumption.is_some()).then_some(auth),
        resumption,
    })
}

/// Open a session: a server (certificate by thumbprint in MY) or a client
/// (target name), in `layout` (from [`open_layout`]): its client-certificate
/// settings (a server's mode, a client's certificate; `None` sends the first
/// layout) and session resumption, and an ALPN list (the wire form).
pub fn open(
    driver: &dyn Driver,
    server: bool,
    thumbprint: [u8; 20],
    target: &str,
    protocols: u32,
    layout: Layout,
    alpn: Option<&[u8]>,
) -> Result<SessionId, Failure> {
    let role = if server { Role::Server } else { Role::Client };
    let req = OpenRequest {
        client_auth: layout.auth,
        alpn,
        resumption: layout.resumption,
        ..OpenRequest::new(role, protocols, thumbprint, target.as_bytes())
    };
    let extra = target.len() + alpn.map_or(0, <[u8]>::len);
    let reply = call(driver, IOCTL_KSSPI_OPEN, &encoded(&req, extra)?, 64)?;
    let open = decode::<OpenReply>(&reply)
        .map_err(|e| Failure(format!("a malformed OPEN reply: {e:?}")))?;
    if open.status < 0 {
        return Err(Failure(format!(
            "opening the session failed: {}",
            SecStatus(open.status)
        )));
    }
    Ok(open.session)
}

/// What `connect` says when the server asked for a client certificate and
/// the session had none to give.
pub fn asked_note() -> &'static str {
    if crate::backend::NAME == "windows" {
        "the server asked for a client certificate and none was given (use --cert-thumbprint)"
    } else {
        "the server asked for a client certificate and none was given (use --cert/--key)"
    }
}

/// `failure`, followed by [`asked_note`] if the server asked for a client
/// certificate.
pub fn with_asked(failure: Failure, asked: bool) -> Failure {
    if asked {
        Failure(format!("{}; {}", failure.0, asked_note()))
    } else {
        failure
    }
}

/// Run the handshake of `session` over `sock`. A client starts with an empty step.
pub fn handshake(
    driver: &dyn Driver,
    session: SessionId,
    sock: &mut TcpStream,
    client: bool,
) -> Result<Handshake, Failure> {
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| Failure(e.to_string()))?;
    let mut input: Vec<u8> = Vec::new();
    let mut first = client;
    let mut asked = false;
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        if !first {
            let n = sock
                .read(&mut chunk)
                .map_err(|e| Failure(format!("reading from the peer: {e}")))
                .map_err(|f| with_asked(f, asked))?;
            if n == 0 {
                return Err(with_asked(
                    Failure("the peer closed the connection during the handshake".into()),
                    asked,
                ));
            }
            input.clear();
            input.extend_from_slice(&chunk[..n]);
        }
        first = false;
        let req = StepRequest {
            session,
            input: &input,
        };
        let reply = call(
            driver,
            IOCTL_KSSPI_STEP,
            &encoded(&req, input.len())?,
            step_reply_capacity_alpn(64 * 1024),
        )?;
        let step = decode::<StepReply>(&reply)
            .map_err(|e| Failure(format!("a malformed STEP reply: {e:?}")))?;
        asked |= step.flags & step_flags::CERTIFICATE_REQUESTED != 0;
        if !step.output.is_empty() {
            sock.write_all(step.output)
                .map_err(|e| with_asked(Failure(format!("writing to the peer: {e}")), asked))?;
        }
        match step.outcome {
            StepOutcome::NeedInput => continue,
            StepOutcome::Established => {
                return Ok(Handshake {
                    status: SecStatus(step.status),
                    established: true,
                    protocol: step.protocol,
                    cipher: step.cipher,
                    certificate_requested: asked,
                    // A name that did not fit beside the output comes from QUERY.
                    alpn: (step.alpn_status == 1 && !step.alpn.is_empty())
                        .then(|| step.alpn.to_vec()),
                    resumed: resumed_from_flags(step.flags),
                });
            }
            StepOutcome::Failed => {
                return Ok(Handshake {
                    status: SecStatus(step.status),
                    established: false,
                    protocol: 0,
                    cipher: 0,
                    certificate_requested: asked,
                    alpn: None,
                    resumed: Resumed::Unknown,
                })
            }
        }
    }
}

/// What QUERY says about an established session, for people.
pub struct Described {
    /// The key exchange by `ALG_ID`, with its strength.
    pub exchange: String,
    /// Hash and strength.
    pub hash: String,
    /// "subject ..., issuer ..." of the peer's leaf certificate, or why not.
    pub peer: String,
    /// Record sizes.
    pub records: String,
    /// The protocol ALPN chose (`None`: none, or a session without a list).
    pub alpn: Option<Vec<u8>>,
    /// Whether the handshake resumed, as QUERY tells it.
    pub resumed: Resumed,
}

/// QUERY an established session.
pub fn describe(driver: &dyn Driver, session: SessionId) -> Result<Described, Failure> {
    use ksspi::sys::{CALG_ECDH_EPHEM, CALG_SHA_256, CALG_SHA_384};
    let reply = call(
        driver,
        IOCTL_KSSPI_QUERY,
        &encoded(&QueryRequest { session }, 0)?,
        QUERY_REPLY_CAPACITY_ALPN,
    )?;
    let q = decode::<QueryReply>(&reply)
        .map_err(|e| Failure(format!("a malformed QUERY reply: {e:?}")))?;
    let exchange = match q.exchange {
        CALG_ECDH_EPHEM => format!("ECDHE ({} bits)", q.exchange_strength),
        0 => "unnamed".to_string(),
        other => format!("ALG_ID {other:#x} ({} bits)", q.exchange_strength),
    };
    let hash = match q.hash {
        CALG_SHA_256 => "SHA-256".to_string(),
        CALG_SHA_384 => "SHA-384".to_string(),
        other => format!("ALG_ID {other:#x}"),
    };
    let peer = if q.peer_certificates == 0 {
        "no certificate".to_string()
    } else if q.leaf.is_empty() {
        format!(
            "{} certificates, the leaf too large to show ({} bytes)",
            q.peer_certificates, q.leaf_size
        )
    } else {
        match x509_parser::parse_x509_certificate(q.leaf) {
            Ok((_, cert)) => format!(
                "subject {}, issuer {} ({} certificate{})",
                cert.subject(),
                cert.issuer(),
                q.peer_certificates,
                if q.peer_certificates == 1 { "" } else { "s" }
            ),
            Err(e) => format!("a certificate that does not parse ({e})"),
        }
    };
    Ok(Described {
        exchange,
        hash,
        peer,
        records: format!(
            "records: header {} + up to {} plaintext + trailer {} bytes",
            q.header, q.max_message, q.trailer
        ),
        alpn: (q.alpn_status == 1).then(|| q.alpn.to_vec()),
        resumed: resumed_from_query(q.resumed),
    })
}

/// Close a session.
pub fn close(driver: &dyn Driver, session: SessionId) {
    if let Ok(req) = encoded(&CloseRequest { session }, 0) {
        let _ = call(driver, IOCTL_KSSPI_CLOSE, &req, 64);
    }
}

/// Bytes read from the socket per DECRYPT: a partial record buffered in the
/// session plus this always fits its 64 KiB.
const READ_CHUNK: usize = 16 * 1024;
/// Ciphertext queued for the socket before the sender waits for it to drain.
const OUTGOING_LIMIT: usize = 256 * 1024;

/// How a record-layer exchange ended.
#[derive(Debug, Default)]
pub struct Exchange {
    /// Plaintext bytes sent.
    pub sent: u64,
    /// Plaintext bytes received.
    pub received: u64,
    /// Post-handshake messages (session tickets, key updates) the session
    /// handed to its handshake call.
    pub renegotiations: u32,
    /// The peer's close_notify arrived.
    pub peer_close_notify: bool,
    /// Our close_notify went out.
    pub close_notify_sent: bool,
    /// The connection ended (EOF) without the peer's close_notify.
    pub eof_without_close_notify: bool,
}

/// What [`Channel::run`] does with what arrives.
pub enum Sink<'a> {
    /// Hand it to a callback; returning true stops reading (then close).
    Collect(&'a mut dyn FnMut(&[u8]) -> bool),
    /// Send it straight back (an echo server).
    Echo,
}

/// A driver session's record layer over a socket: ENCRYPT / DECRYPT /
/// SHUTDOWN IOCTLs, the socket driven without blocking so that sending and
/// receiving interleave (a peer that answers as it reads never deadlocks
/// against us).
pub struct Channel<'a> {
    driver: &'a dyn Driver,
    session: SessionId,
    sock: &'a mut TcpStream,
    outgoing: Vec<u8>,
    written: usize,
    /// The socket refused a write because the peer closed its end: why. What
    /// was queued is dropped; whether that is a failure depends on whether
    /// the peer's close_notify came first (see [`Channel::flush_some`]).
    write_refused: Option<String>,
    pub stats: Exchange,
}

impl<'a> Channel<'a> {
    pub fn new(driver: &'a dyn Driver, session: SessionId, sock: &'a mut TcpStream) -> Self {
        Channel {
            driver,
            session,
            sock,
            outgoing: Vec::new(),
            written: 0,
            write_refused: None,
            stats: Exchange::default(),
        }
    }

    fn record_call(&self, code: u32, input: &[u8]) -> Result<Vec<u8>, Failure> {
        call(
            self.driver,
            code,
            input,
            record_reply_capacity(64 * 1024, 64 * 1024),
        )
    }

    /// ENCRYPT `data` (at most [`MAX_TOKEN`] bytes) and queue the records.
    fn seal(&mut self, data: &[u8]) -> Result<(), Failure> {
        let req = EncryptRequest(RecordRequest {
            session: self.session,
            bytes: data,
        });
        let reply = call(
            self.driver,
            IOCTL_KSSPI_ENCRYPT,
            &encoded(&req, data.len())?,
            encrypt_reply_capacity(data.len()),
        )?;
        let r = decode::<EncryptReply>(&reply)
            .map_err(|e| Failure(format!("a malformed ENCRYPT reply: {e:?}")))?;
        if r.status != 0 {
            return Err(Failure(format!("encrypting: {}", SecStatus(r.status))));
        }
        self.outgoing.extend_from_slice(r.output);
        self.stats.sent += data.len() as u64;
        Ok(())
    }

    /// DECRYPT `bytes` from the peer; queues what the session answers and
    /// returns the plaintext.
    fn open(&mut self, bytes: &[u8]) -> Result<Vec<u8>, Failure> {
        let req = DecryptRequest(RecordRequest {
            session: self.session,
            bytes,
        });
        let reply = self.record_call(IOCTL_KSSPI_DECRYPT, &encoded(&req, bytes.len())?)?;
        let r = decode::<RecordReply>(&reply)
            .map_err(|e| Failure(format!("a malformed DECRYPT reply: {e:?}")))?;
        self.outgoing.extend_from_slice(r.output);
        self.stats.renegotiations += r.renegotiations;
        self.stats.received += r.data.len() as u64;
        match r.outcome {
            RecordOutcome::Data | RecordOutcome::ShutDown => {}
            RecordOutcome::PeerClosed => self.stats.peer_close_notify = true,
            RecordOutcome::Failed => {
                return Err(Failure(format!(
                    "decrypting what the peer sent: {}",
                    SecStatus(r.status)
                )))
            }
        }
        Ok(r.data.to_vec())
    }

    /// SHUTDOWN: queue close_notify.
    fn close_notify(&mut self) -> Result<(), Failure> {
        let req = ShutdownRequest {
            session: self.session,
        };
        let reply = self.record_call(IOCTL_KSSPI_SHUTDOWN, &encoded(&req, 0)?)?;
        let r = decode::<RecordReply>(&reply)
            .map_err(|e| Failure(format!("a malformed SHUTDOWN reply: {e:?}")))?;
        if r.outcome != RecordOutcome::ShutDown {
            return Err(Failure(format!("shutting down: {}", SecStatus(r.status))));
        }
        self.outgoing.extend_from_slice(r.output);
        self.stats.close_notify_sent = true;
        Ok(())
    }

    /// Write what is queued, as far as the socket takes it now. A peer that
    /// closed its end (a broken pipe, a reset) is not yet a failure: a party
    /// may close its read side once it has sent its close_notify, without
    /// waiting for ours (RFC 8446 §6.1), and a JSSE client does, while our
    /// answers to its KeyUpdates and our close_notify are still queued. The
    /// queue is dropped and the refusal kept; [`Channel::run`] reads on, and
    /// fails with it only if the peer's close_notify never came.
    fn flush_some(&mut self) -> Result<bool, Failure> {
        let mut progress = false;
        if self.write_refused.is_some() {
            self.outgoing.clear();
            self.written = 0;
            return Ok(false);
        }
        while self.written < self.outgoing.len() {
            match self.sock.write(&self.outgoing[self.written..]) {
                Ok(0) => return Err(Failure("the peer stopped reading".into())),
                Ok(n) => {
                    self.written += n;
                    progress = true;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::BrokenPipe
                            | std::io::ErrorKind::ConnectionReset
                            | std::io::ErrorKind::ConnectionAborted
                    ) =>
                {
                    self.write_refused = Some(e.to_string());
                    self.outgoing.clear();
                    self.written = 0;
                    return Ok(progress);
                }
                Err(e) => return Err(Failure(format!("writing to the peer: {e}"))),
            }
        }
        if self.written == self.outgoing.len() {
            self.outgoing.clear();
            self.written = 0;
        }
        Ok(progress)
    }

    /// Read once, if anything is there: `Some(plaintext)`, or `None` when
    /// nothing was ready. EOF sets `eof_without_close_notify` (unless the
    /// close_notify came first) and gives an empty plaintext.
    fn read_some(&mut self, eof: &mut bool) -> Result<Option<Vec<u8>>, Failure> {
        let mut buf = [0u8; READ_CHUNK];
        match self.sock.read(&mut buf) {
            Ok(0) => {
                *eof = true;
                if !self.stats.peer_close_notify {
                    self.stats.eof_without_close_notify = true;
                }
                Ok(Some(Vec::new()))
            }
            Ok(n) => self.open(&buf[..n]).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                *eof = true;
                self.stats.eof_without_close_notify = !self.stats.peer_close_notify;
                Ok(Some(Vec::new()))
            }
            Err(e) => Err(Failure(format!("reading from the peer: {e}"))),
        }
    }

    /// Send `data`, hand what arrives to `sink`, until the peer closes, the
    /// sink says stop, or nothing moves for `idle` (`None`: wait for the
    /// peer as long as it takes); then exchange close_notify: ours goes out
    /// and, unless the peer closed first, its own is awaited for up to `idle`
    /// (or 10 s).
    pub fn run(
        &mut self,
        data: &[u8],
        mut sink: Sink<'_>,
        idle: Option<Duration>,
    ) -> Result<(), Failure> {
        self.sock
            .set_nonblocking(true)
            .map_err(|e| Failure(e.to_string()))?;
        // Bytes that followed the handshake wait in the session.
        let first = self.open(&[])?;
        let mut stop = self.deliver(&mut sink, &first)?;
        let mut eof = false;
        let mut pos = 0;
        let mut last = std::time::Instant::now();
        while !stop && !eof && !self.stats.peer_close_notify {
            let mut progress = false;
            while pos < data.len() && self.outgoing.len() < OUTGOING_LIMIT {
                let end = (pos + MAX_TOKEN).min(data.len());
                self.seal(&data[pos..end])?;
                pos = end;
                progress = true;
            }
            progress |= self.flush_some()?;
            if let Some(plain) = self.read_some(&mut eof)? {
                stop = self.deliver(&mut sink, &plain)?;
                progress = true;
            }
            if progress {
                last = std::time::Instant::now();
            } else if self.write_refused.is_some() {
                // Nothing more to read either: the peer is gone.
                break;
            } else if pos == data.len()
                && self.outgoing.is_empty()
                && idle.is_some_and(|idle| last.elapsed() >= idle)
            {
                break;
            } else {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        self.finish(idle.unwrap_or(Duration::from_secs(10)), eof)?;
        match &self.write_refused {
            Some(why) if !self.stats.peer_close_notify => Err(Failure(format!(
                "writing to the peer: {why} (it closed the connection without its close_notify)"
            ))),
            _ => Ok(()),
        }
    }

    /// No conversation: read what the peer sends right after the handshake
    /// for up to `wait` when `tickets` (TLS 1.3, whose session tickets come
    /// after the handshake and are kept by the session's credentials only
    /// once a DECRYPT hands them to the handshake call), until a
    /// post-handshake message or any data arrived; then exchange
    /// close_notify (a peer may forget a session whose connection ended
    /// without one). Data that arrives is counted, not shown.
    pub fn settle(&mut self, tickets: bool, wait: Duration) -> Result<(), Failure> {
        self.sock
            .set_nonblocking(true)
            .map_err(|e| Failure(e.to_string()))?;
        // Bytes that followed the handshake wait in the session.
        self.open(&[])?;
        let mut eof = false;
        let deadline = std::time::Instant::now() + wait;
        while tickets
            && !eof
            && !self.stats.peer_close_notify
            && self.stats.renegotiations == 0
            && self.stats.received == 0
            && self.write_refused.is_none()
            && std::time::Instant::now() < deadline
        {
            let wrote = self.flush_some()?;
            if self.read_some(&mut eof)?.is_none() && !wrote {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        self.finish(wait, eof)?;
        match &self.write_refused {
            Some(why) if !self.stats.peer_close_notify => Err(Failure(format!(
                "writing to the peer: {why} (it closed the connection without its close_notify)"
            ))),
            _ => Ok(()),
        }
    }

    fn deliver(&mut self, sink: &mut Sink<'_>, plain: &[u8]) -> Result<bool, Failure> {
        if plain.is_empty() {
            return Ok(false);
        }
        match sink {
            Sink::Collect(f) => Ok(f(plain)),
            Sink::Echo => {
                for piece in plain.chunks(MAX_TOKEN) {
                    self.seal(piece)?;
                }
                Ok(false)
            }
        }
    }

    /// Our close_notify out (once everything queued is written), then the
    /// peer's awaited for up to `wait`, unless it came already.
    fn finish(&mut self, wait: Duration, mut eof: bool) -> Result<(), Failure> {
        if !eof {
            self.close_notify()?;
        }
        let deadline = std::time::Instant::now() + wait;
        while std::time::Instant::now() < deadline {
            let wrote = self.flush_some()?;
            if self.outgoing.is_empty() && (self.stats.peer_close_notify || eof) {
                break;
            }
            if !eof && !self.stats.peer_close_notify {
                // What arrives now is dropped: we have said our last word.
                if self.read_some(&mut eof)?.is_some() {
                    continue;
                }
            }
            if !wrote {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        let _ = self.sock.set_nonblocking(false);
        let _ = self.sock.shutdown(std::net::Shutdown::Write);
        Ok(())
    }
}

/// A driver for unit tests that answers GET_INFO with its capabilities and
/// takes no other call (one reaching it fails the test).
#[cfg(test)]
pub(crate) struct InfoOnly(pub u32);

#[cfg(test)]
impl Driver for InfoOnly {
    fn backend(&self) -> &'static str {
        "test"
    }
    fn call(&self, code: u32, _: &[u8], capacity: usize) -> Result<(i32, Vec<u8>), Failure> {
        assert_eq!(
            code, IOCTL_KSSPI_GET_INFO,
            "only GET_INFO may reach this driver"
        );
        let reply = InfoReply {
            driver_version: [0, 1, 0],
            capabilities: self.0,
            ..InfoReply::default()
        };
        let mut out = vec![0u8; capacity];
        let n = encode(&reply, &mut out).unwrap();
        out.truncate(n);
        Ok((0, out))
    }
    fn finish(self: Box<Self>) -> u64 {
        0
    }
}

#[cfg(test)]
mod alpn_version_tests {
    use super::*;

    use InfoOnly as Info;

    #[test]
    fn a_driver_older_than_alpn_is_named_with_revision_mismatch() {
        let old = Info(caps::TLS12 | caps::TLS13 | caps::RECORD_LAYER);
        let Failure(why) = open_layout(&old, ClientAuth::NONE, true, None).unwrap_err();
        assert!(why.contains("0xc0000059"), "{why}");
        assert!(why.contains("STATUS_REVISION_MISMATCH"), "{why}");
        assert!(why.contains("predates ALPN"), "{why}");
        assert!(!why.contains("  "), "one line, no runs of spaces: {why}");
        let new = Info(caps::TLS12 | caps::ALPN | caps::CLIENT_AUTH);
        assert_eq!(
            open_layout(&new, ClientAuth::NONE, true, None).unwrap(),
            Layout {
                auth: Some(ClientAuth::NONE),
                resumption: None
            }
        );
    }

    #[test]
    fn a_driver_older_than_client_certificates_is_named_and_plain_sessions_need_nothing() {
        let old = Info(caps::TLS12 | caps::TLS13 | caps::RECORD_LAYER);
        let asks = ClientAuth {
            server_mode: ksspi_abi::ClientCertMode::Require,
            ..ClientAuth::NONE
        };
        let Failure(why) = open_layout(&old, asks, false, None).unwrap_err();
        assert!(why.contains("predates client certificates"), "{why}");
        assert!(why.contains("STATUS_REVISION_MISMATCH"), "{why}");
        // Nothing new asked: the first layout, which that driver takes.
        assert_eq!(
            open_layout(&old, ClientAuth::NONE, false, None).unwrap(),
            Layout {
                auth: None,
                resumption: None
            }
        );
    }

    #[test]
    fn resumption_asked_of_an_older_driver_is_named_and_the_default_falls_back() {
        // A driver with ALPN and client certificates, before resumption.
        let old = Info(caps::TLS12 | caps::TLS13 | caps::ALPN | caps::CLIENT_AUTH);
        for asked in [Resumption::On, Resumption::Off] {
            let Failure(why) = open_layout(&old, ClientAuth::NONE, false, Some(asked)).unwrap_err();
            assert!(why.starts_with("--resume: "), "{why}");
            assert!(why.contains("predates session resumption"), "{why}");
            assert!(why.contains("0xc0000059"), "{why}");
            assert!(why.contains("STATUS_REVISION_MISMATCH"), "{why}");
            assert!(!why.contains("  "), "one line, no runs of spaces: {why}");
        }
        // The option not given (its default, on): the older layout, which
        // that driver takes.
        assert_eq!(
            open_layout(&old, ClientAuth::NONE, true, None).unwrap(),
            Layout {
                auth: Some(ClientAuth::NONE),
                resumption: None
            }
        );
        // A driver with resumption: the fourth layout, on by default.
        let new = Info(caps::TLS12 | caps::ALPN | caps::CLIENT_AUTH | caps::RESUMPTION);
        for (asked, sent) in [
            (None, Resumption::On),
            (Some(Resumption::On), Resumption::On),
            (Some(Resumption::Off), Resumption::Off),
        ] {
            assert_eq!(
                open_layout(&new, ClientAuth::NONE, false, asked).unwrap(),
                Layout {
                    auth: Some(ClientAuth::NONE),
                    resumption: Some(sent)
                },
                "{asked:?}"
            );
        }
    }

    #[test]
    fn resumed_is_read_from_step_flags_and_query() {
        assert_eq!(resumed_from_flags(step_flags::RESUMED), Resumed::Yes);
        assert_eq!(resumed_from_flags(step_flags::FULL_HANDSHAKE), Resumed::No);
        assert_eq!(
            resumed_from_flags(step_flags::CERTIFICATE_REQUESTED),
            Resumed::Unknown
        );
        assert_eq!(resumed_from_query(resumed::RESUMED), Resumed::Yes);
        assert_eq!(resumed_from_query(resumed::FULL), Resumed::No);
        assert_eq!(resumed_from_query(resumed::UNKNOWN), Resumed::Unknown);
    }
}
