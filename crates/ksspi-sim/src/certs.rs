//! The model certificate store: server identities found by SHA-1 thumbprint in
//! a named store (`"MY"`), as kernel Schannel finds them through
//! `SCHANNEL_CERT_HASH_STORE`, and the trust anchors the model client uses
//! (Schannel's machine `Root` store). Test certificates are made with rcgen.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::fmt;
use std::sync::Mutex;

/// A certificate's SHA-1 thumbprint (of its DER), as Windows shows it.
pub type Thumbprint = [u8; 20];

/// The SHA-1 thumbprint of a DER certificate.
pub fn thumbprint(der: &[u8]) -> Thumbprint {
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, der);
    let mut t = [0u8; 20];
    t.copy_from_slice(digest.as_ref());
    t
}

/// A thumbprint as the hex string `certutil` and PowerShell print.
pub fn thumbprint_hex(t: &Thumbprint) -> String {
    t.iter().map(|b| format!("{b:02X}")).collect()
}

/// Parse a 40-digit hex thumbprint (spaces and colons ignored).
pub fn parse_thumbprint(s: &str) -> Option<Thumbprint> {
    let digits: Vec<u8> = s.bytes().filter(|b| !matches!(b, b' ' | b':')).collect();
    if digits.len() != 40 {
        return None;
    }
    let mut t = [0u8; 20];
    for (i, pair) in digits.chunks(2).enumerate() {
        let hex = std::str::from_utf8(pair).ok()?;
        t[i] = u8::from_str_radix(hex, 16).ok()?;
    }
    Some(t)
}

/// Why a certificate could not be added.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertError(pub String);

impl fmt::Display for CertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CertError {}

/// A certificate chain with its private key.
#[derive(Clone)]
pub struct Identity {
    /// End-entity certificate first.
    pub chain: Vec<CertificateDer<'static>>,
    key_der: Vec<u8>,
    /// The end-entity certificate's thumbprint.
    pub thumbprint: Thumbprint,
}

impl Identity {
    /// The private key, for a rustls config.
    pub fn key(&self) -> Result<PrivateKeyDer<'static>, CertError> {
        PrivateKeyDer::try_from(self.key_der.clone()).map_err(|e| CertError(e.to_string()))
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identity({})", thumbprint_hex(&self.thumbprint))
    }
}

#[derive(Default)]
struct Stores {
    identities: Vec<(String, Identity)>,
    roots: Vec<CertificateDer<'static>>,
}

/// The model's certificate stores.
#[derive(Default)]
pub struct CertStore {
    inner: Mutex<Stores>,
}

impl CertStore {
    /// Empty stores.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add an end-entity certificate (first in `chain_der`) with its private
    /// key (PKCS#8, PKCS#1 or SEC1 DER) to `store`; returns its thumbprint.
    pub fn add_identity(
        &self,
        store: &str,
        chain_der: Vec<Vec<u8>>,
        key_der: Vec<u8>,
    ) -> Result<Thumbprint, CertError> {
        let first = chain_der
            .first()
            .ok_or_else(|| CertError("empty certificate chain".into()))?;
        let identity = Identity {
            thumbprint: thumbprint(first),
            chain: chain_der.into_iter().map(CertificateDer::from).collect(),
            key_der,
        };
        identity.key()?;
        let t = identity.thumbprint;
        self.inner
            .lock()
            .unwrap()
            .identities
            .push((store.to_ascii_uppercase(), identity));
        Ok(t)
    }

    /// [`CertStore::add_identity`] from PEM text.
    pub fn add_identity_pem(
        &self,
        store: &str,
        chain_pem: &str,
        key_pem: &str,
    ) -> Result<Thumbprint, CertError> {
        let chain = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
            .map(|c| c.map(|c| c.to_vec()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| CertError(format!("certificate PEM: {e}")))?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| CertError(format!("key PEM: {e}")))?;
        self.add_identity(store, chain, key.secret_der().to_vec())
    }

    /// Trust `cert_der` as a root (the model client's `Root` store).
    pub fn add_root_der(&self, cert_der: Vec<u8>) -> Result<(), CertError> {
        if cert_der.is_empty() {
            return Err(CertError("empty certificate".into()));
        }
        self.inner
            .lock()
            .unwrap()
            .roots
            .push(CertificateDer::from(cert_der));
        Ok(())
    }

