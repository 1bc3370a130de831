//! CLOSE: the session marked closing and completed at once; the session goes
//! once any call in flight completes.

use crate::device::table::{end_close, Phase};
use crate::device::{complete_with, FileId, Request, Shared};
use crate::ntstatus::*;
use ksspi::engine::Platform;
use ksspi::provider::SspiProvider;
use ksspi_abi::*;

impl<P: SspiProvider, K: Platform, R: Request> Shared<P, K, R> {
    pub(in crate::device) fn close(&self, file: FileId, input: &[u8], request: R) {
        let close = match decode::<CloseRequest>(input) {
            Ok(c) => c,
            Err(e) => return request.complete(e.ntstatus(), &[]),
        };
        if request.output_capacity() < Header::LEN {
            return request.complete(STATUS_BUFFER_TOO_SMALL, &[]);
        }
        let (session, opening) = {
            let mut table = self.table.lock(&self.platform);
            let Some(entry) = table
                .entry(close.session, file)
                .filter(|e| e.phase != Phase::Closing)
            else {
                drop(table);
                return request.complete(STATUS_INVALID_HANDLE, &[]);
            };
            entry.begin_close()
        };
        end_close(session, opening);
        complete_with(request, &Empty);
    }
}
