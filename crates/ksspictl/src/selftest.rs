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
    let info = crate::relay::driver_info(driver)?;
    crate::relay::require(
        &info,
        &[(caps::RESUMPTION, "session resumption", "--resume")],
    )
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

    use crate::relay::InfoOnly;

    #[test]
    fn a_driver_without_resumption_is_named_with_revision_mismatch_before_any_selftest() {
        let old = InfoOnly(caps::TLS12 | caps::TLS13 | caps::SELFTEST);
        let Failure(why) = check_resumption(&old).unwrap_err();
        assert!(why.contains("0xc0000059"), "{why}");
        assert!(why.contains("STATUS_REVISION_MISMATCH"), "{why}");
        assert!(why.contains("predates session resumption"), "{why}");
        assert!(!why.contains("  "), "one line, no runs of spaces: {why}");
        let new = InfoOnly(caps::SELFTEST | caps::RESUMPTION);
        check_resumption(&new).unwrap();
    }

    #[test]
    fn run_selftest_stops_before_the_selftest_on_an_older_driver() {
        let old = InfoOnly(caps::SELFTEST);
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
