//! Where emulators are cached: outside the source tree, shared by every checkout.

use std::env;
use std::path::PathBuf;

use anyhow::{Result, bail};

/// Environment variable that overrides the cache directory.
pub const CACHE_DIR_ENV: &str = "TOLLGATE_CACHE_DIR";

/// The directory emulators are installed into: `$TOLLGATE_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/tollgate`, else `~/.cache/tollgate`.
///
/// The directory is not created here; installers create what they need. Empty variables
/// count as unset.
///
/// # Errors
///
/// When none of `TOLLGATE_CACHE_DIR`, `XDG_CACHE_HOME` and `HOME` is set.
pub fn cache_dir() -> Result<PathBuf> {
    if let Some(dir) = non_empty_var(CACHE_DIR_ENV) {
        return Ok(PathBuf::from(dir));
    }
    if let Some(xdg) = non_empty_var("XDG_CACHE_HOME") {
        return Ok(PathBuf::from(xdg).join("tollgate"));
    }
    if let Some(home) = non_empty_var("HOME") {
        return Ok(PathBuf::from(home).join(".cache").join("tollgate"));
    }
    bail!("cannot choose a cache directory: set {CACHE_DIR_ENV}, XDG_CACHE_HOME or HOME")
}

fn non_empty_var(name: &str) -> Option<std::ffi::OsString> {
    env::var_os(name).filter(|value| !value.is_empty())
}
