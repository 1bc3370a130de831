//! The device engine over the model: IOCTLs as user mode sends them, every
//! request completed exactly once with the right NTSTATUS, sessions owned by
//! their file handle, bounds, cancellation, cleanup, and nothing left behind.

mod common;

use common::*;
use ksspi::{Irql, SecStatus};
use ksspi_abi::*;
use ksspi_driver::device::DeviceConfig;
use ksspi_driver::ntstatus::*;
use ksspi_sim::{Completion, CompletionPolicy};
use std::time::Duration;

#[test]
fn info_and_a_handshake_through_the_ioctls_in_every_completion_mode() {
    for mode in Completion::ALL {
        let w = world(CompletionPolicy::Always(mode), DeviceConfig::default());
        let file = w.dev.open_file();
        let (st, reply) = w.call(file, IOCTL_KSSPI_GET_INFO, &[], 256);
        assert_eq!(st, STATUS_SUCCESS);
        let info = decode::<InfoReply>(&reply).unwrap();
        assert!(info.capabilities & caps::MODEL != 0);
        let (st, server) = w.open(file, Role::Server, b"");
        assert_eq!((st, server.status), (STATUS_SUCCESS, 0));
        let (st, client) = w.open(file, Role::Client, b"localhost");
        assert_eq!((st, client.status), (STATUS_SUCCESS, 0));
        assert_ne!(server.session, client.session);
        assert_eq!(
            handshake(&w, file, server.session, client.session),
            (StepOutcome::Established, StepOutcome::Established),
            "{mode:?}"
        );
        // A step after the end is refused, not run.
        assert_eq!(
            w.step(file, client.session, b"x").0,
            STATUS_INVALID_DEVICE_REQUEST
        );
        let (_, reply) = w.call(file, IOCTL_KSSPI_GET_INFO, &[], 256);
        let info = decode::<InfoReply>(&reply).unwrap();
        assert_eq!((info.handshakes_ok, info.sessions_open), (2, 2));
        assert_eq!(w.close(file, server.session), STATUS_SUCCESS);
        assert_eq!(w.close(file, client.session), STATUS_SUCCESS);
        // Closed ids are stale at once.
        assert_eq!(w.close(file, client.session), STATUS_INVALID_HANDLE);
        w.finish();
    }
}

#[test]
fn bad_buffers_get_their_status_and_change_nothing() {
    let w = world(CompletionPolicy::Mixed, DeviceConfig::default());
    let file = w.dev.open_file();
    let (_, client) = w.open(file, Role::Client, b"localhost");
    let step = step_input(client.session);
    // Short, oversized claim, wrong version, garbage, unknown and reserved IOCTLs.
    assert_eq!(
        w.call(file, IOCTL_KSSPI_STEP, &step[..10], 1 << 17).0,
        STATUS_BUFFER_TOO_SMALL
    );
    let mut v2 = step.clone();
    v2[4] = 2;
    assert_eq!(
        w.call(file, IOCTL_KSSPI_STEP, &v2, 1 << 17).0,
        STATUS_REVISION_MISMATCH
    );
    assert_eq!(
        w.call(file, IOCTL_KSSPI_STEP, b"definitely not a request", 1 << 17)
            .0,
        STATUS_INVALID_PARAMETER
    );
    assert_eq!(
        w.call(file, 0x0022_0000, &step, 1 << 17).0,
        STATUS_INVALID_DEVICE_REQUEST
    );
    assert_eq!(
        w.call(file, IOCTL_KSSPI_ENCRYPT, &step, 1 << 17).0,
        STATUS_INVALID_PARAMETER,
        "a STEP message is not an ENCRYPT request"
    );
    // An output buffer too small for any step reply.
    assert_eq!(
        w.call(file, IOCTL_KSSPI_STEP, &step, 100).0,
        STATUS_BUFFER_TOO_SMALL
    );
    // Nothing changed: the session steps normally.
    let (st, reply) = w.step(file, client.session, &[]);
    assert_eq!(st, STATUS_SUCCESS);
    assert_eq!(
        decode::<StepReply>(&reply).unwrap().outcome,
        StepOutcome::NeedInput
    );
    // An unknown thumbprint: OPEN completes with the acquisition's status.
    let mut store = [0u8; 16];
    store[..2].copy_from_slice(b"MY");
    let bad = OpenRequest {
        role: Role::Server,
        manual_validation: false,
        protocols: proto::ALL,
        thumbprint: [0xEE; 20],
        store,
        target: b"",
        client_auth: None,
        alpn: None,
        resumption: None,
    };
    let (st, reply) = w.call(file, IOCTL_KSSPI_OPEN, &enc(&bad), 64);
    assert_eq!(st, STATUS_SUCCESS);
    assert_eq!(
        decode::<OpenReply>(&reply).unwrap().status,
        SecStatus::SEC_E_NO_CREDENTIALS.0
    );
    assert_eq!(w.dev.cleanup(file), w.dev.sessions_of(file));
    w.finish();
}

