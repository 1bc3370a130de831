//! `ksspictl serve`: accept TLS clients and run each handshake through a
//! driver server session, then echo or count what each client sends.

use crate::backend::{self, Driver, Identity};
use crate::relay;
use crate::util::{
    alpn_line, describe, parse_alpn, parse_thumbprint, protocols, resumed_line, AlpnList, Resume,
    Tls,
};
use crate::Failure;
use ksspi::SecStatus;
use ksspi_abi::{ClientAuth, ClientCertMode, Resumption};
use std::time::Duration;

/// `serve --client-cert`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ClientCert {
    /// Do not ask clients for a certificate.
    Off,
    /// Ask (ASC_REQ_MUTUAL_AUTH); serve a client without one all the same.
    Request,
    /// Ask, and refuse a client that sends none (SEC_E_NO_CREDENTIALS).
    Require,
}

/// `serve`'s flags.
#[derive(clap::Args)]
#[command(
    after_help = "The certificate: --cert-thumbprint (Windows), --cert with --key, or \
    --self-signed NAME (model only). With none of them the model serves a certificate for \
    \"localhost\" issued by a CA it generates at each start, which no other program trusts \
    (clients must skip verification); give --cert/--key for a certificate they can check \
    (the README shows how to make one). On Windows --cert-thumbprint is required."
)]
pub struct Args {
    /// Where to listen, ADDR:PORT.
    #[arg(long)]
    listen: String,
    /// The server certificate by SHA-1 thumbprint in LocalMachine\My
    /// (how kernel Schannel finds it on Windows).
    #[arg(long = "cert-thumbprint", value_parser = parse_thumbprint, conflicts_with_all = ["cert", "self_signed"])]
    cert_thumbprint: Option<[u8; 20]>,
    /// The server certificate (PEM; its CA certificates may follow it), with
    /// --key (model only).
    #[arg(long, requires = "key")]
    cert: Option<std::path::PathBuf>,
    /// The private key (PEM, PKCS#8, PKCS#1 or SEC1), with --cert; it must
    /// match the certificate.
    #[arg(long, requires = "cert")]
    key: Option<std::path::PathBuf>,
    /// A self-signed certificate for this DNS name or IP address, made at
    /// start (model only).
    #[arg(long = "self-signed", conflicts_with = "cert")]
    self_signed: Option<String>,
    /// TLS versions.
    #[arg(long, value_enum, default_value_t = Tls::Both)]
    tls: Tls,
    /// Serve one connection, then exit with its result.
    #[arg(long)]
    once: bool,
    /// Send back what each client sends, until it closes.
    #[arg(long)]
    echo: bool,
    /// Application protocols (ALPN) to choose from, in this order of
    /// preference, comma-separated (h2,http/1.1): the first the client also
    /// offers is chosen; a client offering none of them is refused
    /// (no_application_protocol). Prints "ALPN: NAME" or "ALPN: none".
    #[arg(long, value_parser = parse_alpn)]
    alpn: Option<AlpnList>,
    /// Ask each client for a certificate, and print its subject and issuer.
    /// Any certificate is taken (its chain is not judged: Schannel reports
    /// that apart); `require` refuses a client that sends none.
    #[arg(long = "client-cert", value_enum, default_value_t = ClientCert::Off)]
    client_cert: ClientCert,
    /// Session resumption: `on` lets clients resume (the server's
    /// credentials allow reconnects: session ids and TLS 1.3 tickets); `off`
    /// sets SCH_CRED_DISABLE_RECONNECTS, so every handshake is full. Prints
    /// "resumed: yes|no|unknown" per connection. Default: on (or, with a
    /// driver that predates resumption, its own default); given explicitly to
    /// such a driver, it stops with STATUS_REVISION_MISMATCH.
    #[arg(long, value_enum, value_name = "on|off")]
    resume: Option<Resume>,
}

/// Find the server certificate `args` names, then serve.
pub fn exec(args: &Args) -> Result<(), Failure> {
    // Refuse a model-only certificate before reading any file it names.
    if args.cert.is_some() || args.self_signed.is_some() {
        backend::allow(backend::ModelOnly::ServerCertificate)?;
    }
    let identity = match (
        &args.cert_thumbprint,
        &args.cert,
        &args.key,
        &args.self_signed,
    ) {
        (Some(t), ..) => Ok(Identity::Thumbprint(*t)),
        (_, Some(c), Some(k), _) => Ok(Identity::Pem(c.clone(), k.clone())),
        (.., Some(name)) => Ok(Identity::SelfSigned(name.clone())),
        _ => Ok(Identity::Generated),
    };
    let mode = match args.client_cert {
        ClientCert::Off => ClientCertMode::Ignore,
        ClientCert::Request => ClientCertMode::Request,
        ClientCert::Require => ClientCertMode::Require,
    };
    identity.and_then(|identity| {
        serve(
            &args.listen,
            identity,
            args.tls,
            mode,
            args.once,
            args.echo,
            args.alpn.clone().map(|l| l.0),
            args.resume.map(Resume::abi),
        )
    })
}

