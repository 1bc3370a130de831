//! Schannel's session cache as the model plays it: one per credential handle,
//! bounded, each entry expiring `dwSessionLifespan` after it was made.
//!
//! What Schannel documents, and the model follows:
//! - a credential's `SCH_CREDENTIALS.dwSessionLifespan` is how long a session
//!   stays in the cache, in milliseconds; 0 is the default, ten hours
//!   (learn.microsoft.com, ns-schannel-sch_credentials);
//! - a client's entries are found by the target name it passes to
//!   InitializeSecurityContext ("Client applications must provide a unique
//!   name for each server ... in the pszTargetName parameter", the Platform
//!   SDK's Schannel session-cache page): a client with no target name resumes
//!   nothing here;
//! - a server credential with `SCH_CRED_DISABLE_RECONNECTS` ("Server only")
//!   performs full handshakes that "will not allow reconnects": the model's
//!   server then keeps nothing and sends no TLS 1.3 ticket.
//!
//! What is the model's choice (unknown for kernel Schannel until a Windows
//! run: docs/DESIGN.md, contract item 11): the cache belongs to the credential
//! handle, so a second handle with the same parameters starts empty (curl's
//! Schannel backend resumes by reusing its credential handle, and gets a full
//! handshake from a new one); the bounds ([`CLIENT_SERVERS`],
//! [`SERVER_SESSIONS`]) are both the default of Schannel's machine-wide
//! `MaximumCacheSize` registry value, 20 000 entries (learn.microsoft.com,
//! windows-server/security/tls/tls-registry-settings), applied per
//! credential.
//!
//! Both stores are rustls's traits over one small bounded, expiring map
//! ([`Expiring`]), so the sessions and tickets themselves are rustls's own.

use rustls::client::{ClientSessionStore, Tls12ClientSessionValue, Tls13ClientSessionValue};
use rustls::pki_types::ServerName;
use rustls::server::StoresServerSessions;
use rustls::NamedGroup;
use std::borrow::{Borrow, Cow};
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// `dwSessionLifespan` 0: ten hours.
pub const DEFAULT_LIFESPAN: Duration = Duration::from_secs(10 * 60 * 60);
/// Target names a client credential remembers (oldest out first).
pub const CLIENT_SERVERS: usize = 20_000;
/// TLS 1.3 tickets a client keeps per target name (rustls's own bound).
pub const TICKETS_PER_SERVER: usize = 8;
/// Sessions (TLS 1.2 ids, TLS 1.3 tickets) a server credential remembers.
pub const SERVER_SESSIONS: usize = 20_000;

/// `dwSessionLifespan` (milliseconds, 0 for the default) as a duration.
pub fn lifespan(ms: u32) -> Duration {
    if ms == 0 {
        DEFAULT_LIFESPAN
    } else {
        Duration::from_millis(u64::from(ms))
    }
}

/// A map of at most `bound` entries, oldest out first, whose entries are gone
/// `lifespan` after they were put.
#[derive(Debug)]
struct Expiring<K, V> {
    bound: usize,
    lifespan: Duration,
    entries: HashMap<K, (Instant, V)>,
    /// Keys by age, oldest first (a key put again is moved to the back).
    order: VecDeque<K>,
}

impl<K: Eq + Hash + Clone, V> Expiring<K, V> {
    fn new(bound: usize, lifespan: Duration) -> Self {
        Expiring {
            bound,
            lifespan,
            entries: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    fn put(&mut self, key: K, value: V) {
        if self
            .entries
            .insert(key.clone(), (Instant::now(), value))
            .is_some()
        {
            self.order.retain(|k| *k != key);
        }
        self.order.push_back(key);
        while self.order.len() > self.bound {
            if let Some(old) = self.order.pop_front() {
                self.entries.remove(&old);
            }
        }
    }

    /// The live entry for `key` (an expired one is dropped); looked up by
    /// a borrowed form of the key, so a lookup allocates nothing.
    fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        // A map whose entries never expire reads no clock, and looks once.
        if self.lifespan == Duration::MAX {
            return self.entries.get_mut(key).map(|(_, v)| v);
        }
        let expired = match self.entries.get(key) {
            None => return None,
            Some((at, _)) => at.elapsed() >= self.lifespan,
        };
        if expired {
            self.remove(key);
            return None;
        }
        self.entries.get_mut(key).map(|(_, v)| v)
    }

    fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let (_, v) = self.entries.remove(key)?;
        // Each key is in the order once (a key put again was moved).
        if let Some(at) = self.order.iter().position(|k| k.borrow() == key) {
            self.order.remove(at);
        }
        Some(v)
    }
}