#[test]
fn a_session_belongs_to_the_file_that_opened_it() {
    let w = world(CompletionPolicy::Mixed, DeviceConfig::default());
    let (a, b) = (w.dev.open_file(), w.dev.open_file());
    let (_, client) = w.open(a, Role::Client, b"localhost");
    assert_eq!(w.step(b, client.session, &[]).0, STATUS_INVALID_HANDLE);
    assert_eq!(w.close(b, client.session), STATUS_INVALID_HANDLE);
    // A forged id: same slot, another generation.
    let forged = SessionId::new(client.session.slot(), client.session.generation() + 1);
    assert_eq!(w.step(a, forged, &[]).0, STATUS_INVALID_HANDLE);
    assert_eq!(w.step(a, client.session, &[]).0, STATUS_SUCCESS);
    w.dev.cleanup(a);
    w.dev.cleanup(b);
    w.finish();
}

#[test]
fn sessions_per_file_are_bounded() {
    let config = DeviceConfig {
        max_sessions_per_file: 2,
        ..DeviceConfig::default()
    };
    let w = world(CompletionPolicy::Mixed, config);
    let (a, b) = (w.dev.open_file(), w.dev.open_file());
    assert_eq!(w.open(a, Role::Client, b"x").0, STATUS_SUCCESS);
    assert_eq!(w.open(a, Role::Client, b"x").0, STATUS_SUCCESS);
    assert_eq!(w.open(a, Role::Client, b"x").0, STATUS_QUOTA_EXCEEDED);
    assert_eq!(
        w.open(b, Role::Client, b"x").0,
        STATUS_SUCCESS,
        "another file has its own quota"
    );
    w.dev.unload();
    w.finish();
}

#[test]
fn a_cancelled_step_completes_once_and_its_session_goes() {
    let w = world(
        CompletionPolicy::Always(Completion::Async),
        DeviceConfig::default(),
    );
    let file = w.dev.open_file();
    let (_, client) = w.open(file, Role::Client, b"localhost");
    let gate = w.sim.hold_completions();
    let (pending, key) = w.send_tracked(
        file,
        IOCTL_KSSPI_STEP,
        &step_input(client.session),
        step_reply_capacity(64 * 1024),
        false,
    );
    assert!(
        pending.0.lock().unwrap().is_empty(),
        "the step pends while its call is in flight"
    );
    let key = key.lock().unwrap().expect("the engine pended the step");
    assert_eq!((key.file, key.session), (file, client.session));
    // A second step on the same session is refused while one pends.
    assert_eq!(w.step(file, client.session, &[]).0, STATUS_DEVICE_BUSY);
    assert!(w.cancel_at_dispatch(key), "the engine completes it");
    assert_eq!(wait(&pending).0, STATUS_CANCELLED);
    assert!(!w.cancel_at_dispatch(key), "nothing left to cancel");
    assert_eq!(
        w.step(file, client.session, &[]).0,
        STATUS_INVALID_HANDLE,
        "the session is closed"
    );
    gate.release();
    assert_eq!(pending.0.lock().unwrap().len(), 1, "completed exactly once");
    w.finish();
}

#[test]
fn a_request_cancelled_before_it_pends_completes_cancelled_and_changes_nothing() {
    let w = world(
        CompletionPolicy::Always(Completion::Async),
        DeviceConfig::default(),
    );
    let file = w.dev.open_file();
    let (_, client) = w.open(file, Role::Client, b"localhost");
    let (done, _) = w.send_tracked(
        file,
        IOCTL_KSSPI_STEP,
        &step_input(client.session),
        step_reply_capacity(64 * 1024),
        true,
    );
    assert_eq!(wait(&done).0, STATUS_CANCELLED);
    // The step never started: the session takes the next one.
    let (st, reply) = w.step(file, client.session, &[]);
    assert_eq!(st, STATUS_SUCCESS);
    let reply = decode::<StepReply>(&reply).unwrap();
    assert_eq!(reply.outcome, StepOutcome::NeedInput);
    assert!(!reply.output.is_empty(), "a ClientHello");
    // An OPEN cancelled before it pends makes no session.
    let open = w.open_input(Role::Client, b"localhost");
    let (done, _) = w.send_tracked(file, IOCTL_KSSPI_OPEN, &open, 64, true);
    assert_eq!(wait(&done).0, STATUS_CANCELLED);
    assert_eq!(w.dev.sessions_of(file), 1);
    w.dev.unload();
    w.finish();
}

