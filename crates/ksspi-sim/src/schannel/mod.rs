//! Model Schannel: the handshake semantics of AcceptSecurityContext /
//! InitializeSecurityContext, produced over rustls's unbuffered API (tokens
//! are real TLS records), synchronously and without pointers. The provider
//! ([`crate::provider`]) wraps it in the async SSPI surface.
//!
//! Semantics reproduced (Schannel's, not rustls's):
//! - the client's first call, with no input, gives the ClientHello;
//! - input holding no complete record gives `SEC_E_INCOMPLETE_MESSAGE` with a
//!   MISSING count, and consumes nothing (the caller resubmits it with more);
//! - one call consumes one flight: once a call has produced a flight (any
//!   record but a lone middlebox ChangeCipherSpec), records after the one
//!   that produced it are left as EXTRA for the next call, and a partial
//!   record at the end is EXTRA too;
//! - `SEC_E_OK` when the handshake is complete (for a TLS 1.3 server, only once
//!   the client's Finished is in), with any final token, and whatever input
//!   followed as EXTRA;
//! - failures map to Schannel's codes, with the alert rustls sends as the
//!   alert token; a failed context stays failed;
//! - a CertificateRequest the client cannot answer gives
//!   `SEC_I_INCOMPLETE_CREDENTIALS` (no token); the next call goes on without a
//!   client certificate, as Schannel does;
//! - after the handshake, each post-handshake message (TLS 1.3
//!   NewSessionTicket, KeyUpdate) is `SEC_I_RENEGOTIATE` from DecryptMessage
//!   and goes to the handshake call, however many come in a row (rustls's
//!   limit of 32 KeyUpdates without data between them is patched out:
//!   third_party/README.md).
//!
//! The files, one concern each:
//! - `credentials.rs`: credentials and the rustls configuration they become;
//! - `framing.rs`: TLS record framing (INCOMPLETE_MESSAGE / MISSING / EXTRA);
//! - `handshake.rs`: the handshake calls ([`Context::step`], [`Step`]);
//! - `records.rs`: EncryptMessage, DecryptMessage, the stream sizes;
//! - `post_handshake.rs`: post-handshake messages and the shutdown;
//! - `errors.rs`: Schannel's codes for rustls failures ([`map_error`]);
//! - `rustls_unbuffered.rs`: every use of rustls 0.23's unbuffered API,
//!   behind a small interface of the model's own (later rustls versions
//!   drop that API).
//!
//! This file holds the security context ([`Context`]): its state, making one
//! over a credential, and what it negotiated.

mod credentials;
mod errors;
mod framing;
mod handshake;
mod post_handshake;
mod records;
mod rustls_unbuffered;
mod session_cache;

pub use credentials::{Credential, CredentialSpec, Protocols, Sessions};
pub use errors::map_error;
pub use handshake::Step;
pub use records::{StreamSizes, Unsealed, MAX_PLAINTEXT};
pub use session_cache::{lifespan, CLIENT_SERVERS, DEFAULT_LIFESPAN, SERVER_SESSIONS};

use credentials::{client_config, AskedFor, Kind};
use ksspi::sys::*;
use ksspi::SecStatus;
use rustls::pki_types::ServerName;
use rustls::ProtocolVersion;
use rustls_unbuffered::Conn;
use std::sync::Arc;

