//! Helpers for tests and benchmarks that run the workspace's own filters.
//!
//! ```no_run
//! use tollgate_wasm_host::testing;
//!
//! // target/wasm32-wasip1/release/tollgate_test_filter.wasm, compiled once per process.
//! let module = testing::module("tollgate_test_filter")?;
//! # Ok::<(), tollgate_wasm_host::HostError>(())
//! ```

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock, PoisonError};

use crate::error::HostError;
use crate::module::WasmModule;

/// Overrides the directory the `.wasm` files are looked up in.
pub const WASM_DIR_ENV: &str = "TOLLGATE_WASM_DIR";

/// The directory release wasm32-wasip1 builds land in: `$TOLLGATE_WASM_DIR`, else
/// `$CARGO_TARGET_DIR/wasm32-wasip1/release`, else the workspace's
/// `target/wasm32-wasip1/release`.
pub fn wasm_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(WASM_DIR_ENV) {
        return PathBuf::from(dir);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || {
            // This crate lives in <workspace>/wasm-host.
            let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
            manifest
                .parent()
                .map_or(manifest.clone(), PathBuf::from)
                .join("target")
        },
        PathBuf::from,
    );
    target.join("wasm32-wasip1").join("release")
}

/// The path of `{package_lib_name}.wasm` (e.g. `tollgate_test_filter`), or
/// [`HostError::WasmNotBuilt`] saying how to build it.
pub fn built_wasm(package_lib_name: &str) -> Result<PathBuf, HostError> {
    let path = wasm_dir().join(format!("{package_lib_name}.wasm"));
    if path.is_file() {
        return Ok(path);
    }
    let package = package_lib_name.replace('_', "-");
    Err(HostError::WasmNotBuilt {
        path,
        command: format!("cargo build --release --target wasm32-wasip1 -p {package}"),
    })
}

/// The compiled module of [`built_wasm`]`(package_lib_name)`, compiled once per process
/// and shared (compiling takes ≈ 1.7 s in a debug build).
pub fn module(package_lib_name: &str) -> Result<WasmModule, HostError> {
    static CACHE: OnceLock<Mutex<HashMap<PathBuf, WasmModule>>> = OnceLock::new();
    let path = built_wasm(package_lib_name)?;
    let cache = CACHE.get_or_init(Mutex::default);
    // Held while compiling, so concurrent tests wait for one compile instead of racing.
    let mut modules = cache.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(module) = modules.get(&path) {
        return Ok(module.clone());
    }
    let module = WasmModule::from_file(&path)?;
    modules.insert(path, module.clone());
    Ok(module)
}
