//! placeholder during setup

pub mod webhook;
