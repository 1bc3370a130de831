//! STEP: one handshake step, pended on its session while the step's calls
//! run and completed from the session's events.

use crate::device::{FileId, Request, Shared};
use crate::ntstatus::*;
use ksspi::engine::{Platform, StepError};
use ksspi::provider::SspiProvider;
use ksspi::Passive;
use ksspi_abi::*;

impl<P: SspiProvider, K: Platform, R: Request> Shared<P, K, R> {
    pub(in crate::device) fn step(&self, file: FileId, input: &[u8], request: R, at: &Passive) {
        let step = match decode::<StepRequest>(input) {
            Ok(s) => s,
            Err(e) => return request.complete(e.ntstatus(), &[]),
        };
        if request.output_capacity() < step_reply_capacity(self.config.limits.max_output) {
            return request.complete(STATUS_BUFFER_TOO_SMALL, &[]);
        }
        let Some(session) = self.pend_on(file, step.session, request) else {
            return;
        };
        if let Err(e) = session.step(step.input, at) {
            let status = match e {
                StepError::Busy => STATUS_DEVICE_BUSY,
                StepError::Closed => STATUS_INVALID_HANDLE,
                StepError::Finished => STATUS_INVALID_DEVICE_REQUEST,
                StepError::TooMuchInput => STATUS_QUOTA_EXCEEDED,
                StepError::InsufficientResources => STATUS_INSUFFICIENT_RESOURCES,
            };
            self.unpend(file, step.session, Ok(status));
        }
    }
}
