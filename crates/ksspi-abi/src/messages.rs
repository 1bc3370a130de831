//! The messages. Each has fixed little-endian fields after the header and,
//! for some, variable data whose length a fixed field states (and which must
//! be exactly the rest of the message).

use crate::wire::{DecodeError, Reader, Writer};
use crate::{
    Header, Kind, SessionId, MAX_ALPN_LIST, MAX_MESSAGE, MAX_PEER_CERTIFICATE, MAX_TARGET,
    MAX_TOKEN,
};

/// A message with a fixed part and optional trailing data.
pub trait Message<'a>: Sized {
    /// Its kind.
    const KIND: Kind;
    /// Trailing data (a name, a token).
    fn data(&self) -> &'a [u8] {
        &[]
    }
    /// A second trailing area, after [`Message::data`] (a record reply's
    /// bytes to send, after its plaintext).
    fn data2(&self) -> &'a [u8] {
        &[]
    }
    /// Write the fixed fields.
    fn put(&self, w: &mut Writer<'_>) -> Result<(), DecodeError>;
    /// Read the fixed fields; `rest` is the trailing data.
    fn get(r: &mut Reader<'a>) -> Result<Self, DecodeError>;
}

/// Encode `m` into `out`; returns the bytes written.
pub fn encode<'a, M: Message<'a>>(m: &M, out: &mut [u8]) -> Result<usize, DecodeError> {
    // Measure the fixed part by writing it into a scratch buffer first.
    let mut scratch = [0u8; 256];
    let mut fixed = Writer::new(&mut scratch);
    m.put(&mut fixed)?;
    let size = Header::LEN + fixed.len() + m.data().len() + m.data2().len();
    let fixed_len = fixed.len();
    let mut w = Writer::new(out);
    Header::encode(M::KIND, size, &mut w)?;
    w.bytes(&scratch[..fixed_len])?;
    w.bytes(m.data())?;
    w.bytes(m.data2())?;
    Ok(w.len())
}

/// Encode only the header and fixed fields of `m` into `out` (whose
/// [`Message::data`] the caller has already placed right after them, at the
/// returned offset): for a reply built in place, such as ENCRYPT's.
pub fn encode_prefix<'a, M: Message<'a>>(m: &M, out: &mut [u8]) -> Result<usize, DecodeError> {
    let mut scratch = [0u8; 256];
    let mut fixed = Writer::new(&mut scratch);
    m.put(&mut fixed)?;
    let size = Header::LEN + fixed.len() + m.data().len() + m.data2().len();
    let fixed_len = fixed.len();
    let mut w = Writer::new(out);
    Header::encode(M::KIND, size, &mut w)?;
    w.bytes(&scratch[..fixed_len])?;
    Ok(w.len())
}

/// Decode a whole message of kind `M::KIND` from `buf`.
pub fn decode<'a, M: Message<'a>>(buf: &'a [u8]) -> Result<M, DecodeError> {
    let (_, mut r) = Header::decode(buf, M::KIND)?;
    M::get(&mut r)
}

/// A header alone (GET_INFO's request, CLOSE's reply).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Empty;

impl<'a> Message<'a> for Empty {
    const KIND: Kind = Kind::Empty;
    fn put(&self, _: &mut Writer<'_>) -> Result<(), DecodeError> {
        Ok(())
    }
    fn get(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        r.end().map(|()| Empty)
    }
}

/// Capability bits in [`InfoReply::capabilities`].
pub mod caps {
    /// Running over the host model (no Windows).
    pub const MODEL: u32 = 1;
    /// TLS 1.2.
    pub const TLS12: u32 = 2;
    /// TLS 1.3.
    pub const TLS13: u32 = 4;
    /// The self-test IOCTL.
    pub const SELFTEST: u32 = 8;
    /// Encrypt / decrypt / shutdown.
    pub const RECORD_LAYER: u32 = 16;
    /// OPEN's ALPN layout ([`super::OpenRequest::alpn`]) and the protocol in
    /// STEP's and QUERY's replies. A harness asked for ALPN checks this bit
    /// first: a driver without it would refuse the grown OPEN as a size it
    /// does not know, so the harness stops with `STATUS_REVISION_MISMATCH`
    /// instead, naming the reason.
    pub const ALPN: u32 = 32;
    /// OPEN's client-certificate layout ([`super::ClientAuth`]): a client's
    /// certificate by thumbprint, a server's request for one, and
    /// [`super::step_flags`] in STEP's reply. As with [`ALPN`], a harness
    /// that needs the grown OPEN checks this bit first; a harness that needs
    /// neither sends the first layout, which every driver takes.
    pub const CLIENT_AUTH: u32 = 64;
    /// Session resumption: OPEN's fourth layout ([`super::SessionOptions`]),
    /// whether a handshake resumed in STEP ([`super::step_flags`]) and QUERY
    /// ([`super::QueryReply::resumed`]), and SELFTEST's resume mode
    /// ([`super::SelftestRequest::resume`]). A harness asked for any of them
    /// checks this bit first, as for [`ALPN`].
    pub const RESUMPTION: u32 = 128;
}

/// GET_INFO's reply.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InfoReply {
    /// The driver's version: major, minor, patch.
    pub driver_version: [u16; 3],
    /// [`caps`] bits.
    pub capabilities: u32,
    /// Sessions open now.
    pub sessions_open: u32,
    /// Sessions opened since load.
    pub sessions_total: u64,
    /// Handshakes completed since load.
    pub handshakes_ok: u64,
    /// Handshakes failed since load.
    pub handshakes_failed: u64,
    /// Limit on sessions per file handle.
    pub max_sessions_per_file: u32,
    /// Limit on bytes buffered per session.
    pub max_buffered_per_session: u32,
    /// What the driver has seen of the system's async SSPI since load.
    pub observed: Observed,
}

/// The open points of the async SSPI contract, as the driver observed them
/// on this system since it loaded (its IOCTL sessions, credential calls and
/// self-test runs together). The first run on a real Windows answers each.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// Whether ksecdd.sys exports `SspiAsyncContextRequiresNotify` (found
    /// at run time; 0 or 1).
    pub requires_notify_exported: u32,
    /// Async calls issued.
    pub calls: u64,
    /// Calls that completed without a callback (only knowable where
    /// `SspiAsyncContextRequiresNotify` exists).
    pub completed_without_callback: u64,
    /// Calls whose callback ran before the issuing function returned.
    pub callback_before_return: u64,
    /// Calls whose callback ran after the issuing function returned.
    pub callback_after_return: u64,
    /// Callbacks that ran at PASSIVE_LEVEL.
    pub callbacks_passive: u64,
    /// Callbacks that ran above PASSIVE_LEVEL.
    pub callbacks_dispatch: u64,
    /// `SspiReinitAsyncContext` calls accepted inside a callback.
    pub reinits_in_callback: u64,
    /// `SspiReinitAsyncContext` calls refused inside a callback (retried from
    /// a work item).
    pub reinits_refused_in_callback: u64,
}

