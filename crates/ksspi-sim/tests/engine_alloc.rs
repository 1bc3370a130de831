//! After setup, a handshake step and a record-layer call (encrypt, decrypt,
//! shutdown) allocate nothing in the engine: every
//! allocation made while `Session::step` runs is counted, except those made
//! inside the (model) provider, the platform's work queue and the test's own
//! event recorder, which stand for ksecdd, the kernel and the driver.

mod engine_support;

use engine_support::*;
use ksspi::engine::{
    Limits, Outcome, RecordReport, Role, Session, SessionEvents, SessionSetup, StepReport,
};
use ksspi::provider::SspiProvider;
use ksspi::sys::*;
use ksspi::SecStatus;
use ksspi_sim::alloc_count::{count, outside, CountedPlatform, CountedProvider, Counting};
use ksspi_sim::{CallbackIrql, Completion, CompletionPolicy, SimConfig, SimPlatform, SimProvider};
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
) -> Session<CountedProvider, CountedPlatform> {
    let setup = SessionSetup {
        role,
        credentials: cred,
        limits: Limits::default(),
        events: Arc::new(Events(rec.clone())),
    };
    Session::new(
        CountedProvider(sim.clone()),
        CountedPlatform(SimPlatform::new(sim)),
        setup,
        Arc::default(),
        &passive(),
    )
    .unwrap()
}

fn acquire_wrapped(
    sim: &SimProvider,
    spec: &ksspi::engine::CredentialSpec,
) -> Arc<ksspi::handle::Credentials<CountedProvider>> {
    ksspi_sim::testing::acquire_blocking(
        CountedProvider(sim.clone()),
        CountedPlatform(SimPlatform::new(sim)),
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
    // SAFETY: as above; the provider points the buffers into `record`.
    let opening = count(|| {
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

#[test]
fn a_handshake_step_allocates_nothing_in_the_engine() {
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
    for mode in [
        Completion::Sync,
        Completion::Inline,
        Completion::AsyncBeforeReturn,
    ] {
        let config = SimConfig {
            completion: CompletionPolicy::Always(mode),
            callback_irql: CallbackIrql::Passive,
            ..SimConfig::default()
        };
        let (sim, thumb) = sim_with(config);
        let server_cred = acquire_wrapped(&sim, &server_spec(thumb, 0));
        let client_cred = acquire_wrapped(&sim, &client_spec(0));
        let (srec, crec) = (Arc::new(Recorder::default()), Arc::new(Recorder::default()));
        let server = session(&sim, Role::Server, server_cred.clone(), &srec);
        let client = session(
            &sim,
            Role::Client {
                target: Some("localhost".into()),
            },
            client_cred.clone(),
            &crec,
        );
        let at = passive();
        let mut allocs = 0;
        allocs += count(|| client.step(&[], &at).unwrap()).allocs;
        let mut to_server = crec.next().output;
        let mut steps = 1;
        let (mut c_done, mut s_done) = (false, false);
        for _ in 0..8 {
            if !s_done && !to_server.is_empty() {
                allocs += count(|| server.step(&to_server, &at).unwrap()).allocs;
                steps += 1;
                let r = srec.next();
                s_done = r.outcome == Outcome::Established;
                if !c_done && !r.output.is_empty() {
                    allocs += count(|| client.step(&r.output, &at).unwrap()).allocs;
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
        assert_eq!(
            allocs, 0,
            "{mode:?}: the engine allocated {allocs} times over {steps} steps"
        );
        // The record layer: encrypt, decrypt, shutdown and the peer's
        // close_notify allocate nothing in the engine either.
        let data: Vec<u8> = (0..40_000u32).map(|i| i as u8).collect();
        let mut wire = vec![0u8; client.sealed_len(data.len()).unwrap()];
        let mut n = 0;
        let mut record_allocs =
            count(|| n = client.encrypt(&data, &mut wire, &at).unwrap().len).allocs;
        record_allocs += count(|| server.decrypt(&wire[..n], &at).unwrap()).allocs;
        assert!(srec.next_record().data == data, "{mode:?}: decrypted");
        // The model's own EncryptMessage and DecryptMessage (ksecdd's side,
        // left out above) add no allocation to rustls's: one per record each
        // way, rustls's own (it seals into a buffer of its own, and queues each
        // record's plaintext in one).
        let (from, to) = (client.security_context(), server.security_context());
        let sizes = client.stream_sizes().unwrap();
        let msg = &data[..sizes.max_message];
        model_record(&sim, from.unwrap(), to.unwrap(), sizes, msg); // warm: the scratch grows once
        let (sealing, opening) = model_record(&sim, from.unwrap(), to.unwrap(), sizes, msg);
        assert!(
            sealing <= 1 && opening <= 1,
            "{mode:?}: the model's EncryptMessage allocated {sealing} times, DecryptMessage {opening}"
        );
        record_allocs += count(|| server.shutdown(&at).unwrap()).allocs;
        let close = srec.next_record();
        record_allocs += count(|| client.decrypt(&close.output, &at).unwrap()).allocs;
        assert_eq!(
            crec.next_record().outcome,
            ksspi::engine::RecordOutcome::PeerClosed
        );
        assert_eq!(
            record_allocs, 0,
            "{mode:?}: the record layer allocated {record_allocs} times"
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