#[test]
fn a_stale_cancel_leaves_a_later_step_alone_and_a_late_one_closes_the_session() {
    let w = world(
        CompletionPolicy::Always(Completion::Async),
        DeviceConfig::default(),
    );
    let file = w.dev.open_file();
    let (_, client) = w.open(file, Role::Client, b"localhost");
    // A first step is completed by the engine; its key stays with a cancel
    // routine that runs late.
    let (first, old_key) = w.send_tracked(
        file,
        IOCTL_KSSPI_STEP,
        &step_input(client.session),
        step_reply_capacity(64 * 1024),
        true,
    );
    assert_eq!(wait(&first).0, STATUS_CANCELLED);
    let old_key = old_key.lock().unwrap().unwrap();
    // A second step pends...
    let gate = w.sim.hold_completions();
    let (second, new_key) = w.send_tracked(
        file,
        IOCTL_KSSPI_STEP,
        &step_input(client.session),
        step_reply_capacity(64 * 1024),
        false,
    );
    let new_key = new_key.lock().unwrap().unwrap();
    assert_ne!(old_key.serial, new_key.serial);
    // ...and the stale key does not touch it.
    assert!(!w.cancel_at_dispatch(old_key));
    assert!(second.0.lock().unwrap().is_empty(), "still pending");
    gate.release();
    let (st, _) = wait(&second);
    assert_eq!(st, STATUS_SUCCESS);
    // A cancel that arrives after the engine completed its request (the
    // glue completes it) still closes the session: its reply is lost.
    assert!(!w.cancel_at_dispatch(new_key));
    assert_eq!(w.step(file, client.session, &[]).0, STATUS_INVALID_HANDLE);
    w.finish();
}

#[test]
fn a_cancelled_open_completes_once_and_leaves_nothing() {
    let w = world(
        CompletionPolicy::Always(Completion::Async),
        DeviceConfig::default(),
    );
    let file = w.dev.open_file();
    let gate = w.sim.hold_completions();
    let open = w.open_input(Role::Server, b"");
    let (done, key) = w.send_tracked(file, IOCTL_KSSPI_OPEN, &open, 64, false);
    let key = key.lock().unwrap().expect("OPEN pends");
    assert!(w.cancel_at_dispatch(key));
    assert_eq!(wait(&done).0, STATUS_CANCELLED);
    gate.release();
    // The acquisition completes later; its credentials and session go too.
    w.finish();
    assert_eq!(done.0.lock().unwrap().len(), 1, "completed exactly once");
}

