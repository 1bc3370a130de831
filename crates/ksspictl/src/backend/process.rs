//! Child processes for the acceptance run, the same on both backends: this
//! very `ksspictl` with other arguments (each step is a command a user could
//! type, and a crash in one cannot take the report with it), the
//! serve/connect pair over loopback, and external tools (`verifier.exe`,
//! `pnputil`, PowerShell) on Windows. Each has a time limit; a child past it
//! is killed and reported as not finished.

// The Windows backend uses all of it; the model (acceptance --dry-run) part.
#![cfg_attr(not(windows), allow(dead_code))]

use crate::vm::acceptance::Ran;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How a command line is shown in the report: arguments with spaces quoted.
pub fn shown(program: &str, args: &[String]) -> String {
    std::iter::once(program.to_string())
        .chain(args.iter().map(|a| {
            if a.contains(' ') || a.is_empty() {
                format!("\"{a}\"")
            } else {
                a.clone()
            }
        }))
        .collect::<Vec<_>>()
        .join(" ")
}

/// This executable.
fn me() -> Command {
    Command::new(std::env::current_exe().unwrap_or_else(|_| "ksspictl".into()))
}

/// Run `program` with `args` to the end or until `limit`.
pub fn run(mut command: Command, shown: String, limit: Duration) -> Ran {
    let started = Instant::now();
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            return Ran {
                command: shown,
                exit_code: Some(-1),
                stderr: format!("could not start it: {e}"),
                ..Ran::default()
            }
        }
    };
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let exit_code = wait(&mut child, limit);
    Ran {
        command: shown,
        skipped: None,
        exit_code,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
        duration_ms: started.elapsed().as_millis() as u64,
    }
}

/// `ksspictl ARGS` to the end or until `limit`.
pub fn run_self(args: &[String], limit: Duration) -> Ran {
    let mut command = me();
    command.args(args);
    run(command, shown("ksspictl", args), limit)
}

/// Read a pipe to its end on a thread of its own.
fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut p) = pipe {
            let mut bytes = Vec::new();
            let _ = p.read_to_end(&mut bytes);
            text = String::from_utf8_lossy(&bytes).into_owned();
        }
        text
    })
}

/// The child's exit code, or None (killed) past `limit`.
pub fn wait(child: &mut Child, limit: Duration) -> Option<i32> {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status.code().unwrap_or(-1)),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// `ksspictl ARGS` in the background, its output collected until it ends.
pub struct Background {
    child: Child,
    shown: String,
    started: Instant,
    out: std::thread::JoinHandle<String>,
    err: std::thread::JoinHandle<String>,
}

impl Background {
    pub fn start(args: &[String]) -> Result<Background, String> {
        let mut child = me()
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("could not start ksspictl: {e}"))?;
        let out = drain(child.stdout.take());
        let err = drain(child.stderr.take());
        Ok(Background {
            child,
            shown: shown("ksspictl", args),
            started: Instant::now(),
            out,
            err,
        })
    }

    /// Wait for it (up to `limit`) and collect what it wrote.
    pub fn finish(mut self, limit: Duration) -> Ran {
        let exit_code = wait(&mut self.child, limit);
        Ran {
            command: self.shown,
            skipped: None,
            exit_code,
            stdout: self.out.join().unwrap_or_default(),
            stderr: self.err.join().unwrap_or_default(),
            duration_ms: self.started.elapsed().as_millis() as u64,
        }
    }
}

/// `serve` (its arguments, listening on 127.0.0.1:0) and `connect` to the
/// address it prints, sending a line and expecting it back.
pub fn loopback(serve: &[String], tls_name: &str, limit: Duration) -> Ran {
    let started = Instant::now();
    let mut server = match me()
        .args(serve)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            return Ran {
                command: shown("ksspictl", serve),
                exit_code: Some(-1),
                stderr: format!("could not start serve: {e}"),
                ..Ran::default()
            }
        }
    };
    let server_err = drain(server.stderr.take());
    // serve prints "listening on ADDR" first.
    let mut lines = BufReader::new(server.stdout.take().expect("piped"));
    let mut first = String::new();
    let _ = lines.read_line(&mut first);
    let rest = drain(Some(lines));
    let Some(addr) = first
        .trim()
        .strip_prefix("listening on ")
        .map(str::to_string)
    else {
        let exit = wait(&mut server, Duration::from_secs(5));
        return Ran {
            command: shown("ksspictl", serve),
            exit_code: Some(exit.unwrap_or(-1)).filter(|c| *c != 0).or(Some(1)),
            stdout: first,
            stderr: server_err.join().unwrap_or_default(),
            duration_ms: started.elapsed().as_millis() as u64,
            ..Ran::default()
        };
    };
    let text = "ksspi-acceptance";
    let connect: Vec<String> = [
        "connect",
        &addr,
        "--server-name",
        tls_name,
        "--send",
        text,
        "--expect",
        text,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let client = run_self(&connect, limit);
    let server_exit = wait(&mut server, limit);
    let server_out = rest.join().unwrap_or_default();
    let server_err = server_err.join().unwrap_or_default();
    let exit_code = match (client.exit_code, server_exit) {
        (Some(0), Some(0)) => Some(0),
        (Some(0), other) => other,
        (other, _) => other,
    };
    Ran {
        command: format!("{} & {}", shown("ksspictl", serve), client.command),
        skipped: None,
        exit_code,
        stdout: format!("{first}{server_out}{}", client.stdout),
        stderr: format!("{server_err}{}", client.stderr),
        duration_ms: started.elapsed().as_millis() as u64,
    }
}
