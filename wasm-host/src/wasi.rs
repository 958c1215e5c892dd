//! The few `wasi_snapshot_preview1` imports Rust's `wasm32-wasip1` std needs, and the
//! fallback for imports this host does not implement.
//!
//! stdout and stderr become log lines (info and error, as in Envoy); environment and
//! arguments are empty; `random_get` is real randomness (std's `HashMap` seeds from it);
//! clocks read the env's [`Clock`](crate::Clock); `proc_exit` traps. Other file
//! descriptor calls answer `EBADF`, anything else `ENOSYS`.

use std::time::UNIX_EPOCH;

use wasmtime::{Caller, ExternType, Linker, Val, ValType};

use crate::abi::{read_bytes, write_bytes, write_u32, write_u64};
use crate::state::HostState;

const WASI: &str = "wasi_snapshot_preview1";
const ERRNO_SUCCESS: i32 = 0;
const ERRNO_BADF: i32 = 8;
const ERRNO_FAULT: i32 = 21;
const ERRNO_INVAL: i32 = 28;
const ERRNO_IO: i32 = 29;
const ERRNO_NOSYS: i32 = 52;

type Ctx<'a, 'b> = &'a mut Caller<'b, HostState>;

fn errno(result: Result<(), i32>) -> i32 {
    result.err().unwrap_or(ERRNO_SUCCESS)
}

/// Writes two zero counts: no arguments, no environment.
fn empty_sizes(caller: Ctx, count_ptr: i32, size_ptr: i32) -> i32 {
    let result = write_u32(caller, count_ptr, 0).and_then(|()| write_u32(caller, size_ptr, 0));
    errno(result.map_err(|_| ERRNO_FAULT))
}

fn fd_write(caller: Ctx, fd: i32, iovs: i32, iovs_len: i32, written_ptr: i32) -> i32 {
    let result = (|| {
        if fd != 1 && fd != 2 {
            return Err(ERRNO_BADF);
        }
        let count = usize::try_from(iovs_len).map_err(|_| ERRNO_INVAL)?;
        let table = read_bytes(caller, iovs, iovs_len.checked_mul(8).ok_or(ERRNO_INVAL)?)
            .map_err(|_| ERRNO_FAULT)?;
        let mut bytes = Vec::new();
        for entry in table.chunks_exact(8).take(count) {
            let ptr = i32::from_le_bytes([entry[0], entry[1], entry[2], entry[3]]);
            let len = i32::from_le_bytes([entry[4], entry[5], entry[6], entry[7]]);
            bytes.extend(read_bytes(caller, ptr, len).map_err(|_| ERRNO_FAULT)?);
        }
        caller.data_mut().write_output(fd, &bytes);
        let written = u32::try_from(bytes.len()).map_err(|_| ERRNO_IO)?;
        write_u32(caller, written_ptr, written).map_err(|_| ERRNO_FAULT)
    })();
    errno(result)
}

fn random_get(caller: Ctx, ptr: i32, len: i32) -> i32 {
    let result = (|| {
        let mut bytes = vec![0; len as u32 as usize];
        getrandom::fill(&mut bytes).map_err(|_| ERRNO_IO)?;
        write_bytes(caller, ptr, &bytes).map_err(|_| ERRNO_FAULT)
    })();
    errno(result)
}

/// Realtime and monotonic clocks both read the env's clock (so a `ManualClock` drives
/// them); CPU-time clocks are `EINVAL`.
fn clock_time_get(caller: Ctx, clock_id: i32, _precision: i64, time_ptr: i32) -> i32 {
    if clock_id != 0 && clock_id != 1 {
        return ERRNO_INVAL;
    }
    let now = caller.data().env.clock().now();
    let nanos = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let nanos = u64::try_from(nanos).unwrap_or(u64::MAX);
    errno(write_u64(caller, time_ptr, nanos).map_err(|_| ERRNO_FAULT))
}