impl Observed {
    fn put(&self, w: &mut Writer<'_>) -> Result<(), DecodeError> {
        w.u32(self.requires_notify_exported)?;
        w.u32(0)?;
        for v in [
            self.calls,
            self.completed_without_callback,
            self.callback_before_return,
            self.callback_after_return,
            self.callbacks_passive,
            self.callbacks_dispatch,
            self.reinits_in_callback,
            self.reinits_refused_in_callback,
        ] {
            w.u64(v)?;
        }
        Ok(())
    }

    fn get(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let requires_notify_exported = r.u32()?;
        if requires_notify_exported > 1 || r.u32()? != 0 {
            return Err(DecodeError::Reserved);
        }
        Ok(Observed {
            requires_notify_exported,
            calls: r.u64()?,
            completed_without_callback: r.u64()?,
            callback_before_return: r.u64()?,
            callback_after_return: r.u64()?,
            callbacks_passive: r.u64()?,
            callbacks_dispatch: r.u64()?,
            reinits_in_callback: r.u64()?,
            reinits_refused_in_callback: r.u64()?,
        })
    }
}

impl<'a> Message<'a> for InfoReply {
    const KIND: Kind = Kind::InfoReply;
    fn put(&self, w: &mut Writer<'_>) -> Result<(), DecodeError> {
        for v in self.driver_version {
            w.u16(v)?;
        }
        w.u16(0)?;
        w.u32(self.capabilities)?;
        w.u32(self.sessions_open)?;
        w.u64(self.sessions_total)?;
        w.u64(self.handshakes_ok)?;
        w.u64(self.handshakes_failed)?;
        w.u32(self.max_sessions_per_file)?;
        w.u32(self.max_buffered_per_session)?;
        self.observed.put(w)
    }
    fn get(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        let driver_version = [r.u16()?, r.u16()?, r.u16()?];
        if r.u16()? != 0 {
            return Err(DecodeError::Reserved);
        }
        let m = InfoReply {
            driver_version,
            capabilities: r.u32()?,
            sessions_open: r.u32()?,
            sessions_total: r.u64()?,
            handshakes_ok: r.u64()?,
            handshakes_failed: r.u64()?,
            max_sessions_per_file: r.u32()?,
            max_buffered_per_session: r.u32()?,
            observed: Observed::get(r)?,
        };
        r.end()?;
        Ok(m)
    }
}

/// Protocol bits used by requests.
pub mod proto {
    /// TLS 1.2.
    pub const TLS12: u32 = 1;
    /// TLS 1.3.
    pub const TLS13: u32 = 2;
    /// Every bit this ABI defines.
    pub const ALL: u32 = TLS12 | TLS13;
}

/// Which role a session plays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Role {
    /// AcceptSecurityContext.
    Server = 1,
    /// InitializeSecurityContext.
    Client = 2,
}

/// OPEN's request: a server (certificate by thumbprint in a store) or a client
/// (target name as trailing UTF-8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenRequest<'a> {
    /// The role.
    pub role: Role,
    /// Client: skip certificate validation (`SCH_CRED_MANUAL_CRED_VALIDATION`).
    pub manual_validation: bool,
    /// [`proto`] bits allowed (0 is refused).
    pub protocols: u32,
    /// Server: the certificate's SHA-1 thumbprint.
    pub thumbprint: [u8; 20],
    /// Server: the store name, ASCII, NUL-padded (`"MY"`).
    pub store: [u8; 16],
    /// Client: the target name (UTF-8, at most [`MAX_TARGET`] bytes).
    pub target: &'a [u8],
    /// Client certificates: `None` is OPEN's first layout (what harnesses
    /// before mutual TLS send, still accepted), `Some` the grown one. See
    /// [`ClientAuth`] for how the two are told apart.
    pub client_auth: Option<ClientAuth>,
    /// The ALPN list, most preferred first, in the TLS wire form (each name
    /// 8-bit length-prefixed, 1 to 255 bytes; 1 to [`MAX_ALPN_LIST`] bytes in
    /// all): OPEN's third layout, which needs `client_auth` (encoded as
    /// [`ClientAuth::NONE`] when `None`). See [`AlpnHeader`].
    pub alpn: Option<&'a [u8]>,
    /// Session resumption: `None` is one of the older layouts (the driver
    /// then does what it did before resumption could be asked for: its
    /// cached credentials, with Schannel's defaults), `Some` OPEN's fourth
    /// layout ([`SessionOptions`]).
    pub resumption: Option<Resumption>,
}

/// What an OPEN asks of session resumption ([`SessionOptions`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Resumption {
    /// A full handshake every time: a client's session gets credentials of
    /// its own (Schannel's client cache is the credentials handle's), a
    /// server's credentials refuse reconnects (`SCH_CRED_DISABLE_RECONNECTS`).
    Off = 0,
    /// Resume where Schannel can: a client shares the driver's cached
    /// credentials, whose session cache finds the target name again; a
    /// server's credentials allow reconnects.
    On = 1,
}

/// OPEN's fourth layout: after the ALPN fields ([`AlpnHeader`]), 4 more
/// bytes: the [`Resumption`] choice (u8) and 3 reserved bytes (0). In this
/// layout the ALPN list's length may be 0 (no list). The size rule extends
/// once more: what follows the fixed part is the target alone (first
/// layout), 40 bytes and the target (second), 44 bytes, the target and a
/// list of at least 1 byte (third), or 48 bytes, the target and a list of
/// the stated length, 0 included (fourth). A driver that predates it
/// refuses the size; one that has it says so in [`caps::RESUMPTION`].
pub struct SessionOptions;

impl SessionOptions {
    /// The bytes the session options take in the fixed part.
    pub const LEN: usize = 4;
}

