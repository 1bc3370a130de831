//! The engine tests' driver lives in the library ([`ksspi_sim::drive`]), so
//! the fuzz targets drive sessions the same way.
#![allow(unused_imports)]

pub use ksspi_sim::drive::*;
