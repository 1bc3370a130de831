//! After setup, a handshake step and a record-layer call (encrypt, decrypt,
//! shutdown) allocate nothing in the engine but the growth of the session's
//! buffers (`EngineStats::buffer_grows`: every allocation counted must be
//! one, and a session makes at most `ksspi::engine::max_grows` of them), and
//! nothing at all once the buffers have their size, in every completion
//! mode and at either callback IRQL. Every allocation the engine's code makes is
//! counted, on whichever thread it runs: inside `Session::step` (or
//! `encrypt`, `decrypt`, `shutdown`), and in the continuations that finish
//! the call (the engine's completion callback, inline inside a provider call
//! or on the model's completion threads, and its work item), until the model
//! is idle. Not counted: what the (model) provider, the platform's work
//! queue and the test's own event recorder allocate, which stand for
//! ksecdd, the kernel and the driver. The meter is
//! [`ksspi_sim::alloc_count`]; `-- --nocapture` prints what each mode ran.

mod engine_support;

use engine_support::*;
use ksspi::engine::{
    max_grows, EngineStats, Limits, Outcome, RecordReport, Role, Session, SessionEvents,
    SessionSetup, StepReport,
};
use ksspi::provider::SspiProvider;
use ksspi::sys::*;
use ksspi::SecStatus;
use ksspi_sim::alloc_count::{
    continuations, count, count_until_idle, engine, outside, record_sites, serial, take_sites,
    Counted, CountedPlatform, CountedProvider, Counting,
};
use ksspi_sim::{CallbackIrql, Completion, CompletionPolicy, SimConfig, SimProvider};
use std::sync::atomic::Ordering;
use std::sync::Arc;

#[global_allocator]
static ALLOCATOR: Counting = Counting;

struct Events(Arc<Recorder>);

impl SessionEvents for Events {
    fn step_done(&self, report: &StepReport<'_>) {
        outside(|| self.0.step_done(report))
    }
    fn record_done(&self, report: &RecordReport<'_>) {
        outside(|| self.0.record_done(report))
    }
    fn step_ready(&self) {
        outside(|| self.0.step_ready())
    }
    fn closed(&self) {
        outside(|| self.0.closed())
    }
}

fn session(
    sim: &SimProvider,
    role: Role,
    cred: Arc<ksspi::handle::Credentials<CountedProvider>>,
    rec: &Arc<Recorder>,
    stats: &Arc<EngineStats>,
) -> Session<CountedProvider, CountedPlatform> {
    let setup = SessionSetup {
        role,
        credentials: cred,
        limits: Limits::default(),
        client_certificates: Default::default(),
        alpn: None,
        events: Arc::new(Events(rec.clone())),
    };
    Session::new(
        CountedProvider::new(sim.clone()),
        CountedPlatform::new(sim),
        setup,
        stats.clone(),
        &passive(),
    )
    .unwrap()
}

fn acquire_wrapped(
    sim: &SimProvider,
    spec: &ksspi::engine::CredentialSpec,
) -> Arc<ksspi::handle::Credentials<CountedProvider>> {
    ksspi_sim::testing::acquire_blocking(
        CountedProvider::new(sim.clone()),
        CountedPlatform::new(sim),
        spec,
        Arc::default(),
        &passive(),
    )
    .expect("credentials")
}

/// One record of `msg` through the model's EncryptMessage on `from` (header,
/// data and trailer back to back, as the engine lays them) and DecryptMessage
/// on `to` (in place, as the engine calls it); returns the allocations each
/// made, the provider's and rustls's included, and checks the plaintext.
fn model_record(
    sim: &SimProvider,
    mut from: SecHandle,
    mut to: SecHandle,
    sizes: ksspi::engine::StreamSizes,
    msg: &[u8],
) -> (u64, u64) {
    let (h, n, t) = (sizes.header, msg.len(), sizes.trailer);
    let mut record = vec![0u8; h + n + t];
    record[h..h + n].copy_from_slice(msg);
    let base = record.as_mut_ptr();
    let buffer = |kind: u32, at: usize, len: usize| SecBuffer {
        cbBuffer: len as u32,
        BufferType: kind,
        // SAFETY: every buffer lies within `record`.
        pvBuffer: unsafe { base.add(at) }.cast(),
    };
    let mut bufs = [
        buffer(SECBUFFER_STREAM_HEADER, 0, h),
        buffer(SECBUFFER_DATA, h, n),
        buffer(SECBUFFER_STREAM_TRAILER, h + n, t),
        SecBuffer::empty(SECBUFFER_EMPTY),
    ];
    let mut desc = SecBufferDesc::new(&mut bufs);
    let mut status = SecStatus::SEC_E_INTERNAL_ERROR;
    // SAFETY: a live, idle security context; the descriptor and `record`
    // outlive the call.
    let sealing = count(|| status = unsafe { sim.encrypt_message(&mut from, 0, &mut desc, 0) });
    assert_eq!(status, SecStatus::SEC_E_OK);
    let len = (bufs[0].cbBuffer + bufs[1].cbBuffer + bufs[2].cbBuffer) as usize;
    assert_eq!(len, record.len(), "one record, back to back");
    let mut bufs = [
        buffer(SECBUFFER_DATA, 0, len),
        SecBuffer::empty(SECBUFFER_EMPTY),
        SecBuffer::empty(SECBUFFER_EMPTY),
        SecBuffer::empty(SECBUFFER_EMPTY),
    ];
    let mut desc = SecBufferDesc::new(&mut bufs);
    let opening = count(|| {
        // SAFETY: as above; the provider points the buffers into `record`.
        status = unsafe { sim.decrypt_message(&mut to, &mut desc, 0, std::ptr::null_mut()) }
    });
    assert_eq!(status, SecStatus::SEC_E_OK);
    let data = bufs.iter().find(|b| b.kind() == SECBUFFER_DATA).unwrap();
    // SAFETY: the DATA buffer the provider set lies within `record`.
    let plain =
        unsafe { std::slice::from_raw_parts(data.pvBuffer.cast::<u8>(), data.cbBuffer as usize) };
    assert_eq!(plain, msg, "decrypted in place");
    (sealing.allocs, opening.allocs)
}

