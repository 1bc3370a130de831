//! Mutual TLS with real peers, TLS 1.2 and 1.3: `connect --cert/--key`
//! against `openssl s_server -Verify 1` and `gnutls-serv
//! --require-client-cert`; `connect` without a certificate against both,
//! which must say that the server asked for one; `openssl s_client -cert` to
//! `serve --client-cert require`, which prints the client's certificate, and
//! a client without one refused with one line. With `CI=true` a missing
//! openssl / gnutls-serv fails the tests; elsewhere they are skipped, saying so.

// ksspictl over the model backend (a non-Windows build only) against openssl and GnuTLS.
#![cfg(not(windows))]

mod common;

use common::{ksspictl, peer_available, serve_exit, start_listening, start_s_server, start_serve};
use ksspi_sim::certs::TestPki;
use ksspi_sim::testing::{free_port, ChildGuard, TempDir};
use std::io::BufReader;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// What `connect` says when the server asked and it had no certificate.
const ASKED: &str =
    "the server asked for a client certificate and none was given (use --cert/--key)";

/// One CA, a "localhost" server certificate and a client certificate, PEM.
struct Pki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    client: PathBuf,
    client_key: PathBuf,
}

fn pki(dir: &TempDir) -> Pki {
    let pki = TestPki::new("ksspictl mtls CA");
    let server = pki.leaf(&["localhost"], false);
    let client = pki.leaf(&["client.example"], false);
    Pki {
        ca: dir.write("ca.pem", &pki.ca_pem()),
        cert: dir.write("leaf.pem", &server.cert_pem),
        key: dir.write("leaf.key", &server.key_pem),
        client: dir.write("client.pem", &client.cert_pem),
        client_key: dir.write("client.key", &client.key_pem),
    }
}

/// `openssl s_server -rev -Verify 1` (a client certificate required,
/// verified against the CA) for one connection, once it accepts.
fn s_server_verify(port: u16, p: &Pki, tls_flag: &str) -> ChildGuard {
    let mut cmd = Command::new("openssl");
    cmd.args(["s_server", "-accept", &format!("127.0.0.1:{port}")])
        .args(["-naccept", "1", "-rev", "-Verify", "1", tls_flag])
        .arg("-CAfile")
        .arg(&p.ca)
        .arg("-cert")
        .arg(&p.cert)
        .arg("-key")
        .arg(&p.key);
    start_s_server(&mut cmd)
}

/// `gnutls-serv --echo --require-client-cert --x509cafile CA`, TLS `tls`
/// only, once it accepts connections.
fn gnutls_serv_require(port: u16, p: &Pki, tls: &str) -> ChildGuard {
    let mut cmd = Command::new("gnutls-serv");
    cmd.args([
        "--echo",
        "--require-client-cert",
        "--port",
        &port.to_string(),
    ])
    .arg(format!("--priority=NORMAL:-VERS-ALL:+VERS-TLS{tls}"))
    .arg("--x509cafile")
    .arg(&p.ca)
    .arg("--x509certfile")
    .arg(&p.cert)
    .arg("--x509keyfile")
    .arg(&p.key);
    start_listening(&mut cmd, port)
}

/// `ksspictl connect` to `port` as "localhost", trusting the CA, sending a
/// line and expecting `expect` back; with the client certificate if `cert`.
fn connect(port: u16, p: &Pki, tls: &str, cert: bool, expect: &str) -> (i32, String) {
    let addr = format!("127.0.0.1:{port}");
    let (ca, c, k) = (
        p.ca.to_str().unwrap(),
        p.client.to_str().unwrap(),
        p.client_key.to_str().unwrap(),
    );
    let mut args = vec![
        "connect",
        &addr,
        "--server-name",
        "localhost",
        "--ca",
        ca,
        "--tls",
        tls,
    ];
    if cert {
        args.extend(["--cert", c, "--key", k]);
    }
    args.extend(["--send", "hello mtls\\n", "--expect", expect, "--idle", "5"]);
    let (code, _, err) = ksspictl(&args);
    (code, err)
}

const VERSIONS: [(&str, &str, &str); 2] =
    [("1.2", "-tls1_2", "TLS 1.2"), ("1.3", "-tls1_3", "TLS 1.3")];

#[test]
fn connect_with_a_client_certificate_passes_openssl_s_server_verify() {
    if !peer_available("openssl", "openssl") {
        return;
    }
    for (tls, flag, name) in VERSIONS {
        let dir = TempDir::new(&format!("ksspictl-mtls-ossl{tls}"));
        let p = pki(&dir);
        let port = free_port();
        let _server = s_server_verify(port, &p, flag);
        let (code, err) = connect(port, &p, tls, true, "sltm olleh");
        assert_eq!(code, 0, "{name}: {err}");
        assert!(err.contains(&format!("protocol {name}")), "{err}");
        assert!(!err.contains(ASKED), "{err}");
    }
}

#[test]
fn connect_with_a_client_certificate_passes_gnutls_serv_require_client_cert() {
    if !peer_available("gnutls-serv", "gnutls-bin") {
        return;
    }
    for (tls, _, name) in VERSIONS {
        let dir = TempDir::new(&format!("ksspictl-mtls-gnutls{tls}"));
        let p = pki(&dir);
        let port = free_port();
        let _server = gnutls_serv_require(port, &p, tls);
        let (code, err) = connect(port, &p, tls, true, "hello mtls");
        assert_eq!(code, 0, "{name}: {err}");
        assert!(err.contains(&format!("protocol {name}")), "{err}");
    }
}

