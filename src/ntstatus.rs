//! NTSTATUS values (ntstatus.h) the device engine completes requests with.
#![allow(missing_docs)]

/// An NTSTATUS.
pub type NtStatus = i32;

const fn nt(v: u32) -> NtStatus {
    v as i32
}

pub const STATUS_SUCCESS: NtStatus = 0;
pub const STATUS_PENDING: NtStatus = 0x0000_0103;
pub const STATUS_INVALID_HANDLE: NtStatus = nt(0xC000_0008);
pub const STATUS_INVALID_PARAMETER: NtStatus = nt(0xC000_000D);
pub const STATUS_INVALID_DEVICE_REQUEST: NtStatus = nt(0xC000_0010);
pub const STATUS_BUFFER_TOO_SMALL: NtStatus = nt(0xC000_0023);
pub const STATUS_INSUFFICIENT_RESOURCES: NtStatus = nt(0xC000_009A);
pub const STATUS_DEVICE_BUSY: NtStatus = nt(0x8000_0011);
pub const STATUS_CANCELLED: NtStatus = nt(0xC000_0120);
pub const STATUS_DELETE_PENDING: NtStatus = nt(0xC000_0056);
pub const STATUS_QUOTA_EXCEEDED: NtStatus = nt(0xC000_0044);
pub const STATUS_NOT_SUPPORTED: NtStatus = nt(0xC000_00BB);
pub const STATUS_INVALID_DEVICE_STATE: NtStatus = nt(0xC000_0184);
pub const STATUS_REVISION_MISMATCH: NtStatus = nt(0xC000_0059);
pub const STATUS_INVALID_BUFFER_SIZE: NtStatus = nt(0xC000_0206);
