//! `connect` and `serve`: run a handshake through a driver session, relaying
//! its tokens over TCP to a real TLS peer, so the kernel path meets real
//! implementations.

use crate::backend::Driver;
use crate::Failure;
use ksspi::SecStatus;
use ksspi_abi::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// What a finished handshake looked like.
pub struct Handshake {
    pub status: SecStatus,
    pub established: bool,
    /// The negotiated protocol (`SP_PROT_*`), once established.
    pub protocol: u32,
    /// The cipher's `ALG_ID`, once established (0 if it has none).
    pub cipher: u32,
}

impl Handshake {
    /// "TLS 1.3", "TLS 1.2" or "unknown".
    pub fn protocol_name(&self) -> &'static str {
        use ksspi::sys::{SP_PROT_TLS1_2, SP_PROT_TLS1_3};
        if self.protocol & SP_PROT_TLS1_3 != 0 {
            "TLS 1.3"
        } else if self.protocol & SP_PROT_TLS1_2 != 0 {
            "TLS 1.2"
        } else {
            "unknown"
        }
    }

    /// The cipher by its ALG_ID.
    pub fn cipher_name(&self) -> &'static str {
        use ksspi::sys::{CALG_AES_128, CALG_AES_256};
        match self.cipher {
            CALG_AES_128 => "AES-128",
            CALG_AES_256 => "AES-256",
            0 => "ChaCha20-Poly1305 or unnamed",
            _ => "other",
        }
    }
}

fn call(driver: &dyn Driver, code: u32, input: &[u8], capacity: usize) -> Result<Vec<u8>, Failure> {
    let (status, reply) = driver.call(code, input, capacity)?;
    if status != 0 {
        return Err(Failure(format!(
            "the request failed: NTSTATUS {:#010x}",
            status as u32
        )));
    }
    Ok(reply)
}

fn encoded<'a, M: Message<'a>>(m: &M, extra: usize) -> Result<Vec<u8>, Failure> {
    let mut buf = vec![0u8; 512 + extra];
    let n = encode(m, &mut buf).map_err(|e| Failure(format!("encoding a request: {e:?}")))?;
    buf.truncate(n);
    Ok(buf)
}

/// Open a session: a server (certificate by thumbprint in MY) or a client
/// (target name).
pub fn open(
    driver: &dyn Driver,
    server: bool,
    thumbprint: [u8; 20],
    target: &str,
    protocols: u32,
) -> Result<SessionId, Failure> {
    let mut store = [0u8; 16];
    store[..2].copy_from_slice(b"MY");
    let req = OpenRequest {
        role: if server { Role::Server } else { Role::Client },
        manual_validation: false,
        protocols,
        thumbprint,
        store,
        target: target.as_bytes(),
    };
    let reply = call(driver, IOCTL_KSSPI_OPEN, &encoded(&req, target.len())?, 64)?;
    let open = decode::<OpenReply>(&reply)
        .map_err(|e| Failure(format!("a malformed OPEN reply: {e:?}")))?;
    if open.status < 0 {
        return Err(Failure(format!(
            "opening the session failed: {}",
            SecStatus(open.status)
        )));
    }
    Ok(open.session)
}

/// Run the handshake of `session` over `sock`. A client starts with an empty step.
pub fn handshake(
    driver: &dyn Driver,
    session: SessionId,
    sock: &mut TcpStream,
    client: bool,
) -> Result<Handshake, Failure> {
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| Failure(e.to_string()))?;
    let mut input: Vec<u8> = Vec::new();
    let mut first = client;
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        if !first {
            let n = sock
                .read(&mut chunk)
                .map_err(|e| Failure(format!("reading from the peer: {e}")))?;
            if n == 0 {
                return Err(Failure(
                    "the peer closed the connection during the handshake".into(),
                ));
            }
            input.clear();
            input.extend_from_slice(&chunk[..n]);
        }
        first = false;
        let req = StepRequest {
            session,
            input: &input,
        };
        let reply = call(
            driver,
            IOCTL_KSSPI_STEP,
            &encoded(&req, input.len())?,
            step_reply_capacity(64 * 1024),
        )?;
        let step = decode::<StepReply>(&reply)
            .map_err(|e| Failure(format!("a malformed STEP reply: {e:?}")))?;
        if !step.output.is_empty() {
            sock.write_all(step.output)
                .map_err(|e| Failure(format!("writing to the peer: {e}")))?;
        }
        match step.outcome {
            StepOutcome::NeedInput => continue,
            StepOutcome::Established => {
                return Ok(Handshake {
                    status: SecStatus(step.status),
                    established: true,
                    protocol: step.protocol,
                    cipher: step.cipher,
                })
            }
            StepOutcome::Failed => {
                return Ok(Handshake {
                    status: SecStatus(step.status),
                    established: false,
                    protocol: 0,
                    cipher: 0,
                })
            }
        }
    }
}

/// Close a session.
pub fn close(driver: &dyn Driver, session: SessionId) {
    if let Ok(req) = encoded(&CloseRequest { session }, 0) {
        let _ = call(driver, IOCTL_KSSPI_CLOSE, &req, 64);
    }
}

/// Read and drop whatever the peer sends until it closes (or 10 s pass).
pub fn drain_until_closed(sock: &mut TcpStream) {
    let _ = sock.set_read_timeout(Some(Duration::from_secs(10)));
    let mut sink = [0u8; 4096];
    while matches!(sock.read(&mut sink), Ok(n) if n > 0) {}
}
