//! One self-test request over whichever backend was built: SELFTEST with a
//! spinner while it runs, then GET_INFO for what the driver observed. For
//! `selftest`, and for `stress` batches on Windows. A resume run
//! (`selftest --resume`) first checks GET_INFO's [`caps::RESUMPTION`]: a
//! driver without it would refuse the request's resume byte as reserved.

use crate::backend::Target;
use crate::util::ntstatus_name;
use crate::Failure;
use indicatif::{ProgressBar, ProgressStyle};
use ksspi_abi::*;
use std::time::Duration;

/// The NTSTATUS a harness reports when the driver is older than what it
/// was asked to use (as `relay`'s OPEN layouts do).
const STATUS_REVISION_MISMATCH: u32 = 0xC000_0059;

/// The self-test's figures and, with `resume`, what its second handshakes
/// did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    pub count: u32,
    pub concurrency: u32,
    pub protocols: u32,
    pub bytes: u32,
    /// Each pair twice, the second resuming ([`SelftestRequest::resume`]).
    pub resume: bool,
}

/// Stop with `STATUS_REVISION_MISMATCH` if the driver cannot run a resume
/// self-test (no [`caps::RESUMPTION`] in GET_INFO).
fn check_resumption(driver: &dyn crate::backend::Driver) -> Result<(), Failure> {
    let (status, reply) = driver.call(IOCTL_KSSPI_GET_INFO, &[], 256)?;
    if status != 0 {
        return Err(Failure(format!(
            "GET_INFO before the self-test failed: {}",
            ntstatus_name(status)
        )));
    }
    let info = decode::<InfoReply>(&reply)
        .map_err(|e| Failure(format!("a malformed GET_INFO reply: {e:?}")))?;
    if info.capabilities & caps::RESUMPTION == 0 {
        let [major, minor, patch] = info.driver_version;
        return Err(Failure(format!(
            "--resume: the driver ({major}.{minor}.{patch}) predates session resumption: \
             NTSTATUS {STATUS_REVISION_MISMATCH:#010x} (STATUS_REVISION_MISMATCH); update the \
             driver or leave --resume off"
        )));
    }
    Ok(())
}

/// One self-test: the reply, the backend's name and what leaked at unload.
pub fn run_selftest(
    Target {
        driver,
        thumbprint,
        seed,
    }: Target,
    Plan {
        count,
        concurrency,
        protocols,
        bytes,
        resume,
    }: Plan,
    spinner: bool,
) -> Result<(SelftestReply, &'static str, u64, Observed), Failure> {
    if resume {
        if let Err(e) = check_resumption(driver.as_ref()) {
            driver.finish();
            return Err(e);
        }
    }
    let request = SelftestRequest {
        count,
        concurrency,
        protocols,
        completion: 0,
        callback_irql: 0,
        seed,
        thumbprint,
        bytes,
        resume,
    };
    let mut input = vec![0u8; 256];
    let n = encode(&request, &mut input)
        .map_err(|e| Failure(format!("encoding the request: {e:?}")))?;
    let backend = driver.backend();
    let bar = spinner.then(|| {
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} self-test: {msg} [{elapsed}]")
                .expect("a valid template"),
        );
        bar.set_message(if resume {
            format!("{count} pairs of handshakes, the second resuming, at concurrency {concurrency} ({backend})")
        } else {
            format!("{count} handshakes at concurrency {concurrency} ({backend})")
        });
        bar.enable_steady_tick(Duration::from_millis(100));
        bar
    });
    let result = driver.call(IOCTL_KSSPI_SELFTEST, &input[..n], 512);
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let (status, reply) = result?;
    if status != 0 {
        driver.finish();
        return Err(Failure(format!(
            "the self-test request failed: {}",
            ntstatus_name(status)
        )));
    }
    let r = decode::<SelftestReply>(&reply)
        .map_err(|e| Failure(format!("a malformed self-test reply: {e:?}")))?;
    // The counts come exactly when asked for (the version rule).
    if r.resumption.is_some() != resume {
        driver.finish();
        return Err(Failure(format!(
            "a self-test reply {} resumption counts",
            if resume { "without" } else { "with unasked" }
        )));
    }
    let (status, info) = driver.call(IOCTL_KSSPI_GET_INFO, &[], 256)?;
    let observed = match decode::<InfoReply>(&info) {
        Ok(info) if status == 0 => info.observed,
        _ => {
            driver.finish();
            return Err(Failure(format!(
                "GET_INFO after the self-test failed: {}",
                ntstatus_name(status)
            )));
        }
    };
    Ok((r, backend, driver.finish(), observed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Driver;
    use std::sync::Mutex;

    /// A driver that answers GET_INFO with `capabilities` and records every
    /// other call (a SELFTEST must not come).
    struct Info(u32, Mutex<Vec<u32>>);

    impl Driver for Info {
        fn backend(&self) -> &'static str {
            "test"
        }
        fn call(&self, code: u32, _: &[u8], capacity: usize) -> Result<(i32, Vec<u8>), Failure> {
            self.1.lock().unwrap().push(code);
            assert_eq!(code, IOCTL_KSSPI_GET_INFO);
            let reply = InfoReply {
                driver_version: [0, 1, 0],
                capabilities: self.0,
                ..InfoReply::default()
            };
            let mut out = vec![0u8; capacity];
            let n = encode(&reply, &mut out).unwrap();
            out.truncate(n);
            Ok((0, out))
        }
        fn finish(self: Box<Self>) -> u64 {
            0
        }
    }

    #[test]
    fn a_driver_without_resumption_is_named_with_revision_mismatch_before_any_selftest() {
        let old = Info(caps::TLS12 | caps::TLS13 | caps::SELFTEST, Mutex::default());
        let Failure(why) = check_resumption(&old).unwrap_err();
        assert!(why.contains("0xc0000059"), "{why}");
        assert!(why.contains("STATUS_REVISION_MISMATCH"), "{why}");
        assert!(why.contains("predates session resumption"), "{why}");
        assert!(!why.contains("  "), "one line, no runs of spaces: {why}");
        assert_eq!(*old.1.lock().unwrap(), [IOCTL_KSSPI_GET_INFO]);
        let new = Info(caps::SELFTEST | caps::RESUMPTION, Mutex::default());
        check_resumption(&new).unwrap();
    }

    #[test]
    fn run_selftest_stops_before_the_selftest_on_an_older_driver() {
        let old = Info(caps::SELFTEST, Mutex::default());
        let target = Target {
            driver: Box::new(old),
            thumbprint: [1; 20],
            seed: 1,
        };
        let plan = Plan {
            count: 3,
            concurrency: 1,
            protocols: proto::ALL,
            bytes: 0,
            resume: true,
        };
        // (The fake asserts that only GET_INFO reaches it.)
        let Failure(why) = run_selftest(target, plan, false).unwrap_err();
        assert!(why.contains("STATUS_REVISION_MISMATCH"), "{why}");
    }
}