/// OPEN's third layout: after [`ClientAuth`]'s 40 bytes, 4 more (the ALPN
/// list's length, u16, and 2 reserved bytes, 0), and the list itself after
/// the target name. The size rule of [`ClientAuth`] extends: what follows the
/// fixed part is the target alone (first layout), 40 bytes and the target
/// (second), or 44 bytes, the target and the list (third, the list's length
/// stated in its field and at least 1). A driver that predates it refuses
/// the size; one that has it says so in [`caps::ALPN`].
pub struct AlpnHeader;

impl AlpnHeader {
    /// The bytes the ALPN fields take in the fixed part.
    pub const LEN: usize = 4;
}

/// Why an ALPN wire list is refused ([`check_alpn`]), as a decode error: an
/// empty list or an empty name is [`DecodeError::BadField`]
/// (`STATUS_INVALID_PARAMETER`), a list over [`MAX_ALPN_LIST`] bytes
/// [`DecodeError::TooLong`] (`STATUS_INVALID_BUFFER_SIZE`), length prefixes
/// that run past the list [`DecodeError::BadField`].
pub fn check_alpn(list: &[u8]) -> Result<(), DecodeError> {
    if list.is_empty() {
        return Err(DecodeError::BadField);
    }
    if list.len() > MAX_ALPN_LIST {
        return Err(DecodeError::TooLong);
    }
    let mut rest = list;
    while let Some((&len, tail)) = rest.split_first() {
        let len = usize::from(len);
        if len == 0 || tail.len() < len {
            return Err(DecodeError::BadField);
        }
        rest = &tail[len..];
    }
    Ok(())
}

/// What a server asks of its clients' certificates
/// ([`ClientAuth::server_mode`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(u8)]
pub enum ClientCertMode {
    /// Do not ask.
    #[default]
    Ignore = 0,
    /// Ask (`ASC_REQ_MUTUAL_AUTH`); serve a client without one all the same.
    Request = 1,
    /// Ask, and fail the handshake of a client that sent none
    /// (`SEC_E_NO_CREDENTIALS`).
    Require = 2,
}

/// OPEN's client-certificate fields, which grew the message at the end of
/// its fixed part (before the target name): 40 bytes, the server's mode (u8),
/// whether a client certificate follows (u8), 2 reserved bytes (0), the
/// client certificate's SHA-1 thumbprint (20) and its store (16, ASCII,
/// NUL-padded; LocalMachine). The rule for growing a message in ABI version
/// 1: new fields go after the old fixed ones, and the decoder tells the
/// layouts apart by the header's size (the old layout's size is the fixed
/// part plus the target; the new one's 40 more; any other size is refused).
/// A driver therefore accepts an older harness's OPEN unchanged, and answers
/// it in the replies that harness knows ([`step_flags`] stay 0 for it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientAuth {
    /// Server: what it asks of the client's certificate (a client's is
    /// [`ClientCertMode::Ignore`]; anything else is refused).
    pub server_mode: ClientCertMode,
    /// Client: the certificate to offer when the server asks, by SHA-1
    /// thumbprint in `store` (a server's is `None`).
    pub certificate: Option<[u8; 20]>,
    /// Client: the store of `certificate` (`"MY"`, NUL-padded; all zero
    /// when there is none).
    pub store: [u8; 16],
}

impl ClientAuth {
    /// The bytes these fields take.
    pub const LEN: usize = 40;
    /// No client certificate, nothing asked: the grown layout's defaults.
    pub const NONE: ClientAuth = ClientAuth {
        server_mode: ClientCertMode::Ignore,
        certificate: None,
        store: [0; 16],
    };
}

/// Bits of [`StepReply::flags`]. A driver sets them only for a session
/// opened with the grown OPEN ([`ClientAuth`]): an older harness, which
/// refuses a non-zero reserved byte, never sees one.
pub mod step_flags {
    /// A client's: the server asked for a client certificate and the session
    /// had none to give (Schannel's `SEC_I_INCOMPLETE_CREDENTIALS`, answered
    /// by going on without one), in this step or an earlier one.
    pub const CERTIFICATE_REQUESTED: u8 = 1;
    /// With the outcome Established, for a session opened with OPEN's fourth
    /// layout ([`super::SessionOptions`]): the handshake resumed a session
    /// (`SECPKG_ATTR_SESSION_INFO` answered `SSL_SESSION_RECONNECT`).
    pub const RESUMED: u8 = 2;
    /// Likewise: the handshake was full (the query answered without
    /// `SSL_SESSION_RECONNECT`). Neither bit: the driver could not tell (the
    /// provider did not answer), or the session predates the layout.
    pub const FULL_HANDSHAKE: u8 = 4;
    /// Every bit defined.
    pub const ALL: u8 = CERTIFICATE_REQUESTED | RESUMED | FULL_HANDSHAKE;
}

/// The system store servers' certificates are looked up in: `"MY"`,
/// NUL-padded.
pub const STORE_MY: [u8; 16] = *b"MY\0\0\0\0\0\0\0\0\0\0\0\0\0\0";

impl<'a> OpenRequest<'a> {
    /// An OPEN for `role` allowing `protocols` ([`proto`] bits), with the
    /// server certificate `thumbprint` in [`STORE_MY`] and the client's
    /// `target` name, certificate validation on (set the other fields after).
    pub const fn new(role: Role, protocols: u32, thumbprint: [u8; 20], target: &'a [u8]) -> Self {
        OpenRequest {
            role,
            manual_validation: false,
            protocols,
            thumbprint,
            store: STORE_MY,
            target,
            client_auth: Some(ClientAuth::NONE),
            alpn: None,
            resumption: None,
        }
    }
}

