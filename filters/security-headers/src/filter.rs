//! The request path, top to bottom: remember the policy and scheme at request headers, apply
//! them at response headers. Everything is precompiled in [`Compiled`].

use crate::config::{AppendAction, Compiled, Config, Policy};
use shared::config::ConfigError;
use shared::host::{HeaderMapKind::ResponseHeaders, HostExt};
use shared::matching::RouteName;
use shared::stats::Counter;
use shared::{Action, Host, HttpFilter, LogLevel, RootFilter};
use std::rc::Rc;

/// Stat names, as Envoy shows them (under `wasmcustom.`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    /// Responses this filter processed.
    pub responses_decorated: Counter,
    /// Header values written (added, or overwritten under OVERWRITE_IF_EXISTS_OR_ADD).
    pub headers_set: Counter,
    /// Headers left as the upstream set them (ADD_IF_ABSENT found a value).
    pub headers_kept: Counter,
    /// Fingerprinting headers removed.
    pub headers_removed: Counter,
    /// Header writes the host refused.
    pub host_errors: Counter,
}

impl Stats {
    fn define(host: &dyn Host) -> Self {
        let c = |n: &str| Counter::define(host, &format!("security_headers.{n}"));
        Stats {
            responses_decorated: c("responses_decorated"),
            headers_set: c("headers_set"),
            headers_kept: c("headers_kept"),
            headers_removed: c("headers_removed"),
            host_errors: c("host_errors"),
        }
    }
}

#[derive(Default)]
pub struct SecurityHeadersRoot {
    config: Option<Rc<Compiled>>,
    stats: Stats,
}

impl RootFilter for SecurityHeadersRoot {
    type Http = SecurityHeaders;
    const NAME: &'static str = "security-headers";

    fn configure(&mut self, host: &dyn Host, raw_config: Option<&[u8]>) -> Result<(), ConfigError> {
        let compiled = shared::config::load(raw_config, Config::compile)?;
        self.stats = Stats::define(host);
        self.config = Some(Rc::new(compiled));
        Ok(())
    }

    fn new_http_filter(&self, _context_id: u32) -> Option<SecurityHeaders> {
        let config = self.config.clone()?;
        Some(SecurityHeaders { config, stats: self.stats, policy_index: None, https: false })
    }
}

pub struct SecurityHeaders {
    config: Rc<Compiled>,
    stats: Stats,
    /// Index into `config.overrides`; `None` is the default policy.
    policy_index: Option<usize>,
    https: bool,
}

impl SecurityHeaders {
    fn policy(&self) -> &Policy {
        match self.policy_index.and_then(|i| self.config.overrides.get(i)) {
            Some((_, p)) => p,
            None => &self.config.default_policy,
        }
    }

    /// Did the client reach us over HTTPS? Not `:scheme`: for HTTP/1 Envoy copies it from
    /// the client's own `x-forwarded-proto` unless `use_remote_address` is set, so any client
    /// could claim HTTPS. The downstream connection's TLS state cannot be forged; a trusted
    /// `x-forwarded-proto` replaces it where TLS ends before Envoy (load balancer, mesh gateway).
    fn request_is_https(&self, host: &dyn Host) -> bool {
        if self.config.trust_x_forwarded_proto {
            if let Some(proto) = host.request_header("x-forwarded-proto") {
                // Leftmost value: the protocol the first proxy saw from the client.
                return proto.split(',').next().is_some_and(|p| p.trim().eq_ignore_ascii_case("https"));
            }
        }
        downstream_is_tls(host)
    }
}

/// Envoy's `connection.tls_version` attribute is set only on TLS connections.
pub fn downstream_is_tls(host: &dyn Host) -> bool {
    host.property(&["connection", "tls_version"]).is_some_and(|v| !v.is_empty())
}

impl HttpFilter for SecurityHeaders {
    fn on_request_headers(&mut self, host: &dyn Host, _end_of_stream: bool) -> Action {
        self.https = self.request_is_https(host);
        // Without overrides the path decides nothing: not read. A path that is not UTF-8
        // cannot match a configured override: default policy.
        if !self.config.overrides.is_empty() {
            let path = host.request_header(":path");
            self.policy_index = self.config.override_for(path.as_deref(), &RouteName::of(host));
        }
        Action::Continue
    }

