//! Raw provider calls, as a driver would make them without the engine: one
//! async context per peer, reinitialised between steps, completion awaited on
//! a condition variable (a test-side wait at PASSIVE).
#![allow(dead_code)]

use ksspi::provider::{AsyncContextPtr, SspiProvider};
use ksspi::sys::*;
use ksspi::SecStatus;
use ksspi_sim::certs::{CertStore, TestPki, Thumbprint};
use ksspi_sim::SimProvider;
use std::ffi::c_void;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// A store with a CA in Root and a "localhost" server certificate in MY.
pub fn pki_store() -> (Arc<CertStore>, Thumbprint, TestPki) {
    let pki = TestPki::new("ksspi test CA");
    let (store, thumb) = pki.store(&["localhost", "ksspi.test"]);
    (Arc::new(store), thumb, pki)
}

#[derive(Default)]
pub struct Signal {
    fired: Mutex<u32>,
    cv: Condvar,
}

unsafe extern "system" fn on_complete(_handle: *mut SspiAsyncContext, data: *mut c_void) {
    // SAFETY: `data` is the Signal boxed in the Peer, alive while calls complete.
    let signal = unsafe { &*(data as *const Signal) };
    *signal.fired.lock().unwrap() += 1;
    signal.cv.notify_all();
}

/// Buffers for one call, boxed so their addresses hold until completion.
struct Frame {
    input: Vec<u8>,
    alpn: Vec<u8>,
    in_bufs: [SecBuffer; 3],
    in_desc: SecBufferDesc,
    out_token: Vec<u8>,
    out_alert: Vec<u8>,
    out_bufs: [SecBuffer; 2],
    out_desc: SecBufferDesc,
    attrs: u32,
    expiry: TimeStamp,
    new_ctx: SecHandle,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepOut {
    pub status: SecStatus,
    pub token: Vec<u8>,
    pub alert: Vec<u8>,
    pub extra: usize,
    pub missing: usize,
}

pub struct Peer {
    pub sim: SimProvider,
    pub server: bool,
    pub cred: SecHandle,
    pub ctx: Option<SecHandle>,
    actx: AsyncContextPtr,
    signal: Box<Signal>,
    target: Vec<u16>,
    used: bool,
    pub allocate: bool,
    pub steps: u32,
    freed: bool,
    /// Bytes for a third input buffer of type SECBUFFER_APPLICATION_PROTOCOLS
    /// on every call (`None`: two input buffers).
    pub alpn: Option<Vec<u8>>,
}

fn wait(sim: &SimProvider, actx: AsyncContextPtr, signal: &Signal, before: u32) -> SecStatus {
    let mut fired = signal.fired.lock().unwrap();
    loop {
        // SAFETY: the async context is live (owned by the peer).
        let status = unsafe { sim.get_async_call_status(actx) };
        // SAFETY: as above.
        let notify = unsafe { sim.async_context_requires_notify(actx) } != Some(false);
        if status != SecStatus::SEC_I_ASYNC_CALL_PENDING && (!notify || *fired > before) {
            return status;
        }
        fired = signal
            .cv
            .wait_timeout(fired, Duration::from_millis(20))
            .unwrap()
            .0;
    }
}

impl Peer {
    fn new(
        sim: &SimProvider,
        server: bool,
        thumb: Option<Thumbprint>,
        target: &str,
        disabled: u32,
    ) -> Result<Peer, SecStatus> {
        let actx = sim
            .create_async_context()
            .ok_or(SecStatus::SEC_E_INSUFFICIENT_MEMORY)?;
        let signal = Box::<Signal>::default();
        // SAFETY: the signal outlives every call (freed after the context).
        let st = unsafe {
            sim.set_async_notify_callback(
                actx,
                Some(on_complete),
                &*signal as *const Signal as *mut c_void,
            )
        };
        assert_eq!(st, SecStatus::SEC_E_OK);
        let mut peer = Peer {
            sim: sim.clone(),
            server,
            cred: SecHandle::INVALID,
            ctx: None,
            actx,
            signal,
            target: target.encode_utf16().collect(),
            used: false,
            allocate: false,
            steps: 0,
            freed: false,
            alpn: None,
        };
        let status = peer.acquire(thumb, disabled);
        if status != SecStatus::SEC_E_OK {
            peer.free();
            return Err(status);
        }
        Ok(peer)
    }

