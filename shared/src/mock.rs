//! A native [`Host`] for unit tests, in the spirit of the Go SDK's `proxytest`: set headers,
//! bodies, properties and the clock; drive a filter's callbacks; read back what it did
//! (headers, local replies, logs, metrics, shared data, HTTP calls).
//!
//! Shared data follows Envoy's semantics: a CAS token of `None`/`0` writes unconditionally, a
//! stale token fails with `CasMismatch`, and a key's first creation is not CAS-protected.

use crate::host::{BodyKind, HeaderMapKind, Host, HostError, LogLevel, MetricKind};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalResponse {
    pub status: u32,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpCall {
    pub token: u32,
    pub cluster: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
    pub timeout: Duration,
}

#[derive(Default)]
struct State {
    now: Option<SystemTime>,
    log_level: Option<LogLevel>,
    maps: HashMap<HeaderMapKind, Vec<(String, Vec<u8>)>>,
    bodies: HashMap<BodyKind, Vec<u8>>,
    properties: HashMap<Vec<String>, Vec<u8>>,
    /// What the filter wrote through `Host::set_property`, in order.
    properties_written: Vec<(Vec<String>, Vec<u8>)>,
    logs: Vec<(LogLevel, String)>,
    local_response: Option<LocalResponse>,
    resumed_requests: usize,
    resumed_responses: usize,
    shared: HashMap<String, (Vec<u8>, u32)>,
    next_cas: u32,
    http_calls: Vec<HttpCall>,
    fail_http_calls: bool,
    tick_period: Option<Duration>,
    metric_names: Vec<(String, MetricKind)>,
    metric_values: BTreeMap<u32, i64>,
    fail_header_writes: bool,
    effective_context: Option<u32>,
    /// Streams that no longer exist: `set_effective_context` to them fails.
    gone_contexts: Vec<u32>,
    resumed_contexts: Vec<Option<u32>>,
    context_replies: Vec<(u32, LocalResponse)>,
}

#[derive(Default)]
pub struct MockHost {
    state: RefCell<State>,
}

impl MockHost {
    pub fn new() -> Self {
        Self::default()
    }

    // ---- time -------------------------------------------------------------------------------
    pub fn set_now(&self, t: SystemTime) {
        self.state.borrow_mut().now = Some(t);
    }
    pub fn advance(&self, d: Duration) {
        let now = self.now();
        self.set_now(now + d);
    }
    pub fn set_log_level(&self, level: LogLevel) {
        self.state.borrow_mut().log_level = Some(level);
    }

    // ---- headers ----------------------------------------------------------------------------
    /// Replace a whole header map (names are lowercased, as Envoy presents them).
    pub fn set_headers(&self, map: HeaderMapKind, pairs: &[(&str, &str)]) {
        let v = pairs.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.as_bytes().to_vec())).collect();
        self.state.borrow_mut().maps.insert(map, v);
    }
    pub fn set_headers_bytes(&self, map: HeaderMapKind, pairs: &[(&str, &[u8])]) {
        let v = pairs.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.to_vec())).collect();
        self.state.borrow_mut().maps.insert(map, v);
    }
    pub fn set_request_headers(&self, pairs: &[(&str, &str)]) {
        self.set_headers(HeaderMapKind::RequestHeaders, pairs);
    }
    pub fn set_response_headers(&self, pairs: &[(&str, &str)]) {
        self.set_headers(HeaderMapKind::ResponseHeaders, pairs);
    }
    /// Every value of `name`, lossily decoded.
    pub fn header_values(&self, map: HeaderMapKind, name: &str) -> Vec<String> {
        let name = name.to_ascii_lowercase();
        let st = self.state.borrow();
        st.maps
            .get(&map)
            .map(|v| {
                v.iter().filter(|(k, _)| *k == name).map(|(_, v)| String::from_utf8_lossy(v).into_owned()).collect()
            })
            .unwrap_or_default()
    }
    pub fn response_header_values(&self, name: &str) -> Vec<String> {
        self.header_values(HeaderMapKind::ResponseHeaders, name)
    }
    /// Make every header write fail, to test a filter's answer to host errors.
    pub fn fail_header_writes(&self, fail: bool) {
        self.state.borrow_mut().fail_header_writes = fail;
    }

    // ---- bodies, properties -------------------------------------------------------------------
    pub fn set_body(&self, body: BodyKind, bytes: &[u8]) {
        self.state.borrow_mut().bodies.insert(body, bytes.to_vec());
    }
    pub fn set_property(&self, path: &[&str], value: &[u8]) {
        let key = path.iter().map(|s| s.to_string()).collect();
        self.state.borrow_mut().properties.insert(key, value.to_vec());
    }

    // ---- what the filter did -------------------------------------------------------------------
    pub fn logs(&self) -> Vec<(LogLevel, String)> {
        self.state.borrow().logs.clone()
    }
    pub fn local_response(&self) -> Option<LocalResponse> {
        self.state.borrow().local_response.clone()
    }
    /// Forget the local reply, to send another request through the same host (and its shared
    /// data).
    pub fn clear_local_response(&self) {
        self.state.borrow_mut().local_response = None;
    }
    pub fn resumed_requests(&self) -> usize {
        self.state.borrow().resumed_requests
    }
    pub fn resumed_responses(&self) -> usize {
        self.state.borrow().resumed_responses
    }
    /// The effective context of every `resume_request` (`None`: the stream's own callback).
    pub fn resumed_contexts(&self) -> Vec<Option<u32>> {
        self.state.borrow().resumed_contexts.clone()
    }
    /// Local replies sent after `set_effective_context(id)`, as `(id, reply)`.
    pub fn context_replies(&self) -> Vec<(u32, LocalResponse)> {
        self.state.borrow().context_replies.clone()
    }
    /// The context set by the last `set_effective_context`.
    pub fn effective_context(&self) -> Option<u32> {
        self.state.borrow().effective_context
    }
    /// Back in a stream's own callback: later calls address that stream again.
    pub fn clear_effective_context(&self) {
        self.state.borrow_mut().effective_context = None;
    }
    /// The stream `context_id` ended: `set_effective_context` to it fails from now on.
    pub fn end_context(&self, context_id: u32) {
        self.state.borrow_mut().gone_contexts.push(context_id);
    }
    pub fn http_calls(&self) -> Vec<HttpCall> {
        self.state.borrow().http_calls.clone()
    }
    pub fn fail_http_calls(&self, fail: bool) {
        self.state.borrow_mut().fail_http_calls = fail;
    }
    /// Every `Host::set_property` the filter made, in order (path, value).
    pub fn properties_written(&self) -> Vec<(Vec<String>, Vec<u8>)> {
        self.state.borrow().properties_written.clone()
    }
    pub fn tick_period(&self) -> Option<Duration> {
        self.state.borrow().tick_period
    }
    /// Current value of the metric with that full name; `None` if never defined.
    pub fn metric(&self, name: &str) -> Option<i64> {
        let st = self.state.borrow();
        let id = st.metric_names.iter().position(|(n, _)| n == name)?;
        Some(st.metric_values.get(&(id as u32)).copied().unwrap_or(0))
    }
}

