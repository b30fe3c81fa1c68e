//! A bare [`Host`] for code that takes a `&dyn Host` directly (shared-data helpers, fetch and
//! lease logic, a configuration refused before any stream): one stream context of its own
//! emulated worker, with setters and readers for that context. To drive a filter's requests,
//! use [`crate::proxytest::Worker`], which keeps every stream's state apart.

use crate::host::{BodyKind, HeaderMapKind, Host, HostWrapper, LogLevel};
use crate::proxytest::{ContextHost, HttpCall, Proxy};
use std::time::{Duration, SystemTime};

pub use crate::proxytest::LocalResponse;

pub struct MockHost {
    proxy: Proxy,
    host: ContextHost,
}

impl Default for MockHost {
    fn default() -> Self {
        MockHost::new()
    }
}

impl MockHost {
    /// A host on a proxy of its own.
    pub fn new() -> MockHost {
        MockHost::on(&Proxy::new())
    }

    /// A host of another worker on `proxy` (its shared data, clock and metrics).
    pub fn on(proxy: &Proxy) -> MockHost {
        MockHost { proxy: proxy.clone(), host: proxy.host() }
    }

    pub fn proxy(&self) -> &Proxy {
        &self.proxy
    }

    // ---- time, logs, metrics -------------------------------------------------------------------
    pub fn set_now(&self, t: SystemTime) {
        self.proxy.set_now(t);
    }
    pub fn advance(&self, d: Duration) {
        self.proxy.advance(d);
    }
    pub fn set_log_level(&self, level: LogLevel) {
        self.proxy.set_log_level(level);
    }
    pub fn logs(&self) -> Vec<(LogLevel, String)> {
        self.proxy.logs()
    }
    /// Current value of the metric with that full name; `None` if never defined.
    pub fn metric(&self, name: &str) -> Option<i64> {
        self.proxy.metric(name)
    }

    // ---- this context's headers, bodies, properties ----------------------------------------
    /// Replace a whole header map (names are lowercased, as Envoy presents them).
    pub fn set_headers(&self, map: HeaderMapKind, pairs: &[(&str, &str)]) {
        let v = pairs.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.as_bytes().to_vec())).collect();
        self.host.own(|c| c.maps.insert(map, v));
    }
    pub fn set_headers_bytes(&self, map: HeaderMapKind, pairs: &[(&str, &[u8])]) {
        let v = pairs.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.to_vec())).collect();
        self.host.own(|c| c.maps.insert(map, v));
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
        self.host.own(|c| {
            c.maps
                .get(&map)
                .map(|v| {
                    v.iter().filter(|(k, _)| *k == name).map(|(_, v)| String::from_utf8_lossy(v).into_owned()).collect()
                })
                .unwrap_or_default()
        })
    }
    pub fn response_header_values(&self, name: &str) -> Vec<String> {
        self.header_values(HeaderMapKind::ResponseHeaders, name)
    }
    /// Make every header write fail, to test a filter's answer to host errors.
    pub fn fail_header_writes(&self, fail: bool) {
        self.host.fail_header_writes(fail);
    }
    pub fn set_body(&self, body: BodyKind, bytes: &[u8]) {
        match body {
            BodyKind::Request => self.host.own(|c| c.request_body = bytes.to_vec()),
            BodyKind::Response => self.host.own(|c| c.response_body = bytes.to_vec()),
            // Callout answers belong to a worker: use `proxytest::Worker::answer_http_call`.
            BodyKind::HttpCallResponse | BodyKind::GrpcReceive => {}
        }
    }
    pub fn set_property(&self, path: &[&str], value: &[u8]) {
        let key = path.iter().map(|s| s.to_string()).collect();
        self.host.own(|c| c.properties.insert(key, value.to_vec()));
    }

    // ---- what the code did -------------------------------------------------------------------
    pub fn local_response(&self) -> Option<LocalResponse> {
        self.host.own(|c| c.local_reply.clone())
    }
    /// Every `Host::set_property` made, in order (path, value).
    pub fn properties_written(&self) -> Vec<(Vec<String>, Vec<u8>)> {
        self.host.own(|c| c.properties_written.clone())
    }
    pub fn http_calls(&self) -> Vec<HttpCall> {
        self.host.http_calls()
    }
    pub fn fail_http_calls(&self, fail: bool) {
        self.host.fail_http_calls(fail);
    }
    pub fn tick_period(&self) -> Option<Duration> {
        self.host.tick_period()
    }
}

impl HostWrapper for MockHost {
    fn inner(&self) -> &dyn Host {
        &self.host
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::{HostError, HostExt};

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
        // An empty value reads back as no value, with its token (as Envoy hands it over).
        h.set_shared_data("k", b"", None).unwrap();
        let (v, cas) = h.shared_data("k");
        assert_eq!(v, None);
        assert!(cas.is_some());
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

    #[test]
    fn a_second_local_reply_is_refused() {
        let h = MockHost::new();
        h.send_local_response(401, &[], b"no").unwrap();
        assert_eq!(h.send_local_response(500, &[], b"again"), Err(HostError::BadArgument));
        assert_eq!(h.local_response().unwrap().status, 401);
    }
}
