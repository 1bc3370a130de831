//! The credential cache: credentials handles kept between OPENs by their
//! parameters (up to [`CREDENTIAL_CACHE`], oldest out first, emptied at
//! unload), and how the device lets go of a handle (released at
//! PASSIVE_LEVEL once nothing else holds it).

use super::request::Request;
use super::Shared;
use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use ksspi::engine::{release_credentials, ClientCertificates, CredentialSpec, Platform};
use ksspi::handle::Credentials;
use ksspi::provider::SspiProvider;
use ksspi::Passive;

/// Credentials handles the device keeps between OPENs, by their parameters:
/// acquiring them (an async ksecdd call, and Schannel loading the
/// certificate's key) costs more than a handshake, so an OPEN that finds its
/// credentials here starts its session at once. Bounded (oldest out first);
/// emptied at unload, after which nothing is added.
pub(super) struct CredentialCache<P: SspiProvider> {
    pub(super) entries: Vec<(CacheKey, Arc<Credentials<P>>)>,
    pub(super) closed: bool,
}

/// What the cache finds a handle by: its parameters and what the sessions
/// on it ask of client certificates (a server's; a client's is always
/// `Ignore`). Schannel resumes a session by the credentials it was made
/// with; a server session that asks for a client certificate (`Request`,
/// `Require`) would otherwise resume a session made without one by a
/// session that did not ask (`Ignore`), and see no certificate: a handle per
/// mode keeps each mode's sessions apart (docs/DESIGN.md, contract item 11).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct CacheKey {
    pub(super) spec: CredentialSpec,
    pub(super) client_certificates: ClientCertificates,
}

/// How many credentials handles the device keeps.
pub const CREDENTIAL_CACHE: usize = 8;

impl<P: SspiProvider> CredentialCache<P> {
    pub(super) fn find(&self, key: &CacheKey) -> Option<Arc<Credentials<P>>> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, c)| c.clone())
    }

    /// Keep `credentials` for `spec`; returns what has to go (the oldest
    /// entry, or these if they are cached already or the cache is closed),
    /// to be dropped outside the lock.
    pub(super) fn insert(
        &mut self,
        key: CacheKey,
        credentials: Arc<Credentials<P>>,
    ) -> Option<(CacheKey, Arc<Credentials<P>>)> {
        if self.closed || self.entries.iter().any(|(k, _)| *k == key) {
            return Some((key, credentials));
        }
        let evicted = if self.entries.len() == CREDENTIAL_CACHE {
            Some(self.entries.remove(0))
        } else {
            None
        };
        self.entries.push((key, credentials));
        evicted
    }
}

impl<P: SspiProvider, K: Platform, R: Request> Shared<P, K, R> {
    /// [`Shared::release`] where the IRQL is not known to be PASSIVE (above
    /// it, the handle goes with its last holder).
    pub(super) fn let_go(&self, credentials: Arc<Credentials<P>>) {
        if let Some(at) = Passive::check(self.provider.current_irql()) {
            self.release(credentials, &at);
        }
    }

    pub(super) fn release(&self, credentials: Arc<Credentials<P>>, at: &Passive) {
        // Shared only with sessions, which are gone by now; if not, the last
        // holder's drop releases it.
        if let Ok(credentials) = Arc::try_unwrap(credentials) {
            let _ = release_credentials(
                self.provider.clone(),
                self.platform.clone(),
                credentials,
                self.stats.clone(),
                Box::new(|_| {}),
                at,
            );
        }
    }
}
