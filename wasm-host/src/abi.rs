//! The `env.proxy_*` imports (proxy-wasm ABI v0.2.1) and guest-memory helpers.
//!
//! Every guest pointer is bounds-checked: a bad one is `InvalidMemoryAccess`, never a host
//! panic. Values handed back to the guest are allocated with its exported allocator
//! (`proxy_on_memory_allocate` or `malloc`) and their pointer and size stored through the
//! return pointers as little-endian u32.

use std::time::{Duration, UNIX_EPOCH};

use wasmtime::{Caller, Linker};

use crate::env::{LogLevel, MetricKind};
use crate::state::{CallResponse, HeaderMap, HostState, Phase, Properties};
use crate::vm::{HttpCall, LocalReply};

/// proxy-wasm status codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(
    dead_code,
    reason = "the full table of the ABI; some codes are never produced"
)]
pub(crate) enum Status {
    Ok = 0,
    NotFound = 1,
    BadArgument = 2,
    SerializationFailure = 3,
    ParseFailure = 4,
    BadExpression = 5,
    InvalidMemoryAccess = 6,
    Empty = 7,
    CasMismatch = 8,
    ResultMismatch = 9,
    InternalFailure = 10,
    BrokenConnection = 11,
    Unimplemented = 12,
}

/// Why a hostcall stops: a status for the guest, or a trap (from a nested guest call, the
/// allocator) that must unwind.
pub(crate) enum Fault {
    Status(Status),
    Trap(wasmtime::Error),
}

impl From<Status> for Fault {
    fn from(status: Status) -> Self {
        Self::Status(status)
    }
}

pub(crate) type AbiResult<T = ()> = Result<T, Fault>;

/// Ends a hostcall: its status code, or the trap.
pub(crate) fn finish(result: AbiResult) -> wasmtime::Result<i32> {
    match result {
        Ok(()) => Ok(Status::Ok as i32),
        Err(Fault::Status(status)) => Ok(status as i32),
        Err(Fault::Trap(trap)) => Err(trap),
    }
}

type Ctx<'a, 'b> = &'a mut Caller<'b, HostState>;

fn range(ptr: i32, len: i32) -> Result<std::ops::Range<usize>, Status> {
    let start = ptr as u32 as usize;
    let end = start
        .checked_add(len as u32 as usize)
        .ok_or(Status::InvalidMemoryAccess)?;
    Ok(start..end)
}

pub(crate) fn read_bytes(caller: Ctx, ptr: i32, len: i32) -> Result<Vec<u8>, Status> {
    let memory = caller.data().memory.ok_or(Status::InternalFailure)?;
    memory
        .data(&*caller)
        .get(range(ptr, len)?)
        .map(<[u8]>::to_vec)
        .ok_or(Status::InvalidMemoryAccess)
}

fn read_string(caller: Ctx, ptr: i32, len: i32) -> Result<String, Status> {
    Ok(String::from_utf8_lossy(&read_bytes(caller, ptr, len)?).into_owned())
}

pub(crate) fn write_bytes(caller: Ctx, ptr: i32, bytes: &[u8]) -> Result<(), Status> {
    let memory = caller.data().memory.ok_or(Status::InternalFailure)?;
    memory
        .write(&mut *caller, ptr as u32 as usize, bytes)
        .map_err(|_| Status::InvalidMemoryAccess)
}

pub(crate) fn write_u32(caller: Ctx, ptr: i32, value: u32) -> Result<(), Status> {
    write_bytes(caller, ptr, &value.to_le_bytes())
}

pub(crate) fn write_u64(caller: Ctx, ptr: i32, value: u64) -> Result<(), Status> {
    write_bytes(caller, ptr, &value.to_le_bytes())
}

