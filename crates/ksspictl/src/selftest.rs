//! One self-test request over whichever backend was built: SELFTEST with a
//! spinner while it runs, then GET_INFO for what the driver observed. For
//! `selftest`, and for `stress` batches on Windows.

use crate::backend::Target;
use crate::util::ntstatus_name;
use crate::Failure;
use indicatif::{ProgressBar, ProgressStyle};
use ksspi_abi::*;
use std::time::Duration;

/// One self-test: the reply, the backend's name and what leaked at unload.
pub fn run_selftest(
    Target {
        driver,
        thumbprint,
        seed,
    }: Target,
    count: u32,
    concurrency: u32,
    protocols: u32,
    bytes: u32,
    spinner: bool,
) -> Result<(SelftestReply, &'static str, u64, Observed), Failure> {
    let request = SelftestRequest {
        count,
        concurrency,
        protocols,
        completion: 0,
        callback_irql: 0,
        seed,
        thumbprint,
        bytes,
        resume: false,
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
        bar.set_message(format!(
            "{count} handshakes at concurrency {concurrency} ({backend})"
        ));
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
