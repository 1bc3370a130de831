//! Credentials: which versions a credential allows ([`Protocols`]), what it
//! is made of ([`CredentialSpec`]), and the rustls configuration it becomes
//! ([`Credential`]): the server's config, or the client's verifiers
//! (WebPKI over the store's roots, none trusted without roots, or signatures
//! only for manual validation) and the client certificate it offers.

use super::session_cache::{ClientCache, ServerCache, DEFAULT_LIFESPAN};
use crate::certs::{CertStore, Identity};
use ksspi::sys::*;
use ksspi::SecStatus;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, Error, RootCertStore,
    ServerConfig, SignatureScheme, SupportedProtocolVersion,
};
use std::cell::Cell;
use std::sync::Arc;
use std::time::Duration;

/// Which TLS versions a credential allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Protocols {
    /// TLS 1.2.
    pub tls12: bool,
    /// TLS 1.3.
    pub tls13: bool,
}

impl Protocols {
    /// TLS 1.2 and 1.3.
    pub const ALL: Protocols = Protocols {
        tls12: true,
        tls13: true,
    };
    /// TLS 1.2 only.
    pub const TLS12: Protocols = Protocols {
        tls12: true,
        tls13: false,
    };
    /// TLS 1.3 only.
    pub const TLS13: Protocols = Protocols {
        tls12: false,
        tls13: true,
    };

    /// From `TLS_PARAMETERS.grbitDisabledProtocols` (0: everything the model
    /// supports, TLS 1.2 and 1.3).
    pub fn from_disabled(disabled: u32, server: bool) -> Self {
        let (v12, v13) = if server {
            (SP_PROT_TLS1_2_SERVER, SP_PROT_TLS1_3_SERVER)
        } else {
            (SP_PROT_TLS1_2_CLIENT, SP_PROT_TLS1_3_CLIENT)
        };
        Protocols {
            tls12: disabled & v12 == 0,
            tls13: disabled & v13 == 0,
        }
    }

    pub(super) fn versions(self) -> Vec<&'static SupportedProtocolVersion> {
        let mut v = Vec::new();
        if self.tls13 {
            v.push(&rustls::version::TLS13);
        }
        if self.tls12 {
            v.push(&rustls::version::TLS12);
        }
        v
    }
}

/// What a credential is made of.
#[derive(Clone, Debug)]
pub enum CredentialSpec {
    /// A server with its certificate.
    Server {
        /// The certificate and key.
        identity: Identity,
        /// Allowed versions.
        protocols: Protocols,
        /// TLS 1.3 NewSessionTickets sent after the handshake (0: none).
        tls13_tickets: usize,
        /// Ask every client for a certificate chaining to the store's roots,
        /// and fail a handshake without one (rustls's own mandatory client
        /// authentication: a test knob, not Schannel's behaviour). Schannel's
        /// is a context's `ASC_REQ_MUTUAL_AUTH`: see [`Context::server`].
        ///
        /// [`Context::server`]: super::Context::server
        require_client_cert: bool,
    },
    /// A client.
    Client {
        /// Allowed versions.
        protocols: Protocols,
        /// `SCH_CRED_MANUAL_CRED_VALIDATION`: do not validate the server's certificate.
        manual_validation: bool,
        /// A client certificate to offer when asked.
        client_identity: Option<Identity>,
    },
}

/// A credential's session cache settings, from its `SCH_CREDENTIALS`
/// (super::session_cache has the evidence).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sessions {
    /// How long a session stays resumable (`dwSessionLifespan`; 0 there is
    /// ten hours).
    pub lifespan: Duration,
    /// A server's reconnects (`SCH_CRED_DISABLE_RECONNECTS` clears it);
    /// ignored for a client, as Schannel documents the flag "Server only".
    pub reconnects: bool,
    /// Whether the provider keeps sessions at all, for either role (false:
    /// the model plays a kernel Schannel without a session cache,
    /// `SimConfig::session_cache`).
    pub keep: bool,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions {
            lifespan: DEFAULT_LIFESPAN,
            reconnects: true,
            keep: true,
        }
    }
}

/// What a credential holds, by role.
pub(super) enum Kind {
    /// A server: its configuration without client authentication, and the
    /// one its contexts use when the call asks for `ASC_REQ_MUTUAL_AUTH`.
    Server {
        plain: Arc<ServerConfig>,
        mutual: Arc<ServerConfig>,
    },
    Client {
        /// The configuration of a context with a target name and no ALPN
        /// list (the usual one), made once: a configuration per context
        /// would cost a handshake as much again as a resumed TLS 1.2 one's
        /// whole SSPI surface (the bench's instruction counts).
        named: Arc<ClientConfig>,
        /// The credential's session cache, by target name (`None`: the
        /// provider keeps no sessions).
        cache: Option<Arc<ClientCache>>,
        protocols: Protocols,
        verifier: Arc<dyn ServerCertVerifier>,
        lax: Arc<dyn ServerCertVerifier>,
        manual: bool,
        /// The client certificate's resolver (the identity, if any).
        resolver: Arc<AskedFor>,
    },
}

