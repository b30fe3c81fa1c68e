//! The request path. A stream is selected at its request headers (path, method, sampling);
//! each body chunk is passed on at once (`Continue`, never `StopIterationAndBuffer`) after the
//! bytes still missing from the capture (at most `max_bytes` per direction) are copied into
//! the VM. End of stream comes with the last body chunk, with trailers, or with headers only.
//! The log line is built once, in `on_log` (Envoy calls it once per stream, also for streams
//! that were reset), redacted, then written to Envoy's log and to filter state.
//!
//! Memory: what a stream holds until its end (captures, logged headers) is reserved in the
//! worker's [`Budget`] when its direction starts; a direction that does not fit is not
//! captured (`"skipped": "budget"`), and the reservation is released with the stream.

use crate::config::{body_kind, grpc_of, is_encoded, media_essence, media_param, BodyKind, Compiled, Config, Grpc};
use crate::grpc::Frames;
use crate::line::{DirectionLine, Line};
use crate::redact::escape_invalid_utf8;
use shared::config::ConfigError;
use shared::hash::{fnv1a, mix64};
use shared::headers::HeaderPairs;
use shared::host::{BodyKind as Buffer, HeaderMapKind, HostExt};
use shared::matching::RouteName;
use shared::stats::Counter;
use shared::{Action, Host, HttpFilter, RootFilter};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Clone, Copy, Default)]
pub struct Stats {
    pub logged: Counter,
    pub sampled_out: Counter,
    pub skipped_content_type: Counter,
    pub skipped_content_encoding: Counter,
    pub skipped_budget: Counter,
    pub truncated: Counter,
    pub redactions: Counter,
}

impl Stats {
    fn define(host: &dyn Host) -> Stats {
        Stats {
            logged: Counter::define(host, "body_logger.logged"),
            sampled_out: Counter::define(host, "body_logger.sampled_out"),
            skipped_content_type: Counter::define(host, "body_logger.skipped_content_type"),
            skipped_content_encoding: Counter::define(host, "body_logger.skipped_content_encoding"),
            skipped_budget: Counter::define(host, "body_logger.skipped_budget"),
            truncated: Counter::define(host, "body_logger.truncated"),
            redactions: Counter::define(host, "body_logger.redactions"),
        }
    }
}

/// The bytes one worker VM may hold for streams in flight (`capture_budget_bytes`).
#[derive(Debug, Default)]
pub struct Budget {
    limit: usize,
    used: Cell<usize>,
}

impl Budget {
    pub fn new(limit: usize) -> Rc<Budget> {
        Rc::new(Budget { limit, used: Cell::new(0) })
    }

    /// Bytes reserved now.
    pub fn used(&self) -> usize {
        self.used.get()
    }

    fn reserve(self: &Rc<Self>, bytes: usize) -> Option<Reservation> {
        let used = self.used.get();
        if bytes > self.limit.saturating_sub(used) {
            return None;
        }
        self.used.set(used + bytes);
        Some(Reservation { budget: self.clone(), bytes })
    }
}

/// Bytes held in a [`Budget`] until dropped (with the stream's record, however it ends).
#[derive(Debug)]
struct Reservation {
    budget: Rc<Budget>,
    bytes: usize,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.used.set(self.budget.used.get().saturating_sub(self.bytes));
    }
}

/// One per worker VM.
#[derive(Default)]
pub struct BodyLoggerRoot {
    config: Option<Rc<Compiled>>,
    budget: Rc<Budget>,
    stats: Stats,
    /// xorshift state for sampling without a request id (per worker; needs no quality beyond
    /// an even spread).
    rng: Rc<Cell<u64>>,
}

impl RootFilter for BodyLoggerRoot {
    type Http = BodyLogger;
    const NAME: &'static str = "body-logger";

    fn configure(&mut self, host: &dyn Host, raw: Option<&[u8]>) -> Result<(), ConfigError> {
        let compiled = shared::config::load(raw, Config::compile)?;
        self.stats = Stats::define(host);
        let seed = host.now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
        self.rng.set(mix64(seed) | 1);
        self.budget = Budget::new(compiled.capture_budget_bytes);
        self.config = Some(Rc::new(compiled));
        Ok(())
    }

    fn new_http_filter(&self, _context_id: u32) -> Option<BodyLogger> {
        Some(BodyLogger {
            config: self.config.clone()?,
            budget: self.budget.clone(),
            stats: self.stats,
            rng: self.rng.clone(),
            record: None,
        })
    }
}

/// One per HTTP stream.
pub struct BodyLogger {
    config: Rc<Compiled>,
    budget: Rc<Budget>,
    stats: Stats,
    rng: Rc<Cell<u64>>,
    /// `Some` once the stream is selected; taken when the line is emitted.
    record: Option<Box<Record>>,
}

type HeaderList = Vec<(String, Vec<u8>)>;
type Pair<'a> = (&'a [u8], &'a [u8]);

/// The first value of `name` in a map's pairs (Envoy's `get_header_map_value` answer).
fn first<'a>(map: &[Pair<'a>], name: &str) -> Option<&'a [u8]> {
    HeaderPairs::first(map, name)
}

/// A direction's header map, read once: owned when its headers are logged (`log_headers`),
/// else the host's buffer read borrowed (no allocation per header).
enum MapRead {
    Logged(HeaderList),
    Raw(HeaderPairs),
}

impl MapRead {
    fn of(host: &dyn Host, kind: HeaderMapKind, log_headers: bool) -> MapRead {
        if log_headers {
            MapRead::Logged(host.headers(kind))
        } else {
            MapRead::Raw(host.header_pairs(kind))
        }
    }

    fn pairs(&self) -> Vec<Pair<'_>> {
        match self {
            MapRead::Logged(list) => list.iter().map(|(n, v)| (n.as_bytes(), v.as_slice())).collect(),
            MapRead::Raw(raw) => raw.pairs(),
        }
    }

    /// The headers to log: none unless `log_headers`.
    fn logged(self) -> HeaderList {
        match self {
            MapRead::Logged(list) => list,
            MapRead::Raw(_) => Vec::new(),
        }
    }
}

