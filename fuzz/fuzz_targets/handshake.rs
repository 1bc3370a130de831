//! A hostile peer's bytes into a server or a client session's handshake over the model.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ksspi_fuzz::peer::handshake(data));