/// Copies `bytes` into memory the guest allocates, storing pointer and size through
/// `ptr_ptr` and `size_ptr`. Empty values are returned as a null pointer, size 0.
fn copy_out(caller: Ctx, bytes: &[u8], ptr_ptr: i32, size_ptr: i32) -> AbiResult {
    // Check the return pointers first, so a bad one does not leak a guest allocation.
    let memory = caller.data().memory.ok_or(Status::InternalFailure)?;
    let size = memory.data_size(&*caller);
    for ptr in [ptr_ptr, size_ptr] {
        if range(ptr, 4)?.end > size {
            return Err(Status::InvalidMemoryAccess.into());
        }
    }
    let len = u32::try_from(bytes.len()).map_err(|_| Status::BadArgument)?;
    let mut address = 0;
    if len > 0 {
        let allocate = caller
            .data()
            .allocate
            .clone()
            .ok_or(Status::InternalFailure)?;
        address = allocate
            .call(&mut *caller, len as i32)
            .map_err(Fault::Trap)?;
        if address == 0 {
            return Err(Status::InternalFailure.into());
        }
        write_bytes(caller, address, bytes)?;
    }
    write_u32(caller, ptr_ptr, address as u32)?;
    write_u32(caller, size_ptr, len)?;
    Ok(())
}

/// count u32, (key_len u32, value_len u32) per pair, then each key and value followed by
/// a NUL byte.
pub(crate) fn serialize_map(map: &[(String, String)]) -> Vec<u8> {
    let size = 4 + map
        .iter()
        .map(|(key, value)| 8 + key.len() + value.len() + 2)
        .sum::<usize>();
    let mut bytes = Vec::with_capacity(size);
    bytes.extend_from_slice(&(map.len() as u32).to_le_bytes());
    for (key, value) in map {
        bytes.extend_from_slice(&(key.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&(value.len() as u32).to_le_bytes());
    }
    for (key, value) in map {
        bytes.extend_from_slice(key.as_bytes());
        bytes.push(0);
        bytes.extend_from_slice(value.as_bytes());
        bytes.push(0);
    }
    bytes
}

/// The inverse of [`serialize_map`]; anything malformed is `BadArgument`. Empty input is
/// an empty map.
pub(crate) fn deserialize_map(bytes: &[u8]) -> Result<HeaderMap, Status> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let u32_at = |at: usize| -> Result<usize, Status> {
        let word = bytes.get(at..at + 4).ok_or(Status::BadArgument)?;
        let word: [u8; 4] = word.try_into().map_err(|_| Status::BadArgument)?;
        Ok(u32::from_le_bytes(word) as usize)
    };
    let count = u32_at(0)?;
    let mut sizes_at = 4;
    let mut data_at = count
        .checked_mul(8)
        .and_then(|sizes| sizes.checked_add(4))
        .ok_or(Status::BadArgument)?;
    let mut map = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        let key_len = u32_at(sizes_at)?;
        let value_len = u32_at(sizes_at + 4)?;
        sizes_at += 8;
        let mut take = |len: usize| -> Result<String, Status> {
            let end = data_at.checked_add(len).ok_or(Status::BadArgument)?;
            let text = bytes.get(data_at..end).ok_or(Status::BadArgument)?;
            if bytes.get(end) != Some(&0) {
                return Err(Status::BadArgument);
            }
            data_at = end + 1;
            Ok(String::from_utf8_lossy(text).into_owned())
        };
        let key = take(key_len)?;
        let value = take(value_len)?;
        map.push((key, value));
    }
    Ok(map)
}

fn lower(map: HeaderMap) -> HeaderMap {
    map.into_iter()
        .map(|(key, value)| (key.to_ascii_lowercase(), value))
        .collect()
}

fn property_path(bytes: &[u8]) -> Vec<String> {
    bytes
        .split(|&byte| byte == 0)
        .map(|segment| String::from_utf8_lossy(segment).into_owned())
        .collect()
}

// ---- header maps ----

const REQUEST_HEADERS: i32 = 0;
const REQUEST_TRAILERS: i32 = 1;
const RESPONSE_HEADERS: i32 = 2;
const RESPONSE_TRAILERS: i32 = 3;
const GRPC_INITIAL_METADATA: i32 = 4;
const GRPC_TRAILING_METADATA: i32 = 5;
const CALL_RESPONSE_HEADERS: i32 = 6;
const CALL_RESPONSE_TRAILERS: i32 = 7;

