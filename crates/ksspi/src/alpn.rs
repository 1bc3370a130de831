//! ALPN (RFC 7301) as Schannel takes it: an ordered list of protocol names,
//! handed to the handshake calls as a `SECBUFFER_APPLICATION_PROTOCOLS` input
//! buffer holding a [`SEC_APPLICATION_PROTOCOLS`] with one
//! [`SEC_APPLICATION_PROTOCOL_LIST`] of extension
//! `SecApplicationProtocolNegotiationExt_ALPN` (sspi.h).
//!
//! [`ApplicationProtocols`] is the validated list, built once at setup (the
//! only allocation); [`parse_buffer`] reads such a buffer back (the host
//! model's Schannel uses it, and the tests).
//!
//! The buffer's layout is msquic's (`src/platform/tls_schannel.c`,
//! `CxPlatTlsSecConfigCreate` / `CxPlatTlsInitialize`): `ProtocolListsSize` =
//! `FIELD_OFFSET(SEC_APPLICATION_PROTOCOL_LIST, ProtocolList)` + the list's
//! bytes, and the buffer's size `FIELD_OFFSET(SEC_APPLICATION_PROTOCOLS,
//! ProtocolLists)` more; the list itself is the TLS extension's
//! `ProtocolNameList` without its 2-byte length (each name 8-bit
//! length-prefixed, most preferred first).

use crate::status::SecStatus;
use crate::sys::*;
use alloc::vec::Vec;

/// The most bytes of names (with their 1-byte length prefixes) a list may
/// hold. The TLS extension allows 2^16 - 2 (a 16-bit length, RFC 7301 3.1);
/// ksspi bounds it far lower so the IOCTL contract can carry it in one OPEN
/// and a session's setup allocates little: 1 KiB is over 100 names of the
/// IANA registry's typical size ("h2", "http/1.1", "acme-tls/1").
pub const MAX_ALPN_LIST: usize = 1024;

/// The longest protocol name: `MAX_PROTOCOL_ID_SIZE` (sspi.h, 255), which is
/// also the TLS limit (RFC 7301: a 1-byte length).
pub const MAX_ALPN_NAME: usize = MAX_PROTOCOL_ID_SIZE as usize;

/// What a handshake fails with when the server selected a protocol this
/// client did not offer (RFC 7301 3.2: the client must then abort). The
/// model's Schannel (rustls) refuses it itself with `SEC_E_ILLEGAL_MESSAGE`;
/// the engine checks again after `SEC_E_OK`, as msquic does after its
/// `SECPKG_ATTR_APPLICATION_PROTOCOL` query ("ALPN Mismatch").
pub const UNOFFERED_APPLICATION_PROTOCOL: SecStatus =
    SecStatus::SEC_E_APPLICATION_PROTOCOL_MISMATCH;

/// Why a list was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlpnError {
    /// No names at all (leave ALPN off instead).
    Empty,
    /// A name of zero bytes (RFC 7301: names are 1 to 255 bytes).
    EmptyName,
    /// A name over [`MAX_ALPN_NAME`] bytes.
    NameTooLong,
    /// The names take over [`MAX_ALPN_LIST`] bytes.
    ListTooLong,
    /// A wire list whose length prefixes do not add up to its size.
    Malformed,
}

impl AlpnError {
    /// What the error is, for messages.
    pub const fn describe(self) -> &'static str {
        match self {
            AlpnError::Empty => "the ALPN list is empty",
            AlpnError::EmptyName => "an ALPN protocol name is empty",
            AlpnError::NameTooLong => "an ALPN protocol name is over 255 bytes",
            AlpnError::ListTooLong => "the ALPN list is over 1024 bytes",
            AlpnError::Malformed => "the ALPN list's length prefixes do not add up",
        }
    }
}

impl core::fmt::Display for AlpnError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.describe())
    }
}

/// Check a wire list (names each 8-bit length-prefixed): the error if it is
/// not a valid, non-empty list within [`MAX_ALPN_LIST`].
pub fn check_wire(list: &[u8]) -> Result<(), AlpnError> {
    if list.is_empty() {
        return Err(AlpnError::Empty);
    }
    if list.len() > MAX_ALPN_LIST {
        return Err(AlpnError::ListTooLong);
    }
    let mut rest = list;
    while let Some((&len, tail)) = rest.split_first() {
        if len == 0 {
            return Err(AlpnError::EmptyName);
        }
        let len = usize::from(len);
        if tail.len() < len {
            return Err(AlpnError::Malformed);
        }
        rest = &tail[len..];
    }
    Ok(())
}