    fn on_response_headers(&mut self, host: &dyn Host, _end_of_stream: bool) -> Action {
        let stats = self.stats;
        let (mut set, mut kept, mut removed, mut errors) = (0u64, 0u64, 0u64, 0u64);
        // One read of the whole map instead of one host call per header: host calls are the
        // cost of this filter (see README, "Performance"). Envoy's codecs only admit token
        // header names, lowercased.
        // With each name, whether the upstream gave it a value: a blank one (an unset template
        // variable) sets nothing a browser applies, so it counts as absent and ours replaces it.
        // Read borrowed from the host's buffer: no allocation per header.
        let raw = host.header_pairs(ResponseHeaders);
        let present = raw.pairs();
        let is_present = |name: &str| present.iter().any(|(p, _)| p.eq_ignore_ascii_case(name.as_bytes()));
        let has_value = |name: &str| {
            present
                .iter()
                .any(|(p, v)| p.eq_ignore_ascii_case(name.as_bytes()) && v.iter().any(|b| !b.is_ascii_whitespace()))
        };

        for name in self.config.remove.iter().filter(|n| is_present(n)) {
            match host.remove_header(ResponseHeaders, name) {
                Ok(()) => removed += 1,
                Err(_) => errors += 1,
            }
        }

        for op in &self.policy().set {
            if op.https_only && !self.https {
                continue;
            }
            let result = match (op.action, has_value(&op.name)) {
                (AppendAction::AddIfAbsent, true) => {
                    kept += 1;
                    continue;
                }
                // Absent: adding is the cheaper host operation and means the same.
                (_, false) if !is_present(&op.name) => host.add_header(ResponseHeaders, &op.name, op.value.as_bytes()),
                _ => host.set_header(ResponseHeaders, &op.name, op.value.as_bytes()),
            };
            match result {
                Ok(()) => set += 1,
                Err(_) => errors += 1,
            }
        }

        stats.responses_decorated.inc(host);
        stats.headers_set.add(host, set);
        stats.headers_kept.add(host, kept);
        stats.headers_removed.add(host, removed);
        if errors > 0 {
            stats.host_errors.add(host, errors);
            host.log(LogLevel::Warn, &format!("security-headers: the host refused {errors} header write(s)"));
        }
        Action::Continue
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::config::DEFAULT_HEADERS;
    use shared::mock::MockHost;
    use shared::proxytest::{Proxy, Worker};

    type W = Worker<SecurityHeadersRoot>;

    fn root(json: &str) -> (Proxy, W) {
        let p = Proxy::new();
        let w = p.worker(json);
        (p, w)
    }

    /// Run one request/response through a new stream; its id.
    fn exchange(w: &mut W, req: &[(&str, &str)], resp: &[(&str, &str)]) -> u32 {
        let (id, action) = w.request(req);
        assert_eq!(action, Action::Continue);
        assert_eq!(w.response_headers(id, resp, false), Action::Continue);
        id
    }

    const HTTP: &[(&str, &str)] = &[(":scheme", "http"), (":path", "/api"), (":method", "GET")];

    /// Every connection from now on is TLS.
    fn tls(p: &Proxy) {
        p.set_property(&["connection", "tls_version"], b"TLSv1.3");
    }

    #[test]
    fn defaults_on_https_include_hsts() {
        let (p, mut w) = root("");
        tls(&p);
        let id = exchange(&mut w, HTTP, &[(":status", "200")]);
        for (name, value) in DEFAULT_HEADERS {
            assert_eq!(w.response_header_values(id, name), vec![value.to_string()], "{name}");
        }
        assert_eq!(p.metric("security_headers.headers_set"), Some(DEFAULT_HEADERS.len() as i64));
        assert_eq!(p.metric("security_headers.responses_decorated"), Some(1));
    }

    #[test]
    fn no_hsts_on_plain_http_even_with_untrusted_forwarded_proto_or_scheme() {
        let (_p, mut w) = root("{}");
        // Envoy copies an untrusted x-forwarded-proto into :scheme on HTTP/1.
        let req = [(":scheme", "https"), (":path", "/"), ("x-forwarded-proto", "https")];
        let id = exchange(&mut w, &req, &[(":status", "200")]);
        assert!(w.response_header_values(id, "strict-transport-security").is_empty());
        assert_eq!(w.response_header_values(id, "x-frame-options"), vec!["DENY"]);
    }

    #[test]
    fn trusted_forwarded_proto_enables_hsts() {
        let (p, mut w) = root(r#"{"trust_x_forwarded_proto":true}"#);
        let mut req = HTTP.to_vec();
        req.push(("x-forwarded-proto", "HTTPS, http"));
        let id = exchange(&mut w, &req, &[(":status", "200")]);
        assert_eq!(w.response_header_values(id, "strict-transport-security").len(), 1);
        // Trusted x-forwarded-proto wins over the hop's own TLS (mesh mTLS behind a gateway
        // that received plain HTTP).
        tls(&p);
        let mut req = HTTP.to_vec();
        req.push(("x-forwarded-proto", "http"));
        let id = exchange(&mut w, &req, &[(":status", "200")]);
        assert!(w.response_header_values(id, "strict-transport-security").is_empty());
        // Without the header, the connection decides.
        let id = exchange(&mut w, HTTP, &[(":status", "200")]);
        assert_eq!(w.response_header_values(id, "strict-transport-security").len(), 1);
    }

    #[test]
    fn fingerprinting_headers_removed_and_counted() {
        let (p, mut w) = root("");
        let id = exchange(
            &mut w,
            HTTP,
            &[(":status", "200"), ("Server", "Apache/2.4.1"), ("X-Powered-By", "PHP/5.6"), ("x-powered-by", "again")],
        );
        assert!(w.response_header_values(id, "server").is_empty());
        assert!(w.response_header_values(id, "x-powered-by").is_empty());
        assert_eq!(p.metric("security_headers.headers_removed"), Some(2));
    }

    #[test]
    fn upstream_value_kept_by_default_and_overwritten_on_request() {
        let upstream =
            &[(":status", "200"), ("content-security-policy", "default-src 'self'"), ("x-frame-options", "SAMEORIGIN")];
        let (p, mut w) = root("");
        let id = exchange(&mut w, HTTP, upstream);
        assert_eq!(w.response_header_values(id, "content-security-policy"), vec!["default-src 'self'"]);
        assert_eq!(p.metric("security_headers.headers_kept"), Some(2));

        let (_p, mut w) =
            root(r#"{"headers":{"x-frame-options":{"value":"DENY","append_action":"OVERWRITE_IF_EXISTS_OR_ADD"}}}"#);
        let id = exchange(&mut w, HTTP, upstream);
        assert_eq!(w.response_header_values(id, "x-frame-options"), vec!["DENY"]);
        assert_eq!(w.response_header_values(id, "content-security-policy"), vec!["default-src 'self'"]);

        let (_p, mut w) = root(r#"{"append_action":"OVERWRITE_IF_EXISTS_OR_ADD"}"#);
        let id = exchange(&mut w, HTTP, upstream);
        assert_eq!(
            w.response_header_values(id, "content-security-policy"),
            vec!["default-src 'none'; frame-ancestors 'none'"]
        );
    }

    #[test]
    fn an_empty_upstream_value_is_absent_and_replaced() {
        // Found in review (issue 18): under ADD_IF_ABSENT an upstream that sent
        // `x-frame-options:` or `content-security-policy:` with nothing in it (an unset
        // template variable) counted as having set the header, so ours was left out and the
        // browser, ignoring the empty value, applied none: the page could be framed. A blank
        // value is now absent, and ours replaces it (one value, not a second one beside it).
        let (p, mut w) = root("");
        let upstream = [
            (":status", "200"),
            ("x-frame-options", ""),
            ("content-security-policy", " \t"),
            ("referrer-policy", "same-origin"),
            ("server", ""),
        ];
        let id = exchange(&mut w, HTTP, &upstream);
        assert_eq!(w.response_header_values(id, "x-frame-options"), vec!["DENY"]);
        assert_eq!(
            w.response_header_values(id, "content-security-policy"),
            vec!["default-src 'none'; frame-ancestors 'none'"]
        );
        // A real value is still the upstream's, and an empty fingerprinting header still goes.
        assert_eq!(w.response_header_values(id, "referrer-policy"), vec!["same-origin"]);
        assert!(w.response_header_values(id, "server").is_empty());
        assert_eq!(p.metric("security_headers.headers_kept"), Some(1));
    }

    #[test]
    fn path_override_relaxes_csp_under_docs_only() {
        let (_p, mut w) = root(
            r#"{"path_overrides":[{"match":{"prefix":"/docs"},
                "headers":{"content-security-policy":"default-src 'self'","x-frame-options":null},
                "content_security_policy_report_only":true}]}"#,
        );
        let id = exchange(&mut w, &[(":scheme", "http"), (":path", "/docs/a?q=1")], &[(":status", "200")]);
        assert!(w.response_header_values(id, "content-security-policy").is_empty());
        assert_eq!(w.response_header_values(id, "content-security-policy-report-only"), vec!["default-src 'self'"]);
        assert!(w.response_header_values(id, "x-frame-options").is_empty());
        let id = exchange(&mut w, &[(":scheme", "http"), (":path", "/api")], &[(":status", "200")]);
        assert_eq!(w.response_header_values(id, "content-security-policy").len(), 1);
        assert_eq!(w.response_header_values(id, "x-frame-options"), vec!["DENY"]);
    }

    /// One exchange on route `route` (`xds.route_name`; `None`: no route): its id and the
    /// `get_property` calls its request headers made.
    fn exchange_on_route(w: &mut W, route: Option<&str>, path: &str) -> (u32, u64) {
        let id = w.new_stream();
        if let Some(r) = route {
            w.set_property(id, &["xds", "route_name"], r.as_bytes());
        }
        let proxy = w.proxy().clone();
        let (action, calls) =
            proxy.count_host_calls(|| w.request_headers(id, &[(":scheme", "http"), (":path", path)], true));
        assert_eq!(action, Action::Continue);
        assert_eq!(w.response_headers(id, &[(":status", "200")], false), Action::Continue);
        (id, calls.get(shared::proxytest::HostCall::GetProperty))
    }

    #[test]
    fn route_name_override_follows_the_route_and_is_read_only_when_tried() {
        let relaxed = r#""headers":{"x-frame-options":null}"#;
        let (_p, mut w) = root(&format!(
            r#"{{"path_overrides":[{{"match":{{"prefix":"/docs"}},{relaxed}}},{{"match":{{"route_name":"embed"}},{relaxed}}}]}}"#
        ));
        let frames = |w: &W, id: u32| w.response_header_values(id, "x-frame-options").is_empty();
        // The path override matches first: the route name is not read (one read: tls_version).
        let (id, reads) = exchange_on_route(&mut w, Some("embed"), "/docs/a");
        assert!(frames(&w, id));
        assert_eq!(reads, 1, "tls_version only");
        for path in ["/embed", "/EMBED/x", "/"] {
            let (id, reads) = exchange_on_route(&mut w, Some("embed"), path);
            assert!(frames(&w, id), "{path} on the embed route");
            assert_eq!(reads, 2, "tls_version and the route name, once");
        }
        for route in [Some("other"), Some(""), None] {
            let (id, _) = exchange_on_route(&mut w, route, "/embed");
            assert_eq!(w.response_header_values(id, "x-frame-options"), vec!["DENY"], "route {route:?}");
        }
        // Path overrides only: no route name read, whatever the route.
        let (_p, mut w) = root(&format!(r#"{{"path_overrides":[{{"match":{{"prefix":"/docs"}},{relaxed}}}]}}"#));
        assert_eq!(exchange_on_route(&mut w, Some("embed"), "/embed").1, 1);
    }

    #[test]
    fn odd_bytes_never_break_the_filter() {
        let (_p, mut w) = root("");
        let id = w.new_stream();
        w.request_headers_bytes(id, &[(":path", b"/\xff\xfe"), (":scheme", b"\xc3")], true);
        w.response_headers_bytes(
            id,
            &[(":status", b"200"), ("server", b"\xff\x00odd"), ("x-frame-options", b"\x80")],
            false,
        );
        assert!(w.response_header_values(id, "server").is_empty());
        assert_eq!(w.response_header_values(id, "x-content-type-options"), vec!["nosniff"]);
    }

    #[test]
    fn host_errors_are_counted_not_fatal() {
        let (p, mut w) = root("");
        w.fail_header_writes(true);
        exchange(&mut w, HTTP, &[(":status", "200"), ("server", "x")]);
        assert!(p.metric("security_headers.host_errors").unwrap() > 0);
        assert!(p.logs().iter().any(|(l, m)| *l == LogLevel::Warn && m.contains("refused")));
    }

    #[test]
    fn unconfigured_root_creates_no_filter_and_bad_config_is_refused() {
        let host = MockHost::new();
        let mut r = SecurityHeadersRoot::default();
        assert!(r.new_http_filter(1).is_none());
        let e = r.configure(&host, Some(br#"{"headers":{"x-frame-options":"a\nb"}}"#)).unwrap_err();
        assert_eq!(e.field, "headers.x-frame-options");
        assert!(r.new_http_filter(1).is_none(), "a refused config leaves nothing half-applied");
    }
}
