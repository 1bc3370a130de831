//! `ksspictl connect`: handshake with a TLS server through a driver client
//! session, then (if asked) send text or a file and print what comes back.

use crate::backend::{self, Identity};
use crate::relay;
use crate::util::{
    alpn_line, describe, parse_alpn, parse_thumbprint, protocols, seconds, unescape, AlpnList, Tls,
};
use crate::Failure;
use ksspi_abi::ClientAuth;
use std::time::Duration;

/// The longest `--idle`: a day.
const MAX_IDLE_SECONDS: f64 = 86_400.0;

/// `connect`'s arguments.
#[derive(clap::Args)]
#[command(group = clap::ArgGroup::new("talk").multiple(true).args(["send", "send_file", "expect"]))]
pub struct Args {
    /// The server, HOST:PORT.
    addr: String,
    /// The name the server's certificate must carry (default: HOST).
    #[arg(long = "server-name")]
    server_name: Option<String>,
    /// Trust this CA (PEM), checked at start; without it the model trusts
    /// only the CA it generates (on Windows import the CA into
    /// LocalMachine\Root instead).
    #[arg(long)]
    ca: Option<std::path::PathBuf>,
    /// A client certificate (PEM; its CA certificates may follow it), with
    /// --key, offered when the server asks for one; checked at start (model
    /// only: it goes into the model's LocalMachine\My, where the driver
    /// finds it by thumbprint).
    #[arg(long, requires = "key", conflicts_with = "cert_thumbprint")]
    cert: Option<std::path::PathBuf>,
    /// The client certificate's private key (PEM, PKCS#8, PKCS#1 or SEC1),
    /// with --cert; it must match the certificate.
    #[arg(long, requires = "cert")]
    key: Option<std::path::PathBuf>,
    /// A client certificate by SHA-1 thumbprint in LocalMachine\My, with its
    /// private key (how kernel Schannel finds it on Windows).
    #[arg(long = "cert-thumbprint", value_parser = parse_thumbprint)]
    cert_thumbprint: Option<[u8; 20]>,
    /// TLS versions.
    #[arg(long, value_enum, default_value_t = Tls::Both)]
    tls: Tls,
    /// Offer these application protocols (ALPN), most preferred first,
    /// comma-separated (h2,http/1.1); prints "ALPN: NAME" or "ALPN: none".
    #[arg(long, value_parser = parse_alpn)]
    alpn: Option<AlpnList>,
    /// After the handshake, send this text, then print what comes back
    /// until the peer closes. Escapes: \n \r \t \0 \xHH, and \\ for a
    /// backslash (line-based peers, `openssl s_server -rev` for one, wait for \n).
    #[arg(long, conflicts_with = "send_file")]
    send: Option<String>,
    /// After the handshake, send this file's bytes.
    #[arg(long = "send-file")]
    send_file: Option<std::path::PathBuf>,
    /// Succeed only if the reply contains this text (escapes as in
    /// --send); close once it has arrived.
    #[arg(long)]
    expect: Option<String>,
    /// With --send, --send-file or --expect: close after this many seconds
    /// without traffic, if the peer has not closed first (0.001 to 86400).
    #[arg(long, value_name = "SECONDS", default_value = "3",
          value_parser = seconds(0.001, MAX_IDLE_SECONDS), requires = "talk")]
    idle: Duration,
}

/// Check what to say, then connect, handshake and say it.
pub fn exec(args: &Args) -> Result<(), Failure> {
    conversation(
        args.send.as_deref(),
        args.send_file.as_deref(),
        args.expect.as_deref(),
        args.idle,
    )
    .and_then(|talk| {
        let identity = match (&args.cert_thumbprint, &args.cert, &args.key) {
            (Some(t), ..) => Some(Identity::Thumbprint(*t)),
            (_, Some(c), Some(k)) => Some(Identity::Pem(c.clone(), k.clone())),
            _ => None,
        };
        connect(
            &args.addr,
            args.server_name.as_deref(),
            args.ca.as_deref(),
            identity,
            args.tls,
            args.alpn.as_ref().map(|l| l.0.as_slice()),
            talk,
        )
    })
}

/// What `connect` sends and waits for after the handshake.
struct Conversation {
    send: Vec<u8>,
    expect: Option<Vec<u8>>,
    idle: Duration,
}

