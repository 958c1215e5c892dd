//! What a VM's store holds: the data every hostcall reads and writes.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use wasmtime::{Memory, StoreLimits, TypedFunc};

use crate::env::{HostEnv, LogLevel};
use crate::vm::{HttpCall, LocalReply, PluginConfig};

pub(crate) type HeaderMap = Vec<(String, String)>;
pub(crate) type Properties = HashMap<Vec<String>, Vec<u8>>;

/// The callback the VM is in, for what is readable only during it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Other,
    VmStart,
    Configure,
}

/// An HTTP call response, readable during `proxy_on_http_call_response` only.
#[derive(Debug, Default)]
pub(crate) struct CallResponse {
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub trailers: HeaderMap,
}

/// One direction of an HTTP stream: the request or the response.
#[derive(Debug, Default)]
pub(crate) struct Direction {
    pub headers: Option<HeaderMap>,
    pub body: Vec<u8>,
    /// The last body callback returned Pause: the next chunk is appended (Envoy's
    /// StopIterationAndBuffer).
    pub buffering: bool,
    /// The plugin continued this direction (`proxy_continue_stream`) since its last
    /// callback.
    pub resumed: bool,
}

/// One HTTP stream's data (a stream context).
#[derive(Debug, Default)]
pub(crate) struct StreamState {
    pub request: Direction,
    pub response: Direction,
    pub properties: Properties,
    pub local_reply: Option<LocalReply>,
    pub closed: bool,
}

pub(crate) struct HostState {
    pub env: HostEnv,
    /// Unique per VM within the process (queue ownership).
    pub vm_key: u64,
    /// `"{vm_id}/{root_id}#{n}"`.
    pub label: String,
    pub config: PluginConfig,
    pub limits: StoreLimits,
    pub memory: Option<Memory>,
    pub allocate: Option<TypedFunc<i32, i32>>,
    pub root_context: u32,
    pub effective_context: u32,
    pub phase: Phase,
    pub streams: HashMap<u32, StreamState>,
    pub root_properties: Properties,
    pub call_response: Option<CallResponse>,
    pub tick_period: Option<Duration>,
    pub next_tick: Option<SystemTime>,
    pub pending_calls: Vec<HttpCall>,
    /// token → the context that dispatched the call.
    pub call_owners: HashMap<u32, u32>,
    pub last_token: u32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// What the guest logged at error level or above, or wrote to stderr, during the
    /// current callback: its panic message, for a trap's error.
    pub error_lines: Vec<String>,
}

impl std::fmt::Debug for HostState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostState")
            .field("label", &self.label)
            .field("effective_context", &self.effective_context)
            .field("streams", &self.streams.len())
            .finish_non_exhaustive()
    }
}

impl HostState {
    pub fn log(&self, level: LogLevel, message: String) {
        self.env.log(level, &self.label, message);
    }

    /// A line the guest logged (`proxy_log`, stdout, stderr).
    pub fn guest_log(&mut self, level: LogLevel, message: String) {
        if level >= LogLevel::Error {
            self.error_lines.push(message.clone());
        }
        self.log(level, message);
    }

    /// Buffers guest output and turns complete lines into log records (stdout at info,
    /// stderr at error, as Envoy does).
    pub fn write_output(&mut self, fd: i32, bytes: &[u8]) {
        let (buffer, level) = if fd == 1 {
            (&mut self.stdout, LogLevel::Info)
        } else {
            (&mut self.stderr, LogLevel::Error)
        };
        buffer.extend_from_slice(bytes);
        let mut lines = Vec::new();
        while let Some(end) = buffer.iter().position(|&byte| byte == b'\n') {
            let line: Vec<u8> = buffer.drain(..=end).collect();
            lines.push(String::from_utf8_lossy(&line[..end]).into_owned());
        }
        for line in lines {
            self.guest_log(level, line);
        }
    }

    /// Flushes partial output lines (after a trap the guest will not finish them).
    pub fn flush_output(&mut self) {
        for fd in [1, 2] {
            let buffer = if fd == 1 { &self.stdout } else { &self.stderr };
            if !buffer.is_empty() {
                self.write_output(fd, b"\n");
            }
        }
    }

    pub fn current_stream(&mut self) -> Option<&mut StreamState> {
        self.streams.get_mut(&self.effective_context)
    }

    pub fn current_stream_ref(&self) -> Option<&StreamState> {
        self.streams.get(&self.effective_context)
    }
}
