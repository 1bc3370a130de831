//! Print the C conformance file for ksspi's declarations (see scripts/abi-check.sh).
//!
//! `abi_c` prints the file that must compile against the public headers;
//! `abi_c --corrupt offset:STRUCT | value:CONST | signature:FUNCTION` plants one
//! deliberate error, which must make the compile fail.

use ksspi::sys::abi::{c_conformance_source, Corruption};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let corrupt = match args.as_slice() {
        [] => Corruption::None,
        [flag, what] if flag == "--corrupt" => {
            let (kind, name) = what.split_once(':').unwrap_or_else(|| usage());
            let name: &'static str = Box::leak(name.to_owned().into_boxed_str());
            match kind {
                "offset" => Corruption::Offset(name),
                "value" => Corruption::Value(name),
                "signature" => Corruption::Signature(name),
                _ => usage(),
            }
        }
        _ => usage(),
    };
    print!("{}", c_conformance_source(corrupt));
}

fn usage() -> ! {
    eprintln!("usage: abi_c [--corrupt offset:STRUCT|value:CONST|signature:FUNCTION]");
    std::process::exit(2)
}
