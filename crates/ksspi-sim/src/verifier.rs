//! The model's Driver Verifier: every async context, credential, security
//! context and context buffer is tracked with a tag from creation to release;
//! [`Verifier::check_unload`] lists whatever is still alive. Low-resources
//! simulation fails the Nth fault point (an allocation or a provider call), or
//! a seeded random one in N of them ([`Verifier::fail_one_in`]).

use crate::kernel::{bugcheck, Bugcheck};
use std::borrow::Cow;
use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Fault points after an injected fault that [`Verifier::fail_one_in`]
/// spares on the same thread.
const SPARED_AFTER_A_FAULT: u32 = 2;

thread_local! {
    /// Fault points this thread still spares since its last random fault.
    static SPARE: Cell<u32> = const { Cell::new(0) };
}

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

/// The hasher of the model's tables whose keys are its own: ids and fake
/// addresses it hands out in sequence, and the addresses of buffers it
/// allocated. No caller chooses one (a caller's handle that is not in a table
/// is only a miss), so SipHash's defence against chosen keys buys nothing, and
/// it was most of a lookup's cost; one multiply by an odd constant (a
/// bijection of the key, so no two keys collide in full) spreads them over
/// both the bits hashbrown indexes with and those it tags with.
#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not reached by integer keys; any other input still hashes.
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(GOLDEN);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(GOLDEN);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

/// What the verifier keeps, under one lock.
#[derive(Default)]
struct Tracked {
    /// Each live object by id: its tag and what it is (borrowed when that
    /// is a literal, so tracking one allocates nothing of its own).
    live: HashMap<u64, (Tag, Cow<'static, str>), BuildHasherDefault<IdHasher>>,
    /// Objects ever created, by tag.
    created: BTreeMap<Tag, u64>,
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
    tracked: Mutex<Tracked>,
    next_id: AtomicU64,
    points: AtomicU64,
    fail_at: AtomicU64,
    /// Random mode: fail one point in this many (0: off).
    one_in: AtomicU64,
    /// Random mode: the seed of its draws.
    seed: AtomicU64,
    injected: AtomicU64,
}

impl Verifier {
    /// A verifier with no fault planned.
    pub fn new() -> Self {
        Self::default()
    }

    /// Track a new object; returns its id.
    pub fn track(&self, tag: Tag, what: impl Into<Cow<'static, str>>) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let mut t = self.tracked.lock().unwrap();
        t.live.insert(id, (tag, what.into()));
        *t.created.entry(tag).or_default() += 1;
        id
    }

