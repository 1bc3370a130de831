//! ALPN with real peers (issue 21): `ksspictl connect --alpn h2,http/1.1`
//! against `openssl s_server -alpn h2` and `gnutls-serv --alpn h2` reports
//! `ALPN: h2`; `openssl s_client -alpn http/1.1` and `gnutls-cli --alpn
//! http/1.1` against `ksspictl serve --alpn h2,http/1.1` get `http/1.1`;
//! no overlap fails cleanly (`openssl s_server` and `gnutls-serv
//! --alpn-fatal` refuse our client with no_application_protocol, which
//! connect reports as `SEC_E_APPLICATION_PROTOCOL_MISMATCH`; our server
//! refuses a client offering none of its protocols), over TLS 1.2 and 1.3. With `CI=true` a missing openssl / gnutls-cli / gnutls-serv
//! fails the tests; elsewhere they are skipped, saying so.

// ksspictl over the model backend (a non-Windows build only) against openssl and GnuTLS.
#![cfg(not(windows))]

mod common;

use common::{
    ksspictl, peer_available, pki, serve_exit, start_listening, start_s_server, start_serve,
};

use ksspi_sim::testing::{free_port, ChildGuard, TempDir};
use std::io::BufReader;
use std::path::Path;
use std::process::{Command, Stdio};

const VERSIONS: [(&str, &str, &str); 2] = [
    ("1.2", "-tls1_2", "NORMAL:-VERS-ALL:+VERS-TLS1.2"),
    ("1.3", "-tls1_3", "NORMAL:-VERS-ALL:+VERS-TLS1.3"),
];

/// `openssl s_server -alpn LIST` for one connection, once it accepts.
fn s_server(port: u16, cert: &Path, key: &Path, flag: &str, alpn: &str) -> ChildGuard {
    let mut cmd = Command::new("openssl");
    cmd.args(["s_server", "-accept", &format!("127.0.0.1:{port}")])
        .args(["-naccept", "1", "-rev", flag, "-alpn", alpn])
        .arg("-cert")
        .arg(cert)
        .arg("-key")
        .arg(key);
    start_s_server(&mut cmd)
}

/// `gnutls-serv --echo --alpn NAME` (each name given once), `extra` flags,
/// once it accepts connections.
fn gnutls_serv(
    port: u16,
    cert: &Path,
    key: &Path,
    priority: &str,
    alpn: &[&str],
    extra: &[&str],
) -> ChildGuard {
    let mut cmd = Command::new("gnutls-serv");
    cmd.args(["--echo", "--port", &port.to_string()])
        .arg(format!("--priority={priority}"))
        .arg("--x509certfile")
        .arg(cert)
        .arg("--x509keyfile")
        .arg(key);
    for name in alpn {
        cmd.arg(format!("--alpn={name}"));
    }
    cmd.args(extra);
    start_listening(&mut cmd, port)
}

/// `ksspictl connect --alpn LIST` to `port`: (exit code, stdout, stderr).
fn connect(port: u16, ca: &Path, tls: &str, alpn: &str) -> (i32, String, String) {
    ksspictl(&[
        "connect",
        &format!("127.0.0.1:{port}"),
        "--server-name",
        "localhost",
        "--ca",
        ca.to_str().unwrap(),
        "--tls",
        tls,
        "--alpn",
        alpn,
    ])
}

/// `ksspictl serve --once --alpn LIST` on a free port: the child, its
/// stdout's lines, the address.
fn serve(
    cert: &Path,
    key: &Path,
    tls: &str,
    alpn: &str,
) -> (
    ChildGuard,
    std::io::Lines<BufReader<std::process::ChildStdout>>,
    String,
) {
    start_serve(
        Command::new(env!("CARGO_BIN_EXE_ksspictl"))
            .args(["serve", "--listen", "127.0.0.1:0", "--once"])
            .args(["--tls", tls, "--alpn", alpn, "--cert"])
            .arg(cert)
            .arg("--key")
            .arg(key),
    )
}

