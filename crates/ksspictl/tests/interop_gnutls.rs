//! GnuTLS as the peer (Debian's gnutls-bin, which scripts/setup.sh installs):
//! `ksspictl connect` against `gnutls-serv --echo` and `gnutls-cli` against
//! `ksspictl serve --echo`, TLS 1.2 and 1.3 (GnuTLS priority strings), data
//! echoed byte for byte; and a TLS 1.3 KeyUpdate both ways mid-stream:
//! gnutls-cli's `^rekey^` asks for ours (update_requested), the driver's
//! DecryptMessage hands it to the handshake call, whose output (our own
//! KeyUpdate) goes back, and half a MiB echoes on under the new keys in both
//! directions. With `CI=true` a missing gnutls-cli / gnutls-serv fails the
//! tests; elsewhere they are skipped, saying so.

// ksspictl over the model backend (a non-Windows build only) against GnuTLS.
#![cfg(not(windows))]

mod common;

use common::{
    ksspictl, numbered_lines, peer_available, pki, serve_echo, serve_summary, start_listening,
};

use ksspi_sim::testing::{free_port, ChildGuard, TempDir};
use std::path::Path;
use std::process::{Command, Stdio};

/// A GnuTLS priority string allowing only TLS `tls` ("1.2" or "1.3").
fn priority(tls: &str) -> String {
    format!("NORMAL:-VERS-ALL:+VERS-TLS{tls}")
}

/// `gnutls-serv --echo` on `port` with `cert` and `key`, TLS `tls` only,
/// once it accepts connections.
fn gnutls_serv(port: u16, cert: &Path, key: &Path, tls: &str) -> ChildGuard {
    let mut cmd = Command::new("gnutls-serv");
    cmd.args(["--echo", "--port", &port.to_string()])
        .arg(format!("--priority={}", priority(tls)))
        .arg("--x509certfile")
        .arg(cert)
        .arg("--x509keyfile")
        .arg(key);
    start_listening(&mut cmd, port)
}

/// Run `gnutls-cli` towards `addr` (TLS `tls` only, the server's certificate
/// checked against `ca` for "localhost") with `stdin` as its input, until it
/// exits: (success, stdout, stderr). `extra` goes before the host.
fn gnutls_cli(
    addr: &str,
    ca: &Path,
    tls: &str,
    stdin: &Path,
    extra: &[&str],
) -> (bool, Vec<u8>, String) {
    let (host, port) = addr.rsplit_once(':').unwrap();
    let out = Command::new("gnutls-cli")
        .arg(format!("--priority={}", priority(tls)))
        .arg("--x509cafile")
        .arg(ca)
        .args(["--verify-hostname", "localhost", "--port", port])
        .args(extra)
        .arg(host)
        .stdin(std::fs::File::open(stdin).unwrap())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("run gnutls-cli");
    (
        out.status.success(),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// What gnutls-cli printed of the server's data: its stdout after the
/// "Simple Client Mode" banner, without the notes it puts among the data
/// ("- Rekey was completed") and after it ("- Peer has closed ...").
fn received_by_gnutls_cli(stdout: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(stdout);
    let (_, body) = text
        .split_once("- Simple Client Mode:\n\n")
        .unwrap_or_else(|| panic!("no data part in gnutls-cli's output: {text}"));
    let body = body.replace("- Rekey was completed\n", "");
    let body = body
        .strip_suffix("- Peer has closed the GnuTLS connection\n")
        .unwrap_or(&body);
    body.as_bytes().to_vec()
}

#[test]
fn connect_exchanges_data_with_gnutls_serv_over_tls12_and_tls13() {
    if !peer_available("gnutls-serv", "gnutls-bin") {
        return;
    }
    for tls in ["1.2", "1.3"] {
        let dir = TempDir::new(&format!("ksspictl-gnutls-connect{tls}"));
        let (ca, cert, key) = pki(&dir);
        let port = free_port();
        let _server = gnutls_serv(port, &cert, &key, tls);
        let mut payload = numbered_lines(0, 256 * 1024);
        payload.extend_from_slice(b"END-OF-PAYLOAD\n");
        let file = dir.write_bytes("payload.txt", &payload);
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
            file.to_str().unwrap(),
            "--expect",
            "END-OF-PAYLOAD",
            "--idle",
            "20",
        ]);
        assert_eq!(code, 0, "TLS {tls}: {err}");
        assert!(err.contains(&format!("protocol TLS {tls}")), "{err}");
        assert!(
            err.contains("peer certificate: subject CN=localhost, issuer CN=ksspictl interop CA"),
            "{err}"
        );
        assert_eq!(out.len(), payload.len(), "TLS {tls}: {err}");
        assert!(
            out.as_bytes() == payload.as_slice(),
            "TLS {tls}: the echo differs"
        );
        let n = payload.len();
        assert!(
            err.contains(&format!("sent {n} bytes, received {n} bytes")),
            "{err}"
        );
        assert!(
            err.contains("closed cleanly: close_notify sent and received"),
            "{err}"
        );
        if tls == "1.3" {
            // GnuTLS's session tickets went through the handshake call.
            assert!(!err.contains(" 0 post-handshake messages"), "{err}");
        }
    }
}