/// The names of a wire list (which [`check_wire`] accepted), in order.
pub fn wire_names(list: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = list;
    core::iter::from_fn(move || {
        let (&len, tail) = rest.split_first()?;
        let name = tail.get(..usize::from(len))?;
        rest = &tail[usize::from(len)..];
        Some(name)
    })
}

/// A session's ALPN list, validated, with the `SEC_APPLICATION_PROTOCOLS`
/// buffer the handshake calls take already laid out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplicationProtocols {
    /// The whole `SEC_APPLICATION_PROTOCOLS` (the wire list at
    /// [`LIST_AT`]).
    buffer: Vec<u8>,
}

/// Where the wire list starts in the buffer.
const LIST_AT: usize = SEC_APPLICATION_PROTOCOLS_HEADER + SEC_APPLICATION_PROTOCOL_LIST_HEADER;

impl ApplicationProtocols {
    /// From names, most preferred first.
    pub fn new<'a, I: IntoIterator<Item = &'a [u8]>>(names: I) -> Result<Self, AlpnError> {
        let mut list = Vec::new();
        for name in names {
            if name.is_empty() {
                return Err(AlpnError::EmptyName);
            }
            if name.len() > MAX_ALPN_NAME {
                return Err(AlpnError::NameTooLong);
            }
            if list.len() + 1 + name.len() > MAX_ALPN_LIST {
                return Err(AlpnError::ListTooLong);
            }
            list.push(name.len() as u8);
            list.extend_from_slice(name);
        }
        Self::from_wire(&list)
    }

    /// From a wire list (each name 8-bit length-prefixed), as the IOCTL
    /// contract carries it.
    pub fn from_wire(list: &[u8]) -> Result<Self, AlpnError> {
        check_wire(list)?;
        let mut buffer = Vec::with_capacity(LIST_AT + list.len());
        // Within MAX_ALPN_LIST: both sizes fit their fields.
        let lists_size = (SEC_APPLICATION_PROTOCOL_LIST_HEADER + list.len()) as u32;
        buffer.extend_from_slice(&lists_size.to_le_bytes());
        buffer.extend_from_slice(&SecApplicationProtocolNegotiationExt_ALPN.to_le_bytes());
        buffer.extend_from_slice(&(list.len() as u16).to_le_bytes());
        buffer.extend_from_slice(list);
        Ok(ApplicationProtocols { buffer })
    }

    /// The `SEC_APPLICATION_PROTOCOLS` bytes, for a
    /// `SECBUFFER_APPLICATION_PROTOCOLS` input buffer.
    pub fn buffer(&self) -> &[u8] {
        &self.buffer
    }

    /// The buffer as a `SecBuffer` takes it: its address and size. Schannel
    /// only reads an input buffer of this type.
    pub fn buffer_ptr(&mut self) -> (*mut core::ffi::c_void, u32) {
        // Within MAX_ALPN_LIST and the headers: fits a u32.
        (self.buffer.as_mut_ptr().cast(), self.buffer.len() as u32)
    }

    /// The wire list (each name 8-bit length-prefixed).
    pub fn wire(&self) -> &[u8] {
        &self.buffer[LIST_AT..]
    }

    /// The names, most preferred first.
    pub fn names(&self) -> impl Iterator<Item = &[u8]> {
        wire_names(self.wire())
    }

    /// Whether `name` is one of the list's.
    pub fn contains(&self, name: &[u8]) -> bool {
        self.names().any(|n| n == name)
    }
}

