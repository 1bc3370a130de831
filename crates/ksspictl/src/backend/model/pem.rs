//! The certificate files the model takes (`serve --cert/--key`, `connect
//! --cert/--key`, `connect --ca`), checked when the command starts, so that a bad file is one line
//! naming it and what is wrong rather than a `SEC_E_NO_CREDENTIALS` per
//! client (or a CA silently left out of the Root store).
//!
//! The checks are the ones the model's Schannel applies later, from the same
//! crates: a server certificate must parse as an end-entity certificate
//! (webpki, through rustls's `ParsedCertificate`), its key must load into the
//! ring provider and match the certificate's public key
//! (`CertifiedKey::from_der`, which is what rustls's `with_single_cert` runs
//! when the model builds its `ServerConfig`), and a CA must be a usable trust
//! anchor (`RootCertStore::add`, which the model's Root store calls and whose
//! error it ignores). What passes here therefore cannot fail there for the
//! same reason.

use crate::Failure;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::ParsedCertificate;
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;
use std::path::Path;

/// A certificate chain (end entity first) and its private key, DER: a
/// server's, or a client's.
pub struct ServerIdentity {
    pub chain: Vec<Vec<u8>>,
    pub key: Vec<u8>,
}

/// Read and check `serve --cert CERT --key KEY` or `connect --cert CERT
/// --key KEY` (a client certificate is checked as a server's is: the model
/// signs the client's CertificateVerify with that key, through the same
/// `CertifiedKey`).
pub fn certificate_and_key(cert: &Path, key: &Path) -> Result<ServerIdentity, Failure> {
    let chain = certificates(cert)?;
    // The end entity must parse as one (the CAs after it are sent as they
    // are, as Schannel sends the chain it builds).
    ParsedCertificate::try_from(&chain[0]).map_err(|e| {
        Failure(format!(
            "{}: the first certificate is not a valid X.509 certificate ({})",
            cert.display(),
            reason(&e)
        ))
    })?;
    let key_der = PrivateKeyDer::from_pem_slice(read_file(key)?.as_bytes()).map_err(|e| {
        Failure(match e {
            pem::Error::NoItemsFound => format!(
                "{}: no private key block (BEGIN PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)",
                key.display()
            ),
            other => format!("{}: not a PEM key: {}", key.display(), pem_reason(&other)),
        })
    })?;
    let key_bytes = key_der.secret_der().to_vec();
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(chain.clone(), key_der, &provider).map_err(|e| {
        Failure(match e {
            rustls::Error::InconsistentKeys(_) => format!(
                "{} does not match the certificate in {} (their public keys differ)",
                key.display(),
                cert.display()
            ),
            rustls::Error::General(why) => {
                format!("{}: the key cannot be used: {why}", key.display())
            }
            other => format!("{}: the key cannot be used: {other}", key.display()),
        })
    })?;
    Ok(ServerIdentity {
        chain: chain.into_iter().map(|c| c.to_vec()).collect(),
        key: key_bytes,
    })
}

/// Read and check `connect --ca CA`: every certificate in it, each a usable
/// trust anchor.
pub fn trust_anchors(ca: &Path) -> Result<Vec<Vec<u8>>, Failure> {
    let certs = certificates(ca)?;
    let mut check = RootCertStore::empty();
    for (i, cert) in certs.iter().enumerate() {
        check.add(cert.clone()).map_err(|e| {
            Failure(format!(
                "{}: certificate {} is not a valid X.509 certificate ({})",
                ca.display(),
                i + 1,
                reason(&e)
            ))
        })?;
    }
    Ok(certs.into_iter().map(|c| c.to_vec()).collect())
}

/// Every CERTIFICATE block of the PEM file `path`: at least one, each with
/// a body that decodes.
fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, Failure> {
    let text = read_file(path)?;
    let certs = CertificateDer::pem_slice_iter(text.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            Failure(format!(
                "{}: not a PEM file: {}",
                path.display(),
                pem_reason(&e)
            ))
        })?;
    if certs.is_empty() {
        return Err(Failure(format!(
            "{}: no \"BEGIN CERTIFICATE\" block",
            path.display()
        )));
    }
    Ok(certs)
}

/// The text of `path`, or one line naming it.
fn read_file(path: &Path) -> Result<String, Failure> {
    std::fs::read_to_string(path).map_err(|e| Failure(format!("{}: {e}", path.display())))
}

/// A PEM error in words.
fn pem_reason(e: &pem::Error) -> String {
    match e {
        pem::Error::Base64Decode(_) => "a block's body is not base64".into(),
        pem::Error::MissingSectionEnd { end_marker } => format!(
            "a block has no -----END {}----- line",
            String::from_utf8_lossy(end_marker)
        ),
        pem::Error::IllegalSectionStart { line } => {
            format!("a malformed BEGIN line: {}", String::from_utf8_lossy(line))
        }
        other => other.to_string(),
    }
}

/// A rustls certificate error without its "invalid peer certificate" frame
/// (the certificate is ours, not a peer's).
fn reason(e: &rustls::Error) -> String {
    match e {
        rustls::Error::InvalidCertificate(c) => format!("{c:?}"),
        other => other.to_string(),
    }
}