    /// [`CertStore::add_root_der`] for every certificate in PEM text.
    pub fn add_root_pem(&self, pem: &str) -> Result<(), CertError> {
        let mut n = 0;
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            let cert = cert.map_err(|e| CertError(format!("root PEM: {e}")))?;
            self.add_root_der(cert.to_vec())?;
            n += 1;
        }
        if n == 0 {
            return Err(CertError("no certificate in the PEM text".into()));
        }
        Ok(())
    }

    /// The identity with this thumbprint in `store` (store names compare
    /// without case, as Windows' do).
    pub fn find_identity(&self, store: &str, thumbprint: &Thumbprint) -> Option<Identity> {
        let store = store.to_ascii_uppercase();
        self.inner
            .lock()
            .unwrap()
            .identities
            .iter()
            .find(|(s, id)| *s == store && id.thumbprint == *thumbprint)
            .map(|(_, id)| id.clone())
    }

    /// The trust anchors.
    pub fn roots(&self) -> Vec<CertificateDer<'static>> {
        self.inner.lock().unwrap().roots.clone()
    }
}

/// A certificate with its key, in DER and PEM.
#[derive(Clone)]
pub struct LeafCert {
    /// The chain (the leaf, then its issuer if any), DER.
    pub chain_der: Vec<Vec<u8>>,
    /// The private key, PKCS#8 DER.
    pub key_der: Vec<u8>,
    /// The leaf, PEM.
    pub cert_pem: String,
    /// The private key, PEM.
    pub key_pem: String,
}

/// A test PKI: a CA and server leaves it signs.
pub struct TestPki {
    params: CertificateParams,
    key: KeyPair,
    der: Vec<u8>,
    pem: String,
}

impl TestPki {
    /// A new CA named `ca_name`.
    pub fn new(ca_name: &str) -> Self {
        let key = KeyPair::generate().expect("generate a CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, ca_name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("self-sign the CA");
        TestPki {
            der: cert.der().to_vec(),
            pem: cert.pem(),
            params,
            key,
        }
    }

    /// The CA certificate, DER.
    pub fn ca_der(&self) -> Vec<u8> {
        self.der.clone()
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> String {
        self.pem.clone()
    }

    /// A certificate store as a test server and its clients see it: this CA
    /// in Root, and a valid leaf for `names` in MY (returned by thumbprint).
    pub fn store(&self, names: &[&str]) -> (CertStore, Thumbprint) {
        let store = CertStore::new();
        let leaf = self.leaf(names, false);
        let thumb = store
            .add_identity("MY", leaf.chain_der, leaf.key_der)
            .expect("a generated certificate is valid");
        store
            .add_root_der(self.der.clone())
            .expect("a generated CA is valid");
        (store, thumb)
    }

    /// A server leaf for `names`, signed by the CA; valid now, or expired a
    /// year ago if `expired`.
    pub fn leaf(&self, names: &[&str], expired: bool) -> LeafCert {
        let key = KeyPair::generate().expect("generate a leaf key");
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("leaf params");
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().copied().unwrap_or("ksspi"),
        );
        let now = time::OffsetDateTime::now_utc();
        if expired {
            params.not_before = now - time::Duration::days(730);
            params.not_after = now - time::Duration::days(365);
        } else {
            params.not_before = now - time::Duration::days(1);
            params.not_after = now + time::Duration::days(365);
        }
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).expect("sign the leaf");
        LeafCert {
            chain_der: vec![cert.der().to_vec(), self.der.clone()],
            key_der: key.serialize_der(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// A self-signed end-entity certificate for `names` (not a CA, so rustls
/// accepts it as a server certificate when it is trusted directly).
pub fn self_signed(names: &[&str]) -> LeafCert {
    let key = KeyPair::generate().expect("generate a key");
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .expect("params");
    params.distinguished_name.push(
        DnType::CommonName,
        names.first().copied().unwrap_or("ksspi"),
    );
    let cert = params.self_signed(&key).expect("self-sign");
    LeafCert {
        chain_der: vec![cert.der().to_vec()],
        key_der: key.serialize_der(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_are_found_by_thumbprint_and_store() {
        let pki = TestPki::new("ca");
        let leaf = pki.leaf(&["a.test"], false);
        let store = CertStore::new();
        let t = store
            .add_identity("My", leaf.chain_der.clone(), leaf.key_der.clone())
            .unwrap();
        assert_eq!(t, thumbprint(&leaf.chain_der[0]));
        assert!(store.find_identity("MY", &t).is_some());
        assert!(store.find_identity("Root", &t).is_none());
        assert!(store.find_identity("MY", &[0; 20]).is_none());
        let hex = thumbprint_hex(&t);
        assert_eq!(hex.len(), 40);
        assert_eq!(parse_thumbprint(&hex), Some(t));
        assert_eq!(parse_thumbprint("12"), None);
        let t2 = store
            .add_identity_pem("MY", &leaf.cert_pem, &leaf.key_pem)
            .unwrap();
        assert_eq!(t2, t);
        assert!(store.add_identity("MY", vec![], vec![]).is_err());
        assert!(store.add_root_pem("not pem").is_err());
    }
}