impl<'a> Message<'a> for OpenRequest<'a> {
    const KIND: Kind = Kind::OpenRequest;
    fn data(&self) -> &'a [u8] {
        self.target
    }
    fn data2(&self) -> &'a [u8] {
        self.alpn.unwrap_or(&[])
    }
    fn put(&self, w: &mut Writer<'_>) -> Result<(), DecodeError> {
        w.u8(self.role as u8)?;
        w.u8(u8::from(self.manual_validation))?;
        w.u16(u16::try_from(self.target.len()).map_err(|_| DecodeError::TooLong)?)?;
        w.u32(self.protocols)?;
        w.bytes(&self.thumbprint)?;
        w.bytes(&self.store)?;
        let grown = self.alpn.is_some() || self.resumption.is_some();
        let auth = match (&self.client_auth, grown) {
            (Some(auth), _) => Some(auth),
            (None, true) => Some(&ClientAuth::NONE),
            (None, false) => None,
        };
        if let Some(auth) = auth {
            w.u8(auth.server_mode as u8)?;
            w.u8(u8::from(auth.certificate.is_some()))?;
            w.u16(0)?;
            w.bytes(&auth.certificate.unwrap_or([0; 20]))?;
            w.bytes(&auth.store)?;
        }
        if grown {
            let list = self.alpn.unwrap_or(&[]);
            w.u16(u16::try_from(list.len()).map_err(|_| DecodeError::TooLong)?)?;
            w.u16(0)?;
        }
        if let Some(resumption) = self.resumption {
            w.u8(resumption as u8)?;
            w.u8(0)?;
            w.u16(0)?;
        }
        Ok(())
    }
    fn get(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        let role = match r.u8()? {
            1 => Role::Server,
            2 => Role::Client,
            _ => return Err(DecodeError::BadField),
        };
        let manual_validation = match r.u8()? {
            0 => false,
            1 => true,
            _ => return Err(DecodeError::BadField),
        };
        let target_len = usize::from(r.u16()?);
        let protocols = r.u32()?;
        if protocols == 0 || protocols & !proto::ALL != 0 {
            return Err(DecodeError::BadField);
        }
        let thumbprint = r.fixed()?;
        let store: [u8; 16] = r.fixed()?;
        if !store.iter().all(|&b| b == 0 || b.is_ascii_graphic()) {
            return Err(DecodeError::BadField);
        }
        if target_len > MAX_TARGET {
            return Err(DecodeError::TooLong);
        }
        // The layout, by what is left: the target alone (the first layout),
        // the client-certificate fields and the target (the second), those,
        // the ALPN fields, the target and the list (the third), or all that
        // and the session options before the target (the fourth: told from
        // the third by the ALPN length field, read below).
        let left = r.rest().len();
        let third = left >= target_len + ClientAuth::LEN + AlpnHeader::LEN;
        let client_auth = if left == target_len + ClientAuth::LEN || third {
            let server_mode = match r.u8()? {
                0 => ClientCertMode::Ignore,
                1 => ClientCertMode::Request,
                2 => ClientCertMode::Require,
                _ => return Err(DecodeError::BadField),
            };
            let has_certificate = match r.u8()? {
                0 => false,
                1 => true,
                _ => return Err(DecodeError::BadField),
            };
            if r.u16()? != 0 {
                return Err(DecodeError::Reserved);
            }
            let thumbprint: [u8; 20] = r.fixed()?;
            let cert_store: [u8; 16] = r.fixed()?;
            if !cert_store.iter().all(|&b| b == 0 || b.is_ascii_graphic()) {
                return Err(DecodeError::BadField);
            }
            let for_role = match role {
                Role::Server => !has_certificate,
                Role::Client => server_mode == ClientCertMode::Ignore,
            };
            if !for_role || (!has_certificate && (thumbprint != [0; 20] || cert_store != [0; 16])) {
                return Err(DecodeError::BadField);
            }
            Some(ClientAuth {
                server_mode,
                certificate: has_certificate.then_some(thumbprint),
                store: cert_store,
            })
        } else {
            None
        };
        let alpn_len = if third {
            let len = usize::from(r.u16()?);
            if r.u16()? != 0 {
                return Err(DecodeError::Reserved);
            }
            if len > MAX_ALPN_LIST {
                return Err(DecodeError::TooLong);
            }
            Some(len)
        } else {
            None
        };
        // The fourth layout: exactly the options, the target and the list
        // are left.
        let fourth =
            alpn_len.is_some_and(|len| r.rest().len() == SessionOptions::LEN + target_len + len);
        let resumption = if fourth {
            let choice = match r.u8()? {
                0 => Resumption::Off,
                1 => Resumption::On,
                _ => return Err(DecodeError::BadField),
            };
            if r.u8()? != 0 || r.u16()? != 0 {
                return Err(DecodeError::Reserved);
            }
            Some(choice)
        } else {
            None
        };
        let target = r.bytes(target_len)?;
        let alpn = match alpn_len {
            // The fourth layout's empty list: no ALPN.
            Some(0) if fourth => None,
            Some(len) => {
                if r.rest().len() != len {
                    return Err(DecodeError::BadSize);
                }
                let list = r.bytes(len)?;
                check_alpn(list)?;
                Some(list)
            }
            None => None,
        };
        r.end()?;
        if core::str::from_utf8(target).is_err() {
            return Err(DecodeError::BadField);
        }
        Ok(OpenRequest {
            role,
            manual_validation,
            protocols,
            thumbprint,
            store,
            target,
            client_auth,
            alpn,
            resumption,
        })
    }
}

/// OPEN's reply: the acquisition's status and, when it succeeded, the session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenReply {
    /// The SECURITY_STATUS of acquiring the session's credentials.
    pub status: i32,
    /// The new session (0 when `status` is an error).
    pub session: SessionId,
}

impl<'a> Message<'a> for OpenReply {
    const KIND: Kind = Kind::OpenReply;
    fn put(&self, w: &mut Writer<'_>) -> Result<(), DecodeError> {
        w.i32(self.status)?;
        w.u32(0)?;
        w.u64(self.session.0)
    }
    fn get(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        let status = r.i32()?;
        if r.u32()? != 0 {
            return Err(DecodeError::Reserved);
        }
        let session = SessionId(r.u64()?);
        r.end()?;
        Ok(OpenReply { status, session })
    }
}

/// STEP's request: bytes received from the peer (empty for a client's first step).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StepRequest<'a> {
    /// The session.
    pub session: SessionId,
    /// The bytes (at most [`MAX_TOKEN`]).
    pub input: &'a [u8],
}

impl<'a> Message<'a> for StepRequest<'a> {
    const KIND: Kind = Kind::StepRequest;
    fn data(&self) -> &'a [u8] {
        self.input
    }
    fn put(&self, w: &mut Writer<'_>) -> Result<(), DecodeError> {
        w.u64(self.session.0)?;
        w.u32(u32::try_from(self.input.len()).map_err(|_| DecodeError::TooLong)?)?;
        w.u32(0)
    }
    fn get(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        let session = SessionId(r.u64()?);
        let len = r.u32()? as usize;
        if r.u32()? != 0 {
            return Err(DecodeError::Reserved);
        }
        if len > MAX_TOKEN {
            return Err(DecodeError::TooLong);
        }
        let input = r.bytes(len)?;
        r.end()?;
        Ok(StepRequest { session, input })
    }
}

