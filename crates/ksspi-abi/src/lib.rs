//! The IOCTL contract between the ksspi driver and user mode.
//!
//! Every request and reply is a little-endian byte layout: a 16-byte
//! [`Header`] (magic, ABI version, message kind, total size), fixed fields,
//! then variable-length data (a target name, a token). Messages are encoded
//! and decoded field by field from bytes, never cast from memory, so buffer
//! alignment cannot matter and every length is checked. All IOCTLs are
//! `METHOD_BUFFERED`.
//!
//! `no_std`, no dependencies: the driver and the harness share this crate.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod wire;

pub use wire::{DecodeError, Reader, Writer};

/// `CTL_CODE` (devioctl.h): `(DeviceType << 16) | (Access << 14) | (Function << 2) | Method`.
pub const fn ctl_code(device_type: u32, function: u32, method: u32, access: u32) -> u32 {
    (device_type << 16) | (access << 14) | (function << 2) | method
}

/// `METHOD_BUFFERED` (devioctl.h).
pub const METHOD_BUFFERED: u32 = 0;
/// `FILE_ANY_ACCESS` (devioctl.h).
pub const FILE_ANY_ACCESS: u32 = 0;
/// `FILE_READ_DATA` (devioctl.h).
pub const FILE_READ_DATA: u32 = 1;
/// `FILE_WRITE_DATA` (devioctl.h).
pub const FILE_WRITE_DATA: u32 = 2;

/// ksspi's device type, in the range Microsoft leaves to vendors (0x8000-0xFFFF).
pub const FILE_DEVICE_KSSPI: u32 = 0xA55A;

/// Get versions, capabilities and counters.
pub const IOCTL_KSSPI_GET_INFO: u32 =
    ctl_code(FILE_DEVICE_KSSPI, 0x800, METHOD_BUFFERED, FILE_ANY_ACCESS);
/// Run the in-driver self-test.
pub const IOCTL_KSSPI_SELFTEST: u32 = ctl_code(
    FILE_DEVICE_KSSPI,
    0x801,
    METHOD_BUFFERED,
    FILE_READ_DATA | FILE_WRITE_DATA,
);
/// Open a session.
pub const IOCTL_KSSPI_OPEN: u32 = ctl_code(
    FILE_DEVICE_KSSPI,
    0x802,
    METHOD_BUFFERED,
    FILE_READ_DATA | FILE_WRITE_DATA,
);
/// One handshake step.
pub const IOCTL_KSSPI_STEP: u32 = ctl_code(
    FILE_DEVICE_KSSPI,
    0x803,
    METHOD_BUFFERED,
    FILE_READ_DATA | FILE_WRITE_DATA,
);
/// Close a session.
pub const IOCTL_KSSPI_CLOSE: u32 = ctl_code(
    FILE_DEVICE_KSSPI,
    0x804,
    METHOD_BUFFERED,
    FILE_READ_DATA | FILE_WRITE_DATA,
);
/// Seal plaintext into TLS records ([`EncryptRequest`] -> [`EncryptReply`]).
pub const IOCTL_KSSPI_ENCRYPT: u32 = ctl_code(
    FILE_DEVICE_KSSPI,
    0x805,
    METHOD_BUFFERED,
    FILE_READ_DATA | FILE_WRITE_DATA,
);
/// Open TLS records ([`DecryptRequest`] -> [`RecordReply`]); pends while a post-handshake message goes through the handshake call.
pub const IOCTL_KSSPI_DECRYPT: u32 = ctl_code(
    FILE_DEVICE_KSSPI,
    0x806,
    METHOD_BUFFERED,
    FILE_READ_DATA | FILE_WRITE_DATA,
);
/// Send close_notify ([`ShutdownRequest`] -> [`RecordReply`]); pends while the final handshake call runs.
pub const IOCTL_KSSPI_SHUTDOWN: u32 = ctl_code(
    FILE_DEVICE_KSSPI,
    0x807,
    METHOD_BUFFERED,
    FILE_READ_DATA | FILE_WRITE_DATA,
);

/// Describe an established session: connection info, stream sizes, the
/// peer's certificate ([`QueryRequest`] -> [`QueryReply`]).
pub const IOCTL_KSSPI_QUERY: u32 = ctl_code(
    FILE_DEVICE_KSSPI,
    0x808,
    METHOD_BUFFERED,
    FILE_READ_DATA | FILE_WRITE_DATA,
);

/// Largest peer certificate (DER) a QUERY reply carries.
pub const MAX_PEER_CERTIFICATE: usize = 16 * 1024;

