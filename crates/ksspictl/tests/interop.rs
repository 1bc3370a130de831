//! `ksspictl connect` against a real `openssl s_server`, and a real
//! `openssl s_client` against `ksspictl serve`, on loopback, TLS 1.2 and 1.3;
//! clean failures for a wrong server name and an untrusted certificate. The
//! tests start openssl themselves (`.ci/run` installs it).

// ksspictl over the model backend (a non-Windows build only) against openssl.
#![cfg(not(windows))]

mod common;

use common::{ksspictl, start_s_server};

use ksspi_sim::certs::TestPki;
use ksspi_sim::testing::{free_port, ChildGuard, TempDir};
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

/// A CA and a "localhost" leaf, as PEM files.
fn pki(dir: &TempDir) -> (PathBuf, PathBuf, PathBuf) {
    let pki = TestPki::new("ksspictl interop CA");
    let leaf = pki.leaf(&["localhost"], false);
    (
        dir.write("ca.pem", &pki.ca_pem()),
        dir.write("leaf.pem", &leaf.cert_pem),
        dir.write("leaf.key", &leaf.key_pem),
    )
}

fn s_server(port: u16, cert: &PathBuf, key: &PathBuf, flag: &str) -> ChildGuard {
    s_server_with(port, cert, key, &[flag])
}

fn s_server_with(port: u16, cert: &PathBuf, key: &PathBuf, flags: &[&str]) -> ChildGuard {
    // Wait for s_server's "ACCEPT" line rather than probing the port (a probe
    // would use up one of its accepts).
    let mut cmd = Command::new("openssl");
    cmd.args([
        "s_server",
        "-accept",
        &format!("127.0.0.1:{port}"),
        "-naccept",
        "1",
    ])
    .args(flags)
    .arg("-cert")
    .arg(cert)
    .arg("-key")
    .arg(key);
    start_s_server(&mut cmd)
}

#[test]
fn connect_completes_handshakes_with_openssl_s_server() {
    for (flag, tls) in [("-tls1_2", "1.2"), ("-tls1_3", "1.3")] {
        let dir = TempDir::new(&format!("ksspictl-connect{tls}"));
        let (ca, cert, key) = pki(&dir);
        let port = free_port();
        let _server = s_server(port, &cert, &key, flag);
        let addr = format!("127.0.0.1:{port}");
        let ca = ca.to_str().unwrap();
        let (code, out, err) = ksspictl(&[
            "connect",
            &addr,
            "--server-name",
            "localhost",
            "--ca",
            ca,
            "--tls",
            tls,
        ]);
        assert_eq!(code, 0, "TLS {tls}: {err}");
        assert!(
            out.is_empty(),
            "nothing was sent, nothing comes back: {out}"
        );
        assert!(err.contains("handshake complete"), "{err}");
        // The protocol the driver session reports is the one s_server was limited to.
        assert!(err.contains(&format!("protocol TLS {tls}")), "{err}");
        // QUERY: the key exchange and the server's certificate, parsed.
        assert!(err.contains("key exchange ECDHE"), "{err}");
        assert!(
            err.contains("peer certificate: subject CN=localhost, issuer CN=ksspictl interop CA"),
            "{err}"
        );
    }
}