    pub fn server(sim: &SimProvider, thumb: Thumbprint, disabled: u32) -> Result<Peer, SecStatus> {
        Peer::new(sim, true, Some(thumb), "", disabled)
    }

    pub fn client(sim: &SimProvider, target: &str, disabled: u32) -> Result<Peer, SecStatus> {
        Peer::new(sim, false, None, target, disabled)
    }

    fn begin(&mut self) -> u32 {
        if self.used {
            assert_eq!(
                // SAFETY: the context is live and idle (the last call completed).
                unsafe { self.sim.reinit_async_context(self.actx) },
                SecStatus::SEC_E_OK
            );
        }
        self.used = true;
        *self.signal.fired.lock().unwrap()
    }

    fn acquire(&mut self, thumb: Option<Thumbprint>, disabled: u32) -> SecStatus {
        let mut store = thumb.map(|t| Box::new(SCHANNEL_CERT_HASH_STORE::new(t, "MY", true)));
        let mut store_ptr: *const c_void = store.as_deref_mut().map_or(std::ptr::null(), |s| {
            s as *mut SCHANNEL_CERT_HASH_STORE as *const c_void
        });
        let mut tls = Box::new(TLS_PARAMETERS {
            cAlpnIds: 0,
            rgstrAlpnIds: std::ptr::null_mut(),
            grbitDisabledProtocols: disabled,
            cDisabledCrypto: 0,
            pDisabledCrypto: std::ptr::null_mut(),
            dwFlags: 0,
        });
        let mut sch = Box::new(SCH_CREDENTIALS {
            dwVersion: SCH_CREDENTIALS_VERSION,
            dwCredFormat: SCH_CRED_FORMAT_CERT_HASH_STORE,
            cCreds: u32::from(store.is_some()),
            paCred: &mut store_ptr,
            hRootStore: std::ptr::null_mut(),
            cMappers: 0,
            aphMappers: std::ptr::null_mut(),
            dwSessionLifespan: 0,
            dwFlags: SCH_CRED_NO_DEFAULT_CREDS,
            cTlsParameters: 1,
            pTlsParameters: &mut *tls,
        });
        let mut package: Vec<u16> = UNISP_NAME.encode_utf16().collect();
        let mut package_us = UNICODE_STRING::from_units(&mut package).unwrap();
        let mut cred = Box::new(SecHandle::INVALID);
        let mut expiry = Box::new(TimeStamp::default());
        let before = self.begin();
        let use_ = if self.server {
            SECPKG_CRED_INBOUND
        } else {
            SECPKG_CRED_OUTBOUND
        };
        // SAFETY: every pointee lives on this frame or in boxes until `wait` returns.
        let st = unsafe {
            self.sim.acquire_credentials_handle_async(
                self.actx,
                std::ptr::null_mut(),
                &mut package_us,
                use_,
                (&mut *sch as *mut SCH_CREDENTIALS).cast(),
                &mut *cred,
                &mut *expiry,
            )
        };
        if st.is_error() {
            return st;
        }
        let st = wait(&self.sim, self.actx, &self.signal, before);
        if st == SecStatus::SEC_E_OK {
            self.cred = *cred;
        }
        st
    }