struct Record {
    start: SystemTime,
    method: Vec<u8>,
    path: Vec<u8>,
    request_id: Option<Vec<u8>>,
    status: Option<u64>,
    request: Direction,
    response: Direction,
    /// `None` when dropped for the budget.
    request_headers: Option<HeaderList>,
    response_headers: Option<HeaderList>,
}

/// Why a direction's body is not captured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Skip {
    /// `request_body` / `response_body` is off.
    Disabled,
    /// Not on the `content_types` list (or absent).
    ContentType,
    /// A `content-encoding` other than `identity`, or bytes that start like a compressed
    /// stream: logging them would log the secrets inside, unredacted.
    ContentEncoding,
    /// The worker's `capture_budget_bytes` is in use by other streams.
    Budget,
    /// gRPC: the framing is summarised instead (`grpc_frames`); not a skip in the line.
    Grpc,
}

impl Skip {
    fn as_str(self) -> &'static str {
        match self {
            Skip::Disabled => "disabled",
            Skip::ContentType => "content_type",
            Skip::ContentEncoding => "content_encoding",
            Skip::Budget => "budget",
            Skip::Grpc => "grpc",
        }
    }
}

/// What a direction's headers say about its body.
#[derive(Default)]
struct BodyHeaders {
    content_type: Option<Vec<u8>>,
    content_encoding: Option<Vec<u8>>,
    content_length: Option<u64>,
    /// The gRPC any `content-type` value claims (all of them, not only the first).
    grpc: Option<Grpc>,
}

impl BodyHeaders {
    /// From the direction's header map, read once.
    fn read(map: &[Pair]) -> BodyHeaders {
        BodyHeaders {
            content_type: first(map, "content-type").map(<[u8]>::to_vec),
            // Envoy joins repeated `content-encoding` headers into one value (`identity,br`):
            // the first value is all of them (e2e: the leak corpus's `br-second-header`).
            content_encoding: first(map, "content-encoding").map(<[u8]>::to_vec),
            content_length: first(map, "content-length")
                .and_then(|v| std::str::from_utf8(v).ok().and_then(|t| t.trim().parse().ok())),
            grpc: map
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case(b"content-type"))
                .filter_map(|(_, v)| grpc_of(v))
                .max(),
        }
    }
}

struct Direction {
    /// `None`: this direction's body is captured (up to `limit`).
    skip: Option<Skip>,
    content_type: Option<String>,
    kind: Option<BodyKind>,
    boundary: Option<Vec<u8>>,
    /// gRPC framing, counted instead of captured (`skip` is `Grpc`).
    grpc: Option<Frames>,
    seen: u64,
    captured: Vec<u8>,
    /// Bytes this direction may capture: `max_bytes`, or less when `content-length` says so.
    limit: usize,
    /// The budget held for the capture and the logged headers.
    reservation: Option<Reservation>,
    complete: bool,
}

impl Default for Direction {
    /// A direction that never started (no response before the stream ended): nothing captured.
    fn default() -> Self {
        Direction {
            skip: Some(Skip::Disabled),
            content_type: None,
            kind: None,
            boundary: None,
            grpc: None,
            seen: 0,
            captured: Vec::new(),
            limit: 0,
            reservation: None,
            complete: false,
        }
    }
}

/// Magic numbers of compressed streams (gzip, zlib, zstd): a body with one is compressed,
/// whatever its headers say.
const COMPRESSED_MAGIC: &[&[u8]] = &[b"\x1f\x8b", b"\x78\x01", b"\x78\x9c", b"\x78\xda", b"\x28\xb5\x2f\xfd"];

impl Direction {
    fn start(config: &Compiled, enabled: bool, headers: BodyHeaders, end_of_stream: bool) -> Direction {
        let essence = headers.content_type.as_deref().map(media_essence);
        let allowed = essence.as_deref().is_some_and(|e| config.content_types.iter().any(|m| m.matches(e)));
        let grpc = if config.grpc_frames { headers.grpc } else { None };
        let skip = if !enabled {
            Some(Skip::Disabled)
        } else if grpc == Some(Grpc::Framed) {
            // Checked before content_types: binary frames never reach the text scanners.
            Some(Skip::Grpc)
        } else if grpc == Some(Grpc::Web) || !allowed {
            Some(Skip::ContentType)
        } else if headers.content_encoding.as_deref().is_some_and(is_encoded) {
            Some(Skip::ContentEncoding)
        } else {
            None
        };
        let limit = match (skip, end_of_stream, headers.content_length) {
            (Some(_), _, _) | (None, true, _) => 0,
            (None, false, Some(n)) => usize::try_from(n).unwrap_or(usize::MAX).min(config.max_bytes),
            (None, false, None) => config.max_bytes,
        };
        Direction {
            skip,
            kind: essence.as_deref().map(body_kind),
            boundary: headers.content_type.as_deref().and_then(|c| media_param(c, "boundary")),
            grpc: (skip == Some(Skip::Grpc)).then(Frames::default),
            content_type: headers.content_type.map(|c| escape_invalid_utf8(&c)),
            limit,
            complete: end_of_stream,
            seen: 0,
            captured: Vec::new(),
            reservation: None,
        }
    }

    /// Reserve the capture and `extra` bytes (logged headers) in the worker's budget; on
    /// refusal the body is not captured. Whether the reservation was made.
    fn reserve(&mut self, budget: &Rc<Budget>, extra: usize) -> bool {
        match budget.reserve(self.limit.saturating_add(extra)) {
            Some(r) => {
                self.reservation = Some(r);
                true
            }
            None => {
                if self.skip.is_none() {
                    self.skip = Some(Skip::Budget);
                }
                self.limit = 0;
                false
            }
        }
    }