/// One TLS connection, one role, as a security context.
pub struct Context {
    conn: Conn,
    /// A client's record of the server asking for its certificate (`None`
    /// for a server).
    asked: Option<Arc<AskedFor>>,
    /// Records rustls has been given but not yet discarded (a handshake
    /// message spanning records is joined in place).
    pending: Vec<u8>,
    started: bool,
    established: bool,
    failed: Option<SecStatus>,
    held: Option<Step>,
    /// A post-handshake record DecryptMessage consumed and answered with
    /// SEC_I_RENEGOTIATE: its length, for the handshake call that is handed it.
    post_handshake: Option<usize>,
    /// What rustls wrote in answer to a post-handshake message (a KeyUpdate),
    /// for that handshake call's output.
    post_handshake_out: Vec<u8>,
    /// The peer's close_notify arrived.
    peer_closed: bool,
    /// ApplyControlToken(SCHANNEL_SHUTDOWN) was applied: the next handshake
    /// call produces close_notify.
    shutdown: bool,
    /// The close_notify went out: no handshake call produces anything more.
    close_sent: bool,
    /// The context was given an ALPN list (SECBUFFER_APPLICATION_PROTOCOLS
    /// on its first call).
    alpn: bool,
    /// The stream sizes, fixed once the handshake is complete.
    sizes: Option<StreamSizes>,
    /// Where EncryptMessage has rustls write a record before it is copied out
    /// to the caller's header, data and trailer buffers: kept for the
    /// context's life, grown to the largest record sealed (at most
    /// MAX_PLAINTEXT and the overhead), so no call allocates once it has
    /// reached that size.
    scratch: Vec<u8>,
}

impl Context {
    /// A server context over `cred`; `mutual` (the first call's
    /// `ASC_REQ_MUTUAL_AUTH`) asks the client for a certificate, takes any it
    /// sends (its signature checked, its chain left to the caller, as
    /// Schannel reports it apart) and completes without one too.
    pub fn server(cred: &Credential, mutual: bool) -> Result<Context, SecStatus> {
        Context::server_alpn(cred, mutual, None)
    }

    /// [`Context::server`] with an ALPN list (`alpn`: the wire list of a
    /// SECBUFFER_APPLICATION_PROTOCOLS buffer, most preferred first). The
    /// server picks as Schannel and rustls both do: its own order, the first
    /// the client offered; a client that offered none gets no ALPN; no
    /// overlap fails with `SEC_E_APPLICATION_PROTOCOL_MISMATCH` and the
    /// `no_application_protocol` alert (RFC 7301 3.2).
    pub fn server_alpn(
        cred: &Credential,
        mutual: bool,
        alpn: Option<&[u8]>,
    ) -> Result<Context, SecStatus> {
        let Kind::Server {
            plain,
            mutual: with_auth,
        } = &cred.kind
        else {
            return Err(SecStatus::SEC_E_WRONG_CREDENTIAL_HANDLE);
        };
        let config = if mutual { with_auth } else { plain };
        let config = match alpn {
            Some(list) => {
                let mut own = rustls::ServerConfig::clone(config);
                own.alpn_protocols = ksspi::alpn::wire_names(list).map(<[u8]>::to_vec).collect();
                Arc::new(own)
            }
            None => config.clone(),
        };
        let conn = Conn::server(config).map_err(|e| map_error(&e))?;
        let mut ctx = Context::with(conn, None);
        ctx.alpn = alpn.is_some();
        Ok(ctx)
    }

    /// A client context over `cred`, towards `target` (the SNI and the name the
    /// certificate must carry; `None`: no name, and no validation).
    pub fn client(cred: &Credential, target: Option<&str>) -> Result<Context, SecStatus> {
        Context::client_alpn(cred, target, None)
    }

    /// [`Context::client`] offering an ALPN list (`alpn`: the wire list of a
    /// SECBUFFER_APPLICATION_PROTOCOLS buffer, most preferred first). A
    /// server that picks a protocol not offered fails the handshake
    /// (rustls: `SEC_E_ILLEGAL_MESSAGE`).
    pub fn client_alpn(
        cred: &Credential,
        target: Option<&str>,
        alpn: Option<&[u8]>,
    ) -> Result<Context, SecStatus> {
        let Kind::Client {
            named,
            cache,
            protocols,
            verifier,
            lax,
            manual,
            resolver,
        } = &cred.kind
        else {
            return Err(SecStatus::SEC_E_WRONG_CREDENTIAL_HANDLE);
        };
        let (name, verifier) = match target.filter(|t| !t.is_empty()) {
            Some(t) => (
                ServerName::try_from(t.to_string())
                    .map_err(|_| SecStatus::SEC_E_INVALID_PARAMETER)?,
                if *manual {
                    lax.clone()
                } else {
                    verifier.clone()
                },
            ),
            None => (
                ServerName::try_from("ksspi.invalid").expect("a valid name"),
                lax.clone(),
            ),
        };
        let asked = resolver.clone();
        // The credential's cache, found by the target name; a client
        // without one resumes nothing (super::session_cache).
        let has_target = target.is_some_and(|t| !t.is_empty());
        let config = match alpn {
            // The credential's own, made once (the same settings).
            None if has_target => named.clone(),
            _ => Arc::new(client_config(
                *protocols,
                verifier,
                asked.clone(),
                cache.clone().filter(|_| has_target),
                target.is_some(),
                alpn,
            )?),
        };
        let conn = Conn::client(config, name).map_err(|e| map_error(&e))?;
        let mut ctx = Context::with(conn, Some(asked));
        ctx.alpn = alpn.is_some();
        Ok(ctx)
    }