/// What the engine allocated in `f` and in the continuations it started,
/// until the model is idle. With `hold`, the model's completion threads wait
/// until `f` returned, so that an asynchronous call's continuation runs after
/// the issuer returned (on the model's CPU, or through the work item with
/// callbacks at DISPATCH), whatever the timing.
fn measure(sim: &SimProvider, hold: bool, f: impl FnOnce()) -> Counted {
    let gate = hold.then(|| sim.hold_completions());
    count_until_idle(sim, || {
        f();
        if let Some(gate) = gate {
            outside(|| gate.release());
        }
    })
}

#[test]
fn a_handshake_step_allocates_nothing_in_the_engine() {
    let _serial = serial();
    // The counter sees an allocation made in the counted region...
    assert_eq!(
        count(|| drop(std::hint::black_box(vec![1u8; 10]))).allocs,
        1
    );
    // ...and none made outside the engine.
    assert_eq!(
        count(|| outside(|| drop(std::hint::black_box(vec![1u8; 10])))).allocs,
        0
    );
    // The engine's code on another thread is counted too (starting the
    // thread is not the engine's).
    let on_a_thread = count(|| {
        outside(|| {
            std::thread::spawn(|| engine(|| drop(std::hint::black_box(vec![1u8; 5]))))
                .join()
                .unwrap()
        })
    });
    assert_eq!(on_a_thread.allocs, 1);
    for (mode, irql) in [
        (Completion::Sync, CallbackIrql::Passive),
        (Completion::Inline, CallbackIrql::Passive),
        (Completion::Inline, CallbackIrql::Dispatch),
        (Completion::AsyncBeforeReturn, CallbackIrql::Passive),
        (Completion::AsyncBeforeReturn, CallbackIrql::Dispatch),
        (Completion::Async, CallbackIrql::Passive),
        (Completion::Async, CallbackIrql::Dispatch),
    ] {
        let config = SimConfig {
            completion: CompletionPolicy::Always(mode),
            callback_irql: irql,
            ..SimConfig::default()
        };
        let (sim, thumb) = sim_with(config);
        let server_cred = acquire_wrapped(&sim, &server_spec(thumb, 0));
        let client_cred = acquire_wrapped(&sim, &client_spec(0));
        let (srec, crec) = (Arc::new(Recorder::default()), Arc::new(Recorder::default()));
        let stats = Arc::new(EngineStats::default());
        let grows = || stats.buffer_grows.load(Ordering::SeqCst);
        let server = session(&sim, Role::Server, server_cred.clone(), &srec, &stats);
        let client = session(
            &sim,
            Role::Client {
                target: Some("localhost".into()),
            },
            client_cred.clone(),
            &crec,
            &stats,
        );
        // Two sessions: each grows its buffers at most this often.
        let bound = 2 * max_grows(&Limits::default());
        assert_eq!(grows(), 0, "{mode:?}: a session starts with no buffers");
        let at = passive();
        let hold = mode == Completion::Async;
        // From here on nothing may allocate: keep the first sites. The
        // setup's continuations end first (a region adds its count to the
        // tally when it ends).
        sim.wait_idle();
        let entered = continuations();
        take_sites();
        record_sites(true);
        let mut allocs = 0;
        allocs += measure(&sim, hold, || client.step(&[], &at).unwrap()).allocs;
        let mut to_server = crec.next().output;
        let mut steps = 1;
        let (mut c_done, mut s_done) = (false, false);
        for _ in 0..8 {
            if !s_done && !to_server.is_empty() {
                allocs += measure(&sim, hold, || server.step(&to_server, &at).unwrap()).allocs;
                steps += 1;
                let r = srec.next();
                s_done = r.outcome == Outcome::Established;
                if !c_done && !r.output.is_empty() {
                    allocs += measure(&sim, hold, || client.step(&r.output, &at).unwrap()).allocs;
                    steps += 1;
                    let c = crec.next();
                    c_done = c.outcome == Outcome::Established;
                    to_server = c.output;
                } else {
                    to_server.clear();
                }
            }
            if c_done && s_done {
                break;
            }
        }
        assert!(c_done && s_done, "{mode:?}: handshake did not finish");
        let handshake_grows = grows();
        assert!(
            allocs == handshake_grows && handshake_grows <= bound,
            "{mode:?}, callbacks {irql:?}: the engine allocated {allocs} times over {steps} \
             steps, {handshake_grows} of them buffer growths (at most {bound})\n{}",
            take_sites()
        );
        // The record layer: the first decrypt grows the server's input (the
        // handshake's was given back); the same again allocates nothing.
        let data: Vec<u8> = (0..40_000u32).map(|i| i as u8).collect();
        let mut wire = vec![0u8; client.sealed_len(data.len()).unwrap()];
        let mut n = 0;
        let mut first_allocs = 0;
        let mut record_allocs = 0;
        for round in 0..2 {
            let before = grows();
            let mut round_allocs = measure(&sim, hold, || {
                n = client.encrypt(&data, &mut wire, &at).unwrap().len
            })
            .allocs;
            round_allocs += measure(&sim, hold, || server.decrypt(&wire[..n], &at).unwrap()).allocs;
            assert!(srec.next_record().data == data, "{mode:?}: decrypted");
            if round == 0 {
                first_allocs = round_allocs;
                assert_eq!(
                    first_allocs,
                    grows() - before,
                    "{mode:?}: the first decrypt allocated more than its buffer's growth\n{}",
                    take_sites()
                );
            } else {
                record_allocs += round_allocs;
            }
        }
        // The model's own EncryptMessage and DecryptMessage (ksecdd's side,
        // left out above) add no allocation to rustls's: one per record each
        // way, rustls's own (it seals into a buffer of its own, and queues each
        // record's plaintext in one).
        record_sites(false);
        let (from, to) = (client.security_context(), server.security_context());
        let sizes = client.stream_sizes().unwrap();
        let msg = &data[..sizes.max_message];
        model_record(&sim, from.unwrap(), to.unwrap(), sizes, msg); // warm: the scratch grows once
        let (sealing, opening) = model_record(&sim, from.unwrap(), to.unwrap(), sizes, msg);
        assert!(
            sealing <= 1 && opening <= 1,
            "{mode:?}: the model's EncryptMessage allocated {sealing} times, DecryptMessage {opening}"
        );
        assert_eq!(
            record_allocs,
            0,
            "{mode:?}, callbacks {irql:?}: a decrypt of the same size allocated \
             {record_allocs} times\n{}",
            take_sites()
        );
        // close_notify: the server's output and the client's input are the
        // record layer's first use of them (each grows once).
        record_sites(true);
        let before = grows();
        let mut close_allocs = measure(&sim, hold, || server.shutdown(&at).unwrap()).allocs;
        let close = srec.next_record();
        close_allocs += measure(&sim, hold, || client.decrypt(&close.output, &at).unwrap()).allocs;
        assert_eq!(
            crec.next_record().outcome,
            ksspi::engine::RecordOutcome::PeerClosed
        );
        record_sites(false);
        let all_grows = grows();
        assert!(
            close_allocs == all_grows - before && all_grows <= bound,
            "{mode:?}, callbacks {irql:?}: shutdown and the peer's close_notify allocated \
             {close_allocs} times, {} buffer growths ({all_grows} in all, at most {bound})\n{}",
            all_grows - before,
            take_sites()
        );
        // The continuations were measured: outside the synchronous mode the
        // calls completed through the engine's callback, entered through the
        // meter, and, when it came at DISPATCH after the issuer returned,
        // through its work item too.
        let ran = continuations() - entered;
        match (mode, irql) {
            (Completion::Sync, _) => assert_eq!(ran.callbacks, 0, "{mode:?}"),
            (Completion::Async, CallbackIrql::Dispatch) => {
                assert!(ran.callbacks > 0 && ran.work_items > 0, "{mode:?}: {ran:?}")
            }
            _ => assert!(ran.callbacks > 0, "{mode:?}: {ran:?}"),
        }
        println!(
            "{mode:?}, callbacks {irql:?}: {steps} steps allocated {handshake_grows} buffer \
             growths and nothing else; the record layer's first decrypt {first_allocs}, the \
             same again nothing, close_notify both ways {close_allocs}; {all_grows} growths \
             for two sessions (bound {bound}) ({} callbacks, {} work items metered)",
            ran.callbacks, ran.work_items
        );
        server.close();
        client.close();
        srec.wait_closed();
        crec.wait_closed();
        drop((server, client));
        for cred in [server_cred, client_cred] {
            drop(Arc::try_unwrap(cred).ok().expect("unshared")); // released by its own drop at PASSIVE
        }
        sim.wait_idle();
        sim.unload().unwrap_or_else(|leaks| panic!("{leaks}"));
    }
}
