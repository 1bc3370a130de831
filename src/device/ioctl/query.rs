//! QUERY: the session's protocol, cipher, record sizes and peer
//! certificate, written straight into the request's output.

use crate::device::ioctl::records::record_refusal;
use crate::device::{FileId, Request, Shared};
use crate::ntstatus::*;
use ksspi::engine::{Platform, Resumed, Session};
use ksspi::provider::SspiProvider;
use ksspi::Passive;
use ksspi_abi::*;

impl<P: SspiProvider, K: Platform, R: Request> Shared<P, K, R> {
    pub(in crate::device) fn query(
        &self,
        file: FileId,
        input: &[u8],
        mut request: R,
        at: &Passive,
    ) {
        let m = match decode::<QueryRequest>(input) {
            Ok(m) => m,
            Err(e) => return request.complete(e.ntstatus(), &[]),
        };
        if request.output_capacity() < QUERY_REPLY_CAPACITY {
            return request.complete(STATUS_BUFFER_TOO_SMALL, &[]);
        }
        let session = match self.begin_sync(file, m.session) {
            Ok(s) => s,
            Err(status) => return request.complete(status, &[]),
        };
        let (status, len) = self.query_into(file, m.session, &session, request.output(), at);
        self.end_sync(file, m.session);
        request.complete_written(status, len);
    }

    /// QUERY's reply written into `out`, the leaf certificate copied straight
    /// in: the status and length to complete the request with.
    pub(in crate::device) fn query_into(
        &self,
        file: FileId,
        id: SessionId,
        session: &Session<P, K>,
        out: &mut [u8],
        at: &Passive,
    ) -> (NtStatus, usize) {
        let offset = QUERY_REPLY_CAPACITY - MAX_PEER_CERTIFICATE;
        if out.len() < QUERY_REPLY_CAPACITY {
            return (STATUS_BUFFER_TOO_SMALL, 0);
        }
        let (head, tail) = out.split_at_mut(offset);
        match session.describe(&mut tail[..MAX_PEER_CERTIFICATE], at) {
            Ok(info) => {
                // ALPN (sessions opened with a list only): the name follows
                // the leaf, for which the request must have room
                // (QUERY_REPLY_CAPACITY_ALPN).
                let p = info.application_protocol;
                let name = p.as_ref().and_then(|p| p.alpn()).unwrap_or(&[]);
                let Some(room) = tail.get_mut(info.leaf_len..info.leaf_len + name.len()) else {
                    return (STATUS_BUFFER_TOO_SMALL, 0);
                };
                room.copy_from_slice(name);
                let c = info.connection.unwrap_or_default();
                let sizes = info.sizes;
                // Sessions opened with OPEN's fourth layout only: an older
                // harness refuses anything but 0 in that byte.
                let reports = self
                    .table
                    .lock(&self.platform)
                    .entry(id, file)
                    .is_some_and(|e| e.reports_resumption);
                let reply = QueryReply {
                    resumed: match info.resumed {
                        _ if !reports => resumed::UNKNOWN,
                        Resumed::Yes => resumed::RESUMED,
                        Resumed::No => resumed::FULL,
                        Resumed::Unknown => resumed::UNKNOWN,
                    },
                    protocol: c.dwProtocol,
                    cipher: c.aiCipher,
                    cipher_strength: c.dwCipherStrength,
                    hash: c.aiHash,
                    hash_strength: c.dwHashStrength,
                    exchange: c.aiExch,
                    exchange_strength: c.dwExchStrength,
                    header: sizes.map_or(0, |s| s.header as u32),
                    trailer: sizes.map_or(0, |s| s.trailer as u32),
                    max_message: sizes.map_or(0, |s| s.max_message as u32),
                    peer_certificates: info.peer_certificates,
                    leaf_size: info.leaf_size as u32,
                    leaf: &tail[..info.leaf_len],
                    alpn_status: u8::from(!name.is_empty()),
                    alpn: name,
                };
                match encode_prefix(&reply, head) {
                    Ok(n) if n == offset => (STATUS_SUCCESS, n + info.leaf_len + name.len()),
                    _ => (STATUS_BUFFER_TOO_SMALL, 0),
                }
            }
            Err(e) => match record_refusal(self.sync_refusal(file, id, e)) {
                Ok(status) => (status, 0),
                Err(_) => (STATUS_INVALID_DEVICE_STATE, 0),
            },
        }
    }
}
