//! # tollgate-billing-sync (under construction this session)

pub mod ports;
