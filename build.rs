//! The driver package's build script.
//!
//! On a Windows host (where the `wdk-build` build-dependency exists) it runs
//! the WDK binary configuration, as the windows-drivers-rs samples do, and
//! links `ksecdd` for Windows targets. On any other host it does nothing: the
//! package then builds as a plain library so its portable logic can be tested.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(windows)]
    {
        if let Err(e) = wdk_build::configure_wdk_binary_build() {
            panic!(
                "wdk-build could not configure the driver build (run from an eWDK prompt): {e:?}"
            );
        }
        if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("windows") {
            println!("cargo:rustc-link-lib=ksecdd");
        }
    }
}