#[test]
fn cleanup_closes_a_files_sessions_mid_step_and_completes_everything_once() {
    let w = world(
        CompletionPolicy::Always(Completion::Async),
        DeviceConfig::default(),
    );
    let (a, other) = (w.dev.open_file(), w.dev.open_file());
    let (_, c1) = w.open(a, Role::Client, b"localhost");
    let (_, c2) = w.open(a, Role::Client, b"localhost");
    let (_, keep) = w.open(other, Role::Client, b"localhost");
    let gate = w.sim.hold_completions();
    let p1 = w.send(
        a,
        IOCTL_KSSPI_STEP,
        &step_input(c1.session),
        step_reply_capacity(64 * 1024),
    );
    let left = w.dev.cleanup(a);
    // c1 waits for its in-flight call; c2 had none and is gone already.
    assert_eq!(left, 1);
    gate.release();
    let (st, _) = wait(&p1);
    assert!(st == STATUS_CANCELLED || st == STATUS_SUCCESS, "{st:#x}");
    for _ in 0..2000 {
        if w.dev.sessions_of(a) == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(w.dev.sessions_of(a), 0);
    assert_eq!(w.step(a, c2.session, &[]).0, STATUS_INVALID_HANDLE);
    // The other file's session is untouched.
    assert_eq!(w.step(other, keep.session, &[]).0, STATUS_SUCCESS);
    w.dev.unload();
    w.finish();
}

#[test]
fn the_selftest_runs_n_handshakes_at_concurrency_c_in_every_mode() {
    for policy in Completion::ALL
        .map(CompletionPolicy::Always)
        .into_iter()
        .chain([CompletionPolicy::Mixed])
    {
        let w = world(policy, DeviceConfig::default());
        let (st, reply) = selftest(&w, 60, 8);
        assert_eq!(st, STATUS_SUCCESS);
        let r = reply.unwrap();
        assert_eq!(
            (r.handshakes_ok, r.handshakes_failed),
            (60, 0),
            "{policy:?}: {r:?}"
        );
        assert_eq!(r.sessions, 120);
        assert_eq!(
            r.async_contexts_created, r.sessions,
            "one async context per session"
        );
        assert!(r.steps >= 60 * 3, "{r:?}");
        assert!(r.latency_p50_us <= r.latency_p99_us && r.latency_p99_us <= r.latency_max_us);
        assert!(r.elapsed_us > 0);
        let by_mode =
            r.completions_pending + r.completions_inline_callback + r.completions_sync_no_callback;
        assert!(by_mode > 0, "{r:?}");
        w.finish();
    }
}

#[test]
fn a_selftest_with_an_unknown_certificate_reports_every_handshake_failed() {
    let mut w = world(CompletionPolicy::Mixed, DeviceConfig::default());
    w.thumb = [0x42; 20];
    let (st, reply) = selftest(&w, 5, 2);
    assert_eq!(st, STATUS_SUCCESS);
    let r = reply.unwrap();
    assert_eq!((r.handshakes_ok, r.handshakes_failed), (0, 5));
    w.finish();
}

#[test]
fn cleanup_while_open_pends_cancels_it_and_leaves_nothing() {
    let w = world(
        CompletionPolicy::Always(Completion::Async),
        DeviceConfig::default(),
    );
    let file = w.dev.open_file();
    let gate = w.sim.hold_completions();
    let pending = w.send(file, IOCTL_KSSPI_OPEN, &w.open_input(Role::Server, b""), 64);
    assert!(
        pending.0.lock().unwrap().is_empty(),
        "OPEN pends while its credentials are acquired"
    );
    assert_eq!(w.dev.sessions_of(file), 1);
    w.dev.cleanup(file);
    assert_eq!(wait(&pending).0, STATUS_CANCELLED);
    gate.release();
    // The acquisition completes later; its credentials and session go too.
    w.finish();
}

#[test]
fn data_both_ways_and_close_notify_through_the_record_ioctls_in_every_mode() {
    for policy in Completion::ALL
        .map(CompletionPolicy::Always)
        .into_iter()
        .chain([CompletionPolicy::Mixed])
    {
        let w = world_with(policy, 2, DeviceConfig::default());
        let file = w.dev.open_file();
        let (st, reply) = w.call(file, IOCTL_KSSPI_GET_INFO, &[], 256);
        assert_eq!(st, STATUS_SUCCESS);
        assert!(decode::<InfoReply>(&reply).unwrap().capabilities & caps::RECORD_LAYER != 0);
        let (_, server) = w.open(file, Role::Server, b"");
        let (_, client) = w.open(file, Role::Client, b"localhost");
        let tickets = establish(&w, file, server.session, client.session);
        assert!(!tickets.is_empty(), "{policy:?}: TLS 1.3 tickets");
        // QUERY: the client sees the server's certificate; the server, no
        // client certificate.
        let query = |session| {
            let (st, reply) = w.call(
                file,
                IOCTL_KSSPI_QUERY,
                &enc(&QueryRequest { session }),
                QUERY_REPLY_CAPACITY,
            );
            assert_eq!(st, STATUS_SUCCESS);
            let q = decode::<QueryReply>(&reply).unwrap();
            (
                q.protocol,
                q.peer_certificates,
                q.leaf.to_vec(),
                q.max_message,
                q.exchange,
            )
        };
        let (protocol, certs, leaf, max_message, exchange) = query(client.session);
        assert_ne!(protocol, 0);
        assert!(
            certs >= 1 && leaf.first() == Some(&0x30),
            "a DER leaf: {certs}"
        );
        assert_eq!(max_message as usize, RECORD_PLAINTEXT);
        assert_ne!(exchange, 0);
        let (_, certs, leaf, _, _) = query(server.session);
        assert_eq!((certs, leaf.len()), (0, 0));
        let up = payload(200_000, 1);
        let wire = w.seal(file, client.session, &up);
        let (got, outcome, _) = w.unseal(file, server.session, &wire, 30_000);
        assert_eq!(outcome, RecordOutcome::Data);
        assert!(got == up, "{policy:?}: client to server");
        let down = payload(100_000, 2);
        let mut wire = tickets;
        wire.extend_from_slice(&w.seal(file, server.session, &down));
        let (got, _, renegotiations) = w.unseal(file, client.session, &wire, 30_000);
        assert!(got == down, "{policy:?}: server to client");
        assert!(
            renegotiations >= 1,
            "the tickets went through the handshake call"
        );
        // The client closes; the server sees the peer close.
        let (st, reply) = w.shutdown(file, client.session);
        assert_eq!(st, STATUS_SUCCESS);
        let r = decode::<RecordReply>(&reply).unwrap();
        assert_eq!((r.outcome, r.status), (RecordOutcome::ShutDown, 0));
        let close_notify = r.output.to_vec();
        assert!(!close_notify.is_empty());
        let (st, reply) = w.decrypt(file, server.session, &close_notify);
        assert_eq!(st, STATUS_SUCCESS);
        let r = decode::<RecordReply>(&reply).unwrap();
        assert_eq!(r.outcome, RecordOutcome::PeerClosed);
        assert_eq!(r.status as u32, SecStatus::SEC_I_CONTEXT_EXPIRED.bits());
        // What no longer fits the sessions' state is refused.
        assert_eq!(
            w.encrypt(file, client.session, b"more").0,
            STATUS_INVALID_DEVICE_STATE
        );
        assert_eq!(
            w.shutdown(file, client.session).0,
            STATUS_INVALID_DEVICE_STATE
        );
        assert_eq!(
            w.decrypt(file, server.session, b"").0,
            STATUS_INVALID_DEVICE_STATE
        );
        assert_eq!(w.close(file, server.session), STATUS_SUCCESS);
        assert_eq!(w.close(file, client.session), STATUS_SUCCESS);
        w.finish();
    }
}

#[test]
fn record_ioctls_refuse_bad_buffers_foreign_and_early_sessions_and_change_nothing() {
    let w = world(CompletionPolicy::Mixed, DeviceConfig::default());
    let file = w.dev.open_file();
    let other = w.dev.open_file();
    let (_, server) = w.open(file, Role::Server, b"");
    let (_, client) = w.open(file, Role::Client, b"localhost");
    // Before the handshake.
    let query = enc(&QueryRequest {
        session: client.session,
    });
    assert_eq!(
        w.call(file, IOCTL_KSSPI_QUERY, &query, QUERY_REPLY_CAPACITY)
            .0,
        STATUS_INVALID_DEVICE_STATE
    );
    assert_eq!(
        w.call(file, IOCTL_KSSPI_QUERY, &query, QUERY_REPLY_CAPACITY - 1)
            .0,
        STATUS_BUFFER_TOO_SMALL
    );
    assert_eq!(
        w.call(other, IOCTL_KSSPI_QUERY, &query, QUERY_REPLY_CAPACITY)
            .0,
        STATUS_INVALID_HANDLE
    );
    assert_eq!(
        w.encrypt(file, client.session, b"x").0,
        STATUS_INVALID_DEVICE_STATE
    );
    assert_eq!(
        w.decrypt(file, client.session, b"x").0,
        STATUS_INVALID_DEVICE_STATE
    );
    assert_eq!(
        w.shutdown(file, client.session).0,
        STATUS_INVALID_DEVICE_STATE
    );
    let _ = establish(&w, file, server.session, client.session);
    let req = enc(&EncryptRequest(RecordRequest {
        session: client.session,
        bytes: b"hello",
    }));
    // Truncated, wrong kind, output too small, oversized, foreign file, stale id.
    assert_eq!(
        w.call(file, IOCTL_KSSPI_ENCRYPT, &req[..20], 4096).0,
        STATUS_BUFFER_TOO_SMALL
    );
    assert_eq!(
        w.call(file, IOCTL_KSSPI_DECRYPT, &req, RECORD_REPLY).0,
        STATUS_INVALID_PARAMETER,
        "an ENCRYPT message sent to DECRYPT"
    );
    assert_eq!(
        w.call(file, IOCTL_KSSPI_ENCRYPT, &req, 40).0,
        STATUS_BUFFER_TOO_SMALL
    );
    let dec = enc(&DecryptRequest(RecordRequest {
        session: server.session,
        bytes: b"",
    }));
    assert_eq!(
        w.call(file, IOCTL_KSSPI_DECRYPT, &dec, RECORD_REPLY - 1).0,
        STATUS_BUFFER_TOO_SMALL
    );
    let shut = enc(&ShutdownRequest {
        session: server.session,
    });
    assert_eq!(
        w.call(file, IOCTL_KSSPI_SHUTDOWN, &shut, 64).0,
        STATUS_BUFFER_TOO_SMALL
    );
    let big = vec![0u8; MAX_TOKEN + 1];
    assert_eq!(
        w.encrypt(file, client.session, &big).0,
        STATUS_INVALID_BUFFER_SIZE
    );
    assert_eq!(
        w.encrypt(other, client.session, b"x").0,
        STATUS_INVALID_HANDLE
    );
    assert_eq!(
        w.decrypt(other, server.session, b"x").0,
        STATUS_INVALID_HANDLE
    );
    assert_eq!(w.shutdown(other, server.session).0, STATUS_INVALID_HANDLE);
    let stale = SessionId::new(client.session.slot(), client.session.generation() + 1);
    assert_eq!(w.encrypt(file, stale, b"x").0, STATUS_INVALID_HANDLE);
    // Nothing changed: data still flows.
    let (st, reply) = w.call(file, IOCTL_KSSPI_ENCRYPT, &req, 4096);
    assert_eq!(st, STATUS_SUCCESS);
    let wire = decode::<EncryptReply>(&reply).unwrap().output.to_vec();
    let (got, outcome, _) = w.unseal(file, server.session, &wire, 1 << 15);
    assert_eq!(
        (got.as_slice(), outcome),
        (&b"hello"[..], RecordOutcome::Data)
    );
    // More than a session buffers, in pieces each within MAX_TOKEN: a
    // partial record's header, then a full MAX_TOKEN.
    let (st, reply) = w.decrypt(file, server.session, &[0x17, 3, 3, 0x40, 0x00]);
    assert_eq!(st, STATUS_SUCCESS);
    let r = decode::<RecordReply>(&reply).unwrap();
    assert_eq!(r.outcome, RecordOutcome::Data);
    assert!(r.missing > 0, "a partial record is kept, its MISSING said");
    let filler = vec![0u8; MAX_TOKEN];
    assert_eq!(
        w.decrypt(file, server.session, &filler).0,
        STATUS_QUOTA_EXCEEDED
    );
    assert_eq!(w.close(file, server.session), STATUS_SUCCESS);
    assert_eq!(w.close(file, client.session), STATUS_SUCCESS);
    w.finish();
}

#[test]
fn a_tampered_record_gets_a_failed_reply_and_the_session_stays_unusable() {
    let w = world(CompletionPolicy::Mixed, DeviceConfig::default());
    let file = w.dev.open_file();
    let (_, server) = w.open(file, Role::Server, b"");
    let (_, client) = w.open(file, Role::Client, b"localhost");
    let _ = establish(&w, file, server.session, client.session);
    let mut wire = w.seal(file, client.session, b"first");
    let mut bad = w.seal(file, client.session, b"second");
    let last = bad.len() - 1;
    bad[last] ^= 1;
    wire.extend_from_slice(&bad);
    let (st, reply) = w.decrypt(file, server.session, &wire);
    assert_eq!(st, STATUS_SUCCESS);
    let r = decode::<RecordReply>(&reply).unwrap();
    assert_eq!(r.outcome, RecordOutcome::Failed);
    assert_eq!(r.status as u32, SecStatus::SEC_E_DECRYPT_FAILURE.bits());
    assert_eq!(r.data, b"first");
    for (st, reply) in [
        w.decrypt(file, server.session, &w.seal(file, client.session, b"x")),
        w.encrypt(file, server.session, b"y"),
        w.shutdown(file, server.session),
    ] {
        assert_eq!(
            st, STATUS_SUCCESS,
            "a TLS failure is a reply, not an NTSTATUS"
        );
        let status = decode::<RecordReply>(&reply)
            .map(|r| r.status)
            .or_else(|_| decode::<EncryptReply>(&reply).map(|r| r.status))
            .unwrap();
        assert_eq!(status as u32, SecStatus::SEC_E_DECRYPT_FAILURE.bits());
    }
    assert_eq!(w.close(file, server.session), STATUS_SUCCESS);
    assert_eq!(w.close(file, client.session), STATUS_SUCCESS);
    w.finish();
}

#[test]
fn a_cancelled_decrypt_completes_once_and_its_session_goes() {
    let w = world_with(
        CompletionPolicy::Always(Completion::Async),
        2,
        DeviceConfig::default(),
    );
    let file = w.dev.open_file();
    let (_, server) = w.open(file, Role::Server, b"");
    let (_, client) = w.open(file, Role::Client, b"localhost");
    let tickets = establish(&w, file, server.session, client.session);
    let gate = w.sim.hold_completions();
    // The tickets' handshake call is held in flight: DECRYPT pends.
    let req = enc(&DecryptRequest(RecordRequest {
        session: client.session,
        bytes: &tickets,
    }));
    let (pending, key) = w.send_tracked(file, IOCTL_KSSPI_DECRYPT, &req, RECORD_REPLY, false);
    assert!(pending.0.lock().unwrap().is_empty(), "DECRYPT pends");
    let key = key.lock().unwrap().expect("pended");
    assert_eq!(w.encrypt(file, client.session, b"x").0, STATUS_DEVICE_BUSY);
    assert_eq!(w.shutdown(file, client.session).0, STATUS_DEVICE_BUSY);
    assert!(w.cancel_at_dispatch(key));
    assert_eq!(wait(&pending).0, STATUS_CANCELLED);
    assert_eq!(
        w.encrypt(file, client.session, b"x").0,
        STATUS_INVALID_HANDLE
    );
    gate.release();
    assert_eq!(pending.0.lock().unwrap().len(), 1, "completed exactly once");
    assert_eq!(w.close(file, server.session), STATUS_SUCCESS);
    w.finish();
}

#[test]
fn the_selftest_exchanges_and_checks_bytes_both_ways_after_each_handshake() {
    for policy in [
        CompletionPolicy::Mixed,
        CompletionPolicy::Always(Completion::Inline),
    ] {
        let w = world_with(policy, 2, DeviceConfig::default());
        let file = w.dev.open_file();
        let req = SelftestRequest {
            count: 12,
            concurrency: 4,
            protocols: proto::ALL,
            thumbprint: w.thumb,
            bytes: 70_000,
            seed: 3,
            ..SelftestRequest::default()
        };
        let (st, reply) = w.call(file, IOCTL_KSSPI_SELFTEST, &enc(&req), 512);
        assert_eq!(st, STATUS_SUCCESS);
        let r = decode::<SelftestReply>(&reply).unwrap();
        assert_eq!((r.handshakes_ok, r.handshakes_failed), (12, 0), "{r:?}");
        assert_eq!(r.bytes_checked, 12 * 2 * 70_000, "every byte, both ways");
        w.finish();
    }
}

#[test]
fn the_next_request_sent_from_an_encrypt_or_query_completion_is_not_busy() {
    // A user thread woken by an ENCRYPT's or QUERY's completion may send its
    // next request on the session before the completing call has returned:
    // the session must be free by then, not refused as busy.
    let w = std::sync::Arc::new(world(
        CompletionPolicy::Always(Completion::Sync),
        DeviceConfig::default(),
    ));
    let file = w.dev.open_file();
    let (_, server) = w.open(file, Role::Server, b"");
    let (_, client) = w.open(file, Role::Client, b"localhost");
    establish(&w, file, server.session, client.session);
    let session = client.session;
    let encrypt = enc(&EncryptRequest(RecordRequest {
        session,
        bytes: b"first",
    }));
    let query = enc(&QueryRequest { session });
    for (code, input, capacity) in [
        (IOCTL_KSSPI_ENCRYPT, &encrypt, encrypt_reply_capacity(5)),
        (IOCTL_KSSPI_QUERY, &query, QUERY_REPLY_CAPACITY),
    ] {
        let (request, first, _) = w.request(capacity, false);
        let (next, second, _) = w.request(encrypt_reply_capacity(5), false);
        let (wn, encrypt) = (w.clone(), encrypt.clone());
        let request = request.then(move |status| {
            assert_eq!(status, STATUS_SUCCESS);
            wn.dev
                .ioctl(file, IOCTL_KSSPI_ENCRYPT, &encrypt, next, &at());
        });
        w.dev.ioctl(file, code, input, request, &at());
        assert_eq!(wait(&first).0, STATUS_SUCCESS, "{code:#x}");
        assert_eq!(
            wait(&second).0,
            STATUS_SUCCESS,
            "{code:#x}: the next request was refused"
        );
    }
    assert_eq!(w.close(file, server.session), STATUS_SUCCESS);
    assert_eq!(w.close(file, client.session), STATUS_SUCCESS);
    std::sync::Arc::into_inner(w).unwrap().finish();
}

#[test]
fn a_full_table_refuses_opens_and_freed_slots_and_quotas_come_back() {
    // 4 slots, 3 per file: the table's free slots and per-file counts follow
    // every OPEN and CLOSE, and a reused slot refuses its old id.
    let config = DeviceConfig {
        max_sessions: 4,
        max_sessions_per_file: 3,
        ..DeviceConfig::default()
    };
    let w = world(CompletionPolicy::Always(Completion::Sync), config);
    let (a, b, c) = (w.dev.open_file(), w.dev.open_file(), w.dev.open_file());
    let open = |file| {
        let (st, reply) = w.open(file, Role::Client, b"x");
        (st, reply.session)
    };
    let a1 = open(a).1;
    let a2 = open(a).1;
    let a3 = open(a).1;
    assert_eq!(open(a).0, STATUS_QUOTA_EXCEEDED);
    let (st, b1) = open(b);
    assert_eq!(st, STATUS_SUCCESS);
    assert_eq!(
        open(c).0,
        STATUS_INSUFFICIENT_RESOURCES,
        "the table is full"
    );
    assert_eq!((w.dev.sessions_of(a), w.dev.sessions_of(b)), (3, 1));
    // Free a's second slot: c gets it, under a new generation.
    assert_eq!(w.close(a, a2), STATUS_SUCCESS);
    let (st, c1) = open(c);
    assert_eq!(st, STATUS_SUCCESS);
    assert_eq!(c1.slot(), a2.slot());
    assert_ne!(c1, a2);
    assert_eq!(w.step(a, a2, &[]).0, STATUS_INVALID_HANDLE, "a stale id");
    assert_eq!(w.close(c, a2), STATUS_INVALID_HANDLE);
    // a is under its quota again but the table is full.
    assert_eq!(open(a).0, STATUS_INSUFFICIENT_RESOURCES);
    assert_eq!(w.close(b, b1), STATUS_SUCCESS);
    assert_eq!(w.dev.sessions_of(b), 0);
    assert_eq!(open(a).0, STATUS_SUCCESS);
    assert_eq!(
        (
            w.dev.sessions_of(a),
            w.dev.sessions_of(c),
            w.dev.sessions_alive()
        ),
        (3, 1, 4)
    );
    w.dev.cleanup(a);
    assert_eq!((w.dev.sessions_of(a), w.dev.sessions_alive()), (0, 1));
    for _ in 0..3 {
        assert_eq!(open(b).0, STATUS_SUCCESS);
    }
    assert_eq!(w.close(a, a1), STATUS_INVALID_HANDLE);
    assert_eq!(w.close(a, a3), STATUS_INVALID_HANDLE);
    w.dev.unload();
    w.finish();
}

#[test]
fn replies_are_written_and_requests_completed_outside_the_table_lock() {
    // The table's spin lock holds the IRQL at DISPATCH_LEVEL: a reply of up
    // to 128 KiB encoded under it, or a completion (whose caller may send
    // the next request into the device at once), would show as DISPATCH.
    // Without cancels, every write and completion happens at PASSIVE.
    for mode in Completion::ALL {
        let w = world_with(CompletionPolicy::Always(mode), 2, DeviceConfig::default());
        let file = w.dev.open_file();
        let (_, server) = w.open(file, Role::Server, b"");
        let (_, client) = w.open(file, Role::Client, b"localhost");
        let mut to_client = establish(&w, file, server.session, client.session);
        let sealed = w.seal(file, server.session, &payload(40_000, 1));
        to_client.extend_from_slice(&sealed);
        let (st, reply) = w.decrypt(file, client.session, &to_client);
        assert_eq!(st, STATUS_SUCCESS);
        assert_eq!(decode::<RecordReply>(&reply).unwrap().data.len(), 40_000);
        assert_eq!(w.shutdown(file, client.session).0, STATUS_SUCCESS);
        assert_eq!(w.close(file, server.session), STATUS_SUCCESS);
        assert_eq!(w.close(file, client.session), STATUS_SUCCESS);
        let irqls = w.irqls.lock().unwrap().clone();
        assert!(irqls.iter().filter(|(what, _)| *what == "complete").count() >= 10);
        let raised: Vec<_> = irqls.iter().filter(|(_, i)| *i != Irql::PASSIVE).collect();
        assert!(raised.is_empty(), "{mode:?}: {raised:?}");
        w.finish();
    }
}