#[test]
fn connect_fails_cleanly_on_a_wrong_name_and_an_untrusted_certificate() {
    let dir = TempDir::new("ksspictl-connect-bad");
    let (ca, cert, key) = pki(&dir);
    let port = free_port();
    let _server = s_server(port, &cert, &key, "-tls1_3");
    let addr = format!("127.0.0.1:{port}");
    let (code, _, err) = ksspictl(&[
        "connect",
        &addr,
        "--server-name",
        "elsewhere.example",
        "--ca",
        ca.to_str().unwrap(),
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("SEC_E_WRONG_PRINCIPAL (0x80090322)"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let port = free_port();
    let _server = s_server(port, &cert, &key, "-tls1_2");
    let addr = format!("127.0.0.1:{port}");
    let (code, _, err) = ksspictl(&["connect", &addr, "--server-name", "localhost"]);
    assert_ne!(code, 0);
    assert!(err.contains("SEC_E_UNTRUSTED_ROOT (0x80090325)"), "{err}");
}

#[test]
fn openssl_s_client_completes_handshakes_with_serve() {
    for (flag, expect) in [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")] {
        let dir = TempDir::new(&format!("ksspictl-serve{expect}"));
        let (ca, cert, key) = pki(&dir);
        let mut serve = ChildGuard(
            Command::new(env!("CARGO_BIN_EXE_ksspictl"))
                .args(["serve", "--listen", "127.0.0.1:0", "--once"])
                .arg("--cert")
                .arg(&cert)
                .arg("--key")
                .arg(&key)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let mut lines = BufReader::new(serve.0.stdout.take().unwrap()).lines();
        let first = lines.next().unwrap().unwrap();
        let addr = first
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("{first}"))
            .to_string();
        let client = Command::new("openssl")
            .args([
                "s_client",
                "-connect",
                &addr,
                "-servername",
                "localhost",
                flag,
                "-brief",
                "-verify_return_error",
            ])
            .arg("-CAfile")
            .arg(&ca)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .expect("run openssl s_client");
        let client_err = String::from_utf8_lossy(&client.stderr);
        assert!(client.status.success(), "s_client: {client_err}");
        assert!(
            client_err.contains(&format!("Protocol version: {expect}")),
            "{client_err}"
        );
        assert!(client_err.contains("Verification: OK"), "{client_err}");
        let status = serve.0.wait().unwrap();
        let mut err = String::new();
        serve
            .0
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert!(status.success(), "serve: {err}");
        let rest: Vec<String> = lines.map_while(Result::ok).collect();
        assert!(
            rest.iter().any(|l| l.contains("handshake complete")),
            "{rest:?}"
        );
    }
}

/// Lines of printable text, about `n` bytes in all, each ending in '\n'.
fn lines_of_text(n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n + 100);
    let mut i = 0u32;
    while out.len() < n {
        let line = format!(
            "line {i:06} {}\n",
            "abcdefghijklmnopqrstuvwxyz".repeat(1 + (i as usize % 3))
        );
        out.extend_from_slice(line.as_bytes());
        i += 1;
    }
    out
}

/// What `openssl s_server -rev` answers: each line reversed.
fn reversed_lines(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    for line in text.split_inclusive(|&b| b == b'\n') {
        let body = line.strip_suffix(b"\n").unwrap_or(line);
        out.extend(body.iter().rev());
        out.push(b'\n');
    }
    out
}

#[test]
fn connect_sends_a_mebibyte_to_s_server_rev_and_reads_every_line_back() {
    for (flag, tls) in [("-tls1_2", "1.2"), ("-tls1_3", "1.3")] {
        let dir = TempDir::new(&format!("ksspictl-send{tls}"));
        let (ca, cert, key) = pki(&dir);
        let port = free_port();
        let _server = s_server_with(port, &cert, &key, &[flag, "-rev"]);
        let payload = lines_of_text(1 << 20);
        let mut file = payload.clone();
        // s_server -rev ends the connection when it reads this line.
        file.extend_from_slice(b"CLOSE\n");
        let path = dir.write_bytes("payload.txt", &file);
        let (code, out, err) = ksspictl(&[
            "connect",
            &format!("127.0.0.1:{port}"),
            "--server-name",
            "localhost",
            "--ca",
            ca.to_str().unwrap(),
            "--tls",
            tls,
            "--send-file",
            path.to_str().unwrap(),
            "--idle",
            "20",
        ]);
        assert_eq!(code, 0, "TLS {tls}: {err}");
        let want = reversed_lines(&payload);
        assert_eq!(out.len(), want.len(), "TLS {tls}: {err}");
        assert!(
            out.as_bytes() == want.as_slice(),
            "TLS {tls}: the lines differ"
        );
        assert!(err.contains(&format!("sent {} bytes", file.len())), "{err}");
        // s_server closes with close_notify after CLOSE; ours goes too.
        assert!(
            err.contains("closed cleanly: close_notify sent and received"),
            "{err}"
        );
        if tls == "1.3" {
            // OpenSSL's two session tickets went through the handshake call.
            assert!(err.contains(" 2 post-handshake messages"), "{err}");
        }
    }
}

#[test]
fn connect_expect_stops_once_the_text_arrives() {
    let dir = TempDir::new("ksspictl-expect");
    let (ca, cert, key) = pki(&dir);
    let port = free_port();
    let _server = s_server_with(port, &cert, &key, &["-tls1_3", "-rev"]);
    let (code, out, err) = ksspictl(&[
        "connect",
        &format!("127.0.0.1:{port}"),
        "--server-name",
        "localhost",
        "--ca",
        ca.to_str().unwrap(),
        "--send",
        "ping\n",
        "--expect",
        "gnip",
        "--idle",
        "20",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "gnip\n");
    assert!(err.contains("close_notify sent"), "{err}");
    // And a text that never comes fails, after the idle time.
    let port = free_port();
    let _server = s_server_with(port, &cert, &key, &["-tls1_2", "-rev"]);
    let (code, _, err) = ksspictl(&[
        "connect",
        &format!("127.0.0.1:{port}"),
        "--server-name",
        "localhost",
        "--ca",
        ca.to_str().unwrap(),
        "--send",
        "ping\n",
        "--expect",
        "pong",
        "--idle",
        "1",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("the expected text did not arrive"), "{err}");
}

/// `ksspictl serve --echo --once` on a free port: the child, its stdout's
/// remaining lines, and the address it listens on.
fn echo_server(cert: &PathBuf, key: &PathBuf) -> (ChildGuard, Lines, String) {
    let mut serve = ChildGuard(
        Command::new(env!("CARGO_BIN_EXE_ksspictl"))
            .args(["serve", "--listen", "127.0.0.1:0", "--once", "--echo"])
            .arg("--cert")
            .arg(cert)
            .arg("--key")
            .arg(key)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(serve.0.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let addr = first.strip_prefix("listening on ").unwrap().to_string();
    (serve, lines, addr)
}

type Lines = std::io::Lines<BufReader<std::process::ChildStdout>>;

/// `openssl s_client -quiet -no_ign_eof` towards `addr`, trusting `ca`, with
/// stdin, stdout and stderr piped.
fn s_client(addr: &str, ca: &PathBuf, flags: &[&str]) -> ChildGuard {
    ChildGuard(
        Command::new("openssl")
            .args(["s_client", "-connect", addr, "-servername", "localhost"])
            .args(["-quiet", "-no_ign_eof", "-verify_return_error"])
            .args(flags)
            .arg("-CAfile")
            .arg(ca)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start openssl s_client"),
    )
}

/// Wait for a child to exit successfully; its stderr.
fn exited_ok(child: &mut ChildGuard, what: &str) -> String {
    let status = child.0.wait().unwrap();
    let mut err = String::new();
    child
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "{what}: {err}");
    err
}

/// The serve child's one-line summary of the connection, once it exited.
fn serve_summary(serve: &mut ChildGuard, lines: Lines) -> String {
    exited_ok(serve, "serve");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    rest.iter()
        .find(|l| l.contains("received"))
        .unwrap_or_else(|| panic!("{rest:?}"))
        .clone()
}

#[test]
fn serve_echo_returns_a_mebibyte_to_s_client_and_both_close_cleanly() {
    for (flag, tls) in [("-tls1_2", "1.2"), ("-tls1_3", "1.3")] {
        let dir = TempDir::new(&format!("ksspictl-echo{tls}"));
        let (ca, cert, key) = pki(&dir);
        let (mut serve, lines, addr) = echo_server(&cert, &key);
        // Lines starting with K, Q or R are commands otherwise.
        let mut client = s_client(&addr, &ca, &[flag, "-nocommands"]);
        let payload = lines_of_text(1 << 20);
        let mut stdin = client.0.stdin.take().unwrap();
        let mut stdout = client.0.stdout.take().unwrap();
        let want = payload.len();
        // Read the echo while writing; close stdin (s_client then sends its
        // close_notify) only once everything came back.
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut buf = [0u8; 65536];
            while got.len() < want {
                match stdout.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            got
        });
        use std::io::Write;
        stdin.write_all(&payload).unwrap();
        let got = reader.join().unwrap();
        drop(stdin);
        assert_eq!(got.len(), payload.len(), "TLS {tls}: echoed bytes");
        assert!(got == payload, "TLS {tls}: the echo differs");
        exited_ok(&mut client, "s_client");
        let summary = serve_summary(&mut serve, lines);
        assert!(
            summary.contains(&format!("received {} bytes", payload.len())),
            "{summary}"
        );
        assert!(
            summary.contains("closed cleanly: close_notify sent and received"),
            "{summary}"
        );
    }
}

/// `serve --echo` and an `openssl s_client` that sends a TLS 1.3 KeyUpdate
/// asking for ours ("K"): the update reaches the driver's DecryptMessage as
/// SEC_I_RENEGOTIATE, goes through the handshake call, whose output (our own
/// KeyUpdate) goes back, and the data after it still echoes.
#[test]
fn serve_echo_answers_a_key_update_from_s_client() {
    let dir = TempDir::new("ksspictl-keyupdate");
    let (ca, cert, key) = pki(&dir);
    let (mut serve, lines, addr) = echo_server(&cert, &key);
    let mut client = s_client(&addr, &ca, &["-tls1_3"]);
    let mut stdin = client.0.stdin.take().unwrap();
    let mut echo = BufReader::new(client.0.stdout.take().unwrap());
    use std::io::Write;
    let mut line = String::new();
    for text in ["before the update\n", "K\n", "after the update\n"] {
        stdin.write_all(text.as_bytes()).unwrap();
        stdin.flush().unwrap();
        if text == "K\n" {
            // A command for s_client, not data: give it time to act alone.
            std::thread::sleep(Duration::from_millis(300));
            continue;
        }
        line.clear();
        echo.read_line(&mut line).unwrap();
        assert_eq!(line, text);
    }
    drop(stdin);
    let client_err = exited_ok(&mut client, "s_client");
    assert!(client_err.contains("KEYUPDATE"), "{client_err}");
    let summary = serve_summary(&mut serve, lines);
    assert!(
        !summary.contains(" 0 post-handshake"),
        "the KeyUpdate went through: {summary}"
    );
    assert!(summary.contains("closed cleanly"), "{summary}");
}