/// An acquired credential.
pub struct Credential {
    pub(super) kind: Kind,
}

/// The crypto provider every config is built on (ring).
pub(super) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client context's configuration: `verifier` checks the server,
/// `resolver` answers a certificate request, `cache` (`None`: no resumption)
/// keeps sessions, SNI on or off, the ALPN list in its wire form.
pub(super) fn client_config(
    protocols: Protocols,
    verifier: Arc<dyn ServerCertVerifier>,
    resolver: Arc<AskedFor>,
    cache: Option<Arc<ClientCache>>,
    sni: bool,
    alpn: Option<&[u8]>,
) -> Result<ClientConfig, SecStatus> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&protocols.versions())
        .map_err(|_| SecStatus::SEC_E_ALGORITHM_MISMATCH)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(resolver);
    config.resumption = match cache {
        Some(cache) => rustls::client::Resumption::store(cache),
        None => rustls::client::Resumption::disabled(),
    };
    config.enable_sni = sni;
    if let Some(list) = alpn {
        config.alpn_protocols = ksspi::alpn::wire_names(list).map(<[u8]>::to_vec).collect();
    }
    Ok(config)
}

impl Credential {
    /// Build a credential; `SEC_E_NO_CREDENTIALS` for an unusable certificate
    /// or key, `SEC_E_ALGORITHM_MISMATCH` if no protocol is left enabled.
    pub fn new(spec: CredentialSpec, store: &CertStore) -> Result<Credential, SecStatus> {
        Credential::with_sessions(spec, store, Sessions::default())
    }

    /// [`Credential::new`] with its session cache's settings.
    pub fn with_sessions(
        spec: CredentialSpec,
        store: &CertStore,
        sessions: Sessions,
    ) -> Result<Credential, SecStatus> {
        let kind = match spec {
            CredentialSpec::Server {
                identity,
                protocols,
                tls13_tickets,
                require_client_cert,
            } => {
                let versions = protocols.versions();
                if versions.is_empty() {
                    return Err(SecStatus::SEC_E_ALGORITHM_MISMATCH);
                }
                // A cache per configuration: a session made without asking
                // for a client certificate is never resumed by a context
                // that asks for one (`ASC_REQ_MUTUAL_AUTH`), which would see
                // no certificate (rustls resumes without looking at client
                // authentication). What Schannel does there is unknown until
                // a Windows run; the device keeps a handle per mode anyway.
                let config = |mutual: bool| -> Result<ServerConfig, SecStatus> {
                    let cache = Arc::new(ServerCache::new(
                        sessions.lifespan,
                        sessions.reconnects && sessions.keep,
                    ));
                    let builder = ServerConfig::builder_with_provider(provider())
                        .with_protocol_versions(&versions)
                        .map_err(|_| SecStatus::SEC_E_ALGORITHM_MISMATCH)?;
                    let builder = if mutual {
                        builder.with_client_cert_verifier(Arc::new(AnyClientCert(provider())))
                    } else if require_client_cert {
                        let verifier = WebPkiClientVerifier::builder_with_provider(
                            Arc::new(roots(store)),
                            provider(),
                        )
                        .build()
                        .map_err(|_| SecStatus::SEC_E_NO_CREDENTIALS)?;
                        builder.with_client_cert_verifier(verifier)
                    } else {
                        builder.with_no_client_auth()
                    };
                    let key = identity
                        .key()
                        .map_err(|_| SecStatus::SEC_E_NO_CREDENTIALS)?;
                    let mut config = builder
                        .with_single_cert(identity.chain.clone(), key)
                        .map_err(|_| SecStatus::SEC_E_NO_CREDENTIALS)?;
                    // A server without reconnects issues no ticket either.
                    config.send_tls13_tickets = if cache.reconnects() { tls13_tickets } else { 0 };
                    config.session_storage = cache;
                    Ok(config)
                };
                Kind::Server {
                    plain: Arc::new(config(false)?),
                    mutual: Arc::new(config(true)?),
                }
            }
            CredentialSpec::Client {
                protocols,
                manual_validation,
                client_identity,
            } => {
                if protocols.versions().is_empty() {
                    return Err(SecStatus::SEC_E_ALGORITHM_MISMATCH);
                }
                let roots = Arc::new(roots(store));
                let verifier: Arc<dyn ServerCertVerifier> = if roots.is_empty() {
                    // No trust anchors: every chain is untrusted.
                    Arc::new(NoRoots(provider()))
                } else {
                    WebPkiServerVerifier::builder_with_provider(roots, provider())
                        .build()
                        .map_err(|_| SecStatus::SEC_E_NO_CREDENTIALS)?
                };
                let identity = match client_identity {
                    None => None,
                    Some(id) => {
                        let key = id.key().map_err(|_| SecStatus::SEC_E_NO_CREDENTIALS)?;
                        let signer = provider()
                            .key_provider
                            .load_private_key(key)
                            .map_err(|_| SecStatus::SEC_E_NO_CREDENTIALS)?;
                        Some(Arc::new(rustls::sign::CertifiedKey::new(
                            id.chain.clone(),
                            signer,
                        )))
                    }
                };
                let cache = sessions
                    .keep
                    .then(|| Arc::new(ClientCache::new(sessions.lifespan)));
                let lax: Arc<dyn ServerCertVerifier> = Arc::new(AcceptAny(provider()));
                let resolver = Arc::new(AskedFor { identity });
                let named = client_config(
                    protocols,
                    if manual_validation {
                        lax.clone()
                    } else {
                        verifier.clone()
                    },
                    resolver.clone(),
                    cache.clone(),
                    true,
                    None,
                )?;
                Kind::Client {
                    named: Arc::new(named),
                    cache,
                    protocols,
                    verifier,
                    lax,
                    manual: manual_validation,
                    resolver,
                }
            }
        };
        Ok(Credential { kind })
    }