    /// Count the chunk; copy only the bytes the capture still lacks.
    fn chunk(&mut self, host: &dyn Host, buffer: Buffer, size: usize) {
        self.seen = self.seen.saturating_add(size as u64);
        if let Some(frames) = self.grpc.as_mut() {
            frames.chunk(host, buffer, size);
            return;
        }
        if self.skip.is_some() || self.captured.len() >= self.limit || size == 0 {
            return;
        }
        if self.captured.capacity() == 0 {
            // Exactly what was reserved: no doubling past the budget.
            self.captured.reserve_exact(self.limit);
        }
        let want = size.min(self.limit - self.captured.len());
        if let Some(bytes) = host.body(buffer, 0, want) {
            let n = bytes.len().min(want);
            self.captured.extend_from_slice(&bytes[..n]);
        }
    }

    fn truncated(&self) -> bool {
        self.skip.is_none() && self.seen > self.captured.len() as u64
    }

    /// At the end: a capture that starts like a compressed stream is not logged either.
    fn sniff(&mut self) {
        if self.skip.is_none() && COMPRESSED_MAGIC.iter().any(|m| self.captured.starts_with(m)) {
            self.skip = Some(Skip::ContentEncoding);
        }
    }
}

impl BodyLogger {
    /// `request`: the request's header map.
    fn selected(&self, host: &dyn Host, request: &[Pair], method: &[u8], path: &[u8]) -> bool {
        let c = &self.config;
        if !c.methods.is_empty() && !c.methods.iter().any(|m| m.as_bytes().eq_ignore_ascii_case(method)) {
            return false;
        }
        if !c.paths.is_empty() {
            let path = String::from_utf8_lossy(path);
            let route = RouteName::of(host);
            if !c.paths.iter().any(|m| m.matches(Some(&path), &route)) {
                return false;
            }
        }
        if c.sample_all {
            return true;
        }
        let id = if c.sample_by_request_id { first(request, "x-request-id") } else { None };
        let value = match id {
            Some(id) if !id.is_empty() => mix64(fnv1a(id)),
            _ => {
                // xorshift64
                let mut x = self.rng.get().max(1);
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                self.rng.set(x);
                mix64(x)
            }
        };
        if value < c.sample_threshold {
            true
        } else {
            self.stats.sampled_out.inc(host);
            false
        }
    }

    /// Start a direction from what its header map says: its capture, its share of the budget.
    /// The headers to log (`None` when dropped for the budget).
    fn start_direction(
        &self,
        body: BodyHeaders,
        logged: HeaderList,
        enabled: bool,
        end_of_stream: bool,
    ) -> (Direction, Option<HeaderList>) {
        let c = &self.config;
        let mut direction = Direction::start(c, enabled, body, end_of_stream);
        let headers = logged;
        let header_bytes = headers.iter().map(|(k, v)| k.len() + v.len()).sum();
        if direction.reserve(&self.budget, header_bytes) {
            (direction, Some(headers))
        } else {
            (direction, None)
        }
    }

    fn emit(&mut self, host: &dyn Host) {
        let Some(mut rec) = self.record.take() else { return };
        let c = &self.config;
        let red = &c.redactor;
        let mut redactions = 0u32;
        let status = rec.status.or_else(|| {
            host.property(&["response", "code"])
                .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
                .map(u64::from_le_bytes)
                .filter(|s| *s > 0)
        });
        let duration_ms = host.now().duration_since(rec.start).map(|d| (d.as_micros() as f64) / 1000.0).unwrap_or(0.0);
        let (path, n) = red.redact_path(&rec.path);
        redactions += n;

        let stats = self.stats;
        let mut direction = |d: &mut Direction| -> DirectionLine {
            d.sniff();
            let mut line = DirectionLine {
                body: None,
                bytes: d.seen,
                captured_bytes: 0,
                complete: d.complete,
                content_type: d.content_type.take(),
                grpc: None,
                skipped: None,
                truncated: false,
            };
            match d.skip {
                None => {
                    let truncated = d.truncated();
                    if truncated {
                        stats.truncated.inc(host);
                    }
                    let kind = d.kind.unwrap_or(BodyKind::Text);
                    let (text, n) = red.redact_body(&d.captured, kind, d.boundary.as_deref(), truncated);
                    redactions += n;
                    line.captured_bytes = d.captured.len();
                    line.truncated = truncated;
                    line.body = Some(text);
                }
                Some(Skip::Grpc) => line.grpc = d.grpc.as_ref().map(Frames::summary),
                Some(skip) => {
                    match skip {
                        Skip::ContentType if d.seen > 0 => stats.skipped_content_type.inc(host),
                        Skip::ContentEncoding if d.seen > 0 => stats.skipped_content_encoding.inc(host),
                        Skip::Budget => stats.skipped_budget.inc(host),
                        _ => {}
                    }
                    if d.seen > 0 || skip == Skip::Budget {
                        line.skipped = Some(skip.as_str());
                    }
                }
            }
            line
        };
        let request = direction(&mut rec.request);
        let response = direction(&mut rec.response);

        let (mut request_headers, mut response_headers) = (None, None);
        if c.log_headers {
            let mut headers = |list: Option<&[(String, Vec<u8>)]>| -> Option<BTreeMap<String, String>> {
                let list = list?;
                let mut m: BTreeMap<String, String> = BTreeMap::new();
                for (name, value) in list {
                    let text = if red.is_sensitive_header(name) {
                        redactions += 1;
                        red.replacement().to_string()
                    } else {
                        let (text, n) = if name == ":path" { red.redact_path(value) } else { red.redact_value(value) };
                        redactions += n;
                        text
                    };
                    // Repeated headers: joined as Envoy's access log does.
                    match m.get_mut(name.as_str()) {
                        Some(prev) => {
                            prev.push(',');
                            prev.push_str(&text);
                        }
                        None => {
                            m.insert(name.clone(), text);
                        }
                    }
                }
                Some(m)
            };
            request_headers = Some(headers(rec.request_headers.as_deref()));
            response_headers = Some(headers(rec.response_headers.as_deref()));
        }
        let line = Line {
            duration_ms,
            method: escape_invalid_utf8(&rec.method),
            path,
            redactions,
            request,
            request_headers,
            request_id: rec.request_id.as_deref().map(escape_invalid_utf8),
            response,
            response_headers,
            status,
        };
        // Written straight from the structs: no JSON tree built, then walked.
        let text = line.to_json();

        self.stats.redactions.add(host, u64::from(redactions));
        self.stats.logged.inc(host);
        if c.envoy_log && c.log_level >= host.log_level() {
            host.log(c.log_level, &text);
        }
        if let Some(name) = &c.filter_state_name {
            if let Err(e) = host.set_property(&[name.as_str()], text.as_bytes()) {
                host.log_with(shared::LogLevel::Debug, || format!("body-logger: cannot set filter state {name}: {e}"));
            }
        }
    }
}