/// The map `map_type` names in the current context, if it exists (yet).
fn map_ref(state: &HostState, map_type: i32) -> Result<Option<&HeaderMap>, Status> {
    Ok(match map_type {
        REQUEST_HEADERS => state
            .current_stream_ref()
            .and_then(|s| s.request.headers.as_ref()),
        RESPONSE_HEADERS => state
            .current_stream_ref()
            .and_then(|s| s.response.headers.as_ref()),
        CALL_RESPONSE_HEADERS => state.call_response.as_ref().map(|r| &r.headers),
        CALL_RESPONSE_TRAILERS => state.call_response.as_ref().map(|r| &r.trailers),
        REQUEST_TRAILERS | RESPONSE_TRAILERS | GRPC_INITIAL_METADATA | GRPC_TRAILING_METADATA => {
            None
        }
        _ => return Err(Status::BadArgument),
    })
}

/// The mutable map; only request and response headers of a stream can be changed.
fn map_mut(state: &mut HostState, map_type: i32) -> Result<&mut HeaderMap, Status> {
    let stream = state.current_stream().ok_or(Status::BadArgument)?;
    match map_type {
        REQUEST_HEADERS => stream.request.headers.as_mut(),
        RESPONSE_HEADERS => stream.response.headers.as_mut(),
        _ => None,
    }
    .ok_or(Status::BadArgument)
}

fn proxy_get_header_map_pairs(
    caller: Ctx,
    map_type: i32,
    ptr_ptr: i32,
    size_ptr: i32,
) -> AbiResult {
    // A map that does not exist (yet) reads as empty: the SDK panics on any other status.
    let bytes = serialize_map(map_ref(caller.data(), map_type)?.map_or(&[][..], Vec::as_slice));
    copy_out(caller, &bytes, ptr_ptr, size_ptr)
}

fn proxy_set_header_map_pairs(caller: Ctx, map_type: i32, ptr: i32, len: i32) -> AbiResult {
    let pairs = lower(deserialize_map(&read_bytes(caller, ptr, len)?)?);
    *map_mut(caller.data_mut(), map_type)? = pairs;
    Ok(())
}

fn proxy_get_header_map_value(
    caller: Ctx,
    map_type: i32,
    key_ptr: i32,
    key_len: i32,
    ptr_ptr: i32,
    size_ptr: i32,
) -> AbiResult {
    let key = read_string(caller, key_ptr, key_len)?;
    // Envoy returns the first value of a repeated header.
    let value = map_ref(caller.data(), map_type)?
        .and_then(|map| map.iter().find(|(name, _)| name.eq_ignore_ascii_case(&key)))
        .map(|(_, value)| value.clone())
        .ok_or(Status::NotFound)?;
    copy_out(caller, value.as_bytes(), ptr_ptr, size_ptr)
}

fn proxy_remove_header_map_value(
    caller: Ctx,
    map_type: i32,
    key_ptr: i32,
    key_len: i32,
) -> AbiResult {
    let key = read_string(caller, key_ptr, key_len)?;
    map_mut(caller.data_mut(), map_type)?.retain(|(name, _)| !name.eq_ignore_ascii_case(&key));
    Ok(())
}

fn proxy_replace_header_map_value(
    caller: Ctx,
    map_type: i32,
    key_ptr: i32,
    key_len: i32,
    value_ptr: i32,
    value_len: i32,
) -> AbiResult {
    let key = read_string(caller, key_ptr, key_len)?.to_ascii_lowercase();
    let value = read_string(caller, value_ptr, value_len)?;
    let map = map_mut(caller.data_mut(), map_type)?;
    // Envoy's setCopy: the first occurrence takes the value, the others go.
    match map.iter().position(|(name, _)| *name == key) {
        Some(first) => {
            map[first].1 = value;
            let mut index = 0;
            map.retain(|(name, _)| {
                let keep = index <= first || *name != key;
                index += 1;
                keep
            });
        }
        None => map.push((key, value)),
    }
    Ok(())
}

