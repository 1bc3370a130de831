//! Properties of the wire format over generated messages: every message
//! decodes to itself, every strict prefix is refused, every single-byte
//! corruption of the header is refused or decodes to a message that encodes
//! back to the same bytes (nothing is silently reinterpreted). Every message
//! type of the ABI is covered, requests and replies.

use ksspi_abi::*;
use proptest::prelude::*;

fn enc<'a, M: Message<'a>>(m: &M) -> Vec<u8> {
    let mut buf = vec![0u8; MAX_MESSAGE];
    let n = encode(m, &mut buf).unwrap();
    buf.truncate(n);
    buf
}

fn round_trip<'a, M: Message<'a> + PartialEq + core::fmt::Debug>(
    m: &M,
    bytes: &'a [u8],
) -> Result<(), TestCaseError> {
    prop_assert_eq!(&decode::<M>(bytes).unwrap(), m);
    for cut in 0..bytes.len() {
        prop_assert!(
            decode::<M>(&bytes[..cut]).is_err(),
            "prefix of {} bytes accepted",
            cut
        );
    }
    let mut longer = bytes.to_vec();
    longer.push(0);
    // Leaked so the decoded view may borrow it for 'a (a few bytes per case).
    let longer: &'a [u8] = Box::leak(longer.into_boxed_slice());
    prop_assert!(decode::<M>(longer).is_err(), "a trailing byte accepted");
    Ok(())
}