/// Wait for `serve --once`: (success, its stdout lines after the first, stderr).
fn serve_done(
    mut serve: ChildGuard,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
) -> (bool, String, String) {
    let (ok, err) = serve_exit(&mut serve);
    let out: Vec<String> = lines.map_while(Result::ok).collect();
    (ok, out.join("\n"), err)
}

/// `openssl s_client -alpn LIST` to `addr` (stdin closed): success, stdout.
fn s_client(addr: &str, ca: &Path, flag: &str, alpn: &str) -> (bool, String) {
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            addr,
            "-servername",
            "localhost",
            flag,
        ])
        .args(["-alpn", alpn, "-verify_return_error"])
        .arg("-CAfile")
        .arg(ca)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("run openssl s_client");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// `gnutls-cli --alpn NAME` to `addr` (stdin empty): success, stdout+stderr.
fn gnutls_cli(addr: &str, ca: &Path, priority: &str, alpn: &str) -> (bool, String) {
    let (host, port) = addr.rsplit_once(':').unwrap();
    let out = Command::new("gnutls-cli")
        .arg(format!("--priority={priority}"))
        .arg("--x509cafile")
        .arg(ca)
        .args(["--verify-hostname", "localhost", "--port", port])
        .arg(format!("--alpn={alpn}"))
        .arg(host)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("run gnutls-cli");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn connect_gets_h2_from_openssl_s_server_and_no_overlap_fails_cleanly() {
    if !peer_available("openssl", "openssl") {
        return;
    }
    for (tls, flag, _) in VERSIONS {
        let dir = TempDir::new(&format!("ksspictl-alpn-s-server{tls}"));
        let (ca, cert, key) = pki(&dir);
        let port = free_port();
        let _server = s_server(port, &cert, &key, flag, "h2");
        let (code, out, err) = connect(port, &ca, tls, "h2,http/1.1");
        assert_eq!(code, 0, "TLS {tls}: {err}");
        assert!(
            out.lines().any(|l| l == "ALPN: h2"),
            "TLS {tls}: {out} {err}"
        );
        // No overlap: OpenSSL 3's s_server refuses with the fatal
        // no_application_protocol alert; connect fails naming the status.
        let port = free_port();
        let _server = s_server(port, &cert, &key, flag, "h2");
        let (code, out, err) = connect(port, &ca, tls, "http/1.1");
        assert_eq!(code, 1, "TLS {tls}: {out} {err}");
        assert!(
            err.contains("failed: SEC_E_APPLICATION_PROTOCOL_MISMATCH"),
            "TLS {tls}: {err}"
        );
    }
}

#[test]
fn connect_gets_h2_from_gnutls_serv_none_without_a_match_and_fails_against_alpn_fatal() {
    if !peer_available("gnutls-serv", "gnutls-bin") {
        return;
    }
    for (tls, _, priority) in VERSIONS {
        let dir = TempDir::new(&format!("ksspictl-alpn-gnutls-serv{tls}"));
        let (ca, cert, key) = pki(&dir);
        let port = free_port();
        let _server = gnutls_serv(port, &cert, &key, priority, &["h2"], &[]);
        let (code, out, err) = connect(port, &ca, tls, "h2,http/1.1");
        assert_eq!(code, 0, "TLS {tls}: {err}");
        assert!(
            out.lines().any(|l| l == "ALPN: h2"),
            "TLS {tls}: {out} {err}"
        );
        // GnuTLS's default without a match: it goes on without ALPN.
        let port = free_port();
        let _server = gnutls_serv(port, &cert, &key, priority, &["h2"], &[]);
        let (code, out, err) = connect(port, &ca, tls, "http/1.1");
        assert_eq!(code, 0, "TLS {tls}: {err}");
        assert!(
            out.lines().any(|l| l == "ALPN: none"),
            "TLS {tls}: {out} {err}"
        );
        // A server that insists on a match: our client fails with a status.
        let port = free_port();
        let _server = gnutls_serv(port, &cert, &key, priority, &["h2"], &["--alpn-fatal"]);
        let (code, out, err) = connect(port, &ca, tls, "http/1.1");
        assert_eq!(code, 1, "TLS {tls}: {out}");
        assert!(
            err.contains("failed: SEC_E_APPLICATION_PROTOCOL_MISMATCH"),
            "TLS {tls}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn openssl_s_client_gets_http11_from_serve_and_no_overlap_is_refused() {
    if !peer_available("openssl", "openssl") {
        return;
    }
    for (tls, flag, _) in VERSIONS {
        let dir = TempDir::new(&format!("ksspictl-alpn-s-client{tls}"));
        let (ca, cert, key) = pki(&dir);
        let (serve_child, lines, addr) = serve(&cert, &key, tls, "h2,http/1.1");
        let (ok, text) = s_client(&addr, &ca, flag, "http/1.1");
        assert!(ok, "TLS {tls}: {text}");
        assert!(
            text.contains("ALPN protocol: http/1.1"),
            "TLS {tls}: {text}"
        );
        let (ok, out, err) = serve_done(serve_child, lines);
        assert!(ok, "TLS {tls}: {out} {err}");
        assert!(out.contains(": ALPN: http/1.1"), "TLS {tls}: {out}");
        // No overlap: the server refuses, naming why; the client fails.
        let (serve_child, lines, addr) = serve(&cert, &key, tls, "h2,http/1.1");
        let (ok, text) = s_client(&addr, &ca, flag, "spdy/1");
        assert!(!ok, "TLS {tls}: {text}");
        assert!(
            text.contains("no application protocol"),
            "TLS {tls}: {text}"
        );
        let (ok, out, err) = serve_done(serve_child, lines);
        assert!(!ok, "TLS {tls}: {out}");
        assert!(
            err.contains("offered none of the --alpn protocols"),
            "TLS {tls}: {err}"
        );
    }
}

#[test]
fn gnutls_cli_gets_http11_from_serve() {
    if !peer_available("gnutls-cli", "gnutls-bin") {
        return;
    }
    for (tls, _, priority) in VERSIONS {
        let dir = TempDir::new(&format!("ksspictl-alpn-gnutls-cli{tls}"));
        let (ca, cert, key) = pki(&dir);
        let (serve_child, lines, addr) = serve(&cert, &key, tls, "h2,http/1.1");
        let (ok, text) = gnutls_cli(&addr, &ca, priority, "http/1.1");
        assert!(ok, "TLS {tls}: {text}");
        assert!(
            text.contains("- Application protocol: http/1.1"),
            "TLS {tls}: {text}"
        );
        let (ok, out, err) = serve_done(serve_child, lines);
        assert!(ok, "TLS {tls}: {out} {err}");
        assert!(out.contains(": ALPN: http/1.1"), "TLS {tls}: {out}");
    }
}

#[test]
fn bad_alpn_lists_are_refused_at_start() {
    let long = "a".repeat(256);
    for (arg, why) in [
        ("", "the ALPN list is empty"),
        ("h2,,http/1.1", "an ALPN protocol name is empty"),
        (long.as_str(), "over 255 bytes"),
    ] {
        let (code, _, err) = ksspictl(&["connect", "127.0.0.1:9", "--alpn", arg]);
        assert_eq!(code, 2, "{arg:?}: {err}");
        assert!(err.contains(why), "{arg:?}: {err}");
        let (code, _, err) = ksspictl(&["serve", "--listen", "127.0.0.1:0", "--alpn", arg]);
        assert_eq!(code, 2, "{arg:?}: {err}");
        assert!(err.contains(why), "{arg:?}: {err}");
    }
}