#[test]
fn connect_without_a_certificate_says_the_server_asked_for_one() {
    let openssl = peer_available("openssl", "openssl");
    let gnutls = peer_available("gnutls-serv", "gnutls-bin");
    for (tls, flag, name) in VERSIONS {
        let dir = TempDir::new(&format!("ksspictl-mtls-none{tls}"));
        let p = pki(&dir);
        let mut servers: Vec<(&str, u16, ChildGuard)> = Vec::new();
        if openssl {
            let port = free_port();
            servers.push(("s_server -Verify 1", port, s_server_verify(port, &p, flag)));
        }
        if gnutls {
            let port = free_port();
            servers.push((
                "gnutls-serv --require-client-cert",
                port,
                gnutls_serv_require(port, &p, tls),
            ));
        }
        for (peer, port, _server) in &servers {
            let (code, err) = connect(*port, &p, tls, false, "hello");
            assert_ne!(code, 0, "{peer} {name}: {err}");
            // The failure line itself names the cause (TLS 1.3: after a
            // complete handshake, at the first read; TLS 1.2: in it).
            let last = err.lines().last().unwrap_or_default();
            assert!(
                last.starts_with("ksspictl: ") && last.ends_with(ASKED),
                "{peer} {name}: {err}"
            );
            assert!(!err.contains("panicked"), "{err}");
        }
    }
}

/// `ksspictl serve --once --client-cert MODE`: the child, its stdout's lines
/// after "listening on", and the address.
fn serve(
    p: &Pki,
    mode: &str,
) -> (
    ChildGuard,
    std::io::Lines<BufReader<std::process::ChildStdout>>,
    String,
) {
    start_serve(
        Command::new(env!("CARGO_BIN_EXE_ksspictl"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--once",
                "--client-cert",
                mode,
            ])
            .arg("--cert")
            .arg(&p.cert)
            .arg("--key")
            .arg(&p.key),
    )
}

/// `openssl s_client -brief` to `addr` (stdin closed: handshake, then close),
/// with the client certificate if `cert`; its exit status and stderr.
fn s_client(addr: &str, p: &Pki, flag: &str, cert: bool) -> (bool, String) {
    let mut cmd = Command::new("openssl");
    cmd.args([
        "s_client",
        "-connect",
        addr,
        "-servername",
        "localhost",
        flag,
    ])
    .args(["-brief", "-verify_return_error"])
    .arg("-CAfile")
    .arg(&p.ca);
    if cert {
        cmd.arg("-cert")
            .arg(&p.client)
            .arg("-key")
            .arg(&p.client_key);
    }
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("run openssl s_client");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn finished(mut serve: ChildGuard) -> (bool, String) {
    serve_exit(&mut serve)
}

#[test]
fn openssl_s_client_with_a_certificate_is_served_and_reported_by_serve() {
    if !peer_available("openssl", "openssl") {
        return;
    }
    for (tls, flag, name) in VERSIONS {
        let dir = TempDir::new(&format!("ksspictl-mtls-serve{tls}"));
        let p = pki(&dir);
        let (serve, lines, addr) = serve(&p, "require");
        let (ok, client_err) = s_client(&addr, &p, flag, true);
        assert!(ok, "{name} s_client: {client_err}");
        let (ok, err) = finished(serve);
        assert!(ok, "{name} serve: {err}");
        let out: Vec<String> = lines.map_while(Result::ok).collect();
        let line = out
            .iter()
            .find(|l| l.contains("client certificate:"))
            .unwrap_or_else(|| panic!("{name}: {out:?}"));
        assert!(
            line.contains("subject CN=client.example") && line.contains("ksspictl mtls CA"),
            "{name}: {line}"
        );
    }
}

#[test]
fn serve_require_refuses_a_client_without_a_certificate_in_one_line() {
    if !peer_available("openssl", "openssl") {
        return;
    }
    for (tls, flag, name) in VERSIONS {
        let dir = TempDir::new(&format!("ksspictl-mtls-refuse{tls}"));
        let p = pki(&dir);
        let (serve, lines, addr) = serve(&p, "require");
        let _ = s_client(&addr, &p, flag, false);
        let (ok, err) = finished(serve);
        assert!(
            !ok,
            "{name}: serve --once succeeded without a client certificate"
        );
        let line = err.trim_end();
        assert_eq!(line.lines().count(), 1, "{name}: {err}");
        assert!(
            line.contains("refused: the client sent no certificate")
                && line.contains("SEC_E_NO_CREDENTIALS"),
            "{name}: {err}"
        );
        let out: Vec<String> = lines.map_while(Result::ok).collect();
        assert!(
            !out.iter().any(|l| l.contains("handshake complete")),
            "{out:?}"
        );
    }
}

#[test]
fn serve_request_serves_a_client_without_a_certificate_and_says_so() {
    if !peer_available("openssl", "openssl") {
        return;
    }
    let dir = TempDir::new("ksspictl-mtls-request");
    let p = pki(&dir);
    let (serve, lines, addr) = serve(&p, "request");
    let (ok, client_err) = s_client(&addr, &p, "-tls1_3", false);
    assert!(ok, "s_client: {client_err}");
    let (ok, err) = finished(serve);
    assert!(ok, "serve: {err}");
    let out: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(
        out.iter()
            .any(|l| l.ends_with("client certificate: no certificate")),
        "{out:?}"
    );
}