    /// One accept / initialize call with `input`.
    pub fn step(&mut self, input: &[u8]) -> StepOut {
        self.steps += 1;
        let before = self.begin();
        let mut f = Box::new(Frame {
            input: input.to_vec(),
            alpn: self.alpn.clone().unwrap_or_default(),
            in_bufs: [
                SecBuffer::empty(SECBUFFER_TOKEN),
                SecBuffer::empty(SECBUFFER_EMPTY),
                SecBuffer::empty(SECBUFFER_APPLICATION_PROTOCOLS),
            ],
            in_desc: SecBufferDesc {
                ulVersion: 0,
                cBuffers: 0,
                pBuffers: std::ptr::null_mut(),
            },
            out_token: vec![0; if self.allocate { 0 } else { 64 * 1024 }],
            out_alert: vec![0; 64],
            out_bufs: [
                SecBuffer::empty(SECBUFFER_TOKEN),
                SecBuffer::empty(SECBUFFER_ALERT),
            ],
            out_desc: SecBufferDesc {
                ulVersion: 0,
                cBuffers: 0,
                pBuffers: std::ptr::null_mut(),
            },
            attrs: 0,
            expiry: TimeStamp::default(),
            new_ctx: SecHandle::INVALID,
        });
        f.in_bufs[0].cbBuffer = f.input.len() as u32;
        f.in_bufs[0].pvBuffer = f.input.as_mut_ptr().cast();
        f.in_bufs[2].cbBuffer = f.alpn.len() as u32;
        f.in_bufs[2].pvBuffer = f.alpn.as_mut_ptr().cast();
        let count = if self.alpn.is_some() { 3 } else { 2 };
        f.in_desc = SecBufferDesc::new(&mut f.in_bufs[..count]);
        if !self.allocate {
            f.out_bufs[0].cbBuffer = f.out_token.len() as u32;
            f.out_bufs[0].pvBuffer = f.out_token.as_mut_ptr().cast();
        }
        f.out_bufs[1].cbBuffer = f.out_alert.len() as u32;
        f.out_bufs[1].pvBuffer = f.out_alert.as_mut_ptr().cast();
        f.out_desc = SecBufferDesc::new(&mut f.out_bufs);
        let mut ctx = self.ctx.unwrap_or(SecHandle::INVALID);
        let ctx_ptr: *mut SecHandle = if self.ctx.is_some() {
            &mut ctx
        } else {
            std::ptr::null_mut()
        };
        let alloc = if self.allocate {
            ASC_REQ_ALLOCATE_MEMORY
        } else {
            0
        };
        let mut target_units = self.target.clone();
        let mut target = UNICODE_STRING::from_units(&mut target_units).unwrap();
        let fr = &mut *f;
        let st = if self.server {
            // SAFETY: the frame is boxed and the locals live until `wait` returns.
            unsafe {
                self.sim.accept_security_context_async(
                    self.actx,
                    &mut self.cred,
                    ctx_ptr,
                    &mut fr.in_desc,
                    ASC_REQ_STREAM | ASC_REQ_CONFIDENTIALITY | ASC_REQ_EXTENDED_ERROR | alloc,
                    &mut fr.new_ctx,
                    &mut fr.out_desc,
                    &mut fr.attrs,
                    &mut fr.expiry,
                )
            }
        } else {
            let alloc = if self.allocate {
                ISC_REQ_ALLOCATE_MEMORY
            } else {
                0
            };
            let target_ptr: *mut UNICODE_STRING = if self.target.is_empty() {
                std::ptr::null_mut()
            } else {
                &mut target
            };
            // SAFETY: the frame is boxed and the locals live until `wait` returns.
            unsafe {
                self.sim.initialize_security_context_async(
                    self.actx,
                    &mut self.cred,
                    ctx_ptr,
                    target_ptr,
                    ISC_REQ_STREAM | ISC_REQ_CONFIDENTIALITY | ISC_REQ_EXTENDED_ERROR | alloc,
                    &mut fr.in_desc,
                    &mut fr.new_ctx,
                    &mut fr.out_desc,
                    &mut fr.attrs,
                    &mut fr.expiry,
                )
            }
        };
        let status = if st.is_error() {
            st
        } else {
            wait(&self.sim, self.actx, &self.signal, before)
        };
        if f.new_ctx.is_valid() {
            self.ctx = Some(f.new_ctx);
        }
        let token_len = f.out_bufs[0].cbBuffer as usize;
        let token = if self.allocate {
            if f.out_bufs[0].pvBuffer.is_null() {
                Vec::new()
            } else {
                // SAFETY: the provider allocated cbBuffer bytes for us.
                let t = unsafe {
                    std::slice::from_raw_parts(f.out_bufs[0].pvBuffer.cast::<u8>(), token_len)
                }
                .to_vec();
                assert_eq!(
                    // SAFETY: a provider buffer, freed once.
                    unsafe { self.sim.free_context_buffer(f.out_bufs[0].pvBuffer) },
                    SecStatus::SEC_E_OK
                );
                t
            }
        } else {
            f.out_token[..token_len].to_vec()
        };
        let alert = f.out_alert[..f.out_bufs[1].cbBuffer as usize].to_vec();
        let (mut extra, mut missing) = (0, 0);
        match f.in_bufs[1].BufferType {
            SECBUFFER_EXTRA => extra = f.in_bufs[1].cbBuffer as usize,
            SECBUFFER_MISSING => missing = f.in_bufs[1].cbBuffer as usize,
            _ => {}
        }
        StepOut {
            status,
            token,
            alert,
            extra,
            missing,
        }
    }

