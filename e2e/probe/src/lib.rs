//! A test-only proxy-wasm module (never shipped: it lives outside `filters/*`, and
//! `scripts/build.sh` writes it to `dist/test/probe.wasm`, outside `dist/SHA256SUMS`). It drives
//! the host capabilities of [`shared::Host`] in a real Envoy, steered by request headers, so
//! `e2e/tests/host_calls.rs` can check each from outside:
//!
//! - `x-probe-random: N`: N bytes from [`Host::random`]; answers 200 with `x-probe-random-len`,
//!   `x-probe-random-head` / `x-probe-random-tail` (hex of the first / last 32 bytes) and
//!   `x-probe-random-distinct` (how many distinct byte values).
//! - `x-probe-grpc: <service>`: a unary `grpc.health.v1.Health/Check` for that service through
//!   [`Host::dispatch_grpc_call`] (cluster `probe_grpc`, or `x-probe-grpc-cluster`; method
//!   `x-probe-grpc-method`; `x-probe-grpc-meta` goes out as metadata `x-probe-meta`). The answer
//!   is a local 200 with `x-probe-grpc-status` and `x-probe-grpc-message` from
//!   [`Host::call_status`] (bytes outside visible ASCII as `%XX`), `x-probe-grpc-callback-status` (the
//!   callback's own status argument) and `x-probe-grpc-response` (hex of the response message).
//!   A dispatch the host refuses answers 503 with `x-probe-error`.
//! - `x-probe-edit: set-headers | per-header`: the same edits both ways. Request: remove
//!   `x-probe-drop`, set `x-probe-added: 1`. Response: remove `x-powered-by`, set
//!   `x-probe-added: 1`. `set-headers` reads the whole map, edits it and replaces it with
//!   [`Host::set_headers`]; `per-header` uses `remove_header` + `set_header`. An edit the host
//!   refuses leaves the map as it was plus `x-probe-error: <error>`, and the stream goes on.
//!   `x-probe-repeat: N` runs the edit N times on each map (idempotent; for the cost loop).
//!   `read-only` reads both maps with [`Host::headers`] and edits nothing (the cost loop,
//!   e2e/src/bin/host_call_cost.rs, separates reading from replacing with it).
//!
//! A plugin whose root id is `replay-<filter>` or `replay-chain` is none of the above: it
//! makes the host calls of that filter (or of the chain of five) and nothing else, for
//! `make bench` ([`replay`]).

pub mod replay;

use shared::host::{BodyKind, HeaderMapKind, HostExt};
use shared::{Action, Host, HostError};
use std::time::Duration;

pub const ADDED: &str = "x-probe-added";
pub const ERROR: &str = "x-probe-error";
pub const REQUEST_DROP: &str = "x-probe-drop";
pub const RESPONSE_DROP: &str = "x-powered-by";
pub const GRPC_CLUSTER: &str = "probe_grpc";
pub const HEALTH_SERVICE: &str = "grpc.health.v1.Health";
/// Largest `x-probe-random` served.
pub const MAX_RANDOM: usize = 1 << 20;
pub const TRAP: &str = "x-probe-trap";
pub const VM: &str = "x-probe-vm";
pub const VM_SERVED: &str = "x-probe-vm-served";

/// Where `x-probe-trap` asks the probe to trap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trap {
    RequestHeaders,
    ResponseHeaders,
}

