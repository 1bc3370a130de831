//! The model against real TLS peers on loopback: a model client completes a
//! handshake with `openssl s_server`, and `openssl s_client` completes one with
//! a model server, TLS 1.2 and 1.3, through the raw async provider calls.
//! The tests start openssl themselves (`.ci/run` installs it).

// The peer is the openssl CLI, installed on Linux only; Wine, the Windows
// proxy these tests were run under, has none, so Windows is not claimed.
#![cfg(not(windows))]

mod support;

use ksspi::sys::{
    SP_PROT_TLS1_2_CLIENT, SP_PROT_TLS1_2_SERVER, SP_PROT_TLS1_3_CLIENT, SP_PROT_TLS1_3_SERVER,
};
use ksspi::SecStatus;
use ksspi_sim::certs::{CertStore, TestPki};
use ksspi_sim::testing::{free_port, ChildGuard, TempDir};
use ksspi_sim::{CallbackIrql, CompletionPolicy, SimConfig, SimProvider};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::Peer;

/// Connect once s_server says it accepts (its "ACCEPT" line): probing the
/// port before that can meet another listener, or a loopback self-connect.
fn connect_when_accepting(server: &mut ChildGuard, port: u16) -> TcpStream {
    let stdout = server.0.stdout.take().expect("s_server's stdout is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("ACCEPT") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|_| panic!("openssl s_server did not start accepting on {port}"));
    TcpStream::connect(("127.0.0.1", port)).expect("connect to openssl s_server")
}

fn sim(store: Arc<CertStore>) -> SimProvider {
    let config = SimConfig {
        completion: CompletionPolicy::Mixed,
        callback_irql: CallbackIrql::Mixed,
        seed: 21,
        ..SimConfig::default()
    };
    SimProvider::new(config, store)
}

/// Drive one side's handshake over a socket until SEC_E_OK.
fn handshake_over(peer: &mut Peer, sock: &mut TcpStream, client: bool) -> SecStatus {
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut inbuf: Vec<u8> = Vec::new();
    if client {
        let first = peer.step(&[]);
        assert_eq!(first.status, SecStatus::SEC_I_CONTINUE_NEEDED);
        sock.write_all(&first.token).unwrap();
    }
    let mut chunk = [0u8; 16384];
    loop {
        // Read more when the buffer holds no whole step's worth.
        if inbuf.is_empty() {
            let n = sock.read(&mut chunk).expect("read from openssl");
            assert!(n > 0, "openssl closed the connection mid-handshake");
            inbuf.extend_from_slice(&chunk[..n]);
        }
        let st = peer.step(&inbuf);
        match st.status {
            SecStatus::SEC_E_INCOMPLETE_MESSAGE => {
                let n = sock.read(&mut chunk).expect("read from openssl");
                assert!(n > 0, "openssl closed the connection mid-record");
                inbuf.extend_from_slice(&chunk[..n]);
            }
            SecStatus::SEC_I_CONTINUE_NEEDED | SecStatus::SEC_I_INCOMPLETE_CREDENTIALS => {
                sock.write_all(&st.token).unwrap();
                inbuf.drain(..inbuf.len() - st.extra);
            }
            SecStatus::SEC_E_OK => {
                sock.write_all(&st.token).unwrap();
                return st.status;
            }
            failure => {
                let _ = sock.write_all(&st.alert);
                return failure;
            }
        }
    }
}

fn pki_files(
    files: &TempDir,
) -> (
    TestPki,
    ksspi_sim::certs::LeafCert,
    PathBuf,
    PathBuf,
    PathBuf,
) {
    let pki = TestPki::new("ksspi interop CA");
    let leaf = pki.leaf(&["localhost"], false);
    let cert = files.write("leaf.pem", &leaf.cert_pem);
    let key = files.write("leaf.key", &leaf.key_pem);
    let ca = files.write("ca.pem", &pki.ca_pem());
    (pki, leaf, cert, key, ca)
}

#[test]
fn a_model_client_completes_handshakes_with_openssl_s_server() {
    for (flag, only) in [
        ("-tls1_2", SP_PROT_TLS1_3_CLIENT),
        ("-tls1_3", SP_PROT_TLS1_2_CLIENT),
    ] {
        let files = TempDir::new(&format!("ksspi-openssl-srv{flag}"));
        let (pki, _leaf, cert, key, _ca) = pki_files(&files);
        let port = free_port();
        let mut server = ChildGuard(
            Command::new("openssl")
                .args([
                    "s_server",
                    "-accept",
                    &format!("127.0.0.1:{port}"),
                    "-naccept",
                    "1",
                    flag,
                ])
                .arg("-cert")
                .arg(&cert)
                .arg("-key")
                .arg(&key)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("start openssl s_server (is openssl installed?)"),
        );
        let mut sock = connect_when_accepting(&mut server, port);
        let store = Arc::new(CertStore::new());
        store.add_root_der(pki.ca_der()).unwrap();
        let sim = sim(store);
        {
            let mut client = Peer::client(&sim, "localhost", only).unwrap();
            let status = handshake_over(&mut client, &mut sock, true);
            assert_eq!(
                status,
                SecStatus::SEC_E_OK,
                "against openssl s_server {flag}"
            );
        }
        sim.unload().unwrap_or_else(|leaks| panic!("{leaks}"));
    }
}

#[test]
fn openssl_s_client_completes_handshakes_with_a_model_server() {
    for (flag, only, expect) in [
        ("-tls1_2", SP_PROT_TLS1_3_SERVER, "TLSv1.2"),
        ("-tls1_3", SP_PROT_TLS1_2_SERVER, "TLSv1.3"),
    ] {
        let files = TempDir::new(&format!("ksspi-openssl-cli{flag}"));
        let (_pki, leaf, _cert, _key, ca) = pki_files(&files);
        let store = Arc::new(CertStore::new());
        let thumb = store
            .add_identity("MY", leaf.chain_der.clone(), leaf.key_der.clone())
            .unwrap();
        let sim = sim(store);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let client = Command::new("openssl")
            .args([
                "s_client",
                "-connect",
                &format!("127.0.0.1:{port}"),
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
            .spawn()
            .expect("start openssl s_client (is openssl installed?)");
        let mut client = ChildGuard(client);
        let (mut sock, _) = listener.accept().unwrap();
        {
            let mut server = Peer::server(&sim, thumb, only).unwrap();
            let status = handshake_over(&mut server, &mut sock, false);
            assert_eq!(status, SecStatus::SEC_E_OK, "with openssl s_client {flag}");
        }
        // s_client reads EOF on stdin and exits after the handshake.
        let deadline = Instant::now() + Duration::from_secs(10);
        let exit = loop {
            if let Some(st) = client.0.try_wait().unwrap() {
                break st;
            }
            assert!(Instant::now() < deadline, "openssl s_client did not exit");
            std::thread::sleep(Duration::from_millis(20));
        };
        drop(sock);
        let mut err = String::new();
        client
            .0
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert!(exit.success(), "s_client failed: {err}");
        assert!(err.contains("CONNECTION ESTABLISHED"), "{err}");
        assert!(
            err.contains(&format!("Protocol version: {expect}")),
            "{err}"
        );
        assert!(err.contains("Verification: OK"), "{err}");
        sim.unload().unwrap_or_else(|leaks| panic!("{leaks}"));
    }
}