fn connect(
    addr: &str,
    server_name: Option<&str>,
    ca: Option<&std::path::Path>,
    identity: Option<Identity>,
    tls: Tls,
    alpn: Option<&[u8]>,
    talk: Option<Conversation>,
) -> Result<(), Failure> {
    let (driver, certificate) = backend::client(ca, identity)?;
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let name = server_name.unwrap_or(host);
    let auth = ClientAuth {
        certificate,
        store: if certificate.is_some() {
            ksspi_abi::STORE_MY
        } else {
            [0; 16]
        },
        ..ClientAuth::NONE
    };
    let auth = relay::open_layout(driver.as_ref(), auth, alpn.is_some())?;
    let session = relay::open(
        driver.as_ref(),
        false,
        [0; 20],
        name,
        protocols(tls),
        auth,
        alpn,
    )?;
    let sock = std::net::TcpStream::connect(addr)
        .map_err(|e| Failure(format!("connecting to {addr}: {e}")));
    let mut expect_met = None;
    let result = sock.and_then(|mut sock| {
        let peer = sock
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| addr.to_string());
        let hs = relay::handshake(driver.as_ref(), session, &mut sock, true)?;
        if !hs.established {
            return Err(relay::with_asked(
                Failure(format!("handshake with {peer} failed: {}", hs.status)),
                hs.certificate_requested,
            ));
        }
        eprintln!(
            "connected to {peer} as {name}: handshake complete ({}), protocol {}, cipher {}",
            hs.status,
            hs.protocol_name(),
            hs.cipher_name()
        );
        if hs.certificate_requested {
            // TLS 1.3: a server that requires one says so only after the
            // client's handshake is complete, failing the first read.
            eprintln!("  {}", relay::asked_note());
        }
        let d = relay::describe(driver.as_ref(), session)?;
        eprintln!(
            "  key exchange {}, hash {}; {}",
            d.exchange, d.hash, d.records
        );
        eprintln!("  peer certificate: {}", d.peer);
        if alpn.is_some() {
            // STEP carries the name when it fits; QUERY always does.
            println!("{}", alpn_line(hs.alpn.as_deref().or(d.alpn.as_deref())));
        }
        let Some(talk) = &talk else {
            return Ok(None);
        };
        let mut got = Vec::new();
        let mut stdout = std::io::stdout().lock();
        let mut collect = |plain: &[u8]| {
            use std::io::Write;
            let _ = stdout.write_all(plain);
            let _ = stdout.flush();
            match &talk.expect {
                Some(want) => {
                    got.extend_from_slice(plain);
                    got.windows(want.len().max(1)).any(|w| w == want.as_slice())
                }
                None => false,
            }
        };
        let mut chan = relay::Channel::new(driver.as_ref(), session, &mut sock);
        chan.run(
            &talk.send,
            relay::Sink::Collect(&mut collect),
            Some(talk.idle),
        )
        .map_err(|f| relay::with_asked(f, hs.certificate_requested))?;
        if let Some(want) = &talk.expect {
            expect_met = Some(got.windows(want.len().max(1)).any(|w| w == want.as_slice()));
        }
        Ok(Some(chan.stats))
    });
    relay::close(driver.as_ref(), session);
    let leaked = driver.finish();
    if let Some(stats) = result? {
        eprintln!("{}", describe(&stats));
    }
    if expect_met == Some(false) {
        return Err(Failure("the expected text did not arrive".into()));
    }
    if leaked > 0 {
        return Err(Failure(format!("{leaked} objects leaked at unload")));
    }
    Ok(())
}

/// What `connect` is to say after the handshake, if anything.
fn conversation(
    send: Option<&str>,
    send_file: Option<&std::path::Path>,
    expect: Option<&str>,
    idle: Duration,
) -> Result<Option<Conversation>, Failure> {
    let send = match (send, send_file) {
        (Some(text), _) => Some(unescape(text).map_err(|e| Failure(format!("--send: {e}")))?),
        (_, Some(path)) => {
            Some(std::fs::read(path).map_err(|e| Failure(format!("{}: {e}", path.display())))?)
        }
        _ => None,
    };
    if send.is_none() && expect.is_none() {
        return Ok(None);
    }
    let expect = expect
        .map(unescape)
        .transpose()
        .map_err(|e| Failure(format!("--expect: {e}")))?;
    Ok(Some(Conversation {
        send: send.unwrap_or_default(),
        expect,
        idle,
    }))
}
