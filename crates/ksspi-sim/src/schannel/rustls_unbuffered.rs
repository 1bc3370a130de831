//! Every use of rustls 0.23's unbuffered API (`rustls::unbuffered`,
//! `UnbufferedServerConnection`, `UnbufferedClientConnection`), which later
//! rustls versions drop: the model's TLS connection, [`Conn`], and the few
//! things the rest of model Schannel asks of it. Moving the model to another
//! rustls API means rewriting this file behind the same methods:
//!
//! - [`Conn::server`], [`Conn::client`]: a connection over a config;
//! - [`Conn::is_client`], [`Conn::protocol_version`],
//!   [`Conn::peer_certificates`], [`Conn::negotiated_cipher_suite`]: what it
//!   negotiated;
//! - [`Conn::drive`]: the handshake over the records given so far, with the
//!   messages it writes ([`Progress`]); [`Conn::drain_alerts`]: the alert it
//!   queued on a failure;
//! - [`Conn::seal`]: one record of application data; [`Conn::open`]: one
//!   record read, its plaintext put in place ([`Opened`]);
//! - [`Conn::request_key_update`], [`Conn::flush_key_update_answer`],
//!   [`Conn::close_notify`]: the messages after the handshake.
//!
//! Where a rustls failure becomes a call's status, the methods answer with
//! Schannel's ([`map_error`]).

use super::errors::map_error;
use ksspi::SecStatus;
use rustls::client::UnbufferedClientConnection;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, UnbufferedStatus};
use rustls::{
    AlertDescription, ClientConfig, Error, ProtocolVersion, ServerConfig, SupportedCipherSuite,
};
use std::sync::Arc;

/// One TLS connection, either role.
pub(super) enum Conn {
    /// An AcceptSecurityContext context's.
    Server(UnbufferedServerConnection),
    /// An InitializeSecurityContext context's.
    Client(UnbufferedClientConnection),
}

/// The same body for either role's connection, as `$c`.
macro_rules! with_conn {
    ($self:expr, $c:ident => $body:expr) => {
        match $self {
            Conn::Server($c) => $body,
            Conn::Client($c) => $body,
        }
    };
}

/// What driving rustls over the pending records gave.
pub(super) struct Progress {
    /// A record other than a lone ChangeCipherSpec was produced: a flight.
    pub(super) produced: bool,
    /// The handshake is complete.
    pub(super) established: bool,
    /// The handshake failed.
    pub(super) error: Option<Error>,
}

macro_rules! drive {
    ($conn:expr, $pending:expr, $out:expr) => {{
        let conn = $conn;
        let pending: &mut Vec<u8> = $pending;
        let out: &mut Vec<u8> = $out;
        let mut progress = Progress {
            produced: false,
            established: false,
            error: None,
        };
        for _ in 0..256 {
            let UnbufferedStatus { discard, state } = conn.process_tls_records(&mut pending[..]);
            let mut stop = false;
            match state {
                Ok(ConnectionState::EncodeTlsData(mut enc)) => {
                    let at = out.len();
                    encode(|buf| enc.encode(buf), out);
                    // A ChangeCipherSpec alone (TLS 1.3 middlebox compatibility)
                    // does not end a flight; anything else does.
                    if out.get(at).is_some_and(|&content_type| content_type != 20) {
                        progress.produced = true;
                    }
                }
                Ok(ConnectionState::TransmitTlsData(tx)) => tx.done(),
                Ok(ConnectionState::BlockedHandshake) => stop = true,
                Ok(ConnectionState::WriteTraffic(_)) | Ok(ConnectionState::ReadTraffic(_)) => {
                    stop = true;
                }
                Ok(ConnectionState::PeerClosed) | Ok(ConnectionState::Closed) => {
                    progress.error = Some(Error::AlertReceived(AlertDescription::CloseNotify));
                    stop = true;
                }
                Ok(_) => stop = true,
                Err(e) => {
                    progress.error = Some(e);
                    stop = true;
                }
            }
            pending.drain(..discard.min(pending.len()));
            if stop {
                break;
            }
        }
        if progress.error.is_none() && !conn.is_handshaking() {
            progress.established = true;
        }
        progress
    }};
}