fn proxy_add_header_map_value(
    caller: Ctx,
    map_type: i32,
    key_ptr: i32,
    key_len: i32,
    value_ptr: i32,
    value_len: i32,
) -> AbiResult {
    let key = read_string(caller, key_ptr, key_len)?.to_ascii_lowercase();
    let value = read_string(caller, value_ptr, value_len)?;
    map_mut(caller.data_mut(), map_type)?.push((key, value));
    Ok(())
}

// ---- buffers ----

const REQUEST_BODY: i32 = 0;
const RESPONSE_BODY: i32 = 1;
const CALL_RESPONSE_BODY: i32 = 4;
const VM_CONFIGURATION: i32 = 6;
const PLUGIN_CONFIGURATION: i32 = 7;

fn proxy_get_buffer_bytes(
    caller: Ctx,
    buffer_type: i32,
    start: i32,
    max_size: i32,
    ptr_ptr: i32,
    size_ptr: i32,
) -> AbiResult {
    let state = caller.data();
    let buffer: &[u8] = match buffer_type {
        REQUEST_BODY => {
            &state
                .current_stream_ref()
                .ok_or(Status::NotFound)?
                .request
                .body
        }
        RESPONSE_BODY => {
            &state
                .current_stream_ref()
                .ok_or(Status::NotFound)?
                .response
                .body
        }
        CALL_RESPONSE_BODY => &state.call_response.as_ref().ok_or(Status::NotFound)?.body,
        // Envoy hands the configurations out during their callbacks only.
        VM_CONFIGURATION if state.phase == Phase::VmStart => &state.config.vm_configuration,
        PLUGIN_CONFIGURATION if state.phase == Phase::Configure => {
            &state.config.plugin_configuration
        }
        // The other types (downstream/upstream data, gRPC, call data, and the
        // configurations outside their callbacks) have nothing to read here.
        2..=8 => return Err(Status::NotFound.into()),
        _ => return Err(Status::BadArgument.into()),
    };
    let start = (start as u32 as usize).min(buffer.len());
    let end = start
        .saturating_add(max_size as u32 as usize)
        .min(buffer.len());
    if start == end {
        // Envoy answers Ok without writing anything: the SDK reads that as "no data".
        return Ok(());
    }
    let bytes = buffer[start..end].to_vec();
    copy_out(caller, &bytes, ptr_ptr, size_ptr)
}

/// Replaces `[start, start + size)` (clipped to the buffer) with the data: `start` at or
/// past the end appends, `size` 0 inserts.
fn proxy_set_buffer_bytes(
    caller: Ctx,
    buffer_type: i32,
    start: i32,
    size: i32,
    ptr: i32,
    len: i32,
) -> AbiResult {
    let data = read_bytes(caller, ptr, len)?;
    let stream = caller.data_mut().current_stream().ok_or(Status::NotFound)?;
    let buffer = match buffer_type {
        REQUEST_BODY => &mut stream.request.body,
        RESPONSE_BODY => &mut stream.response.body,
        _ => return Err(Status::BadArgument.into()),
    };
    let start = (start as u32 as usize).min(buffer.len());
    let end = start.saturating_add(size as u32 as usize).min(buffer.len());
    buffer.splice(start..end, data);
    Ok(())
}

// ---- properties ----

fn lookup<'a>(properties: &'a Properties, path: &[String]) -> Option<&'a [u8]> {
    properties.get(path).map(Vec::as_slice)
}

