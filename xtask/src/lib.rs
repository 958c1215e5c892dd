//! The library half of `xtask`: the sample month of `events/samples/`, loaded through the
//! core and store code and priced into invoice previews, checked by the end-to-end tests
//! (`tests/tests/sample_month.rs`). `cargo xtask demo` itself runs the whole stack and
//! goes through the usage API (`src/demo.rs`).

pub mod sample_month;