macro_rules! drain_alerts {
    ($conn:expr, $pending:expr, $out:expr) => {{
        let conn = $conn;
        let pending: &mut Vec<u8> = $pending;
        // rustls queues the alert it sends on failure. While something is
        // queued, process_tls_records hands it out before looking at any
        // input, so it is safe to call (and only then: processing the input
        // again would fail again and queue a second fatal alert). The pending
        // bytes are passed because rustls's deframer still refers to them.
        for _ in 0..8 {
            if !conn.wants_write() {
                break;
            }
            let status = conn.process_tls_records(&mut pending[..]);
            let discard = status.discard;
            match status.state {
                Ok(ConnectionState::EncodeTlsData(mut enc)) => encode(|buf| enc.encode(buf), $out),
                _ => break,
            }
            pending.drain(..discard.min(pending.len()));
        }
    }};
}

/// What [`Conn::open`] made of one record.
pub(super) struct Opened {
    /// Plaintext bytes put in the record after its header.
    pub(super) got: usize,
    /// The peer's close_notify arrived (or the connection is closed).
    pub(super) closed: bool,
    /// The call's status on a failure.
    pub(super) error: Option<SecStatus>,
    /// What rustls wrote in answer to a post-handshake message (a KeyUpdate).
    pub(super) answer: Vec<u8>,
}

impl Conn {
    /// A server connection over `config`.
    pub(super) fn server(config: Arc<ServerConfig>) -> Result<Conn, Error> {
        UnbufferedServerConnection::new(config).map(Conn::Server)
    }

    /// A client connection over `config`, towards `name`.
    pub(super) fn client(
        config: Arc<ClientConfig>,
        name: ServerName<'static>,
    ) -> Result<Conn, Error> {
        UnbufferedClientConnection::new(config, name).map(Conn::Client)
    }

    /// Whether this is the client's side.
    pub(super) fn is_client(&self) -> bool {
        matches!(self, Conn::Client(_))
    }

    /// The negotiated version, once known.
    pub(super) fn protocol_version(&self) -> Option<ProtocolVersion> {
        match self {
            Conn::Server(c) => c.protocol_version(),
            Conn::Client(c) => c.protocol_version(),
        }
    }

    /// The peer's certificates, once it sent them.
    pub(super) fn peer_certificates(&self) -> Option<&[CertificateDer<'static>]> {
        match self {
            Conn::Server(c) => c.peer_certificates(),
            Conn::Client(c) => c.peer_certificates(),
        }
    }

    /// The protocol ALPN chose, once known.
    pub(super) fn alpn_protocol(&self) -> Option<&[u8]> {
        match self {
            Conn::Server(c) => c.alpn_protocol(),
            Conn::Client(c) => c.alpn_protocol(),
        }
    }

    /// Whether the handshake was a resumption (rustls's `HandshakeKind`).
    pub(super) fn resumed(&self) -> bool {
        let kind = match self {
            Conn::Server(c) => c.handshake_kind(),
            Conn::Client(c) => c.handshake_kind(),
        };
        kind == Some(rustls::HandshakeKind::Resumed)
    }

    /// The negotiated cipher suite, once known.
    pub(super) fn negotiated_cipher_suite(&self) -> Option<SupportedCipherSuite> {
        match self {
            Conn::Server(c) => c.negotiated_cipher_suite(),
            Conn::Client(c) => c.negotiated_cipher_suite(),
        }
    }

    /// Drive the handshake over `pending` (the records given so far; what
    /// rustls consumed is drained from it), appending what it writes to `out`.
    pub(super) fn drive(&mut self, pending: &mut Vec<u8>, out: &mut Vec<u8>) -> Progress {
        match self {
            Conn::Server(c) => drive!(c, pending, out),
            Conn::Client(c) => drive!(c, pending, out),
        }
    }

    /// After a failure: append the alert rustls queued to `out`.
    pub(super) fn drain_alerts(&mut self, pending: &mut Vec<u8>, out: &mut Vec<u8>) {
        match self {
            Conn::Server(c) => drain_alerts!(c, pending, out),
            Conn::Client(c) => drain_alerts!(c, pending, out),
        }
    }

