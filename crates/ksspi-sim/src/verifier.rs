//! The model's Driver Verifier: every async context, credential, security
//! context and context buffer is tracked with a tag from creation to release;
//! [`Verifier::check_unload`] lists whatever is still alive. Low-resources
//! simulation fails the Nth fault point (an allocation or a provider call).

use crate::kernel::{bugcheck, Bugcheck};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// What a tracked object is (the pool tag it would carry on Windows).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tag {
    /// An `SspiAsyncContext` from `SspiCreateAsyncContext`.
    AsyncContext,
    /// A credential handle from `SspiAcquireCredentialsHandleAsync`.
    Credential,
    /// A security context from the first accept / initialize call.
    SecurityContext,
    /// Memory the provider allocated for the caller (`*_REQ_ALLOCATE_MEMORY`).
    ContextBuffer,
    /// Any other allocation a driver reports to the model.
    Pool(&'static str),
}

impl Tag {
    /// The four-character pool tag.
    pub fn pool_tag(self) -> &'static str {
        match self {
            Tag::AsyncContext => "SspA",
            Tag::Credential => "SspC",
            Tag::SecurityContext => "SspX",
            Tag::ContextBuffer => "SspB",
            Tag::Pool(tag) => tag,
        }
    }
}

/// One object alive at unload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leak {
    /// Its tag.
    pub tag: Tag,
    /// Its id in the model.
    pub id: u64,
    /// What created it.
    pub what: String,
}

/// The list [`Verifier::check_unload`] fails with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeakReport(pub Vec<Leak>);

impl fmt::Display for LeakReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} object(s) still alive at unload:", self.0.len())?;
        for leak in &self.0 {
            writeln!(f, "  [{}] #{} {}", leak.tag.pool_tag(), leak.id, leak.what)?;
        }
        Ok(())
    }
}

/// Which kinds of point low-resources simulation counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// An allocation (async context, handle, token buffer).
    Allocation,
    /// A provider call (queueing or completing with an error).
    Call,
}

/// Tracking and fault injection for one model instance.
#[derive(Default)]
pub struct Verifier {
    live: Mutex<BTreeMap<u64, (Tag, String)>>,
    next_id: AtomicU64,
    points: AtomicU64,
    fail_at: AtomicU64,
    injected: AtomicU64,
    created: Mutex<BTreeMap<Tag, u64>>,
}

impl Verifier {
    /// A verifier with no fault planned.
    pub fn new() -> Self {
        Self::default()
    }

    /// Track a new object; returns its id.
    pub fn track(&self, tag: Tag, what: impl Into<String>) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        self.live.lock().unwrap().insert(id, (tag, what.into()));
        *self.created.lock().unwrap().entry(tag).or_default() += 1;
        id
    }

    /// Untrack an object being freed; freeing one that is not alive (double
    /// free, or a foreign id) is a bugcheck.
    #[track_caller]
    pub fn untrack(&self, tag: Tag, id: u64) {
        match self.live.lock().unwrap().remove(&id) {
            Some((t, _)) if t == tag => {}
            Some((t, what)) => bugcheck(
                Bugcheck::BadPoolCaller,
                format_args!("freeing #{id} as {tag:?} but it is a {t:?} ({what})"),
            ),
            None => bugcheck(
                Bugcheck::BadPoolCaller,
                format_args!("{tag:?} #{id} freed twice, or never allocated"),
            ),
        }
    }

    /// Whether `id` is alive with `tag`.
    pub fn is_live(&self, tag: Tag, id: u64) -> bool {
        matches!(self.live.lock().unwrap().get(&id), Some((t, _)) if *t == tag)
    }

    /// How many objects with `tag` are alive now.
    pub fn live_count(&self, tag: Tag) -> usize {
        self.live
            .lock()
            .unwrap()
            .values()
            .filter(|(t, _)| *t == tag)
            .count()
    }

    /// How many objects with `tag` were ever created.
    pub fn created(&self, tag: Tag) -> u64 {
        self.created.lock().unwrap().get(&tag).copied().unwrap_or(0)
    }

    /// Everything still alive.
    pub fn live(&self) -> Vec<Leak> {
        self.live
            .lock()
            .unwrap()
            .iter()
            .map(|(id, (tag, what))| Leak {
                tag: *tag,
                id: *id,
                what: what.clone(),
            })
            .collect()
    }

    /// The unload check: `Err` with the list of what is still alive.
    pub fn check_unload(&self) -> Result<(), LeakReport> {
        let live = self.live();
        if live.is_empty() {
            Ok(())
        } else {
            Err(LeakReport(live))
        }
    }

    /// Plan to fail the `n`th fault point from now on (1-based; 0 = never).
    pub fn fail_nth(&self, n: u64) {
        self.points.store(0, Ordering::SeqCst);
        self.injected.store(0, Ordering::SeqCst);
        self.fail_at.store(n, Ordering::SeqCst);
    }

    /// Count a fault point; true if this one must fail.
    pub fn fault_point(&self, _kind: FaultKind) -> bool {
        let n = self.points.fetch_add(1, Ordering::SeqCst) + 1;
        let hit = n == self.fail_at.load(Ordering::SeqCst);
        if hit {
            self.injected.fetch_add(1, Ordering::SeqCst);
        }
        hit
    }

    /// Fault points counted since the last [`Verifier::fail_nth`].
    pub fn points(&self) -> u64 {
        self.points.load(Ordering::SeqCst)
    }

    /// Faults injected since the last [`Verifier::fail_nth`].
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leak_is_listed_at_unload() {
        let v = Verifier::new();
        let a = v.track(Tag::AsyncContext, "SspiCreateAsyncContext");
        let c = v.track(Tag::Credential, "server credential");
        v.untrack(Tag::AsyncContext, a);
        let report = v.check_unload().unwrap_err();
        assert_eq!(report.0.len(), 1);
        assert_eq!(report.0[0].tag, Tag::Credential);
        assert!(report.to_string().contains("[SspC]"), "{report}");
        v.untrack(Tag::Credential, c);
        assert!(v.check_unload().is_ok());
    }

    #[test]
    #[should_panic(expected = "BAD_POOL_CALLER")]
    fn a_double_free_is_a_bugcheck() {
        let v = Verifier::new();
        let a = v.track(Tag::ContextBuffer, "token");
        v.untrack(Tag::ContextBuffer, a);
        v.untrack(Tag::ContextBuffer, a);
    }

    #[test]
    fn the_nth_point_fails_once() {
        let v = Verifier::new();
        v.fail_nth(3);
        let hits: Vec<bool> = (0..5).map(|_| v.fault_point(FaultKind::Call)).collect();
        assert_eq!(hits, [false, false, true, false, false]);
        assert_eq!((v.points(), v.injected()), (5, 1));
    }
}
