//! ksspi-driver: the KMDF driver package.
//!
//! Its portable device engine and its KMDF glue (`src/kmdf/`, Windows only)
//! arrive with the driver issue; today the package holds the build and
//! packaging (build.rs, Makefile.toml, driver.inx) around the `ksspi` library.
// On Windows the driver is no_std (wdk-alloc and wdk-panic arrive with the
// KMDF glue); on other hosts the package is an ordinary std library so the
// device engine can be tested over the model.
#![cfg_attr(all(windows, not(test)), no_std)]