/// The output buffer a QUERY must come with.
pub const QUERY_REPLY_CAPACITY: usize = Header::LEN + 56 + MAX_PEER_CERTIFICATE;
/// The output buffer a QUERY of a session opened with an ALPN list must come
/// with: room for the protocol's name too. A harness may always pass this
/// (a driver only checks for at least what it needs).
pub const QUERY_REPLY_CAPACITY_ALPN: usize = QUERY_REPLY_CAPACITY + MAX_ALPN_NAME;

/// The longest ALPN protocol name (RFC 7301's 1-byte length; sspi.h's
/// `MAX_PROTOCOL_ID_SIZE`).
pub const MAX_ALPN_NAME: usize = 255;
/// The most bytes of an ALPN list in OPEN (names with their length
/// prefixes): ksspi's bound (`ksspi::alpn::MAX_ALPN_LIST`).
pub const MAX_ALPN_LIST: usize = 1024;

/// A GUID as Windows lays it out (guiddef.h).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Guid {
    /// The first 4 bytes, as a little-endian u32.
    pub data1: u32,
    /// The next 2.
    pub data2: u16,
    /// The next 2.
    pub data3: u16,
    /// The last 8, in order.
    pub data4: [u8; 8],
}

/// The device interface the driver registers (`WdfDeviceCreateDeviceInterface`)
/// and the harness finds the device by (`CM_Get_Device_Interface_List`):
/// {52646557-6FD3-470B-97E8-DD55294BC57D}.
pub const GUID_DEVINTERFACE_KSSPI: Guid = Guid {
    data1: 0x5264_6557,
    data2: 0x6FD3,
    data3: 0x470B,
    data4: [0x97, 0xE8, 0xDD, 0x55, 0x29, 0x4B, 0xC5, 0x7D],
};

/// `"KSSP"`, little-endian, first in every message.
pub const MAGIC: u32 = u32::from_le_bytes(*b"KSSP");
/// The ABI version this crate speaks.
pub const ABI_VERSION: u16 = 1;
/// Largest message either side accepts (header, fields and data).
pub const MAX_MESSAGE: usize = 256 * 1024;
/// Largest token (input or output) in one step.
pub const MAX_TOKEN: usize = 64 * 1024;
/// The output buffer a STEP request must come with: a reply carrying up to
/// `max_output` bytes of output.
pub const fn step_reply_capacity(max_output: usize) -> usize {
    Header::LEN + 28 + max_output
}

/// [`step_reply_capacity`] for a session opened with an ALPN list: room for
/// the protocol's name after the output. A harness may always pass this.
pub const fn step_reply_capacity_alpn(max_output: usize) -> usize {
    step_reply_capacity(max_output) + MAX_ALPN_NAME
}

/// Plaintext in one TLS record (TLS's limit, and Schannel's
/// `cbMaximumMessage`).
pub const RECORD_PLAINTEXT: usize = 16 * 1024;
/// A bound on one record's header and trailer together (TLS 1.2 CBC with
/// SHA-384 and full padding needs less than half of it).
pub const MAX_RECORD_OVERHEAD: usize = 256;

/// The output buffer an ENCRYPT of `n` bytes must come with.
pub const fn encrypt_reply_capacity(n: usize) -> usize {
    let records = if n == 0 {
        1
    } else {
        n.div_ceil(RECORD_PLAINTEXT)
    };
    EncryptReply::DATA_OFFSET + n + records * MAX_RECORD_OVERHEAD
}

/// The output buffer a DECRYPT or SHUTDOWN must come with: a reply carrying
/// up to `max_input` bytes of plaintext and `max_output` bytes to send.
pub const fn record_reply_capacity(max_input: usize, max_output: usize) -> usize {
    Header::LEN + 24 + max_input + max_output
}

/// Largest target name, in bytes of UTF-8.
pub const MAX_TARGET: usize = 255;

