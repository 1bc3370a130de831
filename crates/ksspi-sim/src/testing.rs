//! Small pieces the tests that start real peers (openssl) share: a temporary
//! directory for PEM files, a child process killed on drop, a free loopback
//! port; and, for tests and the benchmarks, credentials acquired through the
//! engine and waited for.

use ksspi::engine::{acquire_credentials, CredentialSpec, EngineStats, Platform};
use ksspi::handle::Credentials;
use ksspi::provider::SspiProvider;
use ksspi::{Passive, SecStatus};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Child;
use std::sync::{Arc, Condvar, Mutex};

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// `<tmp>/<tag>-<pid>`, created.
    pub fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create a temporary directory");
        TempDir(dir)
    }

    /// Write `text` to `name` in the directory; returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        self.write_bytes(name, text.as_bytes())
    }

    /// Write `bytes` to `name` in the directory; returns its path.
    pub fn write_bytes(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, bytes).expect("write a temporary file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process killed (and reaped) when dropped.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a loopback port")
        .port()
}

/// Acquire credentials through the engine's asynchronous acquisition and
/// block this thread until they arrive (a test's or a benchmark's wait at
/// PASSIVE_LEVEL, never the driver's).
pub fn acquire_blocking<P: SspiProvider, K: Platform>(
    provider: P,
    platform: K,
    spec: &CredentialSpec,
    stats: Arc<EngineStats>,
    at: &Passive,
) -> Result<Arc<Credentials<P>>, SecStatus> {
    type Slot<P> = (
        Mutex<Option<Result<Arc<Credentials<P>>, SecStatus>>>,
        Condvar,
    );
    let slot: Arc<Slot<P>> = Arc::new((Mutex::new(None), Condvar::new()));
    let s2 = slot.clone();
    acquire_credentials(
        provider,
        platform,
        spec,
        stats,
        Box::new(move |r| {
            *s2.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
            s2.1.notify_all();
        }),
        at,
    )?;
    let mut g = slot.0.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        if let Some(r) = g.take() {
            return r;
        }
        g = slot.1.wait(g).unwrap_or_else(|e| e.into_inner());
    }
}
