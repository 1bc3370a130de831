//! Loom models of the issuer / callback / close races (run with
//! `RUSTFLAGS="--cfg loom" cargo test -p ksspi --release --test loom_sync`).
//!
//! Loom explores every interleaving of the threads below, including the
//! callback completing before the issuing function returns, and a close racing
//! a completion; each model asserts that exactly one party continues.
#![cfg(loom)]

use ksspi::engine::sync::{CloseClaim, Handoff, Ownership, Release};
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;

#[test]
fn exactly_one_of_issuer_and_callback_continues() {
    loom::model(|| {
        let h = Arc::new(Handoff::new());
        let continued = Arc::new(AtomicUsize::new(0));
        let (h2, c2) = (h.clone(), continued.clone());
        // The callback on another CPU, racing the issuing function's return.
        let cb = thread::spawn(move || {
            if h2.callback_arrived() {
                c2.fetch_add(1, Ordering::SeqCst);
            }
        });
        if h.issuer_returned() {
            continued.fetch_add(1, Ordering::SeqCst);
        }
        cb.join().unwrap();
        assert_eq!(continued.load(Ordering::SeqCst), 1);
    });
}

#[test]
fn a_close_racing_a_completion_tears_down_exactly_once() {
    loom::model(|| {
        let own = Arc::new(Ownership::new());
        let h = Arc::new(Handoff::new());
        let teardowns = Arc::new(AtomicUsize::new(0));
        own.claim().unwrap(); // a step is running: its call is in flight
                              // The completion: whichever of callback and issuer arrives second
                              // continues, finds nothing more to do, and would go idle.
        let (own2, h2, t2) = (own.clone(), h.clone(), teardowns.clone());
        let cb = thread::spawn(move || {
            if h2.callback_arrived() && own2.release() == Release::TearDown {
                t2.fetch_add(1, Ordering::SeqCst);
            }
        });
        // The closer, from a third thread (cleanup or cancel).
        let (own3, t3) = (own.clone(), teardowns.clone());
        let closer = thread::spawn(move || {
            if own3.close() == CloseClaim::TearDownNow {
                t3.fetch_add(1, Ordering::SeqCst);
            }
        });
        // The issuer returns from the issuing function.
        if h.issuer_returned() && own.release() == Release::TearDown {
            teardowns.fetch_add(1, Ordering::SeqCst);
        }
        cb.join().unwrap();
        closer.join().unwrap();
        assert_eq!(teardowns.load(Ordering::SeqCst), 1);
    });
}

#[test]
fn a_step_and_a_close_on_an_idle_session_never_both_own_it() {
    loom::model(|| {
        let own = Arc::new(Ownership::new());
        let owners = Arc::new(AtomicUsize::new(0));
        let (own2, o2) = (own.clone(), owners.clone());
        let stepper = thread::spawn(move || {
            if own2.claim().is_ok() {
                o2.fetch_add(1, Ordering::SeqCst);
                // The step finishes: idle, unless the close came in between.
                if own2.release() == Release::TearDown {
                    o2.fetch_add(10, Ordering::SeqCst);
                }
            }
        });
        let claim = own.close();
        let mine = usize::from(claim == CloseClaim::TearDownNow) * 10;
        owners.fetch_add(mine, Ordering::SeqCst);
        stepper.join().unwrap();
        // Exactly one teardown (10), plus at most one step (1).
        let n = owners.load(Ordering::SeqCst);
        assert!(n == 10 || n == 11, "owners {n}");
    });
}

/// The check-then-act handoff the design rules out: read the other side's
/// mark, then set one's own. Loom must find the interleaving where both sides
/// see nothing and nobody continues (the lost completion).
#[test]
fn loom_catches_a_check_then_act_handoff() {
    let outcome = std::panic::catch_unwind(|| {
        loom::model(|| {
            let issuer_mark = Arc::new(loom::sync::atomic::AtomicBool::new(false));
            let callback_mark = Arc::new(loom::sync::atomic::AtomicBool::new(false));
            let continued = Arc::new(AtomicUsize::new(0));
            let (im, cm, c2) = (
                issuer_mark.clone(),
                callback_mark.clone(),
                continued.clone(),
            );
            let cb = thread::spawn(move || {
                let issuer_done = im.load(Ordering::SeqCst);
                cm.store(true, Ordering::SeqCst);
                if issuer_done {
                    c2.fetch_add(1, Ordering::SeqCst);
                }
            });
            let callback_done = callback_mark.load(Ordering::SeqCst);
            issuer_mark.store(true, Ordering::SeqCst);
            if callback_done {
                continued.fetch_add(1, Ordering::SeqCst);
            }
            cb.join().unwrap();
            assert_eq!(continued.load(Ordering::SeqCst), 1, "a completion was lost");
        })
    });
    assert!(outcome.is_err(), "loom did not find the lost completion");
}