/// What a message is. Requests and replies have their own kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum Kind {
    /// [`InfoReply`] (GET_INFO takes an empty or header-only input).
    InfoReply = 1,
    /// [`SelftestRequest`].
    SelftestRequest = 2,
    /// [`SelftestReply`].
    SelftestReply = 3,
    /// [`OpenRequest`].
    OpenRequest = 4,
    /// [`OpenReply`].
    OpenReply = 5,
    /// [`StepRequest`].
    StepRequest = 6,
    /// [`StepReply`].
    StepReply = 7,
    /// [`CloseRequest`].
    CloseRequest = 8,
    /// A header alone: GET_INFO's request, CLOSE's reply.
    Empty = 9,
    /// [`EncryptRequest`].
    EncryptRequest = 10,
    /// [`EncryptReply`].
    EncryptReply = 11,
    /// [`DecryptRequest`].
    DecryptRequest = 12,
    /// [`RecordReply`] (DECRYPT's and SHUTDOWN's).
    RecordReply = 13,
    /// [`ShutdownRequest`].
    ShutdownRequest = 14,
    /// [`QueryRequest`].
    QueryRequest = 15,
    /// [`QueryReply`].
    QueryReply = 16,
}

impl Kind {
    fn from_u16(v: u16) -> Option<Kind> {
        Some(match v {
            1 => Kind::InfoReply,
            2 => Kind::SelftestRequest,
            3 => Kind::SelftestReply,
            4 => Kind::OpenRequest,
            5 => Kind::OpenReply,
            6 => Kind::StepRequest,
            7 => Kind::StepReply,
            8 => Kind::CloseRequest,
            9 => Kind::Empty,
            10 => Kind::EncryptRequest,
            11 => Kind::EncryptReply,
            12 => Kind::DecryptRequest,
            13 => Kind::RecordReply,
            14 => Kind::ShutdownRequest,
            15 => Kind::QueryRequest,
            16 => Kind::QueryReply,
            _ => return None,
        })
    }
}

/// The 16 bytes that open every message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// The message kind.
    pub kind: Kind,
    /// Total bytes: header, fixed fields and variable data.
    pub size: u32,
}

impl Header {
    /// Encoded size.
    pub const LEN: usize = 16;

    /// Check and read a header; `buf` must hold the whole message it announces,
    /// and nothing more (a longer buffer is refused: `TrailingBytes`).
    pub fn decode(buf: &[u8], expect: Kind) -> Result<(Header, Reader<'_>), DecodeError> {
        let mut r = Reader::new(buf);
        let magic = r.u32()?;
        if magic != MAGIC {
            return Err(DecodeError::BadMagic);
        }
        let version = r.u16()?;
        if version != ABI_VERSION {
            return Err(DecodeError::BadVersion(version));
        }
        let kind = r.u16()?;
        let kind = Kind::from_u16(kind).ok_or(DecodeError::BadKind(kind))?;
        if kind != expect {
            return Err(DecodeError::WrongKind);
        }
        let size = r.u32()?;
        if r.u32()? != 0 {
            return Err(DecodeError::Reserved);
        }
        if size as usize > MAX_MESSAGE {
            return Err(DecodeError::TooLong);
        }
        if (size as usize) < Header::LEN || size as usize != buf.len() {
            return Err(if (size as usize) > buf.len() {
                DecodeError::Truncated
            } else {
                DecodeError::BadSize
            });
        }
        Ok((Header { kind, size }, r))
    }

    fn encode(kind: Kind, size: usize, w: &mut Writer<'_>) -> Result<(), DecodeError> {
        if size > MAX_MESSAGE {
            return Err(DecodeError::TooLong);
        }
        w.u32(MAGIC)?;
        w.u16(ABI_VERSION)?;
        w.u16(kind as u16)?;
        w.u32(size as u32)?;
        w.u32(0)
    }
}

/// A session id: slot and generation, never a kernel address. Opaque to
/// user mode. ksspi's generations start at 1 and a slot is retired after its
/// last one (`u32::MAX`), so no id is ever issued twice and none is 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SessionId(pub u64);

impl SessionId {
    /// From a table slot and the slot's generation.
    pub const fn new(slot: u32, generation: u32) -> Self {
        SessionId(((generation as u64) << 32) | slot as u64)
    }
    /// The table slot.
    pub const fn slot(self) -> u32 {
        self.0 as u32
    }
    /// The slot's generation when the session was opened.
    pub const fn generation(self) -> u32 {
        (self.0 >> 32) as u32
    }
}

mod messages;
pub use messages::*;