    /// Untrack an object being freed; freeing one that is not alive (double
    /// free, or a foreign id) is a bugcheck.
    #[track_caller]
    pub fn untrack(&self, tag: Tag, id: u64) {
        let removed = self.tracked.lock().unwrap().live.remove(&id);
        match removed {
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
        matches!(self.tracked.lock().unwrap().live.get(&id), Some((t, _)) if *t == tag)
    }

    /// How many objects with `tag` are alive now.
    pub fn live_count(&self, tag: Tag) -> usize {
        self.tracked
            .lock()
            .unwrap()
            .live
            .values()
            .filter(|(t, _)| *t == tag)
            .count()
    }

    /// How many objects with `tag` were ever created.
    pub fn created(&self, tag: Tag) -> u64 {
        self.tracked
            .lock()
            .unwrap()
            .created
            .get(&tag)
            .copied()
            .unwrap_or(0)
    }

    /// Everything still alive, oldest first.
    pub fn live(&self) -> Vec<Leak> {
        let mut live: Vec<Leak> = self
            .tracked
            .lock()
            .unwrap()
            .live
            .iter()
            .map(|(id, (tag, what))| Leak {
                tag: *tag,
                id: *id,
                what: what.to_string(),
            })
            .collect();
        live.sort_by_key(|l| l.id);
        live
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
    /// Turns the random mode off.
    pub fn fail_nth(&self, n: u64) {
        self.one_in.store(0, Ordering::SeqCst);
        SPARE.with(|s| s.set(0));
        self.points.store(0, Ordering::SeqCst);
        self.injected.store(0, Ordering::SeqCst);
        self.fail_at.store(n, Ordering::SeqCst);
    }

    /// Random low-resources simulation from now on: each fault point fails
    /// with probability 1/`n` (0 = off), drawn from `seed` and the point's
    /// number, so a run's faults follow from its seed as far as its threads
    /// reach the points in the same order.
    ///
    /// After a fault, the same thread's next two points are spared. Those are
    /// the engine's recovery paths (a handle whose release could not be
    /// queued is released once more on a fresh async context: one allocation
    /// and one call); when those fail too the handle is leaked on purpose
    /// (there is no other way to free it), which a random run would report as
    /// a leak. [`Verifier::fail_nth`] sweeps reach every single point,
    /// recovery paths included. Turns the Nth-point plan off; the calling
    /// thread starts with nothing spared.
    pub fn fail_one_in(&self, n: u64, seed: u64) {
        self.fail_at.store(0, Ordering::SeqCst);
        self.points.store(0, Ordering::SeqCst);
        self.injected.store(0, Ordering::SeqCst);
        self.seed.store(seed, Ordering::SeqCst);
        SPARE.with(|s| s.set(0));
        self.one_in.store(n, Ordering::SeqCst);
    }

    /// Count a fault point; true if this one must fail.
    pub fn fault_point(&self, _kind: FaultKind) -> bool {
        let n = self.points.fetch_add(1, Ordering::SeqCst) + 1;
        let one_in = self.one_in.load(Ordering::SeqCst);
        let hit = if one_in > 0 {
            let spared = SPARE.with(|s| {
                let left = s.get();
                s.set(left.saturating_sub(1));
                left > 0
            });
            let draw = splitmix64(self.seed.load(Ordering::Relaxed) ^ n);
            let hit = !spared && draw.is_multiple_of(one_in);
            if hit {
                SPARE.with(|s| s.set(SPARED_AFTER_A_FAULT));
            }
            hit
        } else {
            n == self.fail_at.load(Ordering::SeqCst)
        };
        if hit {
            self.injected.fetch_add(1, Ordering::SeqCst);
        }
        hit
    }

    /// Fault points counted since the last [`Verifier::fail_nth`] or
    /// [`Verifier::fail_one_in`].
    pub fn points(&self) -> u64 {
        self.points.load(Ordering::SeqCst)
    }

    /// Faults injected since the last [`Verifier::fail_nth`] or
    /// [`Verifier::fail_one_in`].
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::SeqCst)
    }
}

/// SplitMix64's finaliser: a well-mixed draw from a counter.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
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
    fn leaks_are_listed_oldest_first_and_counted_by_tag() {
        let v = Verifier::new();
        let ids: Vec<u64> = (0..40)
            .map(|i| v.track(Tag::ContextBuffer, format!("buffer {i}")))
            .collect();
        for id in ids.iter().step_by(3) {
            v.untrack(Tag::ContextBuffer, *id);
        }
        let live: Vec<u64> = v.live().iter().map(|l| l.id).collect();
        let want: Vec<u64> = ids
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 3 != 0)
            .map(|(_, id)| *id)
            .collect();
        assert_eq!(live, want);
        assert_eq!(v.live()[0].what, "buffer 1");
        assert_eq!(v.live_count(Tag::ContextBuffer), want.len());
        assert_eq!(v.created(Tag::ContextBuffer), 40);
        assert_eq!(v.created(Tag::Credential), 0);
        assert!(v.is_live(Tag::ContextBuffer, want[0]));
        assert!(!v.is_live(Tag::Credential, want[0]));
        assert!(!v.is_live(Tag::ContextBuffer, ids[0]));
    }

    #[test]
    fn the_id_hasher_keeps_distinct_keys_apart() {
        use std::hash::BuildHasher;
        let b = BuildHasherDefault::<IdHasher>::default();
        let hashes: std::collections::HashSet<u64> =
            (0..10_000usize).map(|k| b.hash_one(k)).collect();
        assert_eq!(hashes.len(), 10_000);
        // hashbrown tags entries with the top seven bits: sequential keys
        // must not all share them.
        let tags: std::collections::HashSet<u64> = hashes.iter().map(|h| h >> 57).collect();
        assert!(tags.len() > 64, "{} distinct tags", tags.len());
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

    #[test]
    fn one_in_n_fails_about_that_fraction_never_twice_in_a_row() {
        let v = Verifier::new();
        v.fail_one_in(20, 7);
        let hits: Vec<bool> = (0..20_000)
            .map(|_| v.fault_point(FaultKind::Allocation))
            .collect();
        let n = hits.iter().filter(|&&h| h).count() as u64;
        assert_eq!(v.injected(), n);
        // 1/20 of the points, less the two spared after each fault.
        assert!((800..1100).contains(&n), "{n} faults in 20 000 points");
        for (i, w) in hits.windows(3).enumerate() {
            assert!(!(w[0] && (w[1] || w[2])), "a fault right after one at {i}");
        }
        // The same seed, the same faults; fail_nth turns the mode off.
        let again = Verifier::new();
        again.fail_one_in(20, 7);
        let same: Vec<bool> = (0..20_000)
            .map(|_| again.fault_point(FaultKind::Call))
            .collect();
        assert_eq!(hits, same);
        again.fail_nth(0);
        assert!((0..1000).all(|_| !again.fault_point(FaultKind::Call)));
        assert_eq!(again.injected(), 0);
    }
}
