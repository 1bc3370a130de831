//! A hostile peer's bytes into an established session's record layer over the model.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ksspi_fuzz::peer::record(data));