#[cfg(test)]
extern crate std;

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;
    use std::vec::Vec;

    fn enc<'a, M: Message<'a>>(m: &M) -> Vec<u8> {
        let mut buf = vec![0u8; MAX_MESSAGE];
        let n = encode(m, &mut buf).unwrap();
        buf.truncate(n);
        buf
    }

    /// Round trip, and every strict prefix and every one-byte extension refused.
    fn check<'a, M: Message<'a> + PartialEq + core::fmt::Debug>(m: &M, bytes: &'a [u8]) {
        assert_eq!(&decode::<M>(bytes).unwrap(), m);
        for cut in 0..bytes.len() {
            assert!(
                decode::<M>(&bytes[..cut]).is_err(),
                "a {cut}-byte prefix was accepted"
            );
        }
    }

    #[test]
    fn ctl_codes_follow_devioctl_h() {
        // CTL_CODE(FILE_DEVICE_DISK=7, 0, METHOD_BUFFERED, FILE_ANY_ACCESS) is IOCTL_DISK_GET_DRIVE_GEOMETRY.
        assert_eq!(
            ctl_code(7, 0, METHOD_BUFFERED, FILE_ANY_ACCESS),
            0x0007_0000
        );
        assert_eq!(IOCTL_KSSPI_GET_INFO & 3, METHOD_BUFFERED);
        let codes = [
            IOCTL_KSSPI_GET_INFO,
            IOCTL_KSSPI_SELFTEST,
            IOCTL_KSSPI_OPEN,
            IOCTL_KSSPI_STEP,
            IOCTL_KSSPI_CLOSE,
            IOCTL_KSSPI_ENCRYPT,
            IOCTL_KSSPI_DECRYPT,
            IOCTL_KSSPI_SHUTDOWN,
            IOCTL_KSSPI_QUERY,
        ];
        for (i, a) in codes.iter().enumerate() {
            assert_eq!(a >> 16, FILE_DEVICE_KSSPI);
            assert!(codes[i + 1..].iter().all(|b| a != b));
        }
    }

    #[test]
    fn every_message_round_trips_and_every_truncation_is_refused() {
        let info = InfoReply {
            driver_version: [0, 1, 0],
            capabilities: caps::MODEL | caps::TLS13,
            sessions_open: 3,
            sessions_total: 9,
            handshakes_ok: 7,
            handshakes_failed: 1,
            max_sessions_per_file: 64,
            max_buffered_per_session: 65536,
            observed: Observed {
                requires_notify_exported: 1,
                calls: 40,
                callbacks_dispatch: 12,
                reinits_in_callback: 5,
                ..Observed::default()
            },
        };
        check(&info, &enc(&info));
        let open = OpenRequest {
            role: Role::Client,
            manual_validation: false,
            protocols: proto::ALL,
            thumbprint: [0; 20],
            store: [0; 16],
            target: b"localhost",
            client_auth: None,
            alpn: None,
            resumption: None,
        };
        check(&open, &enc(&open));
        let mut store = [0u8; 16];
        store[..2].copy_from_slice(b"MY");
        let open = OpenRequest {
            role: Role::Server,
            manual_validation: false,
            protocols: proto::TLS12,
            thumbprint: [0xAB; 20],
            store,
            target: b"",
            client_auth: None,
            alpn: None,
            resumption: None,
        };
        check(&open, &enc(&open));
        let reply = OpenReply {
            status: 0,
            session: SessionId::new(5, 2),
        };
        check(&reply, &enc(&reply));
        let step = StepRequest {
            session: SessionId::new(1, 1),
            input: &[0x16, 3, 3, 0, 1, 1],
        };
        check(&step, &enc(&step));
        let out = StepReply {
            status: 0x0009_0312,
            outcome: StepOutcome::NeedInput,
            missing: 0,
            extra: 0,
            protocol: 0,
            cipher: 0,
            flags: 0,
            output: &[1, 2, 3],
            alpn_status: 0,
            alpn: &[],
        };
        check(&out, &enc(&out));
        let close = CloseRequest {
            session: SessionId(77),
        };
        check(&close, &enc(&close));
        let st = SelftestRequest {
            count: 10,
            concurrency: 2,
            protocols: proto::ALL,
            completion: 4,
            callback_irql: 3,
            seed: 42,
            thumbprint: [1; 20],
            bytes: 0,
            resume: false,
        };
        check(&st, &enc(&st));
        let sr = SelftestReply {
            handshakes_ok: 10,
            latency_max_us: 99,
            leaked: 0,
            ..SelftestReply::default()
        };
        check(&sr, &enc(&sr));
        check(&Empty, &enc(&Empty));
        let er = EncryptRequest(RecordRequest {
            session: SessionId::new(3, 4),
            bytes: b"hello",
        });
        check(&er, &enc(&er));
        let dr = DecryptRequest(RecordRequest {
            session: SessionId::new(3, 4),
            bytes: &[0x17, 3, 3, 0, 0],
        });
        check(&dr, &enc(&dr));
        assert_eq!(
            decode::<EncryptRequest>(&enc(&dr)),
            Err(DecodeError::WrongKind),
            "a decrypt request is not an encrypt request"
        );
        let ep = EncryptReply {
            status: 0,
            records: 2,
            output: &[0x17; 40],
        };
        check(&ep, &enc(&ep));
        let rr = RecordReply {
            status: 0x0009_0317,
            outcome: RecordOutcome::PeerClosed,
            missing: 0,
            renegotiations: 2,
            data: b"plain",
            output: &[0x15, 3, 3],
        };
        check(&rr, &enc(&rr));
        let sd = ShutdownRequest {
            session: SessionId(9),
        };
        check(&sd, &enc(&sd));
        let q = QueryRequest {
            session: SessionId(10),
        };
        check(&q, &enc(&q));
        let qr = QueryReply {
            protocol: 0x1000,
            cipher: 0x6610,
            cipher_strength: 256,
            hash: 0x800d,
            hash_strength: 384,
            exchange: 0xae06,
            exchange_strength: 256,
            header: 5,
            trailer: 17,
            max_message: 16384,
            peer_certificates: 2,
            leaf_size: 3,
            leaf: &[0x30, 1, 0],
            alpn_status: 0,
            alpn: &[],
            resumed: 0,
        };
        check(&qr, &enc(&qr));
        assert!(enc(&qr).len() <= QUERY_REPLY_CAPACITY);
    }

    #[test]
    fn an_encrypt_reply_built_in_place_is_the_encoded_reply() {
        let records = [0x17u8; 77];
        let reply = EncryptReply {
            status: 0,
            records: 1,
            output: &records,
        };
        let mut buf = vec![0u8; encrypt_reply_capacity(records.len())];
        let (head, tail) = buf.split_at_mut(EncryptReply::DATA_OFFSET);
        tail[..records.len()].copy_from_slice(&records);
        assert_eq!(encode_prefix(&reply, head), Ok(EncryptReply::DATA_OFFSET));
        buf.truncate(EncryptReply::DATA_OFFSET + records.len());
        assert_eq!(buf, enc(&reply));
        assert!(encrypt_reply_capacity(0) > EncryptReply::DATA_OFFSET);
        assert!(encrypt_reply_capacity(MAX_TOKEN) <= MAX_MESSAGE);
    }

    #[test]
    fn a_record_reply_field_out_of_range_is_refused() {
        let rr = RecordReply {
            status: 0,
            outcome: RecordOutcome::Data,
            missing: 0,
            renegotiations: 0,
            data: b"abc",
            output: b"",
        };
        let mut b = enc(&rr);
        b[Header::LEN + 4] = 9;
        assert_eq!(decode::<RecordReply>(&b), Err(DecodeError::BadField));
        let mut b = enc(&rr);
        b[Header::LEN + 16] = 4; // data length 4, but 3 bytes follow
        assert_eq!(decode::<RecordReply>(&b), Err(DecodeError::Truncated));
        let big = [0u8; MAX_TOKEN + 1];
        let er = EncryptRequest(RecordRequest {
            session: SessionId(1),
            bytes: &big,
        });
        assert_eq!(
            decode::<EncryptRequest>(&enc(&er)),
            Err(DecodeError::TooLong)
        );
    }

    #[test]
    fn bad_headers_and_fields_are_refused_with_their_reason() {
        let close = enc(&CloseRequest {
            session: SessionId(1),
        });
        let mut b = close.clone();
        b[0] ^= 1;
        assert_eq!(decode::<CloseRequest>(&b), Err(DecodeError::BadMagic));
        let mut b = close.clone();
        b[4] = 9;
        assert_eq!(decode::<CloseRequest>(&b), Err(DecodeError::BadVersion(9)));
        assert_eq!(decode::<StepRequest>(&close), Err(DecodeError::WrongKind));
        let mut b = close.clone();
        b[6] = 200;
        assert_eq!(decode::<CloseRequest>(&b), Err(DecodeError::BadKind(200)));
        let mut b = close.clone();
        b[12] = 1;
        assert_eq!(decode::<CloseRequest>(&b), Err(DecodeError::Reserved));
        let mut b = close.clone();
        b.push(0);
        assert_eq!(
            decode::<CloseRequest>(&b),
            Err(DecodeError::BadSize),
            "a trailing byte"
        );
        // A size field claiming more than the buffer holds.
        let mut b = close.clone();
        b[8] += 1;
        assert_eq!(decode::<CloseRequest>(&b), Err(DecodeError::Truncated));
        // An input length that disagrees with the data.
        let mut step = enc(&StepRequest {
            session: SessionId(1),
            input: &[1, 2, 3],
        });
        step[24] = 4;
        assert_eq!(decode::<StepRequest>(&step), Err(DecodeError::Truncated));
        // Out-of-range fields.
        let bad = OpenRequest {
            role: Role::Client,
            manual_validation: false,
            protocols: 8,
            thumbprint: [0; 20],
            store: [0; 16],
            target: b"x",
            client_auth: None,
            alpn: None,
            resumption: None,
        };
        assert_eq!(
            decode::<OpenRequest>(&enc(&bad)),
            Err(DecodeError::BadField)
        );
        let bad = OpenRequest {
            role: Role::Client,
            manual_validation: false,
            protocols: 1,
            thumbprint: [0; 20],
            store: [0; 16],
            target: &[0xFF, 0xFE],
            client_auth: None,
            alpn: None,
            resumption: None,
        };
        assert_eq!(
            decode::<OpenRequest>(&enc(&bad)),
            Err(DecodeError::BadField),
            "not UTF-8"
        );
        let long = [b'a'; MAX_TARGET + 1];
        let bad = OpenRequest {
            role: Role::Client,
            manual_validation: false,
            protocols: 1,
            thumbprint: [0; 20],
            store: [0; 16],
            target: &long,
            client_auth: None,
            alpn: None,
            resumption: None,
        };
        assert_eq!(decode::<OpenRequest>(&enc(&bad)), Err(DecodeError::TooLong));
        let zero = SelftestRequest {
            count: 0,
            concurrency: 1,
            protocols: 1,
            ..SelftestRequest::default()
        };
        assert_eq!(
            decode::<SelftestRequest>(&enc(&zero)),
            Err(DecodeError::BadField)
        );
    }

    #[test]
    fn selftest_figures_are_bounded() {
        let at_bounds = SelftestRequest {
            count: MAX_SELFTEST_COUNT,
            concurrency: MAX_SELFTEST_CONCURRENCY,
            protocols: proto::ALL,
            bytes: MAX_SELFTEST_BYTES,
            ..SelftestRequest::default()
        };
        assert_eq!(decode::<SelftestRequest>(&enc(&at_bounds)), Ok(at_bounds));
        for over in [
            SelftestRequest {
                count: MAX_SELFTEST_COUNT + 1,
                ..at_bounds
            },
            SelftestRequest {
                count: u32::MAX,
                ..at_bounds
            },
            SelftestRequest {
                concurrency: MAX_SELFTEST_CONCURRENCY + 1,
                ..at_bounds
            },
            SelftestRequest {
                concurrency: u32::MAX,
                ..at_bounds
            },
            SelftestRequest {
                bytes: MAX_SELFTEST_BYTES + 1,
                ..at_bounds
            },
            SelftestRequest {
                bytes: u32::MAX,
                ..at_bounds
            },
        ] {
            let refused = decode::<SelftestRequest>(&enc(&over));
            assert_eq!(refused, Err(DecodeError::BadField), "{over:?}");
            assert_eq!(DecodeError::BadField.ntstatus() as u32, 0xC000_000D);
        }
    }

    #[test]
    fn an_output_buffer_too_small_is_reported_not_overrun() {
        let reply = StepReply {
            status: 0,
            outcome: StepOutcome::Established,
            missing: 0,
            extra: 0,
            protocol: 0,
            cipher: 0,
            flags: 0,
            output: &[7; 100],
            alpn_status: 0,
            alpn: &[],
        };
        let mut small = [0u8; 64];
        assert_eq!(encode(&reply, &mut small), Err(DecodeError::OutputTooSmall));
        assert_eq!(DecodeError::OutputTooSmall.ntstatus() as u32, 0xC000_0023);
        assert_eq!(DecodeError::BadVersion(2).ntstatus() as u32, 0xC000_0059);
    }

    #[test]
    fn the_step_reply_capacity_fits_exactly() {
        let out = [9u8; 300];
        let reply = StepReply {
            status: 0,
            outcome: StepOutcome::NeedInput,
            missing: 0,
            extra: 0,
            protocol: 0,
            cipher: 0,
            flags: 0,
            output: &out,
            alpn_status: 0,
            alpn: &[],
        };
        assert_eq!(enc(&reply).len(), step_reply_capacity(out.len()));
    }

    #[test]
    fn session_ids_carry_slot_and_generation() {
        let id = SessionId::new(0xFFFF_FFFF, 7);
        assert_eq!((id.slot(), id.generation()), (0xFFFF_FFFF, 7));
    }

    #[test]
    fn open_grows_with_client_auth_and_the_first_layout_still_decodes() {
        let mut store = [0u8; 16];
        store[..2].copy_from_slice(b"MY");
        let first = OpenRequest {
            client_auth: None,
            ..OpenRequest::new(Role::Client, proto::ALL, [0; 20], b"localhost")
        };
        let old = enc(&first);
        assert_eq!(
            old.len(),
            Header::LEN + 44 + 9,
            "the first layout, unchanged"
        );
        check(&first, &old);
        let client = OpenRequest {
            client_auth: Some(ClientAuth {
                server_mode: ClientCertMode::Ignore,
                certificate: Some([0x5A; 20]),
                store,
            }),
            ..first
        };
        let grown = enc(&client);
        assert_eq!(grown.len(), old.len() + ClientAuth::LEN);
        check(&client, &grown);
        let server = OpenRequest {
            client_auth: Some(ClientAuth {
                server_mode: ClientCertMode::Require,
                ..ClientAuth::NONE
            }),
            ..OpenRequest::new(Role::Server, proto::ALL, [0xAB; 20], b"")
        };
        check(&server, &enc(&server));
        // OpenRequest::new speaks the grown layout.
        assert_eq!(
            OpenRequest::new(Role::Client, proto::ALL, [0; 20], b"x").client_auth,
            Some(ClientAuth::NONE)
        );
        // Sizes between the two layouts are refused.
        let mut between = grown.clone();
        between.truncate(grown.len() - 1);
        let size = between.len() as u32;
        between[8..12].copy_from_slice(&size.to_le_bytes());
        assert!(decode::<OpenRequest>(&between).is_err());
        // Fields out of range, or for the wrong role.
        let at = Header::LEN + 44;
        let refused = |offset: usize, value: u8, want: DecodeError, bytes: &[u8]| {
            let mut b = bytes.to_vec();
            b[at + offset] = value;
            assert_eq!(
                decode::<OpenRequest>(&b),
                Err(want),
                "byte {offset} = {value}"
            );
        };
        refused(0, 3, DecodeError::BadField, &grown);
        refused(0, 1, DecodeError::BadField, &grown); // a client asking for certificates
        refused(1, 2, DecodeError::BadField, &grown);
        refused(2, 1, DecodeError::Reserved, &grown);
        refused(1, 1, DecodeError::BadField, &enc(&server)); // a server offering one
        refused(4, 1, DecodeError::BadField, &enc(&server)); // a thumbprint with no certificate
        refused(24, 0x07, DecodeError::BadField, &grown); // a store name that is not ASCII
    }

    #[test]
    fn step_reply_flags_are_known_bits_only() {
        let reply = StepReply {
            status: 0x0009_0320,
            outcome: StepOutcome::NeedInput,
            missing: 0,
            extra: 0,
            protocol: 0,
            cipher: 0,
            flags: step_flags::CERTIFICATE_REQUESTED,
            output: &[1, 2],
            alpn_status: 0,
            alpn: &[],
        };
        let bytes = enc(&reply);
        check(&reply, &bytes);
        let mut unknown = bytes.clone();
        unknown[Header::LEN + 5] = 8;
        assert_eq!(decode::<StepReply>(&unknown), Err(DecodeError::Reserved));
        let resumed = StepReply {
            outcome: StepOutcome::Established,
            flags: step_flags::RESUMED,
            ..reply
        };
        check(&resumed, &enc(&resumed));
        // Both at once, or either before the handshake ends: refused.
        for (outcome, flags) in [
            (
                StepOutcome::Established,
                step_flags::RESUMED | step_flags::FULL_HANDSHAKE,
            ),
            (StepOutcome::NeedInput, step_flags::RESUMED),
            (StepOutcome::Failed, step_flags::FULL_HANDSHAKE),
        ] {
            let bad = StepReply {
                outcome,
                flags,
                ..reply
            };
            assert_eq!(
                decode::<StepReply>(&enc(&bad)),
                Err(DecodeError::BadField),
                "{outcome:?} {flags}"
            );
        }
    }

    #[test]
    fn open_s_fourth_layout_carries_the_resumption_choice_and_older_layouts_are_unchanged() {
        let base = OpenRequest::new(Role::Client, proto::ALL, [0; 20], b"localhost");
        let first = OpenRequest {
            client_auth: None,
            ..base
        };
        let second = base;
        let third = OpenRequest {
            alpn: Some(b"\x02h2"),
            ..base
        };
        let fourth_no_alpn = OpenRequest {
            resumption: Some(Resumption::On),
            ..base
        };
        let fourth = OpenRequest {
            alpn: Some(b"\x02h2\x08http/1.1"),
            resumption: Some(Resumption::Off),
            ..base
        };
        let sizes: Vec<usize> = [first, second, third, fourth_no_alpn, fourth]
            .iter()
            .map(|o| {
                let bytes = enc(o);
                check(o, &bytes);
                bytes.len()
            })
            .collect();
        let fixed = sizes[0];
        assert_eq!(sizes[1], fixed + ClientAuth::LEN);
        assert_eq!(sizes[2], fixed + ClientAuth::LEN + AlpnHeader::LEN + 3);
        assert_eq!(
            sizes[3],
            fixed + ClientAuth::LEN + AlpnHeader::LEN + SessionOptions::LEN
        );
        assert_eq!(
            sizes[4],
            fixed + ClientAuth::LEN + AlpnHeader::LEN + SessionOptions::LEN + 12
        );
        // The options' bytes: an unknown choice, then each reserved byte.
        let bytes = enc(&fourth_no_alpn);
        let at = bytes.len() - b"localhost".len() - SessionOptions::LEN;
        for (offset, value, error) in [
            (0, 2, DecodeError::BadField),
            (1, 1, DecodeError::Reserved),
            (2, 1, DecodeError::Reserved),
            (3, 1, DecodeError::Reserved),
        ] {
            let mut bad = bytes.clone();
            bad[at + offset] = value;
            assert_eq!(decode::<OpenRequest>(&bad), Err(error), "byte {offset}");
        }
        // A third layout with an empty list is still refused (the fourth
        // is the only one where the list may be empty).
        let mut empty_third = enc(&fourth_no_alpn);
        empty_third.truncate(empty_third.len() - b"localhost".len() - SessionOptions::LEN);
        empty_third.extend_from_slice(b"localhost");
        let len = empty_third.len() as u32;
        empty_third[4..8].copy_from_slice(&len.to_le_bytes());
        assert!(decode::<OpenRequest>(&empty_third).is_err());
    }

    #[test]
    fn query_s_resumed_byte_and_selftest_s_resume_mode() {
        let qr = QueryReply {
            protocol: 1,
            cipher: 2,
            cipher_strength: 3,
            hash: 4,
            hash_strength: 5,
            exchange: 6,
            exchange_strength: 7,
            header: 8,
            trailer: 9,
            max_message: 10,
            peer_certificates: 0,
            leaf_size: 0,
            leaf: &[],
            alpn_status: 0,
            alpn: &[],
            resumed: resumed::RESUMED,
        };
        let bytes = enc(&qr);
        check(&qr, &bytes);
        let at = Header::LEN + 13 * 4 + 2;
        let mut bad = bytes.clone();
        bad[at] = 3;
        assert_eq!(decode::<QueryReply>(&bad), Err(DecodeError::BadField));
        let mut bad = bytes.clone();
        bad[at + 1] = 1;
        assert_eq!(decode::<QueryReply>(&bad), Err(DecodeError::Reserved));

        let req = SelftestRequest {
            count: 4,
            concurrency: 2,
            protocols: proto::ALL,
            completion: 0,
            callback_irql: 0,
            seed: 9,
            thumbprint: [0; 20],
            bytes: 0,
            resume: true,
        };
        let bytes = enc(&req);
        check(&req, &bytes);
        let mut bad = bytes.clone();
        bad[Header::LEN + 14] = 2;
        assert_eq!(decode::<SelftestRequest>(&bad), Err(DecodeError::BadField));
        let mut bad = bytes.clone();
        bad[Header::LEN + 15] = 1;
        assert_eq!(decode::<SelftestRequest>(&bad), Err(DecodeError::Reserved));

        // The reply's two sizes: without the counts (what an older harness
        // reads) and with them.
        let plain = SelftestReply {
            handshakes_ok: 8,
            ..SelftestReply::default()
        };
        let counted = SelftestReply {
            resumption: Some(SelftestResumption {
                resumed: 4,
                full: 0,
                unknown: 0,
                first_resumed: 0,
            }),
            ..plain
        };
        let (a, b) = (enc(&plain), enc(&counted));
        check(&plain, &a);
        check(&counted, &b);
        assert_eq!(b.len(), a.len() + 32);
    }
}