/// Read a `SEC_APPLICATION_PROTOCOLS` buffer: the ALPN list's wire bytes, or
/// `None` when it holds no ALPN list (only other extensions, such as NPN,
/// which Schannel no longer negotiates). Anything that does not add up
/// (sizes past the buffer, a list that is not length-prefixed names, an
/// empty one) is `SEC_E_INVALID_TOKEN`: what Schannel is taken to answer a
/// malformed input buffer with (its exact answer is not documented; the
/// model's choice).
pub fn parse_buffer(buf: &[u8]) -> Result<Option<&[u8]>, SecStatus> {
    const BAD: SecStatus = SecStatus::SEC_E_INVALID_TOKEN;
    let size = buf
        .get(..SEC_APPLICATION_PROTOCOLS_HEADER)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .ok_or(BAD)?;
    let mut lists = buf[SEC_APPLICATION_PROTOCOLS_HEADER..]
        .get(..size)
        .ok_or(BAD)?;
    let mut alpn = None;
    while !lists.is_empty() {
        let head = lists
            .get(..SEC_APPLICATION_PROTOCOL_LIST_HEADER)
            .ok_or(BAD)?;
        let ext = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        let len = usize::from(u16::from_le_bytes([head[4], head[5]]));
        let list = lists[SEC_APPLICATION_PROTOCOL_LIST_HEADER..]
            .get(..len)
            .ok_or(BAD)?;
        if ext == SecApplicationProtocolNegotiationExt_ALPN {
            if alpn.is_some() {
                return Err(BAD);
            }
            check_wire(list).map_err(|_| BAD)?;
            alpn = Some(list);
        }
        lists = &lists[SEC_APPLICATION_PROTOCOL_LIST_HEADER + len..];
    }
    Ok(alpn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_buffer_is_laid_out_as_msquic_builds_it() {
        let p = ApplicationProtocols::new([&b"h2"[..], b"http/1.1"]).unwrap();
        let wire = b"\x02h2\x08http/1.1";
        assert_eq!(p.wire(), wire);
        let b = p.buffer();
        assert_eq!(b.len(), 4 + 6 + wire.len());
        assert_eq!(u32::from_le_bytes(b[..4].try_into().unwrap()), 6 + 12);
        assert_eq!(u32::from_le_bytes(b[4..8].try_into().unwrap()), 2);
        assert_eq!(u16::from_le_bytes(b[8..10].try_into().unwrap()), 12);
        assert_eq!(parse_buffer(b), Ok(Some(&wire[..])));
        let names: Vec<&[u8]> = p.names().collect();
        assert_eq!(names, [&b"h2"[..], b"http/1.1"]);
        assert!(p.contains(b"h2") && !p.contains(b"h3") && !p.contains(b"h"));
    }

    #[test]
    fn bad_lists_are_refused_with_their_reason() {
        let none: [&[u8]; 0] = [];
        assert_eq!(ApplicationProtocols::new(none), Err(AlpnError::Empty));
        assert_eq!(
            ApplicationProtocols::new([&b"h2"[..], b""]),
            Err(AlpnError::EmptyName)
        );
        let long = [b'a'; 256];
        assert_eq!(
            ApplicationProtocols::new([&long[..]]),
            Err(AlpnError::NameTooLong)
        );
        assert!(ApplicationProtocols::new([&long[..255]]).is_ok());
        let name = [b'b'; 200];
        let many = [&name[..]; 6];
        assert_eq!(ApplicationProtocols::new(many), Err(AlpnError::ListTooLong));
        assert_eq!(
            ApplicationProtocols::from_wire(b"\x03h2"),
            Err(AlpnError::Malformed)
        );
        assert_eq!(
            ApplicationProtocols::from_wire(b"\x02h2\x00"),
            Err(AlpnError::EmptyName)
        );
        assert_eq!(ApplicationProtocols::from_wire(b""), Err(AlpnError::Empty));
    }

    #[test]
    fn malformed_buffers_are_invalid_tokens() {
        let p = ApplicationProtocols::new([&b"h2"[..]]).unwrap();
        let good = p.buffer().to_vec();
        // Truncated anywhere.
        for cut in 0..good.len() {
            assert_eq!(
                parse_buffer(&good[..cut]),
                Err(SecStatus::SEC_E_INVALID_TOKEN)
            );
        }
        // A list size past the buffer.
        let mut bad = good.clone();
        bad[8] = 9;
        assert_eq!(parse_buffer(&bad), Err(SecStatus::SEC_E_INVALID_TOKEN));
        // An NPN list alone is no ALPN list.
        let mut npn = good.clone();
        npn[4] = SecApplicationProtocolNegotiationExt_NPN as u8;
        assert_eq!(parse_buffer(&npn), Ok(None));
        // No lists at all.
        assert_eq!(parse_buffer(&[0, 0, 0, 0]), Ok(None));
    }
}