/// How a step ended, in [`StepReply::outcome`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum StepOutcome {
    /// Send the output, then step again with the peer's reply.
    NeedInput = 1,
    /// Handshake complete.
    Established = 2,
    /// Handshake failed with `status`; the output is the alert to send.
    Failed = 3,
}

/// STEP's reply: status, outcome and the bytes to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StepReply<'a> {
    /// The last SECURITY_STATUS.
    pub status: i32,
    /// How the step ended.
    pub outcome: StepOutcome,
    /// `SECBUFFER_MISSING` when waiting for the rest of a record.
    pub missing: u32,
    /// Bytes kept after the handshake (SECBUFFER_EXTRA) for the record layer.
    pub extra: u32,
    /// Once established: the negotiated protocol (`SP_PROT_*`), else 0.
    pub protocol: u32,
    /// Once established: the cipher's `ALG_ID` (0 if it has none), else 0.
    pub cipher: u32,
    /// [`step_flags`] bits (once the reserved byte after `outcome`; always 0
    /// for a session opened with OPEN's first layout).
    pub flags: u8,
    /// The ALPN negotiation's status once established
    /// (`SEC_APPLICATION_PROTOCOL_NEGOTIATION_STATUS`: 0 none, 1 success);
    /// always 0 for a session opened without an ALPN list, so a harness
    /// older than ALPN never sees it (it was a reserved byte).
    pub alpn_status: u8,
    /// The bytes to send to the peer.
    pub output: &'a [u8],
    /// The protocol ALPN chose (at most 255 bytes), after `output`; empty
    /// unless `alpn_status` is 1. Its length is the byte after
    /// `alpn_status` (reserved before ALPN).
    pub alpn: &'a [u8],
}

impl<'a> Message<'a> for StepReply<'a> {
    const KIND: Kind = Kind::StepReply;
    fn data(&self) -> &'a [u8] {
        self.output
    }
    fn data2(&self) -> &'a [u8] {
        self.alpn
    }
    fn put(&self, w: &mut Writer<'_>) -> Result<(), DecodeError> {
        w.i32(self.status)?;
        w.u8(self.outcome as u8)?;
        w.u8(self.flags)?;
        w.u8(self.alpn_status)?;
        w.u8(u8::try_from(self.alpn.len()).map_err(|_| DecodeError::TooLong)?)?;
        w.u32(self.missing)?;
        w.u32(self.extra)?;
        w.u32(self.protocol)?;
        w.u32(self.cipher)?;
        w.u32(u32::try_from(self.output.len()).map_err(|_| DecodeError::TooLong)?)
    }
    fn get(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        let status = r.i32()?;
        let outcome = match r.u8()? {
            1 => StepOutcome::NeedInput,
            2 => StepOutcome::Established,
            3 => StepOutcome::Failed,
            _ => return Err(DecodeError::BadField),
        };
        let flags = r.u8()?;
        if flags & !step_flags::ALL != 0 {
            return Err(DecodeError::Reserved);
        }
        // Resumed and full at once, or either before the handshake ends:
        // not a reply a driver sends.
        let told = flags & (step_flags::RESUMED | step_flags::FULL_HANDSHAKE);
        if told == step_flags::RESUMED | step_flags::FULL_HANDSHAKE
            || (told != 0 && outcome != StepOutcome::Established)
        {
            return Err(DecodeError::BadField);
        }
        let alpn_status = r.u8()?;
        let alpn_len = usize::from(r.u8()?);
        if alpn_status > 1 || (alpn_status == 0 && alpn_len != 0) {
            return Err(DecodeError::BadField);
        }
        let missing = r.u32()?;
        let extra = r.u32()?;
        let protocol = r.u32()?;
        let cipher = r.u32()?;
        let len = r.u32()? as usize;
        if len > MAX_TOKEN * 2 {
            return Err(DecodeError::TooLong);
        }
        let output = r.bytes(len)?;
        let alpn = r.bytes(alpn_len)?;
        r.end()?;
        Ok(StepReply {
            status,
            outcome,
            missing,
            extra,
            protocol,
            cipher,
            flags,
            alpn_status,
            output,
            alpn,
        })
    }
}

/// CLOSE's request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CloseRequest {
    /// The session.
    pub session: SessionId,
}

impl<'a> Message<'a> for CloseRequest {
    const KIND: Kind = Kind::CloseRequest;
    fn put(&self, w: &mut Writer<'_>) -> Result<(), DecodeError> {
        w.u64(self.session.0)
    }
    fn get(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        let session = SessionId(r.u64()?);
        r.end()?;
        Ok(CloseRequest { session })
    }
}

/// Most handshakes one SELFTEST runs ([`SelftestRequest::count`]). With
/// [`MAX_SELFTEST_BYTES`] this bounds a run's work: at most this many
/// handshakes, each followed by at most twice `MAX_SELFTEST_BYTES` of
/// records.
pub const MAX_SELFTEST_COUNT: u32 = 100_000;
/// Most handshakes one SELFTEST runs at once
/// ([`SelftestRequest::concurrency`]); a driver may allow fewer (ksspi's:
/// half its session limit, two sessions per handshake: 512 with the
/// driver's default table) and refuses more with `STATUS_INVALID_PARAMETER`.
/// 100 000: the bench's scale run over the model, with a table sized for it.
pub const MAX_SELFTEST_CONCURRENCY: u32 = 100_000;
/// Most application bytes one SELFTEST pair exchanges each way
/// ([`SelftestRequest::bytes`]): 1 MiB.
pub const MAX_SELFTEST_BYTES: u32 = 1 << 20;

/// SELFTEST's request (the model-only knobs are refused on Windows). Every
/// figure is bounded: `count` 1 to [`MAX_SELFTEST_COUNT`], `concurrency` 1
/// to [`MAX_SELFTEST_CONCURRENCY`], `bytes` 0 to [`MAX_SELFTEST_BYTES`]; a
/// request outside them does not decode ([`DecodeError::BadField`], which a
/// driver completes with `STATUS_INVALID_PARAMETER`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SelftestRequest {
    /// Handshakes to run (1 to [`MAX_SELFTEST_COUNT`]).
    pub count: u32,
    /// How many at once (1 to [`MAX_SELFTEST_CONCURRENCY`]).
    pub concurrency: u32,
    /// [`proto`] bits: which versions to use (both: alternate).
    pub protocols: u32,
    /// Model: completion mode (0 default, 1 async, 2 inline, 3 sync, 4 mixed).
    pub completion: u8,
    /// Model: callback IRQL (0 default, 1 passive, 2 dispatch, 3 mixed).
    pub callback_irql: u8,
    /// Model: the seed.
    pub seed: u64,
    /// The server certificate's thumbprint (zero: the driver's test certificate).
    pub thumbprint: [u8; 20],
    /// Application bytes each pair exchanges each way after the handshake
    /// (record layer; 0 to [`MAX_SELFTEST_BYTES`]).
    pub bytes: u32,
    /// Run each pair twice over the same credentials towards a target name
    /// of its own, and count the second handshakes that resumed
    /// ([`SelftestReply::resumption`]); the first byte of what was a reserved
    /// u16 (a driver without [`caps::RESUMPTION`] refuses it).
    pub resume: bool,
}