fn clock_res_get(caller: Ctx, clock_id: i32, res_ptr: i32) -> i32 {
    if clock_id != 0 && clock_id != 1 {
        return ERRNO_INVAL;
    }
    errno(write_u64(caller, res_ptr, 1).map_err(|_| ERRNO_FAULT))
}

pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        WASI,
        "environ_get",
        |_: Caller<'_, HostState>, _: i32, _: i32| ERRNO_SUCCESS,
    )?;
    linker.func_wrap(
        WASI,
        "args_get",
        |_: Caller<'_, HostState>, _: i32, _: i32| ERRNO_SUCCESS,
    )?;
    linker.func_wrap(
        WASI,
        "environ_sizes_get",
        |mut caller: Caller<'_, HostState>, count: i32, size: i32| {
            empty_sizes(&mut caller, count, size)
        },
    )?;
    linker.func_wrap(
        WASI,
        "args_sizes_get",
        |mut caller: Caller<'_, HostState>, count: i32, size: i32| {
            empty_sizes(&mut caller, count, size)
        },
    )?;
    linker.func_wrap(
        WASI,
        "fd_write",
        |mut caller: Caller<'_, HostState>, fd: i32, iovs: i32, len: i32, written: i32| {
            fd_write(&mut caller, fd, iovs, len, written)
        },
    )?;
    linker.func_wrap(
        WASI,
        "proc_exit",
        |_: Caller<'_, HostState>, code: i32| -> wasmtime::Result<()> {
            Err(wasmtime::format_err!("the plugin called proc_exit({code})"))
        },
    )?;
    linker.func_wrap(
        WASI,
        "random_get",
        |mut caller: Caller<'_, HostState>, ptr: i32, len: i32| random_get(&mut caller, ptr, len),
    )?;
    linker.func_wrap(
        WASI,
        "clock_time_get",
        |mut caller: Caller<'_, HostState>, id: i32, precision: i64, ptr: i32| {
            clock_time_get(&mut caller, id, precision, ptr)
        },
    )?;
    linker.func_wrap(
        WASI,
        "clock_res_get",
        |mut caller: Caller<'_, HostState>, id: i32, ptr: i32| clock_res_get(&mut caller, id, ptr),
    )?;
    linker.func_wrap(WASI, "sched_yield", |_: Caller<'_, HostState>| {
        ERRNO_SUCCESS
    })?;
    Ok(())
}

/// Defines an import the module declares but this host does not implement: a function
/// returning one i32 answers `Unimplemented` (env) or `EBADF`/`ENOSYS` (WASI); any other
/// shape traps when called. Non-function imports are not defined (instantiation fails).
pub(crate) fn define_fallback(
    linker: &mut Linker<HostState>,
    module: &str,
    name: &str,
    ty: ExternType,
) -> wasmtime::Result<bool> {
    let ExternType::Func(func_type) = ty else {
        return Ok(false);
    };
    let returns_status = {
        let mut results = func_type.results();
        matches!((results.next(), results.next()), (Some(ValType::I32), None))
    };
    let code = match module {
        "env" => crate::abi::Status::Unimplemented as i32,
        WASI if name.starts_with("fd_") => ERRNO_BADF,
        WASI => ERRNO_NOSYS,
        _ => return Ok(false),
    };
    let described = format!("{module}.{name}");
    linker.func_new(
        module,
        name,
        func_type,
        move |caller: Caller<'_, HostState>, _params: &[Val], results: &mut [Val]| {
            caller.data().log(
                crate::env::LogLevel::Debug,
                format!("unimplemented import {described} called"),
            );
            if returns_status {
                if let Some(result) = results.first_mut() {
                    *result = Val::I32(code);
                }
                Ok(())
            } else {
                Err(wasmtime::format_err!(
                    "the plugin called {described}, which this host does not implement"
                ))
            }
        },
    )?;
    Ok(true)
}
