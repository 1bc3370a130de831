//! Session resumption against real peers, on loopback, TLS 1.2 and 1.3:
//! `ksspictl connect --repeat 2` against `openssl s_server` resumes its
//! second handshake (TLS 1.2 by ticket and by session id, TLS 1.3 by the
//! ticket s_server sends after the handshake, which connect reads before it
//! closes); `openssl s_client -sess_out`/`-sess_in` and `gnutls-cli
//! --resume` against `ksspictl serve` are resumed; `--resume off` on either
//! side gives full handshakes. The tests start the peers themselves.

// ksspictl over the model backend (a non-Windows build only).
#![cfg(not(windows))]

mod common;

use common::{ksspictl, peer_available, pki, start_s_server, start_serve};
use ksspi_sim::testing::{free_port, ChildGuard, TempDir};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// An `openssl s_server` for `accepts` connections on `port`.
fn s_server(port: u16, cert: &Path, key: &Path, flags: &[&str], accepts: u32) -> ChildGuard {
    let mut cmd = Command::new("openssl");
    cmd.args(["s_server", "-accept", &format!("127.0.0.1:{port}")])
        .args(["-naccept", &accepts.to_string()])
        .args(flags)
        .arg("-cert")
        .arg(cert)
        .arg("-key")
        .arg(key);
    start_s_server(&mut cmd)
}

/// `ksspictl connect` to `addr` with `extra` arguments: (exit code, stderr).
fn connect(addr: &str, ca: &Path, tls: &str, extra: &[&str]) -> (i32, String) {
    let mut args = vec![
        "connect",
        addr,
        "--server-name",
        "localhost",
        "--ca",
        ca.to_str().unwrap(),
        "--tls",
        tls,
    ];
    args.extend_from_slice(extra);
    let (code, _, err) = ksspictl(&args);
    (code, err)
}

#[test]
fn connect_repeat_resumes_against_openssl_s_server() {
    if !peer_available("openssl", "openssl") {
        return;
    }
    // TLS 1.2 with tickets (s_server's default) and by session id
    // (-no_ticket); TLS 1.3 by the tickets s_server sends after the
    // handshake.
    for (tls, flags) in [
        ("1.2", &["-tls1_2"][..]),
        ("1.2", &["-tls1_2", "-no_ticket"][..]),
        ("1.3", &["-tls1_3"][..]),
    ] {
        let dir = TempDir::new(&format!("ksspictl-resume-connect{tls}"));
        let (ca, cert, key) = pki(&dir);
        let port = free_port();
        let _server = s_server(port, &cert, &key, flags, 3);
        let addr = format!("127.0.0.1:{port}");
        let (code, err) = connect(&addr, &ca, tls, &["--repeat", "3"]);
        assert_eq!(code, 0, "{flags:?}: {err}");
        assert!(
            err.contains("connection 1 of 3: resumed: no"),
            "{flags:?}: {err}"
        );
        assert!(
            err.contains("connection 2 of 3: resumed: yes"),
            "{flags:?}: {err}"
        );
        assert!(
            err.contains("connection 3 of 3: resumed: yes"),
            "{flags:?}: {err}"
        );
        // QUERY agrees with STEP.
        assert_eq!(
            err.matches("session (QUERY): resumed").count(),
            2,
            "{flags:?}: {err}"
        );
        assert!(
            err.contains("resumed 2 of 3 handshakes (fallbacks: 0)"),
            "{flags:?}: {err}"
        );
        // Each connection closed cleanly, the TLS 1.3 ones after reading
        // s_server's tickets.
        assert_eq!(
            err.matches("closed cleanly: close_notify sent and received")
                .count(),
            3,
            "{flags:?}: {err}"
        );
        if tls == "1.3" {
            assert!(!err.contains(" 0 post-handshake messages"), "{err}");
        }
    }
}