impl<'a> Message<'a> for SelftestRequest {
    const KIND: Kind = Kind::SelftestRequest;
    fn put(&self, w: &mut Writer<'_>) -> Result<(), DecodeError> {
        w.u32(self.count)?;
        w.u32(self.concurrency)?;
        w.u32(self.protocols)?;
        w.u8(self.completion)?;
        w.u8(self.callback_irql)?;
        w.u8(u8::from(self.resume))?;
        w.u8(0)?;
        w.u64(self.seed)?;
        w.bytes(&self.thumbprint)?;
        w.u32(self.bytes)
    }
    fn get(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        let m = SelftestRequest {
            count: r.u32()?,
            concurrency: r.u32()?,
            protocols: r.u32()?,
            completion: r.u8()?,
            callback_irql: r.u8()?,
            resume: match r.u8()? {
                0 => false,
                1 => true,
                _ => return Err(DecodeError::BadField),
            },
            seed: {
                if r.u8()? != 0 {
                    return Err(DecodeError::Reserved);
                }
                r.u64()?
            },
            thumbprint: r.fixed()?,
            bytes: r.u32()?,
        };
        r.end()?;
        if m.count == 0 || m.concurrency == 0 || m.protocols == 0 || m.protocols & !proto::ALL != 0
        {
            return Err(DecodeError::BadField);
        }
        if m.count > MAX_SELFTEST_COUNT
            || m.concurrency > MAX_SELFTEST_CONCURRENCY
            || m.bytes > MAX_SELFTEST_BYTES
        {
            return Err(DecodeError::BadField);
        }
        if m.completion > 4 || m.callback_irql > 3 {
            return Err(DecodeError::BadField);
        }
        Ok(m)
    }
}

/// SELFTEST's reply: counters and timings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SelftestReply {
    /// Handshakes that completed.
    pub handshakes_ok: u64,
    /// Handshakes that failed.
    pub handshakes_failed: u64,
    /// Sessions opened (two per handshake).
    pub sessions: u64,
    /// Async contexts created for handshakes.
    pub async_contexts_created: u64,
    /// Context reinitialisations.
    pub reinits: u64,
    /// Steps run.
    pub steps: u64,
    /// Calls completed later (callback after the issuer returned).
    pub completions_pending: u64,
    /// Calls whose callback ran before the issuer returned.
    pub completions_inline_callback: u64,
    /// Calls completed synchronously without a callback.
    pub completions_sync_no_callback: u64,
    /// Callbacks at PASSIVE_LEVEL.
    pub callbacks_passive: u64,
    /// Callbacks at DISPATCH_LEVEL.
    pub callbacks_dispatch: u64,
    /// Continuations queued as work items.
    pub work_items: u64,
    /// Wall time.
    pub elapsed_us: u64,
    /// Handshake latency, median.
    pub latency_p50_us: u64,
    /// Handshake latency, 99th percentile.
    pub latency_p99_us: u64,
    /// Handshake latency, worst.
    pub latency_max_us: u64,
    /// Objects alive at the end (the model's verifier; 0 on Windows).
    pub leaked: u64,
    /// Application bytes checked (record layer).
    pub bytes_checked: u64,
    /// A resume run's counts ([`SelftestRequest::resume`]): present in the
    /// reply, after the other fields, only when the request asked for one,
    /// so a harness that predates resumption reads the reply it knows.
    pub resumption: Option<SelftestResumption>,
}

/// What a resume run saw of its second handshakes, from the client side
/// (`SECPKG_ATTR_SESSION_INFO`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SelftestResumption {
    /// Second handshakes that resumed.
    pub resumed: u64,
    /// Second handshakes that were full: the resumption was refused or
    /// nothing was offered (the fallback).
    pub full: u64,
    /// Handshakes (first or second) whose resumption the provider did not
    /// tell.
    pub unknown: u64,
    /// First handshakes that resumed (a session left in the cache by an
    /// earlier run towards the same target name).
    pub first_resumed: u64,
}

impl SelftestResumption {
    fn fields(&self) -> [u64; 4] {
        [self.resumed, self.full, self.unknown, self.first_resumed]
    }
}

impl SelftestReply {
    fn fields(&self) -> [u64; 18] {
        [
            self.handshakes_ok,
            self.handshakes_failed,
            self.sessions,
            self.async_contexts_created,
            self.reinits,
            self.steps,
            self.completions_pending,
            self.completions_inline_callback,
            self.completions_sync_no_callback,
            self.callbacks_passive,
            self.callbacks_dispatch,
            self.work_items,
            self.elapsed_us,
            self.latency_p50_us,
            self.latency_p99_us,
            self.latency_max_us,
            self.leaked,
            self.bytes_checked,
        ]
    }
}

impl<'a> Message<'a> for SelftestReply {
    const KIND: Kind = Kind::SelftestReply;
    fn put(&self, w: &mut Writer<'_>) -> Result<(), DecodeError> {
        self.fields().iter().try_for_each(|&v| w.u64(v))?;
        match &self.resumption {
            Some(r) => r.fields().iter().try_for_each(|&v| w.u64(v)),
            None => Ok(()),
        }
    }
    fn get(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        let mut v = [0u64; 18];
        for slot in &mut v {
            *slot = r.u64()?;
        }
        // A resume run's counts follow, or nothing (the reply's two sizes).
        let resumption = if r.rest().is_empty() {
            None
        } else {
            Some(SelftestResumption {
                resumed: r.u64()?,
                full: r.u64()?,
                unknown: r.u64()?,
                first_resumed: r.u64()?,
            })
        };
        r.end()?;
        let [handshakes_ok, handshakes_failed, sessions, async_contexts_created, reinits, steps, completions_pending, completions_inline_callback, completions_sync_no_callback, callbacks_passive, callbacks_dispatch, work_items, elapsed_us, latency_p50_us, latency_p99_us, latency_max_us, leaked, bytes_checked] =
            v;
        Ok(SelftestReply {
            handshakes_ok,
            handshakes_failed,
            sessions,
            async_contexts_created,
            reinits,
            steps,
            completions_pending,
            completions_inline_callback,
            completions_sync_no_callback,
            callbacks_passive,
            callbacks_dispatch,
            work_items,
            elapsed_us,
            latency_p50_us,
            latency_p99_us,
            latency_max_us,
            leaked,
            bytes_checked,
            resumption,
        })
    }
}

