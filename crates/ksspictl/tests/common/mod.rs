//! What the harness's integration tests share.

use std::process::Command;

/// Run the built `ksspictl` with `args`: (exit code, stdout, stderr).
pub fn ksspictl(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ksspictl"))
        .args(args)
        .output()
        .expect("run ksspictl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Whether the peer program `bin` (from the Debian package `package`, which
/// scripts/setup.sh installs) is on the PATH. Missing, it fails the test
/// when `CI` is `true` (a CI run must not pass without its peers) and is
/// skipped, saying so on stderr, elsewhere.
#[allow(dead_code)]
pub fn peer_available(bin: &str, package: &str) -> bool {
    let found = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(bin).is_file()));
    if !found {
        let ci = std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
        assert!(
            !ci,
            "{bin} is not installed, and CI=true: install {package} (scripts/setup.sh)"
        );
        eprintln!("skipped: {bin} is not installed (apt-get install {package})");
    }
    found
}

/// A CA and a "localhost" leaf, as PEM files in `dir`: (CA, leaf, key).
#[allow(dead_code)]
pub fn pki(
    dir: &ksspi_sim::testing::TempDir,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let pki = ksspi_sim::certs::TestPki::new("ksspictl interop CA");
    let leaf = pki.leaf(&["localhost"], false);
    (
        dir.write("ca.pem", &pki.ca_pem()),
        dir.write("leaf.pem", &leaf.cert_pem),
        dir.write("leaf.key", &leaf.key_pem),
    )
}

/// `ksspictl serve --echo --once --tls TLS` with `cert` and `key`, on a free
/// loopback port: the child, its stdout's remaining lines, and the address.
#[allow(dead_code)]
pub fn serve_echo(
    cert: &std::path::Path,
    key: &std::path::Path,
    tls: &str,
) -> (
    ksspi_sim::testing::ChildGuard,
    std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
    String,
) {
    start_serve(
        Command::new(env!("CARGO_BIN_EXE_ksspictl"))
            .args(["serve", "--listen", "127.0.0.1:0", "--once", "--echo"])
            .args(["--tls", tls, "--cert"])
            .arg(cert)
            .arg("--key")
            .arg(key),
    )
}

/// Start `cmd`, a `ksspictl serve` listening on port 0, with its stdout and
/// stderr piped here: the child, its stdout's remaining lines, and the
/// address from its first line ("listening on ADDR").
#[allow(dead_code)]
pub fn start_serve(
    cmd: &mut Command,
) -> (
    ksspi_sim::testing::ChildGuard,
    std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
    String,
) {
    use std::io::BufRead;
    use std::process::Stdio;
    let mut serve = ksspi_sim::testing::ChildGuard(
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ksspictl serve"),
    );
    let mut lines = std::io::BufReader::new(serve.0.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let addr = first
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("{first}"))
        .to_string();
    (serve, lines, addr)
}

/// Wait for `serve` to exit successfully; the line of its summary (the one
/// that counts what was received).
#[allow(dead_code)]
pub fn serve_summary(
    serve: &mut ksspi_sim::testing::ChildGuard,
    lines: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
) -> String {
    let (ok, err) = serve_exit(serve);
    assert!(ok, "serve: {err}");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    rest.iter()
        .find(|l| l.contains("received"))
        .unwrap_or_else(|| panic!("{rest:?} {err}"))
        .clone()
}

/// Lines of printable text, about `n` bytes in all, each ending in '\n' and
/// numbered from `first`.
#[allow(dead_code)]
pub fn numbered_lines(first: usize, n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n + 100);
    let mut i = first;
    while out.len() < n {
        let line = format!(
            "line {i:07} {}\n",
            "abcdefghijklmnopqrstuvwxyz".repeat(1 + i % 3)
        );
        out.extend_from_slice(line.as_bytes());
        i += 1;
    }
    out
}

/// Start `cmd`, an `openssl s_server` (its stdin and stdout piped here), and
/// return once it prints its "ACCEPT" line. Its stdout is read rather than
/// its port probed: a probe would use up one of its `-naccept` connections.
#[allow(dead_code)]
pub fn start_s_server(cmd: &mut Command) -> ksspi_sim::testing::ChildGuard {
    use std::io::BufRead;
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start openssl s_server (is openssl installed?)");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("ACCEPT") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(std::time::Duration::from_secs(10))
        .expect("openssl s_server did not start listening");
    ksspi_sim::testing::ChildGuard(child)
}

/// Start `cmd`, a server that serves any number of connections (such as
/// `gnutls-serv`, whose "listening" line sits in a stdio buffer when stdout
/// is a pipe), with no stdio, and return once 127.0.0.1:`port` accepts a
/// connection; panics if it exits first or 10 s pass.
#[allow(dead_code)]
pub fn start_listening(cmd: &mut Command, port: u16) -> ksspi_sim::testing::ChildGuard {
    let what = cmd.get_program().to_string_lossy().into_owned();
    let mut child = ksspi_sim::testing::ChildGuard(
        cmd.stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {what}: {e}")),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.0.try_wait() {
            panic!("{what} exited: {status}");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what} did not start listening"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child
}

/// Wait for `serve` to exit: whether it succeeded, and its stderr.
#[allow(dead_code)]
pub fn serve_exit(serve: &mut ksspi_sim::testing::ChildGuard) -> (bool, String) {
    use std::io::Read;
    let status = serve.0.wait().unwrap();
    let mut err = String::new();
    if let Some(mut stderr) = serve.0.stderr.take() {
        let _ = stderr.read_to_string(&mut err);
    }
    (status.success(), err)
}
