//! The loopback echo upstream. Keep-alive HTTP/1.1, one thread per connection.
//!
//! What it answers is steered by request headers, so one server serves every test:
//! - `x-echo-status: 404` sets the status;
//! - `x-echo-header: Name: value` (repeatable) adds a response header;
//! - `x-echo-header-hex: <hex>` adds raw bytes as a response header line (odd bytes);
//! - `x-echo-content-type: text/plain` sets the content-type of an echoed body;
//! - otherwise it sends `server: demo-upstream/1.0` and `x-powered-by: demo` so the demo shows
//!   fingerprinting headers being removed.
//!
//! The body echoes the request body when there is one, else a JSON summary of the request;
//! a GET of one of [`UpstreamOptions::pages`] answers that page instead (the browser tests,
//! whose requests a test cannot steer with headers). Every request is recorded for assertions.

use crate::http::read_request;
use crate::loopback::LoopbackServer;
use std::collections::BTreeMap;
use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A request as the upstream received it (names lowercased).
pub use crate::http::Request as Recorded;

pub struct Upstream {
    pub port: u16,
    requests: Arc<Mutex<Vec<Recorded>>>,
    _server: LoopbackServer,
}

/// How the upstream behaves; [`Upstream::start`] is the tests' default (record, echo).
#[derive(Clone, Default)]
pub struct UpstreamOptions {
    /// Keep no record of requests (the bench sends millions).
    pub no_recording: bool,
    /// Send these bytes (a whole HTTP/1.1 response) to every request instead of echoing.
    pub fixed_response: Option<Arc<[u8]>>,
    /// Fixed documents by path (query ignored), answered to GET and HEAD.
    pub pages: Arc<BTreeMap<String, Page>>,
}

/// A document the upstream serves as it is (with the usual fingerprinting headers).
#[derive(Clone, Debug)]
pub struct Page {
    pub content_type: String,
    pub body: Vec<u8>,
}

impl Page {
    pub fn new(content_type: &str, body: impl Into<Vec<u8>>) -> Page {
        Page { content_type: content_type.to_string(), body: body.into() }
    }
}

impl Upstream {
    /// Listen on 127.0.0.1:port (0 = any free port), recording and echoing.
    pub fn start(port: u16) -> Result<Upstream, String> {
        Self::start_with(port, UpstreamOptions::default())
    }

    pub fn start_with(port: u16, opts: UpstreamOptions) -> Result<Upstream, String> {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let reqs = requests.clone();
        let server = LoopbackServer::start(port, move |conn, _stop| serve_connection(conn, reqs.clone(), &opts))?;
        Ok(Upstream { port: server.port, requests, _server: server })
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

fn serve_connection(conn: TcpStream, requests: Arc<Mutex<Vec<Recorded>>>, opts: &UpstreamOptions) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(120)));
    let _ = conn.set_nodelay(true);
    let Ok(mut writer) = conn.try_clone() else { return };
    let mut reader = BufReader::new(conn);
    loop {
        let Ok(Recorded { method, path, headers, body }) = read_request(&mut reader) else { return };
        let echo = match &opts.fixed_response {
            Some(_) => Vec::new(),
            None => match page_for(&opts.pages, &method, &path) {
                Some(page) => answer(200, &page.content_type, &page.body, default_extra_headers(), &method),
                None => respond(&method, &path, &headers, &body),
            },
        };
        // Record before answering: a test that has its response must find the request here.
        if !opts.no_recording {
            if let Ok(mut r) = requests.lock() {
                r.push(Recorded { method, path, headers, body });
            }
        }
        let response: &[u8] = opts.fixed_response.as_deref().unwrap_or(&echo);
        if writer.write_all(response).is_err() {
            return;
        }
    }
}

fn respond(method: &str, path: &str, headers: &[(String, Vec<u8>)], body: &[u8]) -> Vec<u8> {
    let values = |n: &str| -> Vec<Vec<u8>> { headers.iter().filter(|(k, _)| k == n).map(|(_, v)| v.clone()).collect() };
    let status: u16 =
        values("x-echo-status").first().and_then(|v| String::from_utf8_lossy(v).trim().parse().ok()).unwrap_or(200);
    let mut extra: Vec<Vec<u8>> = values("x-echo-header");
    for hex in values("x-echo-header-hex") {
        if let Some(raw) = decode_hex(&String::from_utf8_lossy(&hex)) {
            extra.push(raw);
        }
    }
    if extra.is_empty() {
        extra = default_extra_headers();
    }
    let (content_type, payload) = if body.is_empty() {
        let hdrs: Vec<serde_json::Value> =
            headers.iter().map(|(k, v)| serde_json::json!([k, String::from_utf8_lossy(v)])).collect();
        let summary = serde_json::json!({"method": method, "path": path, "headers": hdrs});
        ("application/json".to_string(), summary.to_string().into_bytes())
    } else {
        let echo_type = values("x-echo-content-type").first().map(|v| String::from_utf8_lossy(v).into_owned());
        (echo_type.unwrap_or_else(|| "application/octet-stream".to_string()), body.to_vec())
    };
    answer(status, &content_type, &payload, extra, method)
}

fn page_for<'a>(pages: &'a BTreeMap<String, Page>, method: &str, path: &str) -> Option<&'a Page> {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    (method == "GET" || method == "HEAD").then(|| pages.get(path)).flatten()
}

/// What the upstream says when a test does not ask otherwise: fingerprinting headers for the
/// filters to remove.
fn default_extra_headers() -> Vec<Vec<u8>> {
    vec![b"server: demo-upstream/1.0".to_vec(), b"x-powered-by: demo".to_vec()]
}

fn answer(status: u16, content_type: &str, payload: &[u8], extra: Vec<Vec<u8>>, method: &str) -> Vec<u8> {
    let mut out =
        format!("HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n", payload.len())
            .into_bytes();
    for line in extra {
        out.extend_from_slice(&line);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if method != "HEAD" {
        out.extend_from_slice(payload);
    }
    out
}

pub fn decode_hex(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

pub fn encode_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
