//! # tollgate-billing-sync (under construction this session)

pub mod pacing;
pub mod ports;
pub mod retry;
pub mod stripe;