    /// Whether this is a server (inbound) credential.
    pub fn is_server(&self) -> bool {
        matches!(self.kind, Kind::Server { .. })
    }
}

fn roots(store: &CertStore) -> RootCertStore {
    let mut roots = RootCertStore::empty();
    for cert in store.roots() {
        let _ = roots.add(cert);
    }
    roots
}

/// The server-certificate check of a client with no trust anchors.
#[derive(Debug)]
struct NoRoots(Arc<CryptoProvider>);

/// The server-certificate check with validation off (manual validation, or
/// no target name): signatures are still checked, the chain and name are not.
#[derive(Debug)]
struct AcceptAny(Arc<CryptoProvider>);

macro_rules! signature_checks {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    };
}

impl ServerCertVerifier for NoRoots {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        Err(Error::InvalidCertificate(CertificateError::UnknownIssuer))
    }
    signature_checks!();
}

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        Ok(ServerCertVerified::assertion())
    }
    signature_checks!();
}

/// The client-certificate check of a server context called with
/// `ASC_REQ_MUTUAL_AUTH`: asks for a certificate naming no CA (an empty
/// `certificate_authorities`, which lets a client offer any), accepts a
/// handshake without one, and accepts any chain whose CertificateVerify
/// signature is good, leaving the verdict on the chain to the caller, as
/// Schannel does (it completes the handshake and reports the chain's
/// validation apart: HTTP.sys's `HTTP_SSL_CLIENT_CERT_INFO.CertFlags`,
/// msquic's `SECPKG_ATTR_CERT_CHECK_RESULT_INPROC` query; docs/DESIGN.md).
#[derive(Debug)]
struct AnyClientCert(Arc<CryptoProvider>);

impl ClientCertVerifier for AnyClientCert {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn verify_client_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        Ok(ClientCertVerified::assertion())
    }
    signature_checks!();
}

/// Records that the server asked for a client certificate, and answers with
/// the credential's identity, if it has one. One per credential: rustls
/// resumes a session only under the same resolver (and verifier) object it
/// was made with, so a resolver per context would make every handshake full.
/// Which context was asked is told by the thread: rustls asks during the
/// handshake call, on the thread that makes it ([`take_asked`]).
#[derive(Debug)]
pub(super) struct AskedFor {
    pub(super) identity: Option<Arc<rustls::sign::CertifiedKey>>,
}

thread_local! {
    /// The server asked for a client certificate during the handshake call
    /// running on this thread.
    static ASKED: Cell<bool> = const { Cell::new(false) };
}

/// Whether the server asked for a client certificate since the last call, on
/// this thread (cleared).
pub(super) fn take_asked() -> bool {
    ASKED.with(|a| a.replace(false))
}

impl ResolvesClientCert for AskedFor {
    fn resolve(
        &self,
        _: &[&[u8]],
        _: &[SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        ASKED.with(|a| a.set(true));
        self.identity.clone()
    }

    fn has_certs(&self) -> bool {
        true
    }
}