proptest! {
    #[test]
    fn step_requests(session in any::<u64>(), input in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let m = StepRequest { session: SessionId(session), input: &input };
        let bytes = enc(&m);
        round_trip(&m, &bytes)?;
    }

    #[test]
    fn step_replies(status in any::<i32>(), outcome in 1u8..=3, missing in any::<u32>(), extra in any::<u32>(), protocol in any::<u32>(), cipher in any::<u32>(), output in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let outcome = match outcome { 1 => StepOutcome::NeedInput, 2 => StepOutcome::Established, _ => StepOutcome::Failed };
        let m = StepReply { status, outcome, missing, extra, protocol, cipher, flags: 0, alpn_status: 0, output: &output, alpn: &[] };
        let bytes = enc(&m);
        round_trip(&m, &bytes)?;
    }

    #[test]
    fn step_replies_with_alpn(output in proptest::collection::vec(any::<u8>(), 0..2048), name in proptest::collection::vec(any::<u8>(), 1..=MAX_ALPN_NAME)) {
        let m = StepReply { status: 0, outcome: StepOutcome::Established, missing: 0, extra: 0, protocol: 0x1000, cipher: 0, flags: 0, alpn_status: 1, output: &output, alpn: &name };
        let bytes = enc(&m);
        prop_assert!(bytes.len() <= step_reply_capacity_alpn(output.len()));
        round_trip(&m, &bytes)?;
        // Without the name, the reply is what a harness before ALPN reads.
        let plain = StepReply { alpn_status: 0, alpn: &[], ..m };
        let old = enc(&plain);
        prop_assert_eq!(old.len() + name.len(), bytes.len());
        prop_assert!(old.len() <= step_reply_capacity(output.len()));
        round_trip(&plain, &old)?;
    }

    #[test]
    fn open_requests_with_alpn(server in any::<bool>(), names in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..40), 1..20), target in "[a-z0-9.-]{0,255}") {
        let mut list = Vec::new();
        for n in &names {
            list.push(n.len() as u8);
            list.extend_from_slice(n);
        }
        let m = OpenRequest {
            alpn: Some(&list),
            ..OpenRequest::new(if server { Role::Server } else { Role::Client }, proto::ALL, [3; 20], target.as_bytes())
        };
        let bytes = enc(&m);
        round_trip(&m, &bytes)?;
        // The same request without ALPN is the second layout, 4 bytes and the
        // list shorter, and decodes as it did.
        let second = OpenRequest { alpn: None, ..m };
        let old = enc(&second);
        prop_assert_eq!(old.len() + AlpnHeader::LEN + list.len(), bytes.len());
        round_trip(&second, &old)?;
    }

    #[test]
    fn open_requests(server in any::<bool>(), manual in any::<bool>(), protocols in 1u32..=3, thumbprint in any::<[u8; 20]>(), target in "[a-z0-9.-]{0,255}") {
        let m = OpenRequest {
            role: if server { Role::Server } else { Role::Client },
            manual_validation: manual,
            protocols,
            thumbprint,
            store: *b"MY\0\0\0\0\0\0\0\0\0\0\0\0\0\0",
            target: target.as_bytes(),
            client_auth: None,
            alpn: None,
            resumption: None,
        };
        let bytes = enc(&m);
        round_trip(&m, &bytes)?;
    }

    #[test]
    fn open_requests_with_client_auth(server in any::<bool>(), mode in 0u8..3, cert in proptest::option::of(any::<[u8; 20]>()), target in "[a-z0-9.-]{0,255}") {
        // What each role may carry: a server its mode, a client its certificate.
        let auth = if server {
            ClientAuth {
                server_mode: [ClientCertMode::Ignore, ClientCertMode::Request, ClientCertMode::Require][mode as usize],
                ..ClientAuth::NONE
            }
        } else {
            ClientAuth {
                certificate: cert,
                store: if cert.is_some() { STORE_MY } else { [0; 16] },
                ..ClientAuth::NONE
            }
        };
        let m = OpenRequest {
            client_auth: Some(auth),
            ..OpenRequest::new(if server { Role::Server } else { Role::Client }, proto::ALL, [3; 20], target.as_bytes())
        };
        let bytes = enc(&m);
        round_trip(&m, &bytes)?;
        // The same request in the first layout is 40 bytes shorter and decodes too.
        let first = OpenRequest { client_auth: None, ..m };
        let old = enc(&first);
        prop_assert_eq!(old.len() + ClientAuth::LEN, bytes.len());
        round_trip(&first, &old)?;
    }

    #[test]
    fn selftest_messages(count in 1u32..=MAX_SELFTEST_COUNT, concurrency in 1u32..=MAX_SELFTEST_CONCURRENCY, protocols in 1u32..=3, seed in any::<u64>(), ok in any::<u64>(), p99 in any::<u64>()) {
        let req = SelftestRequest { count, concurrency, protocols, completion: 4, callback_irql: 3, seed, thumbprint: [7; 20], bytes: 0, resume: false };
        let bytes = enc(&req);
        round_trip(&req, &bytes)?;
        let reply = SelftestReply { handshakes_ok: ok, latency_p99_us: p99, ..SelftestReply::default() };
        let bytes = enc(&reply);
        round_trip(&reply, &bytes)?;
    }

    #[test]
    fn corrupted_headers_are_refused(session in any::<u64>(), input in proptest::collection::vec(any::<u8>(), 0..64), at in 0usize..16, bit in 0u8..8) {
        let m = StepRequest { session: SessionId(session), input: &input };
        let mut bytes = enc(&m);
        bytes[at] ^= 1 << bit;
        prop_assert!(decode::<StepRequest>(&bytes).is_err(), "a corrupted header byte {} was accepted", at);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode::<StepRequest>(&bytes);
        let _ = decode::<OpenRequest>(&bytes);
        let _ = decode::<SelftestRequest>(&bytes);
        let _ = decode::<CloseRequest>(&bytes);
        let _ = decode::<Empty>(&bytes);
    }
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..max)
}

