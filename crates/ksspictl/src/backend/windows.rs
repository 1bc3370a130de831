//! The Windows backend: the installed driver through DeviceIoControl
//! ([`device`]).

mod device;

pub use device::WinDriver;