/// A session id and bytes: ENCRYPT's request (plaintext) and DECRYPT's
/// (bytes received from the peer), at most [`MAX_TOKEN`] bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordRequest<'a> {
    /// The session.
    pub session: SessionId,
    /// The bytes.
    pub bytes: &'a [u8],
}

/// ENCRYPT's request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EncryptRequest<'a>(pub RecordRequest<'a>);

/// DECRYPT's request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecryptRequest<'a>(pub RecordRequest<'a>);

fn put_record_request(m: &RecordRequest<'_>, w: &mut Writer<'_>) -> Result<(), DecodeError> {
    w.u64(m.session.0)?;
    w.u32(u32::try_from(m.bytes.len()).map_err(|_| DecodeError::TooLong)?)?;
    w.u32(0)
}

fn get_record_request<'a>(r: &mut Reader<'a>) -> Result<RecordRequest<'a>, DecodeError> {
    let session = SessionId(r.u64()?);
    let len = r.u32()? as usize;
    if r.u32()? != 0 {
        return Err(DecodeError::Reserved);
    }
    if len > MAX_TOKEN {
        return Err(DecodeError::TooLong);
    }
    let bytes = r.bytes(len)?;
    r.end()?;
    Ok(RecordRequest { session, bytes })
}

impl<'a> Message<'a> for EncryptRequest<'a> {
    const KIND: Kind = Kind::EncryptRequest;
    fn data(&self) -> &'a [u8] {
        self.0.bytes
    }
    fn put(&self, w: &mut Writer<'_>) -> Result<(), DecodeError> {
        put_record_request(&self.0, w)
    }
    fn get(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        get_record_request(r).map(EncryptRequest)
    }
}

impl<'a> Message<'a> for DecryptRequest<'a> {
    const KIND: Kind = Kind::DecryptRequest;
    fn data(&self) -> &'a [u8] {
        self.0.bytes
    }
    fn put(&self, w: &mut Writer<'_>) -> Result<(), DecodeError> {
        put_record_request(&self.0, w)
    }
    fn get(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        get_record_request(r).map(DecryptRequest)
    }
}

/// ENCRYPT's reply: the TLS records to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EncryptReply<'a> {
    /// The SECURITY_STATUS (`SEC_E_OK`; an error comes with no records).
    pub status: i32,
    /// Records the plaintext was split into (at most the stream sizes'
    /// maximum message each).
    pub records: u32,
    /// The records, back to back.
    pub output: &'a [u8],
}

impl EncryptReply<'_> {
    /// Where the records start in an encoded reply (header and fixed fields
    /// before them), for a driver that seals in place.
    pub const DATA_OFFSET: usize = Header::LEN + 16;
}

impl<'a> Message<'a> for EncryptReply<'a> {
    const KIND: Kind = Kind::EncryptReply;
    fn data(&self) -> &'a [u8] {
        self.output
    }
    fn put(&self, w: &mut Writer<'_>) -> Result<(), DecodeError> {
        w.i32(self.status)?;
        w.u32(self.records)?;
        w.u32(u32::try_from(self.output.len()).map_err(|_| DecodeError::TooLong)?)?;
        w.u32(0)
    }
    fn get(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        let status = r.i32()?;
        let records = r.u32()?;
        let len = r.u32()? as usize;
        if r.u32()? != 0 {
            return Err(DecodeError::Reserved);
        }
        if len > MAX_MESSAGE {
            return Err(DecodeError::TooLong);
        }
        let output = r.bytes(len)?;
        r.end()?;
        Ok(EncryptReply {
            status,
            records,
            output,
        })
    }
}

/// How a decrypt or a shutdown ended, in [`RecordReply::outcome`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordOutcome {
    /// Every complete record was decrypted; `missing` bytes of a partial
    /// record are awaited (0: nothing buffered).
    Data = 1,
    /// The peer sent close_notify; nothing more will be decrypted.
    PeerClosed = 2,
    /// Shutdown: the output is the close_notify to send.
    ShutDown = 3,
    /// The record layer failed with `status`; the session is unusable.
    Failed = 4,
}

/// DECRYPT's and SHUTDOWN's reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordReply<'a> {
    /// The last SECURITY_STATUS (`SEC_E_OK`, `SEC_E_INCOMPLETE_MESSAGE`,
    /// `SEC_I_CONTEXT_EXPIRED`, or the error).
    pub status: i32,
    /// How it ended.
    pub outcome: RecordOutcome,
    /// `SECBUFFER_MISSING` of a buffered partial record.
    pub missing: u32,
    /// Post-handshake messages (`SEC_I_RENEGOTIATE`) handed to the handshake call.
    pub renegotiations: u32,
    /// The plaintext.
    pub data: &'a [u8],
    /// Bytes to send to the peer (a post-handshake answer, close_notify).
    pub output: &'a [u8],
}

impl<'a> Message<'a> for RecordReply<'a> {
    const KIND: Kind = Kind::RecordReply;
    fn data(&self) -> &'a [u8] {
        self.data
    }
    fn data2(&self) -> &'a [u8] {
        self.output
    }
    fn put(&self, w: &mut Writer<'_>) -> Result<(), DecodeError> {
        w.i32(self.status)?;
        w.u8(self.outcome as u8)?;
        w.u8(0)?;
        w.u16(0)?;
        w.u32(self.missing)?;
        w.u32(self.renegotiations)?;
        w.u32(u32::try_from(self.data.len()).map_err(|_| DecodeError::TooLong)?)?;
        w.u32(u32::try_from(self.output.len()).map_err(|_| DecodeError::TooLong)?)
    }
    fn get(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        let status = r.i32()?;
        let outcome = match r.u8()? {
            1 => RecordOutcome::Data,
            2 => RecordOutcome::PeerClosed,
            3 => RecordOutcome::ShutDown,
            4 => RecordOutcome::Failed,
            _ => return Err(DecodeError::BadField),
        };
        if r.u8()? != 0 || r.u16()? != 0 {
            return Err(DecodeError::Reserved);
        }
        let missing = r.u32()?;
        let renegotiations = r.u32()?;
        let data_len = r.u32()? as usize;
        let output_len = r.u32()? as usize;
        if data_len > MAX_MESSAGE || output_len > MAX_MESSAGE {
            return Err(DecodeError::TooLong);
        }
        let data = r.bytes(data_len)?;
        let output = r.bytes(output_len)?;
        r.end()?;
        Ok(RecordReply {
            status,
            outcome,
            missing,
            renegotiations,
            data,
            output,
        })
    }
}