fn proxy_get_property(
    caller: Ctx,
    path_ptr: i32,
    path_len: i32,
    ptr_ptr: i32,
    size_ptr: i32,
) -> AbiResult {
    let path = property_path(&read_bytes(caller, path_ptr, path_len)?);
    let state = caller.data();
    let stream = state.current_stream_ref();
    let value: Vec<u8> = if let Some(value) = stream.and_then(|s| lookup(&s.properties, &path)) {
        value.to_vec()
    } else if let Some(value) = lookup(&state.root_properties, &path) {
        value.to_vec()
    } else {
        match path
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .as_slice()
        {
            ["plugin_name"] => state.config.plugin_name.clone().into_bytes(),
            ["plugin_root_id"] => state.config.root_id.clone().into_bytes(),
            ["plugin_vm_id"] => state.config.vm_id.clone().into_bytes(),
            _ => return Err(Status::NotFound.into()),
        }
    };
    copy_out(caller, &value, ptr_ptr, size_ptr)
}

fn proxy_set_property(caller: Ctx, path_ptr: i32, path_len: i32, ptr: i32, len: i32) -> AbiResult {
    let path = property_path(&read_bytes(caller, path_ptr, path_len)?);
    let value = read_bytes(caller, ptr, len)?;
    let state = caller.data_mut();
    match state.current_stream() {
        Some(stream) => stream.properties.insert(path, value),
        None => state.root_properties.insert(path, value),
    };
    Ok(())
}

// ---- shared data and queues ----

fn proxy_get_shared_data(
    caller: Ctx,
    key_ptr: i32,
    key_len: i32,
    ptr_ptr: i32,
    size_ptr: i32,
    cas_ptr: i32,
) -> AbiResult {
    let key = read_string(caller, key_ptr, key_len)?;
    let state = caller.data();
    let (value, cas) = state
        .env
        .get_shared(&state.config.vm_id, &key)
        .ok_or(Status::NotFound)?;
    write_u32(caller, cas_ptr, 0)?;
    copy_out(caller, &value, ptr_ptr, size_ptr)?;
    write_u32(caller, cas_ptr, cas)?;
    Ok(())
}

fn proxy_set_shared_data(
    caller: Ctx,
    key_ptr: i32,
    key_len: i32,
    ptr: i32,
    len: i32,
    cas: i32,
) -> AbiResult {
    let key = read_string(caller, key_ptr, key_len)?;
    let value = read_bytes(caller, ptr, len)?;
    let state = caller.data();
    state
        .env
        .set_shared(&state.config.vm_id, &key, value, cas as u32)?;
    Ok(())
}

fn proxy_register_shared_queue(
    caller: Ctx,
    name_ptr: i32,
    name_len: i32,
    id_ptr: i32,
) -> AbiResult {
    let name = read_string(caller, name_ptr, name_len)?;
    let state = caller.data();
    let id = state
        .env
        .register_queue(&state.config.vm_id, &name, state.vm_key);
    write_u32(caller, id_ptr, id)?;
    Ok(())
}

fn proxy_resolve_shared_queue(
    caller: Ctx,
    vm_id_ptr: i32,
    vm_id_len: i32,
    name_ptr: i32,
    name_len: i32,
    id_ptr: i32,
) -> AbiResult {
    let vm_id = read_string(caller, vm_id_ptr, vm_id_len)?;
    let name = read_string(caller, name_ptr, name_len)?;
    let id = caller
        .data()
        .env
        .resolve_queue(&vm_id, &name)
        .ok_or(Status::NotFound)?;
    write_u32(caller, id_ptr, id)?;
    Ok(())
}

fn proxy_dequeue_shared_queue(caller: Ctx, id: i32, ptr_ptr: i32, size_ptr: i32) -> AbiResult {
    let item = caller.data().env.dequeue(id as u32)?;
    copy_out(caller, &item, ptr_ptr, size_ptr)
}

fn proxy_enqueue_shared_queue(caller: Ctx, id: i32, ptr: i32, len: i32) -> AbiResult {
    let item = read_bytes(caller, ptr, len)?;
    caller.data().env.enqueue(id as u32, item)?;
    Ok(())
}

// ---- streams, local replies, HTTP calls ----

fn proxy_continue_stream(caller: Ctx, stream_type: i32) -> AbiResult {
    let stream = caller.data_mut().current_stream().ok_or(Status::NotFound)?;
    match stream_type {
        0 => stream.request.resumed = true,
        1 => stream.response.resumed = true,
        _ => return Err(Status::BadArgument.into()),
    }
    Ok(())
}