proptest! {
    #[test]
    fn record_requests(session in any::<u64>(), data in bytes(4096)) {
        let r = RecordRequest { session: SessionId(session), bytes: &data };
        let m = EncryptRequest(r);
        let bytes = enc(&m);
        round_trip(&m, &bytes)?;
        // The same body under the other kind is refused.
        prop_assert!(decode::<DecryptRequest>(&bytes).is_err());
        let m = DecryptRequest(r);
        let bytes = enc(&m);
        round_trip(&m, &bytes)?;
        prop_assert!(decode::<EncryptRequest>(&bytes).is_err());
    }

    #[test]
    fn record_replies(status in any::<i32>(), outcome in 1u8..=4, missing in any::<u32>(), renegotiations in any::<u32>(), data in bytes(2048), output in bytes(512)) {
        let outcome = match outcome {
            1 => RecordOutcome::Data,
            2 => RecordOutcome::PeerClosed,
            3 => RecordOutcome::ShutDown,
            _ => RecordOutcome::Failed,
        };
        let m = RecordReply { status, outcome, missing, renegotiations, data: &data, output: &output };
        let bytes = enc(&m);
        round_trip(&m, &bytes)?;
    }

    #[test]
    fn encrypt_replies(status in any::<i32>(), records in any::<u32>(), output in bytes(4096)) {
        let m = EncryptReply { status, records, output: &output };
        let bytes = enc(&m);
        round_trip(&m, &bytes)?;
        // The records start where the prefix encoding says.
        prop_assert_eq!(&bytes[EncryptReply::DATA_OFFSET..], &output[..]);
    }

    #[test]
    fn session_requests(session in any::<u64>()) {
        let session = SessionId(session);
        let m = CloseRequest { session };
        round_trip(&m, &enc(&m))?;
        let m = ShutdownRequest { session };
        round_trip(&m, &enc(&m))?;
        let m = QueryRequest { session };
        round_trip(&m, &enc(&m))?;
    }

    #[test]
    fn query_replies(fields in any::<[u32; 12]>(), leaf in bytes(MAX_PEER_CERTIFICATE)) {
        let m = QueryReply {
            protocol: fields[0],
            cipher: fields[1],
            cipher_strength: fields[2],
            hash: fields[3],
            hash_strength: fields[4],
            exchange: fields[5],
            exchange_strength: fields[6],
            header: fields[7],
            trailer: fields[8],
            max_message: fields[9],
            peer_certificates: fields[10],
            leaf_size: fields[11],
            leaf: &leaf,
            alpn_status: 0,
            alpn: &[],
            resumed: 0,
        };
        let bytes = enc(&m);
        prop_assert!(bytes.len() <= QUERY_REPLY_CAPACITY);
        round_trip(&m, &bytes)?;
        let name = [b'x'; MAX_ALPN_NAME];
        let m = QueryReply { alpn_status: 1, alpn: &name, ..m };
        let bytes = enc(&m);
        prop_assert!(bytes.len() <= QUERY_REPLY_CAPACITY_ALPN);
        round_trip(&m, &bytes)?;
    }

    #[test]
    fn info_and_open_replies(version in any::<[u16; 3]>(), counts in any::<[u64; 3]>(), small in any::<[u32; 4]>(), status in any::<i32>(), session in any::<u64>()) {
        let m = InfoReply {
            driver_version: version,
            capabilities: small[0],
            sessions_open: small[1],
            sessions_total: counts[0],
            handshakes_ok: counts[1],
            handshakes_failed: counts[2],
            max_sessions_per_file: small[2],
            max_buffered_per_session: small[3],
            observed: Observed {
                requires_notify_exported: small[0] & 1,
                calls: counts[0],
                completed_without_callback: counts[1],
                callback_before_return: counts[2],
                callback_after_return: counts[0] ^ 1,
                callbacks_passive: counts[1] ^ 2,
                callbacks_dispatch: counts[2] ^ 3,
                reinits_in_callback: counts[0] >> 1,
                reinits_refused_in_callback: counts[1] >> 1,
            },
        };
        round_trip(&m, &enc(&m))?;
        let m = OpenReply { status, session: SessionId(session) };
        round_trip(&m, &enc(&m))?;
    }

    #[test]
    fn arbitrary_bytes_never_panic_any_message(bytes in bytes(512)) {
        let _ = decode::<EncryptRequest>(&bytes);
        let _ = decode::<DecryptRequest>(&bytes);
        let _ = decode::<ShutdownRequest>(&bytes);
        let _ = decode::<QueryRequest>(&bytes);
        let _ = decode::<EncryptReply>(&bytes);
        let _ = decode::<RecordReply>(&bytes);
        let _ = decode::<QueryReply>(&bytes);
        let _ = decode::<InfoReply>(&bytes);
        let _ = decode::<OpenReply>(&bytes);
        let _ = decode::<StepReply>(&bytes);
        let _ = decode::<SelftestReply>(&bytes);
    }
}