    fn with(conn: Conn, asked: Option<Arc<AskedFor>>) -> Context {
        Context {
            conn,
            asked,
            pending: Vec::new(),
            started: false,
            established: false,
            failed: None,
            held: None,
            post_handshake: None,
            post_handshake_out: Vec::new(),
            peer_closed: false,
            shutdown: false,
            close_sent: false,
            alpn: false,
            sizes: None,
            scratch: Vec::new(),
        }
    }

    /// Whether the handshake is complete.
    pub fn is_established(&self) -> bool {
        self.established
    }

    /// `dwProtocol` as Schannel reports it (`SP_PROT_TLS1_3_SERVER`, ...).
    pub fn protocol(&self) -> Option<u32> {
        let (server, v) = (!self.conn.is_client(), self.conn.protocol_version());
        Some(match (v?, server) {
            (ProtocolVersion::TLSv1_3, true) => SP_PROT_TLS1_3_SERVER,
            (ProtocolVersion::TLSv1_3, false) => SP_PROT_TLS1_3_CLIENT,
            (ProtocolVersion::TLSv1_2, true) => SP_PROT_TLS1_2_SERVER,
            (ProtocolVersion::TLSv1_2, false) => SP_PROT_TLS1_2_CLIENT,
            _ => return None,
        })
    }

    /// The peer's certificates (DER, leaf first), once it sent them.
    pub fn peer_certificates(&self) -> Vec<Vec<u8>> {
        let certs = self.conn.peer_certificates();
        certs
            .map(|certs| certs.iter().map(|c| c.as_ref().to_vec()).collect())
            .unwrap_or_default()
    }

    /// `SECPKG_ATTR_APPLICATION_PROTOCOL`'s answer once established:
    /// `Success` with the protocol ALPN chose, else `None` (no list given,
    /// or the peer negotiated none). `None` before the handshake completes.
    pub fn application_protocol(&self) -> Option<SecPkgContext_ApplicationProtocol> {
        if !self.established {
            return None;
        }
        let mut out = SecPkgContext_ApplicationProtocol::ZEROED;
        if let Some(id) = self.conn.alpn_protocol().filter(|_| self.alpn) {
            out.ProtoNegoStatus = SecApplicationProtocolNegotiationStatus_Success;
            out.ProtoNegoExt = SecApplicationProtocolNegotiationExt_ALPN;
            out.ProtocolIdSize = id.len() as u8;
            out.ProtocolId[..id.len()].copy_from_slice(id);
        }
        Some(out)
    }

    /// `SECPKG_ATTR_SESSION_INFO`'s answer once established: whether the
    /// handshake resumed a session (`SSL_SESSION_RECONNECT`), and the session
    /// id the model reports (empty: rustls does not expose it; Schannel's
    /// field is "up to 32 bytes"). `None` before the handshake completes.
    pub fn session_info(&self) -> Option<SecPkgContext_SessionInfo> {
        if !self.established {
            return None;
        }
        let mut out = SecPkgContext_SessionInfo::default();
        if self.conn.resumed() {
            out.dwFlags = SSL_SESSION_RECONNECT;
        }
        Some(out)
    }

    /// The negotiated cipher suite's IANA name.
    pub fn cipher_suite_name(&self) -> Option<&'static str> {
        let suite = self.conn.negotiated_cipher_suite();
        suite.and_then(|s| s.suite().as_str())
    }
}