    /// Seal `data` into one record in `out`, which has exactly one record's
    /// room: the bytes written.
    pub(super) fn seal(&mut self, data: &[u8], out: &mut [u8]) -> Result<usize, SecStatus> {
        let mut empty: [u8; 0] = [];
        with_conn!(self, c => {
            match c.process_tls_records(&mut empty).state {
                Ok(ConnectionState::WriteTraffic(mut wt)) => match wt.encrypt(data, out) {
                    Ok(n) => Ok(n),
                    Err(EncryptError::InsufficientSize(_)) => Err(SecStatus::SEC_E_INTERNAL_ERROR),
                    Err(_) => Err(SecStatus::SEC_E_CONTEXT_EXPIRED),
                },
                Ok(_) => Err(SecStatus::SEC_E_CONTEXT_EXPIRED),
                Err(e) => Err(map_error(&e)),
            }
        })
    }

    /// Read the one record `rec` holds, putting its plaintext in `rec` after
    /// the first `header` bytes.
    pub(super) fn open(&mut self, rec: &mut [u8], header: usize) -> Opened {
        let mut got = 0;
        let mut closed = false;
        let mut error = None;
        let mut answer = Vec::new();
        with_conn!(self, c => {
            let mut off = 0;
            for _ in 0..16 {
                let UnbufferedStatus { discard, state } = c.process_tls_records(&mut rec[off..]);
                let mut stop = false;
                let mut readable = false;
                match state {
                    // The record's plaintext is queued in rustls; it is read
                    // below, once this state (which borrows `rec`) is gone.
                    Ok(ConnectionState::ReadTraffic(_)) => readable = true,
                    Ok(ConnectionState::EncodeTlsData(mut enc)) => {
                        encode(|b| enc.encode(b), &mut answer)
                    }
                    Ok(ConnectionState::TransmitTlsData(tx)) => tx.done(),
                    Ok(ConnectionState::PeerClosed) | Ok(ConnectionState::Closed) => {
                        closed = true;
                        stop = true;
                    }
                    Ok(_) => stop = true,
                    Err(e) => {
                        error = Some(map_error(&e));
                        stop = true;
                    }
                }
                off += discard;
                if readable {
                    // With plaintext queued, rustls answers ReadTraffic before
                    // it looks at its input: asked over an empty buffer, it
                    // leaves `rec` free to take the plaintext.
                    let mut none: [u8; 0] = [];
                    match c.process_tls_records(&mut none).state {
                        Ok(ConnectionState::ReadTraffic(mut rt)) => {
                            while let Some(r) = rt.next_record() {
                                match r {
                                    Ok(app) => {
                                        let (at, n) = (header + got, app.payload.len());
                                        if at + n > rec.len() {
                                            // More plaintext than the record held.
                                            error = Some(SecStatus::SEC_E_INTERNAL_ERROR);
                                            break;
                                        }
                                        rec[at..at + n].copy_from_slice(app.payload);
                                        got += n;
                                    }
                                    Err(e) => {
                                        error = Some(map_error(&e));
                                        break;
                                    }
                                }
                            }
                        }
                        // Not what rustls does with plaintext queued.
                        _ => error = Some(SecStatus::SEC_E_INTERNAL_ERROR),
                    }
                }
                if stop || error.is_some() {
                    break;
                }
            }
        });
        Opened {
            got,
            closed,
            error,
            answer,
        }
    }

    /// Update our keys and ask the peer to update its own (a TLS 1.3
    /// KeyUpdate, update_requested): the record to send.
    pub(super) fn request_key_update(&mut self) -> Result<Vec<u8>, SecStatus> {
        let mut out = Vec::new();
        let mut empty: [u8; 0] = [];
        with_conn!(self, c => {
            match c.process_tls_records(&mut empty).state {
                Ok(ConnectionState::WriteTraffic(wt)) => {
                    wt.refresh_traffic_keys().map_err(|e| map_error(&e))?
                }
                Ok(_) => return Err(SecStatus::SEC_E_CONTEXT_EXPIRED),
                Err(e) => return Err(map_error(&e)),
            }
            for _ in 0..4 {
                match c.process_tls_records(&mut empty).state {
                    Ok(ConnectionState::EncodeTlsData(mut enc)) => {
                        encode(|b| enc.encode(b), &mut out)
                    }
                    Ok(ConnectionState::TransmitTlsData(tx)) => tx.done(),
                    _ => break,
                }
            }
        });
        Ok(out)
    }

