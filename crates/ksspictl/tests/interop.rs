//! `ksspictl connect` against a real `openssl s_server`, and a real
//! `openssl s_client` against `ksspictl serve`, on loopback, TLS 1.2 and 1.3;
//! clean failures for a wrong server name and an untrusted certificate. The
//! tests start openssl themselves (`.ci/run` installs it).

mod common;

use common::ksspictl;

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
    // Wait for s_server's "ACCEPT" line rather than probing the port (a probe
    // would use up one of its accepts).
    let mut child = Command::new("openssl")
        .args([
            "s_server",
            "-accept",
            &format!("127.0.0.1:{port}"),
            "-naccept",
            "1",
            flag,
        ])
        .arg("-cert")
        .arg(cert)
        .arg("-key")
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start openssl s_server (is openssl installed?)");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("ACCEPT") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("openssl s_server did not start listening");
    ChildGuard(child)
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
        assert!(out.contains("handshake complete"), "{out}");
        // The protocol the driver session reports is the one s_server was limited to.
        assert!(out.contains(&format!("protocol TLS {tls}")), "{out}");
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
