//! `ksspictl info`: the driver's versions, capabilities, counters and limits,
//! and what it observed of the async SSPI contract (GET_INFO).

use crate::backend;
use crate::observed::{print_observed, ObservedJson};
use crate::util::ntstatus_name;
use crate::Failure;
use ksspi_abi::*;
use serde::Serialize;

/// `info`'s flags.
#[derive(clap::Args)]
pub struct Args {
    /// One JSON object on stdout.
    #[arg(long)]
    json: bool,
}

/// Ask the driver for GET_INFO and print it.
pub fn exec(args: &Args) -> Result<(), Failure> {
    let json = args.json;
    let driver = backend::open(None)?;
    let backend = driver.backend();
    let (status, reply) = driver.call(IOCTL_KSSPI_GET_INFO, &[], 256)?;
    if status != 0 {
        return Err(Failure(format!(
            "GET_INFO failed: {}",
            ntstatus_name(status)
        )));
    }
    let r = decode::<InfoReply>(&reply)
        .map_err(|e| Failure(format!("a malformed info reply: {e:?}")))?;
    let leaked = driver.finish();
    if leaked > 0 {
        return Err(Failure(format!("{leaked} objects leaked at unload")));
    }
    let mut capabilities = Vec::new();
    for (bit, name) in [
        (caps::MODEL, "model"),
        (caps::TLS12, "tls1.2"),
        (caps::TLS13, "tls1.3"),
        (caps::SELFTEST, "selftest"),
        (caps::RECORD_LAYER, "record-layer"),
        (caps::ALPN, "alpn"),
        (caps::CLIENT_AUTH, "client-auth"),
        (caps::RESUMPTION, "resumption"),
    ] {
        if r.capabilities & bit != 0 {
            capabilities.push(name);
        }
    }
    let j = InfoJson {
        backend,
        abi_version: ABI_VERSION,
        driver_version: format!(
            "{}.{}.{}",
            r.driver_version[0], r.driver_version[1], r.driver_version[2]
        ),
        capabilities,
        sessions_open: r.sessions_open,
        sessions_total: r.sessions_total,
        handshakes_ok: r.handshakes_ok,
        handshakes_failed: r.handshakes_failed,
        max_sessions_per_file: r.max_sessions_per_file,
        max_buffered_per_session: r.max_buffered_per_session,
        observed: r.observed.into(),
    };
    if json {
        println!("{}", serde_json::to_string(&j).expect("serialisable"));
    } else {
        println!(
            "ksspi driver {} (ABI {}), backend: {}",
            j.driver_version, j.abi_version, j.backend
        );
        println!("  capabilities: {}", j.capabilities.join(", "));
        println!(
            "  sessions open / total: {} / {}",
            j.sessions_open, j.sessions_total
        );
        println!(
            "  handshakes ok / failed: {} / {}",
            j.handshakes_ok, j.handshakes_failed
        );
        println!(
            "  limits: {} sessions per file, {} bytes buffered per session",
            j.max_sessions_per_file, j.max_buffered_per_session
        );
        print_observed(&j.observed);
    }
    Ok(())
}

#[derive(Serialize)]
struct InfoJson {
    backend: &'static str,
    abi_version: u16,
    driver_version: String,
    capabilities: Vec<&'static str>,
    sessions_open: u32,
    sessions_total: u64,
    handshakes_ok: u64,
    handshakes_failed: u64,
    max_sessions_per_file: u32,
    max_buffered_per_session: u32,
    observed: ObservedJson,
}
