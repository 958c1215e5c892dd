//! The library half of `xtask`: the demo's data path, shared with the end-to-end tests
//! (`tests/`) so that what `cargo xtask demo` prints is exactly what the tests check.

pub mod sample_month;