    /// A peer's KeyUpdate that asked for ours: rustls queues its answer until
    /// its next write of application data, where Schannel returns it from the
    /// handshake call that was handed the KeyUpdate. An encrypt into an empty
    /// buffer moves the queued answer into rustls's send queue and writes
    /// nothing (it fails for want of room before it encrypts), and the queue
    /// then comes out as EncodeTlsData.
    pub(super) fn flush_key_update_answer(&mut self, token: &mut Vec<u8>) {
        let mut empty: [u8; 0] = [];
        with_conn!(self, c => {
            if let Ok(ConnectionState::WriteTraffic(mut wt)) = c.process_tls_records(&mut empty).state {
                let _ = wt.encrypt(&[0], &mut []);
            }
            for _ in 0..4 {
                match c.process_tls_records(&mut empty).state {
                    Ok(ConnectionState::EncodeTlsData(mut enc)) => encode(|b| enc.encode(b), token),
                    Ok(ConnectionState::TransmitTlsData(tx)) => tx.done(),
                    _ => break,
                }
            }
        });
    }

    /// Append a close_notify record to `token`.
    pub(super) fn close_notify(&mut self, token: &mut Vec<u8>) -> Result<(), SecStatus> {
        let mut empty: [u8; 0] = [];
        with_conn!(self, c => {
            match c.process_tls_records(&mut empty).state {
                Ok(ConnectionState::WriteTraffic(mut wt)) => {
                    encrypt_into(|buf| wt.queue_close_notify(buf), token)
                }
                _ => Err(SecStatus::SEC_E_CONTEXT_EXPIRED),
            }
        })
    }
}

/// Append what `f` writes to `out`, in place (as the baseline does: no
/// buffer of its own, 2 KiB of room first, then what rustls asks for, which
/// `needs` reads from the error); on any other error `out` is left as it was.
fn append_in_place<E>(
    mut f: impl FnMut(&mut [u8]) -> Result<usize, E>,
    needs: impl Fn(&E) -> Option<usize>,
    out: &mut Vec<u8>,
) -> Result<(), E> {
    let at = out.len();
    let mut room = 2048;
    if out.capacity() == 0 {
        // A flight is a few records (ServerHello, ChangeCipherSpec,
        // Finished): room for the next one after the first, so that it
        // does not move what came before.
        out.reserve(2 * room);
    }
    loop {
        out.resize(at + room, 0);
        match f(&mut out[at..]) {
            Ok(n) => {
                out.truncate(at + n);
                return Ok(());
            }
            Err(e) => match needs(&e) {
                Some(required) => room = required,
                None => {
                    out.truncate(at);
                    return Err(e);
                }
            },
        }
    }
}

/// Append the message `f` encodes to `out` (nothing on a failure).
fn encode(f: impl FnMut(&mut [u8]) -> Result<usize, EncodeError>, out: &mut Vec<u8>) {
    let needs = |e: &EncodeError| match e {
        EncodeError::InsufficientSize(e) => Some(e.required_size),
        _ => None,
    };
    let _ = append_in_place(f, needs, out);
}

/// Append the record `f` encrypts to `out`.
fn encrypt_into(
    f: impl FnMut(&mut [u8]) -> Result<usize, EncryptError>,
    out: &mut Vec<u8>,
) -> Result<(), SecStatus> {
    let needs = |e: &EncryptError| match e {
        EncryptError::InsufficientSize(e) => Some(e.required_size),
        _ => None,
    };
    append_in_place(f, needs, out).map_err(|_| SecStatus::SEC_E_CONTEXT_EXPIRED)
}