#[test]
fn gnutls_cli_exchanges_data_with_serve_over_tls12_and_tls13() {
    if !peer_available("gnutls-cli", "gnutls-bin") {
        return;
    }
    for tls in ["1.2", "1.3"] {
        let dir = TempDir::new(&format!("ksspictl-gnutls-serve{tls}"));
        let (ca, cert, key) = pki(&dir);
        let (mut serve, lines, addr) = serve_echo(&cert, &key, tls);
        let payload = numbered_lines(0, 256 * 1024);
        let input = dir.write_bytes("input.txt", &payload);
        let (ok, out, err) = gnutls_cli(&addr, &ca, tls, &input, &[]);
        let text = String::from_utf8_lossy(&out);
        assert!(ok, "gnutls-cli, TLS {tls}: {err}\n{text}");
        assert!(
            text.contains("- Status: The certificate is trusted."),
            "{text}"
        );
        assert!(
            text.contains(&format!("- Description: (TLS{tls}-")),
            "{text}"
        );
        let echoed = received_by_gnutls_cli(&out);
        assert_eq!(echoed.len(), payload.len(), "TLS {tls}");
        assert!(echoed == payload, "TLS {tls}: the echo differs");
        let summary = serve_summary(&mut serve, lines);
        let n = payload.len();
        assert!(
            summary.contains(&format!("sent {n} bytes, received {n} bytes")),
            "{summary}"
        );
        assert!(
            summary.contains("closed cleanly: close_notify sent and received"),
            "{summary}"
        );
    }
}

/// Issue 20, defect 1, with a real peer: a KeyUpdate mid-stream, both ways.
#[test]
fn gnutls_cli_rekeys_mid_stream_and_serve_answers_and_echoes_on() {
    if !peer_available("gnutls-cli", "gnutls-bin") {
        return;
    }
    let dir = TempDir::new("ksspictl-gnutls-rekey");
    let (ca, cert, key) = pki(&dir);
    let (mut serve, lines, addr) = serve_echo(&cert, &key, "1.3");
    let before = numbered_lines(0, 512 * 1024);
    let after = numbered_lines(1_000_000, 512 * 1024);
    let mut input = before.clone();
    // An inline command for gnutls-cli, not data: a KeyUpdate asking for ours.
    input.extend_from_slice(b"^rekey^\n");
    input.extend_from_slice(&after);
    let input = dir.write_bytes("input.txt", &input);
    // -d 4 logs the KeyUpdates gnutls sends and receives.
    let (ok, out, err) = gnutls_cli(&addr, &ca, "1.3", &input, &["--inline-commands", "-d", "4"]);
    let text = String::from_utf8_lossy(&out);
    assert!(ok, "gnutls-cli: {err}\n{text}");
    assert!(text.contains("- Rekey was completed"), "{text}");
    // gnutls sent its KeyUpdate with update_requested (1) and received ours,
    // update_not_requested (0): the handshake call's output.
    assert!(err.contains("sending key update (1)"), "{err}");
    assert!(err.contains("received TLS 1.3 key update (0)"), "{err}");
    let mut want = before;
    want.extend_from_slice(&after);
    let echoed = received_by_gnutls_cli(&out);
    assert_eq!(echoed.len(), want.len());
    assert!(echoed == want, "the echo differs");
    let summary = serve_summary(&mut serve, lines);
    let n = want.len();
    assert!(
        summary.contains(&format!("sent {n} bytes, received {n} bytes")),
        "{summary}"
    );
    // Exactly the one KeyUpdate (gnutls-cli as a client sends nothing else
    // after the handshake).
    assert!(summary.contains(" 1 post-handshake messages"), "{summary}");
    assert!(
        summary.contains("closed cleanly: close_notify sent and received"),
        "{summary}"
    );
}