#[allow(clippy::too_many_arguments)]
fn serve(
    listen: &str,
    identity: Identity,
    tls: Tls,
    mode: ClientCertMode,
    once: bool,
    echo: bool,
    alpn: Option<Vec<u8>>,
    resume: Option<Resumption>,
) -> Result<(), Failure> {
    let auth = ClientAuth {
        server_mode: mode,
        ..ClientAuth::NONE
    };
    // Lives as long as the server (each connection's thread copies the
    // handler that refers to it): one small allocation, never freed.
    let alpn: Option<&'static [u8]> = alpn.map(|list| &*Box::leak(list.into_boxed_slice()));
    let (driver, thumbprint) = backend::server(identity)?;
    let layout = relay::open_layout(driver.as_ref(), auth, alpn.is_some(), resume)?;
    // The driver acquires a server session's credentials at OPEN, so one
    // opened and closed here tells now, on either backend, whether the
    // certificate can be served (on Windows: whether LocalMachine\My holds
    // it with a private key kernel Schannel can use), rather than failing
    // each client later.
    let probe = relay::open(
        driver.as_ref(),
        true,
        thumbprint,
        "",
        protocols(tls),
        layout,
        alpn,
    )
    .map_err(|Failure(why)| Failure(format!("the server certificate cannot be used: {why}")))?;
    relay::close(driver.as_ref(), probe);
    let driver = std::sync::Arc::new(driver);
    let listener = std::net::TcpListener::bind(listen)
        .map_err(|e| Failure(format!("listening on {listen}: {e}")))?;
    let local = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| listen.to_string());
    println!("listening on {local}");
    let serve_one = move |driver: &dyn Driver,
                          mut sock: std::net::TcpStream|
          -> Result<(), Failure> {
        let peer = sock.peer_addr().map(|a| a.to_string()).unwrap_or_default();
        let session = relay::open(driver, true, thumbprint, "", protocols(tls), layout, alpn)?;
        let result = relay::handshake(driver, session, &mut sock, false);
        let hs = match result {
            Ok(hs) if hs.established => hs,
            other => {
                relay::close(driver, session);
                other?
            }
        };
        if hs.established {
            println!(
                "{peer}: handshake complete ({}), protocol {}, cipher {}",
                hs.status,
                hs.protocol_name(),
                hs.cipher_name()
            );
            println!("{peer}: {}", resumed_line(hs.resumed));
            if alpn.is_some() {
                let chosen = match hs.alpn.clone() {
                    Some(name) => Some(name),
                    None => relay::describe(driver, session).ok().and_then(|d| d.alpn),
                };
                println!("{peer}: {}", alpn_line(chosen.as_deref()));
            }
            if mode != ClientCertMode::Ignore {
                match relay::describe(driver, session) {
                    Ok(d) => println!("{peer}: client certificate: {}", d.peer),
                    Err(Failure(why)) => println!("{peer}: client certificate: {why}"),
                }
            }
            // Echo, or read and count, until the client closes; then
            // answer its close_notify with ours.
            let mut chan = relay::Channel::new(driver, session, &mut sock);
            let mut count = |_: &[u8]| false;
            let sink = if echo {
                relay::Sink::Echo
            } else {
                relay::Sink::Collect(&mut count)
            };
            let ran = chan.run(&[], sink, Some(Duration::from_secs(300)));
            let stats = std::mem::take(&mut chan.stats);
            relay::close(driver, session);
            ran?;
            println!("{peer}: {}", describe(&stats));
            Ok(())
        } else if mode == ClientCertMode::Require && hs.status == SecStatus::SEC_E_NO_CREDENTIALS {
            Err(Failure(format!(
                "{peer}: refused: the client sent no certificate and --client-cert \
                     require asks for one ({})",
                hs.status
            )))
        } else if alpn.is_some() && hs.status == SecStatus::SEC_E_APPLICATION_PROTOCOL_MISMATCH {
            Err(Failure(format!(
                "{peer}: refused: the client offered none of the --alpn protocols \
                 (no_application_protocol, {})",
                hs.status
            )))
        } else {
            Err(Failure(format!("{peer}: handshake failed: {}", hs.status)))
        }
    };
    if once {
        let (sock, _) = listener
            .accept()
            .map_err(|e| Failure(format!("accepting: {e}")))?;
        let result = serve_one(driver.as_ref().as_ref(), sock);
        let driver = std::sync::Arc::try_unwrap(driver)
            .map_err(|_| Failure("the driver is still shared".into()))?;
        let leaked = driver.finish();
        result?;
        if leaked > 0 {
            return Err(Failure(format!("{leaked} objects leaked at unload")));
        }
        return Ok(());
    }
    for sock in listener.incoming() {
        let Ok(sock) = sock else { continue };
        let driver = driver.clone();
        std::thread::spawn(move || {
            // A failed handshake never stops the server.
            if let Err(Failure(reason)) = serve_one(driver.as_ref().as_ref(), sock) {
                eprintln!("ksspictl: {reason}");
            }
        });
    }
    Ok(())
}