impl Trap {
    pub fn from_header(value: Option<&str>) -> Option<Trap> {
        match value? {
            "request-headers" => Some(Trap::RequestHeaders),
            "response-headers" => Some(Trap::ResponseHeaders),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Edit {
    #[default]
    None,
    SetHeaders,
    PerHeader,
    /// Only the read half of `SetHeaders` (`headers()`), for the cost loop.
    ReadOnly,
}

#[derive(Debug, Default)]
pub struct Probe {
    edit: Edit,
    /// How many times the edit runs on each map (`x-probe-repeat`, for the cost loop).
    repeat: u32,
    grpc_token: Option<u32>,
    /// Set from `x-probe-trap`; the wasm glue traps when the callback comes.
    pub trap: Option<Trap>,
    /// `x-probe-vm` asked: (this VM's id, requests it has seen).
    pub vm: Option<(u64, u64)>,
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Visible ASCII and spaces as is, every other byte `%XX`, so any bytes fit in a header value.
/// (A `%` stays: gRPC messages arrive percent-encoded already.)
pub fn escape(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| if b.is_ascii_graphic() || b == b' ' { char::from(b).to_string() } else { format!("%{b:02X}") })
        .collect()
}

/// `grpc.health.v1.HealthCheckRequest { string service = 1; }`, protobuf-encoded (services
/// under 128 bytes: one-byte length).
pub fn health_check_request(service: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(service.len() + 2);
    if !service.is_empty() {
        out.push(0x0a);
        out.push(service.len().min(127) as u8);
        out.extend_from_slice(&service.as_bytes()[..service.len().min(127)]);
    }
    out
}

/// Remove `drop`, set `x-probe-added: 1` (idempotent, so the cost loop can repeat it).
fn edit_map(host: &dyn Host, map: HeaderMapKind, drop: &str, edit: Edit) -> Result<(), HostError> {
    match edit {
        Edit::None => Ok(()),
        Edit::SetHeaders => {
            let current = host.headers(map);
            let mut pairs: Vec<(&str, &[u8])> = current
                .iter()
                .filter(|(name, _)| name != drop && name != ADDED)
                .map(|(n, v)| (n.as_str(), v.as_slice()))
                .collect();
            pairs.push((ADDED, b"1"));
            host.set_headers(map, &pairs)
        }
        Edit::PerHeader => {
            host.remove_header(map, drop)?;
            host.set_header(map, ADDED, b"1")
        }
        Edit::ReadOnly => {
            if host.headers(map).is_empty() {
                return Err(HostError::NotFound);
            }
            Ok(())
        }
    }
}

fn reply(host: &dyn Host, status: u32, headers: &[(&str, String)]) -> Action {
    let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    if host.send_local_response(status, &headers, b"").is_err() {
        let _ = host.resume_request();
    }
    Action::Pause
}

impl Probe {
    /// `vm`: this VM instance's (id, requests seen including this one), from the glue.
    pub fn on_request_headers(&mut self, host: &dyn Host, vm: (u64, u64)) -> Action {
        self.trap = Trap::from_header(host.request_header(TRAP).as_deref());
        if host.request_header(VM).is_some() {
            self.vm = Some(vm);
        }
        if let Some(n) = host.request_header("x-probe-random") {
            return self.random(host, n.trim().parse().unwrap_or(0));
        }
        if let Some(service) = host.request_header("x-probe-grpc") {
            return self.grpc_call(host, &service);
        }
        self.edit = match host.request_header("x-probe-edit").as_deref() {
            Some("set-headers") => Edit::SetHeaders,
            Some("per-header") => Edit::PerHeader,
            Some("read-only") => Edit::ReadOnly,
            _ => Edit::None,
        };
        self.repeat = host.request_header("x-probe-repeat").and_then(|n| n.trim().parse().ok()).unwrap_or(1).min(1000);
        self.edit_map(host, HeaderMapKind::RequestHeaders, REQUEST_DROP);
        Action::Continue
    }

    pub fn on_response_headers(&mut self, host: &dyn Host) -> Action {
        if let Some((id, served)) = self.vm {
            let _ = host.set_header(HeaderMapKind::ResponseHeaders, VM, format!("{id:016x}").as_bytes());
            let _ = host.set_header(HeaderMapKind::ResponseHeaders, VM_SERVED, served.to_string().as_bytes());
        }
        self.edit_map(host, HeaderMapKind::ResponseHeaders, RESPONSE_DROP);
        Action::Continue
    }

    fn edit_map(&self, host: &dyn Host, map: HeaderMapKind, drop: &str) {
        for _ in 0..self.repeat {
            if let Err(e) = edit_map(host, map, drop, self.edit) {
                let _ = host.add_header(map, ERROR, e.to_string().as_bytes());
                return;
            }
        }
    }

    fn random(&mut self, host: &dyn Host, n: usize) -> Action {
        let mut buf = vec![0u8; n.min(MAX_RANDOM)];
        if let Err(e) = host.random(&mut buf) {
            return reply(host, 500, &[(ERROR, e.to_string())]);
        }
        let mut seen = [false; 256];
        for &b in &buf {
            seen[usize::from(b)] = true;
        }
        let head = &buf[..buf.len().min(32)];
        let tail = &buf[buf.len().saturating_sub(32)..];
        reply(
            host,
            200,
            &[
                ("x-probe-random-len", buf.len().to_string()),
                ("x-probe-random-head", hex(head)),
                ("x-probe-random-tail", hex(tail)),
                ("x-probe-random-distinct", seen.iter().filter(|s| **s).count().to_string()),
            ],
        )
    }

    fn grpc_call(&mut self, host: &dyn Host, service: &str) -> Action {
        let cluster = host.request_header("x-probe-grpc-cluster").unwrap_or_else(|| GRPC_CLUSTER.to_string());
        let method = host.request_header("x-probe-grpc-method").unwrap_or_else(|| "Check".to_string());
        let meta = host.header(HeaderMapKind::RequestHeaders, "x-probe-grpc-meta");
        let metadata: Vec<(&str, &[u8])> = meta.iter().map(|m| ("x-probe-meta", m.as_slice())).collect();
        let message = health_check_request(service);
        match host.dispatch_grpc_call(&cluster, HEALTH_SERVICE, &method, &metadata, &message, Duration::from_secs(5)) {
            Ok(token) => {
                self.grpc_token = Some(token);
                Action::Pause
            }
            Err(e) => reply(host, 503, &[(ERROR, e.to_string())]),
        }
    }

    pub fn on_grpc_call_response(&mut self, host: &dyn Host, token: u32, status_code: u32, message_size: usize) {
        if self.grpc_token != Some(token) {
            return;
        }
        self.grpc_token = None;
        let (code, message) = match host.call_status() {
            Ok((code, message)) => (code.to_string(), escape(&message)),
            Err(e) => ("error".to_string(), e.to_string()),
        };
        let response = if message_size > 0 {
            host.body(BodyKind::GrpcReceive, 0, message_size).unwrap_or_default()
        } else {
            vec![]
        };
        reply(
            host,
            200,
            &[
                ("x-probe-grpc-status", code),
                ("x-probe-grpc-message", message),
                ("x-probe-grpc-callback-status", status_code.to_string()),
                ("x-probe-grpc-response", hex(&response)),
            ],
        );
    }
}

/// The adapters. The probe has its own rather than `shared::glue` so it exercises
/// `ProxyWasmHost` alone (gRPC answers reach an HTTP context directly, through
/// `shared::exports`), whatever the glue does.
#[cfg(target_arch = "wasm32")]
mod glue {
    use super::replay::{self, Plan};
    use super::{Probe, Trap};
    use shared::exports::{HttpContext, RootContext};
    use shared::proxy::ProxyWasmHost;
    use shared::{Action, Host};
    use std::rc::Rc;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// This VM instance's id (drawn once) and how many requests it has seen.
    static VM_ID: AtomicU64 = AtomicU64::new(0);
    static SERVED: AtomicU64 = AtomicU64::new(0);

    /// A wasm `unreachable` instruction: the VM traps, as on a panic (`panic = "abort"`).
    fn trap() -> ! {
        core::arch::wasm32::unreachable()
    }

    #[derive(Default)]
    struct ProbeRoot {
        /// A `replay-*` root's plan, shared by its streams.
        replay: Option<Rc<Plan>>,
    }

    impl RootContext for ProbeRoot {
        fn on_configure(&mut self) -> bool {
            let mut id = [0u8; 8];
            if ProxyWasmHost.random(&mut id).is_ok() {
                VM_ID.store(u64::from_le_bytes(id), Ordering::Relaxed);
            }
            let root_id = ProxyWasmHost.property(&["plugin_root_id"]).unwrap_or_default();
            if let Some(scripts) = replay::scripts(&String::from_utf8_lossy(&root_id)) {
                self.replay = Some(Rc::new(Plan::new(&ProxyWasmHost, &scripts)));
            }
            true
        }
        fn create_http_context(&self, _context_id: u32) -> Box<dyn HttpContext> {
            match &self.replay {
                Some(plan) => Box::new(ReplayHttp(plan.clone())),
                None => Box::new(ProbeHttp(Probe::default())),
            }
        }
    }

    /// A stream of a `replay-*` root: the plan's host calls in each callback, nothing else.
    struct ReplayHttp(Rc<Plan>);

    impl HttpContext for ReplayHttp {
        fn on_request_headers(&mut self, _end_of_stream: bool) -> Action {
            self.0.run(&ProxyWasmHost, &self.0.request_headers, 0);
            Action::Continue
        }
        fn on_response_headers(&mut self, _end_of_stream: bool) -> Action {
            self.0.run(&ProxyWasmHost, &self.0.response_headers, 0);
            Action::Continue
        }
        fn on_response_body(&mut self, body_size: usize, _end_of_stream: bool) -> Action {
            self.0.run(&ProxyWasmHost, &self.0.response_body, body_size);
            Action::Continue
        }
        fn on_log(&mut self) {
            self.0.run(&ProxyWasmHost, &self.0.log, 0);
        }
    }

    struct ProbeHttp(Probe);

    impl HttpContext for ProbeHttp {
        fn on_grpc_call_response(&mut self, token_id: u32, status_code: u32, response_size: usize) {
            self.0.on_grpc_call_response(&ProxyWasmHost, token_id, status_code, response_size);
        }
        fn on_request_headers(&mut self, _end_of_stream: bool) -> Action {
            let served = SERVED.fetch_add(1, Ordering::Relaxed) + 1;
            let action = self.0.on_request_headers(&ProxyWasmHost, (VM_ID.load(Ordering::Relaxed), served));
            if self.0.trap == Some(Trap::RequestHeaders) {
                trap();
            }
            action
        }
        fn on_response_headers(&mut self, _end_of_stream: bool) -> Action {
            if self.0.trap == Some(Trap::ResponseHeaders) {
                trap();
            }
            self.0.on_response_headers(&ProxyWasmHost)
        }
    }

    #[allow(unsafe_code)]
    #[no_mangle]
    pub extern "C" fn _initialize() {
        shared::exports::initialize(|_| -> Box<dyn RootContext> { Box::new(ProbeRoot::default()) });
    }

    // Every stream callback, as the bundle exports them, so a replay of the chain crosses into
    // the VM as often as the chain does (the probe's own streams ignore the extra ones).
    shared::http_exports!(all);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings() {
        assert_eq!(hex(&[0x08, 0x01, 0xff]), "0801ff");
        assert_eq!(escape(b"not found: a%20b\n\xff"), "not found: a%20b%0A%FF");
        assert_eq!(health_check_request(""), b"");
        assert_eq!(health_check_request("probe"), b"\x0a\x05probe");
        assert_eq!(Trap::from_header(Some("request-headers")), Some(Trap::RequestHeaders));
        assert_eq!(Trap::from_header(Some("response-headers")), Some(Trap::ResponseHeaders));
        assert_eq!(Trap::from_header(Some("yes")), None);
        assert_eq!(Trap::from_header(None), None);
    }
}
