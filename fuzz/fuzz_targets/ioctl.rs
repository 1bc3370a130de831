//! Raw and well-formed IOCTL buffers, in sequences across two file handles, into the device engine over the model.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ksspi_fuzz::ioctl::run(data));