impl Host for MockHost {
    fn now(&self) -> SystemTime {
        // A fixed, recognisable default instant so tests are deterministic.
        self.state.borrow().now.unwrap_or(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000))
    }

    fn log(&self, level: LogLevel, message: &str) {
        self.state.borrow_mut().logs.push((level, message.to_string()));
    }

    fn log_level(&self) -> LogLevel {
        self.state.borrow().log_level.unwrap_or(LogLevel::Trace)
    }

    fn header(&self, map: HeaderMapKind, name: &str) -> Option<Vec<u8>> {
        let name = name.to_ascii_lowercase();
        let st = self.state.borrow();
        st.maps.get(&map)?.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone())
    }

    fn headers(&self, map: HeaderMapKind) -> Vec<(String, Vec<u8>)> {
        self.state.borrow().maps.get(&map).cloned().unwrap_or_default()
    }

    fn set_header(&self, map: HeaderMapKind, name: &str, value: &[u8]) -> Result<(), HostError> {
        let mut st = self.state.borrow_mut();
        if st.fail_header_writes {
            return Err(HostError::BadArgument);
        }
        let name = name.to_ascii_lowercase();
        let entries = st.maps.entry(map).or_default();
        entries.retain(|(k, _)| *k != name);
        entries.push((name, value.to_vec()));
        Ok(())
    }

    fn add_header(&self, map: HeaderMapKind, name: &str, value: &[u8]) -> Result<(), HostError> {
        let mut st = self.state.borrow_mut();
        if st.fail_header_writes {
            return Err(HostError::BadArgument);
        }
        st.maps.entry(map).or_default().push((name.to_ascii_lowercase(), value.to_vec()));
        Ok(())
    }

    fn remove_header(&self, map: HeaderMapKind, name: &str) -> Result<(), HostError> {
        let mut st = self.state.borrow_mut();
        if st.fail_header_writes {
            return Err(HostError::BadArgument);
        }
        let name = name.to_ascii_lowercase();
        st.maps.entry(map).or_default().retain(|(k, _)| *k != name);
        Ok(())
    }

    fn body(&self, body: BodyKind, start: usize, max_size: usize) -> Option<Vec<u8>> {
        let st = self.state.borrow();
        let b = st.bodies.get(&body)?;
        let start = start.min(b.len());
        let end = start.saturating_add(max_size).min(b.len());
        Some(b[start..end].to_vec())
    }

    fn send_local_response(&self, status: u32, headers: &[(&str, &str)], body: &[u8]) -> Result<(), HostError> {
        let mut st = self.state.borrow_mut();
        if let Some(id) = st.effective_context {
            if st.context_replies.iter().any(|(c, _)| *c == id) {
                return Err(HostError::BadArgument);
            }
            let reply = LocalResponse {
                status,
                headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                body: body.to_vec(),
            };
            st.context_replies.push((id, reply));
            return Ok(());
        }
        if st.local_response.is_some() {
            // Envoy refuses a second local reply for the same stream.
            return Err(HostError::BadArgument);
        }
        st.local_response = Some(LocalResponse {
            status,
            headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            body: body.to_vec(),
        });
        Ok(())
    }

    fn resume_request(&self) -> Result<(), HostError> {
        let mut st = self.state.borrow_mut();
        st.resumed_requests += 1;
        let ctx = st.effective_context;
        st.resumed_contexts.push(ctx);
        Ok(())
    }

    fn set_effective_context(&self, context_id: u32) -> Result<(), HostError> {
        let mut st = self.state.borrow_mut();
        if st.gone_contexts.contains(&context_id) {
            return Err(HostError::NotFound);
        }
        st.effective_context = Some(context_id);
        Ok(())
    }

    fn resume_response(&self) -> Result<(), HostError> {
        self.state.borrow_mut().resumed_responses += 1;
        Ok(())
    }

    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        let key: Vec<String> = path.iter().map(|s| s.to_string()).collect();
        self.state.borrow().properties.get(&key).cloned()
    }

    fn set_property(&self, path: &[&str], value: &[u8]) -> Result<(), HostError> {
        let key: Vec<String> = path.iter().map(|s| s.to_string()).collect();
        self.state.borrow_mut().properties_written.push((key, value.to_vec()));
        Ok(())
    }

    fn shared_data(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        match self.state.borrow().shared.get(key) {
            Some((v, cas)) => (Some(v.clone()), Some(*cas)),
            None => (None, None),
        }
    }

    fn set_shared_data(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), HostError> {
        let mut st = self.state.borrow_mut();
        if let (Some(cas), Some((_, current))) = (cas.filter(|c| *c != 0), st.shared.get(key)) {
            if cas != *current {
                return Err(HostError::CasMismatch);
            }
        }
        st.next_cas = st.next_cas.wrapping_add(1).max(1);
        let next = st.next_cas;
        st.shared.insert(key.to_string(), (value.to_vec(), next));
        Ok(())
    }

    fn dispatch_http_call(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<u32, HostError> {
        let mut st = self.state.borrow_mut();
        if st.fail_http_calls {
            return Err(HostError::BadArgument);
        }
        let token = st.http_calls.len() as u32 + 1;
        st.http_calls.push(HttpCall {
            token,
            cluster: cluster.to_string(),
            headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            body: body.map(<[u8]>::to_vec),
            timeout,
        });
        Ok(token)
    }

    fn set_tick_period(&self, period: Duration) -> Result<(), HostError> {
        self.state.borrow_mut().tick_period = Some(period);
        Ok(())
    }

    fn define_metric(&self, kind: MetricKind, name: &str) -> Result<u32, HostError> {
        let mut st = self.state.borrow_mut();
        if let Some(id) = st.metric_names.iter().position(|(n, _)| n == name) {
            return Ok(id as u32);
        }
        st.metric_names.push((name.to_string(), kind));
        Ok(st.metric_names.len() as u32 - 1)
    }

    fn increment_metric(&self, id: u32, delta: i64) {
        *self.state.borrow_mut().metric_values.entry(id).or_insert(0) += delta;
    }

    fn record_metric(&self, id: u32, value: u64) {
        self.state.borrow_mut().metric_values.insert(id, value as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::HostExt;

    #[test]
    fn shared_data_cas_semantics_match_envoy() {
        let h = MockHost::new();
        assert_eq!(h.shared_data("k"), (None, None));
        // First creation is not CAS-protected, whatever token is passed.
        h.set_shared_data("k", b"a", Some(42)).unwrap();
        let (v, cas) = h.shared_data("k");
        assert_eq!(v.as_deref(), Some(&b"a"[..]));
        let cas = cas.unwrap();
        h.set_shared_data("k", b"b", Some(cas)).unwrap();
        assert_eq!(h.set_shared_data("k", b"c", Some(cas)), Err(HostError::CasMismatch));
        // None and 0 write unconditionally.
        h.set_shared_data("k", b"d", None).unwrap();
        h.set_shared_data("k", b"e", Some(0)).unwrap();
        assert_eq!(h.shared_data("k").0.as_deref(), Some(&b"e"[..]));
    }

    #[test]
    fn headers_are_case_insensitive_and_bytes_safe() {
        let h = MockHost::new();
        h.set_headers_bytes(HeaderMapKind::ResponseHeaders, &[("Server", b"\xffodd")]);
        assert_eq!(h.header(HeaderMapKind::ResponseHeaders, "SERVER").unwrap(), b"\xffodd");
        assert_eq!(h.response_header("server"), None, "non-UTF-8 is not text");
        h.add_header(HeaderMapKind::ResponseHeaders, "x", b"1").unwrap();
        h.add_header(HeaderMapKind::ResponseHeaders, "X", b"2").unwrap();
        assert_eq!(h.response_header_values("x"), vec!["1", "2"]);
        h.set_header(HeaderMapKind::ResponseHeaders, "x", b"3").unwrap();
        assert_eq!(h.response_header_values("x"), vec!["3"]);
    }

    #[test]
    fn written_properties_are_recorded() {
        let h = MockHost::new();
        let host: &dyn Host = &h;
        host.set_property(&["body_log"], b"{}").unwrap();
        assert_eq!(h.properties_written(), vec![(vec!["body_log".to_string()], b"{}".to_vec())]);
        // Reading inputs is separate from what the filter wrote.
        assert_eq!(host.property(&["body_log"]), None);
    }

    #[test]
    fn clock_is_settable() {
        let h = MockHost::new();
        let t0 = h.now();
        h.advance(Duration::from_secs(5));
        assert_eq!(h.now().duration_since(t0).unwrap(), Duration::from_secs(5));
    }
}
