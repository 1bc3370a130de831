//! `ksspictl acceptance`: the whole acceptance on the test VM in one
//! command, resumable across the reboot Driver Verifier needs, leaving
//! `acceptance-report.json` and a one-screen summary. The run itself is
//! [`crate::vm::acceptance`] (a state machine); this file reads the flags
//! and the state file and writes the report.
//!
//! `--dry-run` (elsewhere than Windows) runs it over the model: the steps
//! the model can run run for real as child processes, the rest are recorded
//! as skipped, so the report's path is exercised end to end on Linux.

use crate::backend;
use crate::util::parse_thumbprint;
use crate::vm::acceptance::{self, Plan, State, STATE_FORMAT};
use crate::Failure;
use std::path::{Path, PathBuf};

/// `acceptance`'s flags.
#[derive(clap::Args)]
pub struct Args {
    /// The package's INF, to install from if the driver is not installed.
    #[arg(long)]
    inf: Option<PathBuf>,
    /// The server certificate in LocalMachine\My by SHA-1 thumbprint
    /// (default: create one, also trusted in LocalMachine\Root).
    #[arg(long = "cert-thumbprint", value_parser = parse_thumbprint)]
    cert_thumbprint: Option<[u8; 20]>,
    /// Skip the second phase under Driver Verifier (no reboot).
    #[arg(long = "no-verifier")]
    no_verifier: bool,
    /// Add ksspi_driver.sys beside drivers Driver Verifier already verifies.
    #[arg(long = "keep-others")]
    keep_others: bool,
    /// Self-test handshakes per TLS version.
    #[arg(long, default_value_t = 200)]
    count: u32,
    /// Application bytes each self-test pair exchanges both ways.
    #[arg(long, default_value_t = 16384)]
    bytes: u32,
    /// The soak's length in seconds.
    #[arg(long = "stress-seconds", default_value_t = 30)]
    stress_seconds: u64,
    /// Where to write the report.
    #[arg(long, default_value = "acceptance-report.json")]
    report: PathBuf,
    /// The state file that carries the run across the reboot.
    #[arg(long, default_value = "acceptance-state.json")]
    state: PathBuf,
    /// Start over, discarding a state file left by an earlier run.
    #[arg(long)]
    restart: bool,
    /// Run over the model (not on Windows): the model-capable steps for real.
    #[arg(long = "dry-run")]
    dry_run: bool,
}

fn hex(t: &[u8; 20]) -> String {
    t.iter().map(|b| format!("{b:02X}")).collect()
}

/// The state file's content, if there is one to resume from.
fn load_state(path: &Path, restart: bool) -> Result<Option<State>, Failure> {
    if restart || !path.exists() {
        return Ok(None);
    }
    let text =
        std::fs::read_to_string(path).map_err(|e| Failure(format!("{}: {e}", path.display())))?;
    let state: State = serde_json::from_str(&text).map_err(|e| {
        Failure(format!(
            "{} is not a state file this ksspictl wrote ({e}): remove it or pass --restart",
            path.display()
        ))
    })?;
    if state.format != STATE_FORMAT {
        return Err(Failure(format!(
            "{} has state format {} (this ksspictl writes {STATE_FORMAT}): pass --restart",
            path.display(),
            state.format
        )));
    }
    Ok(Some(state))
}

/// Run or resume the acceptance; write the report and the state file.
pub fn exec(args: &Args) -> Result<(), Failure> {
    if args.count == 0 {
        return Err(Failure("--count must be at least 1".into()));
    }
    if args.stress_seconds == 0 {
        return Err(Failure("--stress-seconds must be at least 1".into()));
    }
    if let Some(inf) = &args.inf {
        if !inf.is_file() {
            return Err(Failure(format!(
                "no INF at {}: build the package (cargo make) and pass its \
                 ksspi_driver.inf",
                inf.display()
            )));
        }
    }
    let mut system = backend::acceptance_system(args.dry_run)?;
    let resumed = load_state(&args.state, args.restart)?;
    if let Some(state) = &resumed {
        println!(
            "resuming the acceptance run started at {} (Unix time) from {}",
            state.report.started,
            args.state.display()
        );
    }
    let plan = Plan {
        inf: args.inf.as_ref().map(|p| p.display().to_string()),
        thumbprint: args.cert_thumbprint.as_ref().map(hex),
        verifier: !args.no_verifier,
        keep_others: args.keep_others,
        count: args.count,
        bytes: args.bytes,
        stress_seconds: args.stress_seconds,
    };
    let run = acceptance::run(system.as_mut(), plan, args.dry_run, resumed);
    let json = serde_json::to_string_pretty(&run.report).expect("serialisable");
    std::fs::write(&args.report, json + "\n")
        .map_err(|e| Failure(format!("writing {}: {e}", args.report.display())))?;
    match &run.state {
        Some(state) => {
            let json = serde_json::to_string_pretty(state).expect("serialisable");
            std::fs::write(&args.state, json + "\n")
                .map_err(|e| Failure(format!("writing {}: {e}", args.state.display())))?;
        }
        None => {
            if args.state.exists() {
                std::fs::remove_file(&args.state)
                    .map_err(|e| Failure(format!("removing {}: {e}", args.state.display())))?;
            }
        }
    }
    print!("{}", run.report.summary(&args.report.display().to_string()));
    if run.success {
        Ok(())
    } else {
        Err(Failure(format!(
            "acceptance {:?}: {}",
            run.report.outcome, run.report.next
        )))
    }
}