/// What a client credential keeps for one target name.
#[derive(Debug, Default)]
struct ServerData {
    kx_hint: Option<NamedGroup>,
    tls12: Option<(Instant, Tls12ClientSessionValue)>,
    tls13: VecDeque<(Instant, Tls13ClientSessionValue)>,
}

/// A client credential's cache: sessions and tickets by target name, each
/// session live for the credential's lifespan from when it was stored.
#[derive(Debug)]
pub(crate) struct ClientCache {
    /// The entries per name never expire as a whole (their sessions do),
    /// keyed by [`key`].
    servers: Mutex<Expiring<String, ServerData>>,
    lifespan: Duration,
}

/// A target name as the cache keys it: its text, in lower case (DNS names
/// compare without case, as rustls's `ServerName` does); borrowed when it is
/// already lower case, so a lookup allocates nothing.
fn key<'a>(name: &'a ServerName<'_>) -> Cow<'a, str> {
    let text = name.to_str();
    if text.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(text.to_ascii_lowercase())
    } else {
        text
    }
}

impl ClientCache {
    pub(crate) fn new(lifespan: Duration) -> Self {
        ClientCache {
            servers: Mutex::new(Expiring::new(CLIENT_SERVERS, Duration::MAX)),
            lifespan,
        }
    }

    fn with<R>(
        &self,
        name: &ServerName<'_>,
        create: bool,
        f: impl FnOnce(&mut ServerData, Duration) -> R,
    ) -> Option<R> {
        let key = key(name);
        let mut servers = self.servers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(data) = servers.get_mut(&*key) {
            return Some(f(data, self.lifespan));
        }
        if !create {
            return None;
        }
        let key = key.into_owned();
        servers.put(key.clone(), ServerData::default());
        servers.get_mut(&*key).map(|data| f(data, self.lifespan))
    }
}

fn live(at: Instant, lifespan: Duration) -> bool {
    at.elapsed() < lifespan
}

impl ClientSessionStore for ClientCache {
    fn set_kx_hint(&self, server_name: ServerName<'static>, group: NamedGroup) {
        self.with(&server_name, true, |d, _| d.kx_hint = Some(group));
    }

    fn kx_hint(&self, server_name: &ServerName<'_>) -> Option<NamedGroup> {
        self.with(server_name, false, |d, _| d.kx_hint).flatten()
    }

    fn set_tls12_session(&self, server_name: ServerName<'static>, value: Tls12ClientSessionValue) {
        self.with(&server_name, true, |d, _| {
            d.tls12 = Some((Instant::now(), value))
        });
    }

    fn tls12_session(&self, server_name: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        self.with(server_name, false, |d, lifespan| match &d.tls12 {
            Some((at, v)) if live(*at, lifespan) => Some(v.clone()),
            Some(_) => {
                d.tls12 = None;
                None
            }
            None => None,
        })
        .flatten()
    }

    fn remove_tls12_session(&self, server_name: &ServerName<'static>) {
        self.with(server_name, false, |d, _| d.tls12 = None);
    }

    fn insert_tls13_ticket(
        &self,
        server_name: ServerName<'static>,
        value: Tls13ClientSessionValue,
    ) {
        self.with(&server_name, true, |d, _| {
            if d.tls13.len() == TICKETS_PER_SERVER {
                d.tls13.pop_front();
            }
            d.tls13.push_back((Instant::now(), value));
        });
    }