fn proxy_close_stream(caller: Ctx, stream_type: i32) -> AbiResult {
    let stream = caller.data_mut().current_stream().ok_or(Status::NotFound)?;
    match stream_type {
        0 | 1 => stream.closed = true,
        _ => return Err(Status::BadArgument.into()),
    }
    Ok(())
}

#[allow(clippy::too_many_arguments, reason = "the ABI's signature")]
fn proxy_send_local_response(
    caller: Ctx,
    status: i32,
    details_ptr: i32,
    details_len: i32,
    body_ptr: i32,
    body_len: i32,
    headers_ptr: i32,
    headers_len: i32,
    grpc_status: i32,
) -> AbiResult {
    let details = read_string(caller, details_ptr, details_len)?;
    let body = read_bytes(caller, body_ptr, body_len)?;
    let headers = lower(deserialize_map(&read_bytes(
        caller,
        headers_ptr,
        headers_len,
    )?)?);
    let stream = caller
        .data_mut()
        .current_stream()
        .ok_or(Status::BadArgument)?;
    stream.local_reply = Some(LocalReply {
        status: status as u32,
        details,
        headers,
        body,
        grpc_status: (grpc_status >= 0).then_some(grpc_status as u32),
    });
    Ok(())
}

#[allow(clippy::too_many_arguments, reason = "the ABI's signature")]
fn proxy_http_call(
    caller: Ctx,
    upstream_ptr: i32,
    upstream_len: i32,
    headers_ptr: i32,
    headers_len: i32,
    body_ptr: i32,
    body_len: i32,
    trailers_ptr: i32,
    trailers_len: i32,
    timeout_ms: i32,
    token_ptr: i32,
) -> AbiResult {
    let cluster = read_string(caller, upstream_ptr, upstream_len)?;
    let headers = lower(deserialize_map(&read_bytes(
        caller,
        headers_ptr,
        headers_len,
    )?)?);
    let body = read_bytes(caller, body_ptr, body_len)?;
    let trailers = lower(deserialize_map(&read_bytes(
        caller,
        trailers_ptr,
        trailers_len,
    )?)?);
    let state = caller.data();
    if !state.env.has_cluster(&cluster) {
        state.log(
            LogLevel::Debug,
            format!("proxy_http_call: unknown cluster {cluster:?}"),
        );
        return Err(Status::BadArgument.into());
    }
    let has = |name: &str| headers.iter().any(|(key, _)| key == name);
    if !(has(":method") && has(":path") && has(":authority")) {
        return Err(Status::BadArgument.into());
    }
    let token = state.last_token.wrapping_add(1).max(1);
    write_u32(caller, token_ptr, token)?;
    let state = caller.data_mut();
    state.last_token = token;
    state.call_owners.insert(token, state.effective_context);
    state.pending_calls.push(HttpCall {
        token,
        cluster,
        headers,
        body,
        trailers,
        timeout: Duration::from_millis(u64::from(timeout_ms as u32)),
    });
    Ok(())
}

pub(crate) fn call_response(
    headers: HeaderMap,
    body: Vec<u8>,
    trailers: HeaderMap,
) -> CallResponse {
    CallResponse {
        headers: lower(headers),
        body,
        trailers: lower(trailers),
    }
}

fn proxy_get_status(caller: Ctx, code_ptr: i32, ptr_ptr: i32, size_ptr: i32) -> AbiResult {
    // No gRPC calls here: status 0 (OK) with no message.
    write_u32(caller, code_ptr, 0)?;
    write_u32(caller, ptr_ptr, 0)?;
    write_u32(caller, size_ptr, 0)?;
    Ok(())
}

// ---- context, time, logs ----

fn proxy_log(caller: Ctx, level: i32, ptr: i32, len: i32) -> AbiResult {
    let level = LogLevel::from_abi(level).ok_or(Status::BadArgument)?;
    let message = read_string(caller, ptr, len)?;
    caller.data_mut().guest_log(level, message);
    Ok(())
}

