//! End-to-end tests of tollgate live in `tests/tests/`; they run against the local stack
//! that `cargo xtask test` starts (or that each test process starts for itself).