    fn take_tls13_ticket(
        &self,
        server_name: &ServerName<'static>,
    ) -> Option<Tls13ClientSessionValue> {
        self.with(server_name, false, |d, lifespan| {
            // Newest first, as rustls's own cache; expired ones are dropped.
            while let Some((at, v)) = d.tls13.pop_back() {
                if live(at, lifespan) {
                    return Some(v);
                }
            }
            None
        })
        .flatten()
    }
}

/// A server credential's cache: TLS 1.2 sessions by id and TLS 1.3 tickets
/// by ticket id (rustls's stateful resumption), or nothing at all for a
/// credential with `SCH_CRED_DISABLE_RECONNECTS`.
#[derive(Debug)]
pub(crate) struct ServerCache {
    sessions: Option<Mutex<Expiring<Vec<u8>, Vec<u8>>>>,
}

impl ServerCache {
    pub(crate) fn new(lifespan: Duration, reconnects: bool) -> Self {
        ServerCache {
            sessions: reconnects.then(|| Mutex::new(Expiring::new(SERVER_SESSIONS, lifespan))),
        }
    }

    /// Whether this credential allows reconnects.
    pub(crate) fn reconnects(&self) -> bool {
        self.sessions.is_some()
    }
}

impl StoresServerSessions for ServerCache {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        let Some(sessions) = &self.sessions else {
            return false;
        };
        sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .put(key, value);
        true
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        let mut sessions = self
            .sessions
            .as_ref()?
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        sessions.get_mut(key).cloned()
    }

    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        let mut sessions = self
            .sessions
            .as_ref()?
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // An expired one is dropped, not taken.
        sessions.get_mut(key)?;
        sessions.remove(key)
    }

    fn can_cache(&self) -> bool {
        self.sessions.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_map_is_bounded_oldest_out_first() {
        let mut m = Expiring::new(2, DEFAULT_LIFESPAN);
        m.put(1, 'a');
        m.put(2, 'b');
        m.put(1, 'c'); // 1 is now the newest
        m.put(3, 'd');
        assert_eq!(m.get_mut(&2), None);
        assert_eq!(m.get_mut(&1), Some(&mut 'c'));
        assert_eq!(m.get_mut(&3), Some(&mut 'd'));
        assert_eq!(m.order.len(), 2);
    }

    #[test]
    fn an_entry_past_its_lifespan_is_gone() {
        let mut m = Expiring::new(4, Duration::ZERO);
        m.put(1, 'a');
        assert_eq!(m.get_mut(&1), None);
        assert!(m.entries.is_empty() && m.order.is_empty());
    }

    #[test]
    fn lifespan_zero_is_ten_hours() {
        assert_eq!(lifespan(0), Duration::from_secs(36_000));
        assert_eq!(lifespan(1500), Duration::from_millis(1500));
    }

    #[test]
    fn a_client_finds_a_target_name_whatever_its_case() {
        let cache = ClientCache::new(DEFAULT_LIFESPAN);
        let name = |n: &str| ServerName::try_from(n.to_string()).expect("a valid name");
        cache.set_kx_hint(name("LocalHost"), NamedGroup::X25519);
        assert_eq!(cache.kx_hint(&name("localhost")), Some(NamedGroup::X25519));
        assert_eq!(cache.kx_hint(&name("LOCALHOST")), Some(NamedGroup::X25519));
        assert_eq!(cache.kx_hint(&name("example.com")), None);
        // One entry, not one per spelling.
        assert_eq!(cache.servers.lock().unwrap().entries.len(), 1);
    }

    #[test]
    fn a_server_without_reconnects_keeps_nothing() {
        let cache = ServerCache::new(DEFAULT_LIFESPAN, false);
        assert!(!cache.can_cache());
        assert!(!cache.put(vec![1], vec![2]));
        assert_eq!(cache.get(&[1]), None);
        let cache = ServerCache::new(DEFAULT_LIFESPAN, true);
        assert!(cache.put(vec![1], vec![2]));
        assert_eq!(cache.get(&[1]), Some(vec![2]));
        assert_eq!(cache.take(&[1]), Some(vec![2]));
        assert_eq!(cache.take(&[1]), None);
    }
}