    fn delete_ctx(&mut self) {
        if let Some(mut ctx) = self.ctx.take() {
            let before = self.begin();
            // SAFETY: a live security context, idle async context.
            let st = unsafe { self.sim.delete_security_context_async(self.actx, &mut ctx) };
            assert!(st.is_success());
            assert_eq!(
                wait(&self.sim, self.actx, &self.signal, before),
                SecStatus::SEC_E_OK
            );
        }
    }

    fn free(&mut self) {
        if std::mem::replace(&mut self.freed, true) {
            return;
        }
        self.delete_ctx();
        if self.cred.is_valid() {
            let before = self.begin();
            let mut cred = self.cred;
            // SAFETY: a live credential, idle async context.
            let st = unsafe { self.sim.free_credentials_handle_async(self.actx, &mut cred) };
            assert!(st.is_success());
            assert_eq!(
                wait(&self.sim, self.actx, &self.signal, before),
                SecStatus::SEC_E_OK
            );
            self.cred = SecHandle::INVALID;
        }
        // SAFETY: the last call completed; freed once.
        unsafe { self.sim.free_async_context(self.actx) };
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.free();
        }
    }
}

/// Run a handshake between two peers, token by token, until both are done,
/// one fails, or neither can move. Returns (client status, server status).
pub fn handshake(client: &mut Peer, server: &mut Peer) -> (SecStatus, SecStatus) {
    let first = client.step(&[]);
    assert_eq!(
        first.status,
        SecStatus::SEC_I_CONTINUE_NEEDED,
        "ClientHello"
    );
    let (mut c_status, mut s_status) = (first.status, SecStatus::SEC_I_CONTINUE_NEEDED);
    let mut to_server = first.token;
    let mut to_client: Vec<u8> = Vec::new();
    let done = |s: SecStatus| s == SecStatus::SEC_E_OK || s.is_error();
    for _ in 0..32 {
        if done(c_status) && done(s_status) {
            break;
        }
        let mut moved = false;
        if !done(s_status) && !to_server.is_empty() {
            let s = server.step(&to_server);
            s_status = s.status;
            let keep = if s.status == SecStatus::SEC_E_INCOMPLETE_MESSAGE {
                to_server.len()
            } else {
                s.extra
            };
            to_server.drain(..to_server.len() - keep);
            to_client.extend_from_slice(if s.status.is_error() {
                &s.alert
            } else {
                &s.token
            });
            moved = true;
            if s.status.is_error() {
                break;
            }
        }
        if !done(c_status) && !to_client.is_empty() {
            let c = client.step(&to_client);
            c_status = c.status;
            let keep = if c.status == SecStatus::SEC_E_INCOMPLETE_MESSAGE {
                to_client.len()
            } else {
                c.extra
            };
            to_client.drain(..to_client.len() - keep);
            to_server.extend_from_slice(if c.status.is_error() {
                &c.alert
            } else {
                &c.token
            });
            moved = true;
            if c.status.is_error() {
                // Let the server see the client's alert.
                if !done(s_status) && !to_server.is_empty() {
                    s_status = server.step(&to_server).status;
                }
                break;
            }
        }
        if !moved {
            break;
        }
    }
    (c_status, s_status)
}
