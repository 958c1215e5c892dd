//! [`WasmModule`]: a plugin compiled once, instantiated by every VM.

use std::path::Path;
use std::sync::Arc;

use wasmtime::{Config, Engine, InstancePre, Linker, Module, UnknownImportError};

use crate::error::HostError;
use crate::state::HostState;
use crate::{abi, wasi};

/// The ABI version markers a module may export, newest first.
pub(crate) const ABI_VERSIONS: [&str; 2] = ["proxy_abi_version_0_2_1", "proxy_abi_version_0_2_0"];

/// A compiled plugin (wasmtime `Engine` + `Module`, imports already linked), shared by
/// every [`Vm`](crate::Vm) started from it. Cloning is cheap (an `Arc`).
#[derive(Clone)]
pub struct WasmModule {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    pre: InstancePre<HostState>,
    abi_version: &'static str,
}

impl std::fmt::Debug for WasmModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmModule")
            .field("abi_version", &self.inner.abi_version)
            .finish_non_exhaustive()
    }
}

fn boxed(err: wasmtime::Error) -> crate::error::BoxError {
    err.into_boxed_dyn_error()
}

impl WasmModule {
    /// Compiles a proxy-wasm module (binary `.wasm`), checks it exports a supported ABI
    /// version and links its imports: the `env.proxy_*` calls and WASI functions this host
    /// implements, and for any other function import a stub answering `Unimplemented`
    /// (`env`) or `EBADF`/`ENOSYS` (WASI), so a module importing something unknown still
    /// instantiates, as in Envoy.
    pub fn from_bytes(wasm: &[u8]) -> Result<Self, HostError> {
        let engine =
            Engine::new(&Config::new()).map_err(|err| HostError::Compile { source: boxed(err) })?;
        let module =
            Module::new(&engine, wasm).map_err(|err| HostError::Compile { source: boxed(err) })?;
        let abi_version = ABI_VERSIONS
            .into_iter()
            .find(|name| module.get_export(name).is_some())
            .ok_or(HostError::UnsupportedAbi)?;

        let link = |err: wasmtime::Error| HostError::Link { source: boxed(err) };
        let mut linker = Linker::new(&engine);
        abi::add_to_linker(&mut linker).map_err(link)?;
        wasi::add_to_linker(&mut linker).map_err(link)?;
        // Each round defines one missing import; a module has finitely many.
        let mut rounds = module.imports().len() + 1;
        let pre = loop {
            let err = match linker.instantiate_pre(&module) {
                Ok(pre) => break pre,
                Err(err) => err,
            };
            let unknown = err.downcast_ref::<UnknownImportError>().map(|unknown| {
                (
                    unknown.module().to_owned(),
                    unknown.name().to_owned(),
                    unknown.ty(),
                )
            });
            let Some((import_module, name, ty)) = unknown else {
                return Err(link(err));
            };
            rounds = rounds.saturating_sub(1);
            if rounds == 0
                || !wasi::define_fallback(&mut linker, &import_module, &name, ty).map_err(link)?
            {
                return Err(link(err));
            }
        };
        Ok(Self {
            inner: Arc::new(Inner {
                engine,
                pre,
                abi_version,
            }),
        })
    }

    /// Reads and compiles a `.wasm` file; see [`WasmModule::from_bytes`].
    pub fn from_file(path: &Path) -> Result<Self, HostError> {
        let wasm = std::fs::read(path).map_err(|source| HostError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_bytes(&wasm)
    }

    /// The ABI version export the module declares (`proxy_abi_version_0_2_1`, ...).
    pub fn abi_version(&self) -> &'static str {
        self.inner.abi_version
    }

    /// The module's imports as `(module, name)`, e.g. to see which WASI calls it needs.
    pub fn imports(&self) -> Vec<(String, String)> {
        self.inner
            .pre
            .module()
            .imports()
            .map(|import| (import.module().to_owned(), import.name().to_owned()))
            .collect()
    }

    /// The module's export names.
    pub fn exports(&self) -> Vec<String> {
        self.inner
            .pre
            .module()
            .exports()
            .map(|export| export.name().to_owned())
            .collect()
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    pub(crate) fn pre(&self) -> &InstancePre<HostState> {
        &self.inner.pre
    }
}