fn proxy_get_log_level(caller: Ctx, level_ptr: i32) -> AbiResult {
    let level = caller.data().env.log_level() as u32;
    write_u32(caller, level_ptr, level)?;
    Ok(())
}

fn proxy_get_current_time_nanoseconds(caller: Ctx, time_ptr: i32) -> AbiResult {
    let now = caller.data().env.clock().now();
    let nanos = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    write_u64(caller, time_ptr, u64::try_from(nanos).unwrap_or(u64::MAX))?;
    Ok(())
}

fn proxy_set_tick_period_milliseconds(caller: Ctx, period_ms: i32) -> AbiResult {
    let state = caller.data_mut();
    let period = Duration::from_millis(u64::from(period_ms as u32));
    if period.is_zero() {
        state.tick_period = None;
        state.next_tick = None;
    } else {
        state.tick_period = Some(period);
        state.next_tick = Some(state.env.clock().now() + period);
    }
    Ok(())
}

fn proxy_set_effective_context(caller: Ctx, context_id: i32) -> AbiResult {
    let state = caller.data_mut();
    let id = context_id as u32;
    if id != state.root_context && !state.streams.contains_key(&id) {
        return Err(Status::BadArgument.into());
    }
    state.effective_context = id;
    Ok(())
}

fn proxy_done(_caller: Ctx) -> AbiResult {
    Ok(())
}

// ---- metrics ----

fn proxy_define_metric(
    caller: Ctx,
    metric_type: i32,
    name_ptr: i32,
    name_len: i32,
    id_ptr: i32,
) -> AbiResult {
    let kind = match metric_type {
        0 => MetricKind::Counter,
        1 => MetricKind::Gauge,
        2 => MetricKind::Histogram,
        _ => return Err(Status::BadArgument.into()),
    };
    let name = read_string(caller, name_ptr, name_len)?;
    let id = caller.data().env.define_metric(kind, &name)?;
    write_u32(caller, id_ptr, id)?;
    Ok(())
}

fn proxy_increment_metric(caller: Ctx, id: i32, offset: i64) -> AbiResult {
    caller.data().env.increment_metric(id as u32, offset)?;
    Ok(())
}

fn proxy_record_metric(caller: Ctx, id: i32, value: i64) -> AbiResult {
    caller.data().env.record_metric(id as u32, value as u64)?;
    Ok(())
}

fn proxy_get_metric(caller: Ctx, id: i32, value_ptr: i32) -> AbiResult {
    let value = caller.data().env.get_metric(id as u32)?;
    write_u64(caller, value_ptr, value)?;
    Ok(())
}

fn proxy_call_foreign_function(
    _caller: Ctx,
    _name_ptr: i32,
    _name_len: i32,
    _args_ptr: i32,
    _args_len: i32,
    _ptr_ptr: i32,
    _size_ptr: i32,
) -> AbiResult {
    // Envoy answers NotFound for a function it does not register; this host registers none.
    Err(Status::NotFound.into())
}

/// Defines a hostcall: a closure over `Caller` that runs the function of the same name
/// and turns its result into a status (or a trap).
macro_rules! hostcall {
    ($linker:expr, $name:ident ( $($arg:ident : $ty:ty),* )) => {
        $linker.func_wrap(
            "env",
            stringify!($name),
            |mut caller: Caller<'_, HostState>, $($arg: $ty),*| -> wasmtime::Result<i32> {
                finish($name(&mut caller, $($arg),*))
            },
        )?;
    };
}