/// SHUTDOWN's request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShutdownRequest {
    /// The session.
    pub session: SessionId,
}

impl<'a> Message<'a> for ShutdownRequest {
    const KIND: Kind = Kind::ShutdownRequest;
    fn put(&self, w: &mut Writer<'_>) -> Result<(), DecodeError> {
        w.u64(self.session.0)
    }
    fn get(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        let session = SessionId(r.u64()?);
        r.end()?;
        Ok(ShutdownRequest { session })
    }
}

/// QUERY's request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueryRequest {
    /// The session.
    pub session: SessionId,
}

impl<'a> Message<'a> for QueryRequest {
    const KIND: Kind = Kind::QueryRequest;
    fn put(&self, w: &mut Writer<'_>) -> Result<(), DecodeError> {
        w.u64(self.session.0)
    }
    fn get(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        let session = SessionId(r.u64()?);
        r.end()?;
        Ok(QueryRequest { session })
    }
}

/// QUERY's reply: `SECPKG_ATTR_CONNECTION_INFO`, `SECPKG_ATTR_STREAM_SIZES`
/// and the leaf of `SECPKG_ATTR_REMOTE_CERTIFICATES`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueryReply<'a> {
    /// `SP_PROT_*`.
    pub protocol: u32,
    /// The cipher's `ALG_ID` (0 if it has none, as for ChaCha20-Poly1305).
    pub cipher: u32,
    /// Its strength in bits.
    pub cipher_strength: u32,
    /// The hash's `ALG_ID`.
    pub hash: u32,
    /// Its strength in bits.
    pub hash_strength: u32,
    /// The key exchange's `ALG_ID`.
    pub exchange: u32,
    /// Its strength in bits.
    pub exchange_strength: u32,
    /// Record header bytes.
    pub header: u32,
    /// Record trailer bytes, at most.
    pub trailer: u32,
    /// Largest plaintext in one record.
    pub max_message: u32,
    /// Certificates the peer presented (0: none).
    pub peer_certificates: u32,
    /// The leaf's size in bytes (it is carried only up to
    /// [`MAX_PEER_CERTIFICATE`]).
    pub leaf_size: u32,
    /// The peer's leaf certificate, DER (empty if none or too large).
    pub leaf: &'a [u8],
    /// The ALPN negotiation's status (0 none, 1 success), in what was the
    /// first reserved byte; 0 for a session opened without an ALPN list.
    pub alpn_status: u8,
    /// The protocol ALPN chose, after the leaf (its length in the next byte,
    /// reserved before ALPN); empty unless `alpn_status` is 1.
    pub alpn: &'a [u8],
    /// Whether the handshake resumed a session, in what was the third
    /// reserved byte ([`resumed`]'s values): not known (the provider did not
    /// answer `SECPKG_ATTR_SESSION_INFO`, or the session was opened with an
    /// older OPEN layout, whose harness refuses anything else here), a full
    /// handshake, or resumed.
    pub resumed: u8,
}

/// [`QueryReply::resumed`]'s values.
pub mod resumed {
    /// Not known.
    pub const UNKNOWN: u8 = 0;
    /// A full handshake.
    pub const FULL: u8 = 1;
    /// An abbreviated handshake (a cached session or a ticket).
    pub const RESUMED: u8 = 2;
}

impl<'a> Message<'a> for QueryReply<'a> {
    const KIND: Kind = Kind::QueryReply;
    fn data(&self) -> &'a [u8] {
        self.leaf
    }
    fn data2(&self) -> &'a [u8] {
        self.alpn
    }
    fn put(&self, w: &mut Writer<'_>) -> Result<(), DecodeError> {
        for v in [
            self.protocol,
            self.cipher,
            self.cipher_strength,
            self.hash,
            self.hash_strength,
            self.exchange,
            self.exchange_strength,
            self.header,
            self.trailer,
            self.max_message,
            self.peer_certificates,
            self.leaf_size,
        ] {
            w.u32(v)?;
        }
        w.u32(u32::try_from(self.leaf.len()).map_err(|_| DecodeError::TooLong)?)?;
        w.u8(self.alpn_status)?;
        w.u8(u8::try_from(self.alpn.len()).map_err(|_| DecodeError::TooLong)?)?;
        w.u8(self.resumed)?;
        w.u8(0)
    }
    fn get(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        let mut v = [0u32; 12];
        for slot in &mut v {
            *slot = r.u32()?;
        }
        let len = r.u32()? as usize;
        let alpn_status = r.u8()?;
        let alpn_len = usize::from(r.u8()?);
        let resumed_byte = r.u8()?;
        if resumed_byte > resumed::RESUMED {
            return Err(DecodeError::BadField);
        }
        if r.u8()? != 0 {
            return Err(DecodeError::Reserved);
        }
        if alpn_status > 1 || (alpn_status == 0 && alpn_len != 0) {
            return Err(DecodeError::BadField);
        }
        if len > MAX_PEER_CERTIFICATE {
            return Err(DecodeError::TooLong);
        }
        let leaf = r.bytes(len)?;
        let alpn = r.bytes(alpn_len)?;
        r.end()?;
        let [protocol, cipher, cipher_strength, hash, hash_strength, exchange, exchange_strength, header, trailer, max_message, peer_certificates, leaf_size] =
            v;
        Ok(QueryReply {
            protocol,
            cipher,
            cipher_strength,
            hash,
            hash_strength,
            exchange,
            exchange_strength,
            header,
            trailer,
            max_message,
            peer_certificates,
            leaf_size,
            leaf,
            alpn_status,
            alpn,
            resumed: resumed_byte,
        })
    }
}