#[test]
fn connect_resume_off_gives_full_handshakes_against_openssl_s_server() {
    if !peer_available("openssl", "openssl") {
        return;
    }
    for (tls, flag) in [("1.2", "-tls1_2"), ("1.3", "-tls1_3")] {
        let dir = TempDir::new(&format!("ksspictl-resume-off{tls}"));
        let (ca, cert, key) = pki(&dir);
        let port = free_port();
        let _server = s_server(port, &cert, &key, &[flag], 2);
        let addr = format!("127.0.0.1:{port}");
        let (code, err) = connect(&addr, &ca, tls, &["--repeat", "2", "--resume", "off"]);
        assert_eq!(code, 0, "TLS {tls}: {err}");
        assert!(
            err.contains("connection 1 of 2: resumed: no"),
            "TLS {tls}: {err}"
        );
        assert!(
            err.contains("connection 2 of 2: resumed: no"),
            "TLS {tls}: {err}"
        );
        assert_eq!(
            err.matches("session (QUERY): full handshake").count(),
            2,
            "TLS {tls}: {err}"
        );
        assert!(
            err.contains("resumed 0 of 2 handshakes (fallbacks: 1)"),
            "TLS {tls}: {err}"
        );
    }
}

#[test]
fn connect_with_one_connection_prints_no_summary_and_keeps_stdout_for_the_peer() {
    if !peer_available("openssl", "openssl") {
        return;
    }
    let dir = TempDir::new("ksspictl-resume-once");
    let (ca, cert, key) = pki(&dir);
    let port = free_port();
    let _server = s_server(port, &cert, &key, &["-tls1_3"], 1);
    let addr = format!("127.0.0.1:{port}");
    let (code, out, err) = ksspictl(&[
        "connect",
        &addr,
        "--server-name",
        "localhost",
        "--ca",
        ca.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.is_empty(), "{out}");
    assert!(err.contains("\nresumed: no\n"), "{err}");
    assert!(!err.contains("handshakes (fallbacks"), "{err}");
}

/// `ksspictl serve` (no --once) with `extra` arguments: the child, its
/// stdout's remaining lines, and its address.
fn serve(
    cert: &Path,
    key: &Path,
    tls: &str,
    extra: &[&str],
) -> (
    ChildGuard,
    std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
    String,
) {
    start_serve(
        Command::new(env!("CARGO_BIN_EXE_ksspictl"))
            .args(["serve", "--listen", "127.0.0.1:0", "--tls", tls])
            .args(extra)
            .arg("--cert")
            .arg(cert)
            .arg("--key")
            .arg(key),
    )
}

/// What a running `serve` prints, line by line, read on a thread of its own
/// so a test never blocks on a server that stays silent.
struct Printed {
    serve: ChildGuard,
    rx: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Printed {
    fn new(
        serve: ChildGuard,
        lines: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
    ) -> Printed {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Printed {
            serve,
            rx,
            seen: Vec::new(),
        }
    }

    /// Wait (at most 20 s) until `n` lines printed so far contain `what`;
    /// then stop serve. Returns every line seen.
    fn stop_after(mut self, what: &str, n: usize) -> Vec<String> {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while self.seen.iter().filter(|l| l.contains(what)).count() < n {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => panic!("serve printed {n} lines with {what:?}: {:?}", self.seen),
            }
        }
        let _ = self.serve.0.kill();
        let _ = self.serve.0.wait();
        self.seen.extend(self.rx.try_iter());
        self.seen
    }
}

/// serve's per-connection "resumed" words, in order.
fn resumed_words(seen: &[String]) -> Vec<&str> {
    seen.iter()
        .filter_map(|l| l.split_once(": resumed: ").map(|(_, w)| w))
        .collect()
}

/// One `openssl s_client` connection to `addr`, writing its session to
/// `sess_out` or resuming the one in `sess_in`: its stdout. Its stdin stays
/// open a moment after the handshake, so that it reads the TLS 1.3 tickets
/// serve sends before it closes.
fn s_client(addr: &str, ca: &Path, flag: &str, sess: (&str, &Path)) -> String {
    let mut child = Command::new("openssl")
        .args(["s_client", "-connect", addr, "-servername", "localhost"])
        .args([flag, "-verify_return_error", sess.0])
        .arg(sess.1)
        .arg("-CAfile")
        .arg(ca)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run openssl s_client");
    std::thread::sleep(Duration::from_millis(700));
    let mut stdin = child.stdin.take().unwrap();
    let _ = stdin.write_all(b"hello\n");
    drop(stdin);
    let out = child.wait_with_output().expect("openssl s_client");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "s_client: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[test]
fn openssl_s_client_resumes_with_serve() {
    if !peer_available("openssl", "openssl") {
        return;
    }
    for (flag, tls, version) in [("-tls1_2", "1.2", "TLSv1.2"), ("-tls1_3", "1.3", "TLSv1.3")] {
        let dir = TempDir::new(&format!("ksspictl-resume-serve{tls}"));
        let (ca, cert, key) = pki(&dir);
        // The session file s_client writes, beside the PKI.
        let sess = ca.with_file_name("session.pem");
        let (serve, lines, addr) = serve(&cert, &key, tls, &[]);
        let printed = Printed::new(serve, lines);
        let first = s_client(&addr, &ca, flag, ("-sess_out", &sess));
        assert!(first.contains(&format!("New, {version}")), "{first}");
        let second = s_client(&addr, &ca, flag, ("-sess_in", &sess));
        assert!(second.contains(&format!("Reused, {version}")), "{second}");
        let seen = printed.stop_after("received", 2);
        assert_eq!(resumed_words(&seen), ["no", "yes"], "{seen:?}");
    }
}

#[test]
fn serve_resume_off_refuses_openssl_s_clients_session() {
    if !peer_available("openssl", "openssl") {
        return;
    }
    for (flag, tls, version) in [("-tls1_2", "1.2", "TLSv1.2"), ("-tls1_3", "1.3", "TLSv1.3")] {
        let dir = TempDir::new(&format!("ksspictl-resume-serve-off{tls}"));
        let (ca, cert, key) = pki(&dir);
        // The session file s_client writes, beside the PKI.
        let sess = ca.with_file_name("session.pem");
        let (serve, lines, addr) = serve(&cert, &key, tls, &["--resume", "off"]);
        let printed = Printed::new(serve, lines);
        s_client(&addr, &ca, flag, ("-sess_out", &sess));
        // TLS 1.3: serve sends no ticket, so s_client may have no session to
        // write; it then starts afresh, which is what is checked.
        let second = if sess.exists() {
            s_client(&addr, &ca, flag, ("-sess_in", &sess))
        } else {
            s_client(&addr, &ca, flag, ("-sess_out", &sess))
        };
        assert!(second.contains(&format!("New, {version}")), "{second}");
        assert!(!second.contains("Reused,"), "{second}");
        let seen = printed.stop_after("received", 2);
        assert_eq!(resumed_words(&seen), ["no", "no"], "{seen:?}");
    }
}

#[test]
fn gnutls_cli_resumes_with_serve() {
    if !peer_available("gnutls-cli", "gnutls-bin") {
        return;
    }
    for (tls, priority) in [
        ("1.2", "NORMAL:-VERS-ALL:+VERS-TLS1.2"),
        ("1.3", "NORMAL:-VERS-ALL:+VERS-TLS1.3"),
    ] {
        let dir = TempDir::new(&format!("ksspictl-resume-gnutls{tls}"));
        let (ca, cert, key) = pki(&dir);
        let (serve, lines, addr) = serve(&cert, &key, tls, &[]);
        let printed = Printed::new(serve, lines);
        let (host, port) = addr.rsplit_once(':').unwrap();
        let out = Command::new("gnutls-cli")
            .args(["--resume", "--port", port, "--priority", priority])
            .arg(format!("--x509cafile={}", ca.display()))
            .args([
                "--sni-hostname",
                "localhost",
                "--verify-hostname",
                "localhost",
            ])
            .arg(host)
            .stdin(Stdio::null())
            .output()
            .expect("run gnutls-cli");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            text.contains("This is a resumed session"),
            "TLS {tls}: {text}"
        );
        let seen = printed.stop_after(": resumed: ", 2);
        assert_eq!(resumed_words(&seen), ["no", "yes"], "TLS {tls}: {seen:?}");
    }
}

#[test]
fn connect_repeat_resumes_against_serve() {
    // Both ends ours (two models): the client's cached credentials offer
    // the session serve's cached credentials keep.
    for tls in ["1.2", "1.3"] {
        let dir = TempDir::new(&format!("ksspictl-resume-both{tls}"));
        let (ca, cert, key) = pki(&dir);
        let (serve, lines, addr) = serve(&cert, &key, tls, &[]);
        let printed = Printed::new(serve, lines);
        let (code, err) = connect(&addr, &ca, tls, &["--repeat", "2"]);
        assert_eq!(code, 0, "TLS {tls}: {err}");
        assert!(
            err.contains("resumed 1 of 2 handshakes (fallbacks: 0)"),
            "TLS {tls}: {err}"
        );
        let seen = printed.stop_after("received", 2);
        assert_eq!(resumed_words(&seen), ["no", "yes"], "TLS {tls}: {seen:?}");
    }
}
