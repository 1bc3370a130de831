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
use std::sync::mpsc;
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

/// What a child printed first, waited for with [`first_line`].
enum FirstLine {
    /// The first line (its newline kept; empty if the pipe closed before
    /// any), and the thread reading the rest of the pipe to its end.
    Line(String, std::thread::JoinHandle<String>),
    /// No whole line within the limit. The reading thread is left to end
    /// by itself when the pipe closes (its writer killed).
    TimedOut,
}

/// Read `pipe`'s first line on a thread of its own, waiting up to `limit`
/// for it (`recv_timeout`), so a child that stalls before printing cannot
/// hold the caller past its time limit; after the line, the same thread
/// reads the rest to the end.
fn first_line<R: Read + Send + 'static>(pipe: R, limit: Duration) -> FirstLine {
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut lines = BufReader::new(pipe);
        let mut first = String::new();
        let _ = lines.read_line(&mut first);
        // The receiver is gone if the caller timed out: nothing to tell.
        let _ = tx.send(first);
        let mut bytes = Vec::new();
        let _ = lines.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    });
    match rx.recv_timeout(limit) {
        Ok(line) => FirstLine::Line(line, reader),
        // The thread ended without sending: it panicked; treat as no line.
        Err(mpsc::RecvTimeoutError::Disconnected) => FirstLine::Line(String::new(), reader),
        Err(mpsc::RecvTimeoutError::Timeout) => FirstLine::TimedOut,
    }
}

/// `serve` (its arguments, listening on 127.0.0.1:0) and `connect` to the
/// address it prints, sending a line and expecting it back. serve has
/// `limit` to print its address, connect `limit` to finish, serve `limit`
/// more to end after it.
pub fn loopback(serve: &[String], tls_name: &str, limit: Duration) -> Ran {
    let mut command = me();
    command.args(serve);
    loopback_with(command, shown("ksspictl", serve), tls_name, limit)
}

/// [`loopback`] with the server's command given (a test passes one that
/// never prints).
fn loopback_with(
    mut command: Command,
    serve_shown: String,
    tls_name: &str,
    limit: Duration,
) -> Ran {
    let started = Instant::now();
    let mut server = match command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            return Ran {
                command: serve_shown,
                exit_code: Some(-1),
                stderr: format!("could not start serve: {e}"),
                ..Ran::default()
            }
        }
    };
    let server_err = drain(server.stderr.take());
    // serve prints "listening on ADDR" first.
    let (first, rest) = match first_line(server.stdout.take().expect("piped"), limit) {
        FirstLine::Line(first, rest) => (first, rest),
        FirstLine::TimedOut => {
            let _ = server.kill();
            let _ = server.wait();
            let err = server_err.join().unwrap_or_default();
            return Ran {
                command: serve_shown,
                // None: not finished (killed), as `wait` reports a child
                // past its limit.
                exit_code: None,
                stderr: format!(
                    "{err}serve printed no \"listening on\" line within {} s: killed it\n",
                    limit.as_secs_f64()
                ),
                duration_ms: started.elapsed().as_millis() as u64,
                ..Ran::default()
            };
        }
    };
    let Some(addr) = first
        .trim()
        .strip_prefix("listening on ")
        .map(str::to_string)
    else {
        let exit = wait(&mut server, Duration::from_secs(5));
        return Ran {
            command: serve_shown,
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
        command: format!("{serve_shown} & {}", client.command),
        skipped: None,
        exit_code,
        stdout: format!("{first}{server_out}{}", client.stdout),
        stderr: format!("{server_err}{}", client.stderr),
        duration_ms: started.elapsed().as_millis() as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// A pipe whose writer is the test: reads block until it sends bytes or
    /// drops its end.
    struct Held(mpsc::Receiver<Vec<u8>>);

    impl Read for Held {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            match self.0.recv() {
                Ok(bytes) => {
                    let n = bytes.len().min(buf.len());
                    buf[..n].copy_from_slice(&bytes[..n]);
                    Ok(n)
                }
                Err(_) => Ok(0),
            }
        }
    }

    #[test]
    fn first_line_then_the_rest() {
        let text = "listening on 127.0.0.1:4433\nserved 1\n";
        match first_line(Cursor::new(text), Duration::from_secs(5)) {
            FirstLine::Line(first, rest) => {
                assert_eq!(first, "listening on 127.0.0.1:4433\n");
                assert_eq!(rest.join().unwrap(), "served 1\n");
            }
            FirstLine::TimedOut => panic!("timed out on a pipe with a line"),
        }
    }

    #[test]
    fn first_line_of_a_closed_pipe_is_empty() {
        match first_line(Cursor::new(""), Duration::from_secs(5)) {
            FirstLine::Line(first, rest) => {
                assert_eq!(first, "");
                assert_eq!(rest.join().unwrap(), "");
            }
            FirstLine::TimedOut => panic!("timed out on a closed pipe"),
        }
    }

    #[test]
    fn first_line_times_out_when_nothing_is_written() {
        let (tx, rx) = mpsc::channel();
        // Half a line, never finished.
        tx.send(b"listening".to_vec()).unwrap();
        let started = Instant::now();
        let got = first_line(Held(rx), Duration::from_millis(200));
        let waited = started.elapsed();
        assert!(matches!(got, FirstLine::TimedOut));
        assert!(waited >= Duration::from_millis(200), "{waited:?}");
        assert!(waited < Duration::from_secs(5), "{waited:?}");
        drop(tx); // the reading thread ends
    }

    #[cfg(unix)]
    #[test]
    fn loopback_kills_a_server_that_never_prints() {
        let mut command = Command::new("sleep");
        command.arg("30");
        let started = Instant::now();
        let ran = loopback_with(
            command,
            "sleep 30".into(),
            "localhost",
            Duration::from_millis(300),
        );
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(ran.command, "sleep 30");
        assert_eq!(ran.exit_code, None, "{ran:?}");
        assert_eq!(
            ran.stderr.lines().last(),
            Some("serve printed no \"listening on\" line within 0.3 s: killed it"),
            "{ran:?}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn loopback_reports_a_server_that_prints_something_else() {
        let mut command = Command::new("sh");
        command.args(["-c", "echo 'bind failed' >&2; echo nope; exit 3"]);
        let ran = loopback_with(
            command,
            "serve".into(),
            "localhost",
            Duration::from_secs(10),
        );
        assert_eq!(ran.exit_code, Some(3), "{ran:?}");
        assert_eq!(ran.stdout, "nope\n");
        assert_eq!(ran.stderr, "bind failed\n");
    }
}