impl HttpFilter for BodyLogger {
    fn on_request_headers(&mut self, host: &dyn Host, end_of_stream: bool) -> Action {
        // One read of the map for every header below.
        let map = MapRead::of(host, HeaderMapKind::RequestHeaders, self.config.log_headers);
        let pairs = map.pairs();
        let method = first(&pairs, ":method").unwrap_or_default().to_vec();
        let path = first(&pairs, ":path").unwrap_or_default().to_vec();
        if !self.selected(host, &pairs, &method, &path) {
            return Action::Continue;
        }
        let request_id = first(&pairs, "x-request-id").map(<[u8]>::to_vec);
        let body = BodyHeaders::read(&pairs);
        drop(pairs);
        let c = self.config.clone();
        let (request, request_headers) = self.start_direction(body, map.logged(), c.request_body, end_of_stream);
        self.record = Some(Box::new(Record {
            start: host.now(),
            method,
            path,
            request_id,
            status: None,
            request,
            response: Direction::default(),
            request_headers,
            response_headers: Some(Vec::new()),
        }));
        Action::Continue
    }

    fn on_request_body(&mut self, host: &dyn Host, body_size: usize, end_of_stream: bool) -> Action {
        if let Some(rec) = self.record.as_mut() {
            rec.request.chunk(host, Buffer::Request, body_size);
            rec.request.complete |= end_of_stream;
        }
        Action::Continue
    }

    fn on_request_trailers(&mut self, _host: &dyn Host) -> Action {
        if let Some(rec) = self.record.as_mut() {
            rec.request.complete = true;
        }
        Action::Continue
    }

    fn on_response_headers(&mut self, host: &dyn Host, end_of_stream: bool) -> Action {
        if self.record.is_none() {
            return Action::Continue;
        }
        let c = self.config.clone();
        let map = MapRead::of(host, HeaderMapKind::ResponseHeaders, c.log_headers);
        let pairs = map.pairs();
        let status =
            first(&pairs, ":status").and_then(|s| std::str::from_utf8(s).ok()).and_then(|s| s.trim().parse().ok());
        let body = BodyHeaders::read(&pairs);
        drop(pairs);
        let (response, headers) = self.start_direction(body, map.logged(), c.response_body, end_of_stream);
        if let Some(rec) = self.record.as_mut() {
            rec.status = status;
            rec.response = response;
            rec.response_headers = headers;
        }
        Action::Continue
    }

    fn on_response_body(&mut self, host: &dyn Host, body_size: usize, end_of_stream: bool) -> Action {
        if let Some(rec) = self.record.as_mut() {
            rec.response.chunk(host, Buffer::Response, body_size);
            rec.response.complete |= end_of_stream;
        }
        Action::Continue
    }

    fn on_response_trailers(&mut self, _host: &dyn Host) -> Action {
        if let Some(rec) = self.record.as_mut() {
            rec.response.complete = true;
        }
        Action::Continue
    }

    fn on_log(&mut self, host: &dyn Host) {
        self.emit(host);
    }
}

