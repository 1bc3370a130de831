//! `ksspictl connect`: handshake with a TLS server through a driver client
//! session, then (if asked) send text or a file and print what comes back;
//! `--repeat` does it again over the same driver, whose cached credentials
//! let the later handshakes resume.

use crate::backend::{self, Identity};
use crate::relay;
use crate::util::{
    alpn_line, describe, parse_alpn, parse_thumbprint, protocols, resumed_line, resumption_summary,
    seconds, unescape, AlpnList, Resume, Tls,
};
use crate::Failure;
use ksspi_abi::{ClientAuth, Resumption};
use std::time::Duration;

/// The longest `--idle`: a day.
const MAX_IDLE_SECONDS: f64 = 86_400.0;

/// The most connections `--repeat` makes.
const MAX_REPEAT: u32 = 100;

/// Without --send/--send-file/--expect: how long to wait for what a TLS 1.3
/// server sends after the handshake (its session tickets), and then for its
/// close_notify.
const SETTLE: Duration = Duration::from_secs(1);

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
    /// Session resumption: `on` shares the driver's cached credentials, whose
    /// Schannel session cache offers the last session with this server name
    /// again (what a kernel client gets by default); `off` gives the session
    /// credentials of its own, so every handshake is full. Prints
    /// "resumed: yes|no|unknown" per connection. Default: on (or, with a
    /// driver that predates resumption, its own default); given explicitly to
    /// such a driver, it stops with STATUS_REVISION_MISMATCH.
    #[arg(long, value_enum, value_name = "on|off")]
    resume: Option<Resume>,
    /// Connect this many times (1 to 100), one after the other, in this
    /// process (over the same driver: its credential cache is what lets the
    /// later handshakes resume); with more than 1, a last line counts the
    /// handshakes that resumed and the fallbacks (later full handshakes).
    #[arg(long, default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=MAX_REPEAT as i64))]
    repeat: u32,
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
            args.resume.map(Resume::abi),
            args.repeat,
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

#[allow(clippy::too_many_arguments)]
fn connect(
    addr: &str,
    server_name: Option<&str>,
    ca: Option<&std::path::Path>,
    identity: Option<Identity>,
    tls: Tls,
    alpn: Option<&[u8]>,
    resume: Option<Resumption>,
    repeat: u32,
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
    let target = Target {
        addr,
        name,
        tls,
        alpn,
        talk: talk.as_ref(),
    };
    let mut seen = Vec::new();
    let result =
        relay::open_layout(driver.as_ref(), auth, alpn.is_some(), resume).and_then(|layout| {
            for i in 1..=repeat {
                let prefix = if repeat > 1 {
                    format!("connection {i} of {repeat}: ")
                } else {
                    String::new()
                };
                seen.push(connect_once(driver.as_ref(), &target, layout, &prefix)?);
            }
            Ok(())
        });
    let leaked = driver.finish();
    result?;
    if repeat > 1 {
        eprintln!("{}", resumption_summary(&seen));
    }
    if leaked > 0 {
        return Err(Failure(format!("{leaked} objects leaked at unload")));
    }
    Ok(())
}

/// Where `connect` goes and what it says there, the same each time.
struct Target<'a> {
    addr: &'a str,
    name: &'a str,
    tls: Tls,
    alpn: Option<&'a [u8]>,
    talk: Option<&'a Conversation>,
}

/// One connection: a session opened in `layout`, the handshake, the
/// conversation (or, without one, what the server sends right after the
/// handshake read and close_notify exchanged), the session closed. Returns
/// whether the handshake resumed.
fn connect_once(
    driver: &dyn backend::Driver,
    t: &Target<'_>,
    layout: relay::Layout,
    prefix: &str,
) -> Result<relay::Resumed, Failure> {
    let (addr, name, alpn) = (t.addr, t.name, t.alpn);
    let session = relay::open(driver, false, [0; 20], name, protocols(t.tls), layout, alpn)?;
    let sock = std::net::TcpStream::connect(addr)
        .map_err(|e| Failure(format!("connecting to {addr}: {e}")));
    let mut expect_met = None;
    let result = sock.and_then(|mut sock| {
        let peer = sock
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| addr.to_string());
        let hs = relay::handshake(driver, session, &mut sock, true)?;
        if !hs.established {
            return Err(relay::with_asked(
                Failure(format!("handshake with {peer} failed: {}", hs.status)),
                hs.certificate_requested,
            ));
        }
        eprintln!(
            "{prefix}connected to {peer} as {name}: handshake complete ({}), protocol {}, cipher {}",
            hs.status,
            hs.protocol_name(),
            hs.cipher_name()
        );
        eprintln!("{prefix}{}", resumed_line(hs.resumed));
        if hs.certificate_requested {
            // TLS 1.3: a server that requires one says so only after the
            // client's handshake is complete, failing the first read.
            eprintln!("  {}", relay::asked_note());
        }
        let d = relay::describe(driver, session)?;
        eprintln!(
            "  key exchange {}, hash {}; {}",
            d.exchange, d.hash, d.records
        );
        eprintln!("  peer certificate: {}", d.peer);
        eprintln!("  session (QUERY): {}", query_resumed(d.resumed));
        if alpn.is_some() {
            // STEP carries the name when it fits; QUERY always does.
            println!("{}", alpn_line(hs.alpn.as_deref().or(d.alpn.as_deref())));
        }
        let mut chan = relay::Channel::new(driver, session, &mut sock);
        let Some(talk) = t.talk else {
            // No conversation: read what a TLS 1.3 server sends after the
            // handshake (its session tickets, kept by the session's
            // credentials only once DECRYPT hands them over) and close with
            // close_notify, so both ends keep the session. A session with
            // credentials of its own (resumption off) has nothing to keep.
            let keeps = layout.resumption != Some(Resumption::Off);
            chan.settle(hs.is_tls13() && keeps, SETTLE)
                .map_err(|f| relay::with_asked(f, hs.certificate_requested))?;
            return Ok((hs.resumed, chan.stats));
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
        chan.run(
            &talk.send,
            relay::Sink::Collect(&mut collect),
            Some(talk.idle),
        )
        .map_err(|f| relay::with_asked(f, hs.certificate_requested))?;
        if let Some(want) = &talk.expect {
            expect_met = Some(got.windows(want.len().max(1)).any(|w| w == want.as_slice()));
        }
        Ok((hs.resumed, chan.stats))
    });
    relay::close(driver, session);
    let (resumed, stats) = result?;
    eprintln!("{}", describe(&stats));
    if expect_met == Some(false) {
        return Err(Failure("the expected text did not arrive".into()));
    }
    Ok(resumed)
}

/// QUERY's word on resumption, for the session line.
fn query_resumed(r: relay::Resumed) -> &'static str {
    match r {
        relay::Resumed::Yes => "resumed",
        relay::Resumed::No => "full handshake",
        relay::Resumed::Unknown => "resumption not told",
    }
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