/// OPEN with an ALPN list encoded by hand: `list` after the target, with
/// the 4 ALPN bytes after the client-certificate fields.
fn open_with_raw_alpn(list: &[u8], stated: u16) -> Vec<u8> {
    let m = OpenRequest::new(Role::Client, proto::ALL, [0; 20], b"localhost");
    let mut bytes = enc(&m);
    // Header (16) + fixed (44) + client auth (40), then the target.
    let at = bytes.len() - b"localhost".len();
    bytes.splice(at..at, stated.to_le_bytes().into_iter().chain([0, 0]));
    bytes.extend_from_slice(list);
    let size = bytes.len() as u32;
    bytes[8..12].copy_from_slice(&size.to_le_bytes());
    bytes
}

#[test]
fn bad_alpn_lists_get_a_clear_status_at_open() {
    // The hand encoding matches the encoder's.
    let good = open_with_raw_alpn(b"\x02h2", 3);
    let m = decode::<OpenRequest>(&good).unwrap();
    assert_eq!(m.alpn, Some(&b"\x02h2"[..]));
    let status = |bytes: &[u8]| decode::<OpenRequest>(bytes).unwrap_err().ntstatus() as u32;
    const INVALID_PARAMETER: u32 = 0xC000_000D;
    const INVALID_BUFFER_SIZE: u32 = 0xC000_0206;
    // Empty list.
    assert_eq!(status(&open_with_raw_alpn(b"", 0)), INVALID_PARAMETER);
    // An empty name, first or later.
    assert_eq!(status(&open_with_raw_alpn(b"\x00", 1)), INVALID_PARAMETER);
    assert_eq!(
        status(&open_with_raw_alpn(b"\x02h2\x00", 4)),
        INVALID_PARAMETER
    );
    // A length prefix past the list (a "name over the list").
    assert_eq!(status(&open_with_raw_alpn(b"\x09h2", 3)), INVALID_PARAMETER);
    // Longer than the contract allows.
    let mut long = Vec::new();
    while long.len() <= MAX_ALPN_LIST {
        long.push(200);
        long.extend_from_slice(&[b'a'; 200]);
    }
    assert_eq!(
        status(&open_with_raw_alpn(&long, long.len() as u16)),
        INVALID_BUFFER_SIZE
    );
    // A stated length that disagrees with what follows.
    assert!(decode::<OpenRequest>(&open_with_raw_alpn(b"\x02h2", 4)).is_err());
    // A reserved byte set.
    let mut reserved = good.clone();
    let at = reserved.len() - 3 - b"localhost".len() - 2;
    reserved[at] = 1;
    assert_eq!(decode::<OpenRequest>(&reserved), Err(DecodeError::Reserved));
    // The encoder refuses nothing itself, but the decoder is the gate: an
    // OpenRequest built with a bad list does not round-trip.
    let bad = OpenRequest {
        alpn: Some(b"\x00"),
        ..OpenRequest::new(Role::Client, proto::ALL, [0; 20], b"")
    };
    assert!(decode::<OpenRequest>(&enc(&bad)).is_err());
}

#[test]
fn replies_with_alpn_refuse_a_name_without_success() {
    let m = StepReply {
        status: 0,
        outcome: StepOutcome::Established,
        missing: 0,
        extra: 0,
        protocol: 0,
        cipher: 0,
        flags: 0,
        alpn_status: 0,
        output: &[],
        alpn: b"h2",
    };
    assert_eq!(decode::<StepReply>(&enc(&m)), Err(DecodeError::BadField));
    let m = StepReply {
        alpn_status: 2,
        alpn: &[],
        ..m
    };
    assert_eq!(decode::<StepReply>(&enc(&m)), Err(DecodeError::BadField));
}