#[cfg(test)]
mod corpus_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use shared::proxytest::{Proxy, Worker};
    use shared::LogLevel;

    type W = Worker<BodyLoggerRoot>;

    fn make(json: &str) -> (Proxy, W) {
        let p = Proxy::new();
        let w = p.worker(json);
        (p, w)
    }

    fn lines(p: &Proxy) -> Vec<Value> {
        p.logs()
            .into_iter()
            .filter(|(_, m)| m.starts_with('{'))
            .map(|(_, m)| serde_json::from_str(&m).unwrap())
            .collect()
    }

    /// The line's exact bytes: keys in alphabetical order (the order it had when built as a
    /// sorted `serde_json::Map`), `skipped` and the header objects only when they apply.
    #[test]
    fn line_bytes_are_stable() {
        let (p, mut w) = make(r#"{"log_headers":true}"#);
        p.set_log_level(LogLevel::Trace);
        let req: &[(&str, &str)] = &[(":path", "/a?token=s"), (":method", "PUT"), ("x-a", "1"), ("x-a", "2")];
        let id = w.new_stream();
        w.request_headers(id, req, false);
        w.request_body(id, b"\x1f\x8bzz", true);
        w.response_headers(id, &[(":status", "204")], true);
        w.complete(id);
        let line = p.logs().into_iter().map(|(_, m)| m).find(|m| m.starts_with('{')).unwrap();
        assert_eq!(
            line,
            r#"{"duration_ms":0.0,"method":"PUT","path":"/a?token=[REDACTED]","redactions":2,"request":{"body":null,"bytes":4,"captured_bytes":0,"complete":true,"content_type":null,"skipped":"content_type","truncated":false},"request_headers":{":method":"PUT",":path":"/a?token=[REDACTED]","x-a":"1,2"},"request_id":null,"response":{"body":null,"bytes":0,"captured_bytes":0,"complete":true,"content_type":null,"truncated":false},"response_headers":{":status":"204"},"status":204}"#
        );
    }

    /// Drive one exchange through a new stream, up to (not including) its end; bodies are fed
    /// in `chunk`-byte pieces. Its id.
    fn exchange_open(w: &mut W, req: (&[(&str, &str)], &[u8]), resp: (&[(&str, &str)], &[u8]), chunk: usize) -> u32 {
        let id = w.new_stream();
        assert_eq!(w.request_headers(id, req.0, req.1.is_empty()), Action::Continue);
        let pieces: Vec<&[u8]> = req.1.chunks(chunk.max(1)).collect();
        for (i, p) in pieces.iter().enumerate() {
            assert_eq!(w.request_body(id, p, i + 1 == pieces.len()), Action::Continue);
        }
        assert_eq!(w.response_headers(id, resp.0, resp.1.is_empty()), Action::Continue);
        let pieces: Vec<&[u8]> = resp.1.chunks(chunk.max(1)).collect();
        for (i, p) in pieces.iter().enumerate() {
            assert_eq!(w.response_body(id, p, i + 1 == pieces.len()), Action::Continue);
        }
        id
    }

    /// A whole exchange: the stream completes (`on_log`).
    fn exchange(w: &mut W, req: (&[(&str, &str)], &[u8]), resp: (&[(&str, &str)], &[u8]), chunk: usize) -> u32 {
        let id = exchange_open(w, req, resp, chunk);
        w.complete(id);
        id
    }

    const JSON_REQ: &[(&str, &str)] = &[
        (":method", "POST"),
        (":path", "/login?access_token=qs-secret"),
        ("content-type", "application/json; charset=utf-8"),
        ("x-request-id", "req-1"),
        ("authorization", "Bearer hdr-secret"),
    ];

    #[test]
    fn logs_once_bounded_redacted_with_filter_state() {
        let (p, mut w) = make(r#"{"max_bytes":40,"log_headers":true}"#);
        let body = br#"{"user":"ann","password":"hunter2","pad":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}"#;
        let id = exchange_open(
            &mut w,
            (JSON_REQ, body),
            (&[(":status", "201"), ("content-type", "text/plain"), ("set-cookie", "sid=cookie-secret")], b"ok"),
            7,
        );
        let host = w.host(id);
        w.filter_mut(id).on_log(&host);
        w.complete(id); // a second on_log emits nothing
        let l = lines(&p);
        assert_eq!(l.len(), 1, "{l:?}");
        let l = &l[0];
        assert_eq!(l["request_id"], "req-1");
        assert_eq!(l["method"], "POST");
        assert_eq!(l["status"], 201);
        assert_eq!(l["path"], "/login?access_token=[REDACTED]");
        assert_eq!(l["request"]["bytes"], body.len());
        assert_eq!(l["request"]["captured_bytes"], 40);
        assert_eq!(l["request"]["truncated"], true);
        assert_eq!(l["request"]["complete"], true);
        assert_eq!(l["response"]["body"], "ok");
        assert_eq!(l["response"]["truncated"], false);
        assert_eq!(l["request_headers"]["authorization"], "[REDACTED]");
        assert_eq!(l["response_headers"]["set-cookie"], "[REDACTED]");
        let text = l.to_string();
        for secret in ["hunter2", "qs-secret", "hdr-secret", "cookie-secret"] {
            assert!(!text.contains(secret), "{secret}: {text}");
        }
        assert!(l["request"]["body"].as_str().unwrap().starts_with(r#"{"user":"ann","password":"#));
        assert_eq!(p.metric("body_logger.logged"), Some(1));
        assert_eq!(p.metric("body_logger.truncated"), Some(1));
        assert_eq!(p.metric("body_logger.redactions"), Some(l["redactions"].as_i64().unwrap()));
        assert!(l["redactions"].as_i64().unwrap() >= 4);
        let written = w.properties_written(id);
        assert_eq!(written.len(), 1);
        assert_eq!(written[0].0, vec!["body_log"]);
        assert_eq!(serde_json::from_slice::<Value>(&written[0].1).unwrap(), *l);
    }

    #[test]
    fn reads_only_the_bytes_still_needed() {
        let (p, mut w) = make(r#"{"max_bytes":10}"#);
        let id = w.new_stream();
        w.request_headers(id, &[(":method", "POST"), (":path", "/"), ("content-type", "text/plain")], false);
        w.request_body(id, b"abcdefg", false);
        w.request_body(id, b"hijklmnop", false);
        w.request_body(id, b"qrst", false);
        w.request_trailers(id, &[]); // end of stream with trailers (HTTP/2, gRPC)
        {
            let f = w.filter(id);
            let rec = f.record.as_ref().unwrap();
            assert_eq!(rec.request.captured, b"abcdefghij");
            assert_eq!(rec.request.seen, 20);
            assert!(rec.request.complete);
        }
        w.complete(id);
        let l = &lines(&p)[0];
        assert_eq!(l["request"]["body"], "abcdefghij");
        assert_eq!(l["response"]["complete"], false, "the stream ended without a response");
        assert_eq!(l["status"], Value::Null);
    }

    #[test]
    fn content_types_binary_and_absent_are_skipped() {
        let (p, mut w) = make("{}");
        exchange(
            &mut w,
            (&[(":method", "PUT"), (":path", "/img"), ("content-type", "image/png")], b"\x89PNG\r\n"),
            (&[(":status", "200")], b"no content type"),
            100,
        );
        let l = &lines(&p)[0];
        assert_eq!(l["request"]["skipped"], "content_type");
        assert_eq!(l["request"]["body"], Value::Null);
        assert_eq!(l["request"]["bytes"], 6);
        assert_eq!(l["response"]["skipped"], "content_type");
        assert_eq!(p.metric("body_logger.skipped_content_type"), Some(2));
    }

    #[test]
    fn empty_bodies_and_header_only_streams() {
        let (p, mut w) = make("{}");
        exchange(
            &mut w,
            (&[(":method", "GET"), (":path", "/"), ("content-type", "application/json")], b""),
            (&[(":status", "204"), ("content-type", "application/json")], b""),
            1,
        );
        let l = &lines(&p)[0];
        assert_eq!(l["request"]["body"], "");
        assert_eq!(l["request"]["complete"], true);
        assert_eq!(l["response"]["complete"], true);
        assert_eq!(l["status"], 204);
        assert_eq!(p.metric("body_logger.skipped_content_type"), Some(0));
    }

    #[test]
    fn match_rules_paths_and_methods() {
        for (method, path, logged) in
            [("POST", "/api/x", true), ("post", "/api", true), ("GET", "/api/x", false), ("POST", "/web", false)]
        {
            let (p, mut w) = make(r#"{"paths":[{"prefix":"/api"}],"methods":["post"]}"#);
            exchange(&mut w, (&[(":method", method), (":path", path)], b""), (&[(":status", "200")], b""), 1);
            assert_eq!(lines(&p).len(), usize::from(logged), "{method} {path}");
        }
    }

    #[test]
    fn match_rules_on_the_route_name_read_it_once_and_only_when_tried() {
        let json = r#"{"paths":[{"prefix":"/api"},{"route_name":"admin"}]}"#;
        for (route, path, logged, reads) in [
            (Some("admin"), "/ADMIN/x", true, 1),
            (Some("admin"), "/api/x", true, 0),
            (Some("other"), "/ADMIN/x", false, 1),
            (Some(""), "/ADMIN/x", false, 1),
            (None, "/ADMIN/x", false, 1),
        ] {
            let (p, mut w) = make(json);
            let id = w.new_stream();
            if let Some(r) = route {
                w.set_property(id, &["xds", "route_name"], r.as_bytes());
            }
            let (action, calls) =
                p.count_host_calls(|| w.request_headers(id, &[(":method", "GET"), (":path", path)], true));
            assert_eq!(action, Action::Continue);
            assert_eq!(calls.get(shared::proxytest::HostCall::GetProperty), reads, "{route:?} {path}");
            w.response_headers(id, &[(":status", "200")], true);
            w.complete(id);
            assert_eq!(lines(&p).len(), usize::from(logged), "{route:?} {path}");
        }
    }

    #[test]
    fn sampling_by_request_id_is_deterministic() {
        let (_p, mut w) = make(r#"{"sample_rate":0.5,"sample_by_request_id":true}"#);
        let mut logged = 0;
        for i in 0..400 {
            let request_id = format!("id-{i}");
            let mut decide = || {
                let (id, _) = w.request(&[(":method", "GET"), (":path", "/"), ("x-request-id", &request_id)]);
                w.filter(id).record.is_some()
            };
            let first = decide();
            assert_eq!(first, decide(), "same id, same decision");
            logged += usize::from(first);
        }
        assert!((120..=280).contains(&logged), "about half: {logged}");
        // rate 0: nothing, counted.
        let (p, mut w) = make(r#"{"sample_rate":0}"#);
        exchange(&mut w, (&[(":method", "GET"), (":path", "/")], b""), (&[(":status", "200")], b""), 1);
        assert!(lines(&p).is_empty());
        assert_eq!(p.metric("body_logger.sampled_out"), Some(1));
    }

    #[test]
    fn random_sampling_spreads() {
        let (_p, mut w) = make(r#"{"sample_rate":0.3}"#);
        let mut logged = 0;
        for _ in 0..1000 {
            let (id, _) = w.request(&[(":method", "GET"), (":path", "/")]);
            logged += usize::from(w.filter(id).record.is_some());
        }
        assert!((200..=400).contains(&logged), "{logged}");
    }

    const ODD_HEADERS: &[(&str, &[u8])] =
        &[(":method", b"POST"), (":path", b"/\xff"), ("content-type", b"text/plain"), ("x-request-id", b"\xfe")];

    #[test]
    fn level_filter_state_and_odd_bytes() {
        let (p, mut w) = make(r#"{"log_level":"debug","filter_state_name":null}"#);
        p.set_log_level(LogLevel::Info);
        let id = w.new_stream();
        w.request_headers_bytes(id, ODD_HEADERS, false);
        w.request_body(id, b"a\xffb", true);
        w.complete(id);
        assert!(lines(&p).is_empty(), "debug is below the host's level");
        assert!(w.properties_written(id).is_empty());
        assert_eq!(p.metric("body_logger.logged"), Some(1));

        let (p, mut w) = make("{}");
        let id = w.new_stream();
        w.request_headers_bytes(id, ODD_HEADERS, false);
        w.request_body(id, b"a\xffb", true);
        w.complete(id);
        let l = &lines(&p)[0];
        assert_eq!(l["request"]["body"], "a\\xffb");
        assert_eq!(l["path"], "/\\xff");
        assert_eq!(l["request_id"], "\\xfe");
    }

    #[test]
    fn status_from_the_property_when_no_response_headers_were_seen() {
        let (p, mut w) = make("{}");
        let (id, _) = w.request(&[(":method", "GET"), (":path", "/")]);
        w.set_property(id, &["response", "code"], &503u64.to_le_bytes());
        w.complete(id);
        assert_eq!(lines(&p)[0]["status"], 503);
    }

    #[test]
    fn unselected_streams_log_nothing() {
        let (p, mut w) = make("{}");
        let id = w.new_stream();
        w.complete(id); // no request headers seen (e.g. a local reply before this filter)
        assert!(p.logs().iter().all(|(_, m)| !m.starts_with('{')));
        assert_eq!(p.metric("body_logger.logged"), Some(0));
    }

    /// One gRPC message: flag, big-endian length, bytes.
    fn grpc_frame(flag: u8, message: &[u8]) -> Vec<u8> {
        let mut out = vec![flag];
        out.extend_from_slice(&(message.len() as u32).to_be_bytes());
        out.extend_from_slice(message);
        out
    }

    const GRPC_REQ: &[(&str, &str)] =
        &[(":method", "POST"), (":path", "/e2e.Echo/Unary"), ("content-type", "application/grpc"), ("te", "trailers")];
    const GRPC_RESP: &[(&str, &str)] = &[(":status", "200"), ("content-type", "application/grpc+proto")];
    /// Protobuf-ish bytes around text a text scanner would log (and not redact).
    const MARKER: &[u8] = b"\x0a\x0cmarker-12345\x10\x07";

    /// A unary call: request and response framing summarised at any chunking, the messages
    /// never in the line, end of stream on the response trailers. Control: with `grpc_frames`
    /// off and `application/*` listed, the same frames are logged as text.
    #[test]
    fn grpc_framing_is_summarised_never_logged() {
        let request = grpc_frame(0, MARKER);
        let response = [grpc_frame(0, MARKER), grpc_frame(1, b"zz")].concat();
        for chunk in 1..=response.len() {
            let (p, mut w) = make(r#"{"content_types":["application/*"]}"#);
            let id = w.new_stream();
            w.request_headers(id, GRPC_REQ, false);
            for piece in request.chunks(chunk) {
                w.request_body(id, piece, false);
            }
            w.request_body(id, &[], true);
            w.response_headers(id, GRPC_RESP, false);
            let pieces: Vec<&[u8]> = response.chunks(chunk).collect();
            for piece in pieces {
                w.response_body(id, piece, false);
            }
            w.response_trailers(id, &[("grpc-status", "0")]);
            w.complete(id);
            let l = &lines(&p)[0];
            let want_req = serde_json::json!({"messages":1,"message_bytes":MARKER.len(),"compressed":0,
                "max_message_bytes":MARKER.len(),"partial":false,"invalid":false});
            assert_eq!(l["request"]["grpc"], want_req, "chunk {chunk}");
            let want_resp = serde_json::json!({"messages":2,"message_bytes":MARKER.len() + 2,"compressed":1,
                "max_message_bytes":MARKER.len(),"partial":false,"invalid":false});
            assert_eq!(l["response"]["grpc"], want_resp, "chunk {chunk}");
            assert_eq!(
                (l["response"]["complete"].as_bool(), l["response"]["bytes"].as_u64()),
                (Some(true), Some(response.len() as u64))
            );
            assert_eq!(l["response"]["body"], Value::Null);
            assert!(l["response"].get("skipped").is_none());
            assert!(!l.to_string().contains("marker"), "{l}");
        }
        let (p, mut w) = make(r#"{"content_types":["application/*"],"grpc_frames":false}"#);
        exchange(&mut w, (GRPC_REQ, &request), (GRPC_RESP, &response), 4);
        let l = &lines(&p)[0];
        assert!(l["request"]["body"].as_str().unwrap().contains("marker-12345"), "{l}");
        assert!(l["request"].get("grpc").is_none());
        // And by default (grpc_frames on, application/grpc not in content_types): summarised too.
        let (p, mut w) = make("{}");
        exchange(&mut w, (GRPC_REQ, &request), (GRPC_RESP, &response), 4);
        assert_eq!(lines(&p)[0]["response"]["grpc"]["messages"], 2);
    }

    /// Without trailers the response is not complete: end of stream came on the trailers above.
    #[test]
    fn grpc_stream_cut_inside_a_frame_is_partial_and_incomplete() {
        let (p, mut w) = make("{}");
        let response = [grpc_frame(0, b"first"), grpc_frame(0, b"second")].concat();
        let id = w.new_stream();
        w.request_headers(id, GRPC_REQ, false);
        w.request_body(id, &grpc_frame(0, b"q"), true);
        w.response_headers(id, GRPC_RESP, false);
        w.response_body(id, &response[..response.len() - 2], false);
        w.complete(id); // reset: no more body, no trailers
        let g = &lines(&p)[0]["response"];
        assert_eq!((g["grpc"]["messages"].as_u64(), g["grpc"]["partial"].as_bool()), (Some(1), Some(true)));
        assert_eq!(g["complete"], false);
    }

    /// A prefix declaring more than `max_bytes` (here 4 GiB - 1 against 64) reserves nothing and
    /// keeps nothing: the message is counted down as its bytes pass.
    #[test]
    fn grpc_length_prefix_beyond_the_limit_holds_nothing() {
        let (p, mut w) = make(r#"{"max_bytes":64,"capture_budget_bytes":64}"#);
        let id = w.new_stream();
        w.request_headers(id, GRPC_REQ, false);
        assert_eq!(w.root().budget.used(), 0, "no capture reserved for gRPC");
        let mut body = vec![0, 0xff, 0xff, 0xff, 0xff];
        body.extend_from_slice(&[b'x'; 1000]);
        w.request_body(id, &body, false);
        w.request_body(id, &[b'y'; 3000], false);
        // A second stream still gets the whole budget for a JSON capture.
        let other = w.new_stream();
        w.request_headers(other, JSON_REQ, false);
        assert_eq!(w.root().budget.used(), 64);
        w.complete(other);
        w.complete(id);
        let l = lines(&p);
        let g = &l.iter().find(|l| l["path"] == "/e2e.Echo/Unary").unwrap()["request"];
        assert_eq!(g["grpc"]["max_message_bytes"], u32::MAX);
        assert_eq!((g["grpc"]["messages"].as_u64(), g["grpc"]["partial"].as_bool()), (Some(0), Some(true)));
        assert_eq!(g["bytes"], 4005);
        assert_eq!(w.root().budget.used(), 0);
    }

    /// Many small messages in one chunk larger than a read window; a bad flag stops counting.
    #[test]
    fn grpc_many_messages_in_one_chunk_and_a_bad_flag() {
        let (p, mut w) = make("{}");
        let body: Vec<u8> = (0..3000u32).flat_map(|i| grpc_frame(0, &i.to_be_bytes()[2..])).collect();
        assert!(body.len() > 3 * crate::grpc::WINDOW);
        exchange(
            &mut w,
            (GRPC_REQ, &body),
            (GRPC_RESP, &[grpc_frame(0, b"ok"), vec![0x80, 0, 0, 0, 0]].concat()),
            body.len(),
        );
        let l = &lines(&p)[0];
        assert_eq!(
            (l["request"]["grpc"]["messages"].as_u64(), l["request"]["grpc"]["message_bytes"].as_u64()),
            (Some(3000), Some(6000))
        );
        assert_eq!(
            (l["response"]["grpc"]["messages"].as_u64(), l["response"]["grpc"]["invalid"].as_bool()),
            (Some(1), Some(true))
        );
    }

    /// A request whose `content-type` names gRPC anywhere — in a second header (kept apart, or
    /// joined by Envoy into `text/plain,application/grpc`), in any case, with parameters — is
    /// summarised, never captured: the frames may reach a gRPC server, and a text scanner cannot
    /// redact them. Control: `text/plain` alone captures the same bytes.
    #[test]
    fn grpc_named_in_any_content_type_value_is_never_logged() {
        let body = grpc_frame(0, MARKER);
        let cases: &[&[(&str, &str)]] = &[
            &[("content-type", "text/plain,application/grpc")],
            &[("content-type", "text/plain, Application/GRPC+proto")],
            &[("content-type", "text/plain"), ("content-type", "application/grpc")],
            &[("content-type", "APPLICATION/GRPC ; charset=utf-8")],
        ];
        for ct in cases {
            let (p, mut w) = make("{}");
            let req: Vec<(&str, &str)> =
                [(":method", "POST"), (":path", "/s.S/M")].into_iter().chain(ct.iter().copied()).collect();
            exchange(&mut w, (&req, &body), (GRPC_RESP, &body), 3);
            let l = &lines(&p)[0];
            assert!(!l.to_string().contains("marker"), "{ct:?}: {l}");
            assert_eq!(l["request"]["grpc"]["messages"], 1, "{ct:?}: {l}");
        }
        let (p, mut w) = make("{}");
        let req: &[(&str, &str)] = &[(":method", "POST"), (":path", "/s.S/M"), ("content-type", "text/plain")];
        exchange(&mut w, (req, &body), (GRPC_RESP, &body), 3);
        assert!(lines(&p)[0]["request"]["body"].as_str().unwrap().contains("marker-12345"));
    }

    /// gRPC-Web carries the same binary messages: never captured while `grpc_frames` is on,
    /// even under `application/*` (`"skipped": "content_type"`, no summary: its trailer frames
    /// and base64 `-text` form are not walked). Control: `grpc_frames` off logs them as text.
    #[test]
    fn grpc_web_is_never_captured() {
        let body = grpc_frame(0, MARKER);
        for ct in [
            "application/grpc-web",
            "application/grpc-web+proto",
            "Application/GRPC-Web-Text; x=y",
            "text/plain,application/grpc-web",
        ] {
            let (p, mut w) = make(r#"{"content_types":["application/*","text/*"]}"#);
            let req: &[(&str, &str)] = &[(":method", "POST"), (":path", "/s.S/M"), ("content-type", ct)];
            let resp: &[(&str, &str)] = &[(":status", "200"), ("content-type", ct)];
            exchange(&mut w, (req, &body), (resp, &body), 3);
            let l = &lines(&p)[0];
            assert!(!l.to_string().contains("marker"), "{ct}: {l}");
            for d in ["request", "response"] {
                assert_eq!((l[d]["skipped"].as_str(), l[d].get("grpc")), (Some("content_type"), None), "{ct} {d}: {l}");
            }
        }
        let (p, mut w) = make(r#"{"content_types":["application/*"],"grpc_frames":false}"#);
        let req: &[(&str, &str)] =
            &[(":method", "POST"), (":path", "/s.S/M"), ("content-type", "application/grpc-web")];
        exchange(&mut w, (req, &body), (GRPC_RESP, &body), 3);
        assert!(lines(&p)[0]["request"]["body"].as_str().unwrap().contains("marker-12345"));
    }

    /// A trailers-only answer (`grpc-status` in the response headers, end of stream there):
    /// complete, zero messages, not partial. Control: a response cut inside its one message.
    #[test]
    fn grpc_trailers_only_answer_is_complete_and_empty() {
        let (p, mut w) = make("{}");
        let resp: &[(&str, &str)] = &[(":status", "200"), ("content-type", "application/grpc"), ("grpc-status", "12")];
        exchange(&mut w, (GRPC_REQ, &grpc_frame(0, b"q")), (resp, b""), 1);
        let want = serde_json::json!({"messages":0,"message_bytes":0,"compressed":0,
            "max_message_bytes":0,"partial":false,"invalid":false});
        let r = &lines(&p)[0]["response"];
        assert_eq!((&r["grpc"], r["complete"].as_bool(), r["bytes"].as_u64()), (&want, Some(true), Some(0)));
        let (p, mut w) = make("{}");
        let id = exchange_open(&mut w, (GRPC_REQ, b"\0\0\0\0\x01"), (resp, &[0, 0, 0, 0, 9, 1]), 1);
        w.complete(id);
        let l = &lines(&p)[0];
        assert_eq!(
            (l["request"]["grpc"]["partial"].as_bool(), l["response"]["grpc"]["partial"].as_bool()),
            (Some(true), Some(true))
        );
    }

    /// `request_body: false` turns the request's summary off too (as the README says).
    /// Control: the response, still on, has its summary.
    #[test]
    fn grpc_direction_turned_off_has_no_summary() {
        let (p, mut w) = make(r#"{"request_body":false}"#);
        exchange(&mut w, (GRPC_REQ, &grpc_frame(0, MARKER)), (GRPC_RESP, &grpc_frame(0, MARKER)), 4);
        let l = &lines(&p)[0];
        assert_eq!((l["request"].get("grpc"), l["request"]["skipped"].as_str()), (None, Some("disabled")));
        assert_eq!(l["response"]["grpc"]["messages"], 1);
        assert!(!l.to_string().contains("marker"), "{l}");
    }
}
