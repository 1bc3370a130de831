//! What the harness's integration tests share.

use std::process::Command;

/// Run the built `ksspictl` with `args`: (exit code, stdout, stderr).
pub fn ksspictl(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ksspictl"))
        .args(args)
        .output()
        .expect("run ksspictl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