/// Defines every `env.proxy_*` import of ABI v0.2.1 this host implements. The rest
/// (gRPC) are left to the linker fallback, which answers `Unimplemented`.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    hostcall!(linker, proxy_log(level: i32, ptr: i32, len: i32));
    hostcall!(linker, proxy_get_log_level(level_ptr: i32));
    hostcall!(linker, proxy_get_current_time_nanoseconds(time_ptr: i32));
    hostcall!(linker, proxy_set_tick_period_milliseconds(period: i32));
    hostcall!(linker, proxy_get_buffer_bytes(t: i32, start: i32, max: i32, pp: i32, sp: i32));
    hostcall!(linker, proxy_set_buffer_bytes(t: i32, start: i32, size: i32, p: i32, l: i32));
    hostcall!(linker, proxy_get_header_map_pairs(t: i32, pp: i32, sp: i32));
    hostcall!(linker, proxy_set_header_map_pairs(t: i32, p: i32, l: i32));
    hostcall!(linker, proxy_get_header_map_value(t: i32, kp: i32, kl: i32, pp: i32, sp: i32));
    hostcall!(linker, proxy_remove_header_map_value(t: i32, kp: i32, kl: i32));
    hostcall!(linker, proxy_replace_header_map_value(t: i32, kp: i32, kl: i32, vp: i32, vl: i32));
    hostcall!(linker, proxy_add_header_map_value(t: i32, kp: i32, kl: i32, vp: i32, vl: i32));
    hostcall!(linker, proxy_get_property(p: i32, l: i32, pp: i32, sp: i32));
    hostcall!(linker, proxy_set_property(p: i32, l: i32, vp: i32, vl: i32));
    hostcall!(linker, proxy_get_shared_data(kp: i32, kl: i32, pp: i32, sp: i32, cp: i32));
    hostcall!(linker, proxy_set_shared_data(kp: i32, kl: i32, vp: i32, vl: i32, cas: i32));
    hostcall!(linker, proxy_register_shared_queue(np: i32, nl: i32, ip: i32));
    hostcall!(linker, proxy_resolve_shared_queue(vp: i32, vl: i32, np: i32, nl: i32, ip: i32));
    hostcall!(linker, proxy_dequeue_shared_queue(id: i32, pp: i32, sp: i32));
    hostcall!(linker, proxy_enqueue_shared_queue(id: i32, p: i32, l: i32));
    hostcall!(linker, proxy_continue_stream(t: i32));
    hostcall!(linker, proxy_close_stream(t: i32));
    hostcall!(linker, proxy_send_local_response(s: i32, dp: i32, dl: i32, bp: i32, bl: i32, hp: i32, hl: i32, g: i32));
    hostcall!(linker, proxy_http_call(up: i32, ul: i32, hp: i32, hl: i32, bp: i32, bl: i32, tp: i32, tl: i32, timeout: i32, token: i32));
    hostcall!(linker, proxy_get_status(cp: i32, pp: i32, sp: i32));
    hostcall!(linker, proxy_set_effective_context(id: i32));
    hostcall!(linker, proxy_done());
    hostcall!(linker, proxy_define_metric(t: i32, np: i32, nl: i32, ip: i32));
    hostcall!(linker, proxy_increment_metric(id: i32, offset: i64));
    hostcall!(linker, proxy_record_metric(id: i32, value: i64));
    hostcall!(linker, proxy_get_metric(id: i32, vp: i32));
    hostcall!(linker, proxy_call_foreign_function(np: i32, nl: i32, ap: i32, al: i32, pp: i32, sp: i32));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_maps_round_trip_through_the_wire_format() {
        let map = vec![
            (":path".to_owned(), "/a".to_owned()),
            ("x-empty".to_owned(), String::new()),
        ];
        let bytes = serialize_map(&map);
        assert_eq!(&bytes[..4], &2u32.to_le_bytes());
        assert_eq!(deserialize_map(&bytes).ok(), Some(map));
    }

    #[test]
    fn truncated_or_unterminated_maps_are_bad_arguments() {
        let bytes = serialize_map(&[("k".to_owned(), "v".to_owned())]);
        for cut in 1..bytes.len() {
            assert!(deserialize_map(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut huge = bytes.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(deserialize_map(&huge).is_err());
    }

    #[test]
    fn property_paths_split_on_nul() {
        assert_eq!(property_path(b"a\0b"), vec!["a", "b"]);
        assert_eq!(property_path(b"plugin_name"), vec!["plugin_name"]);
    }
}
