//! security-headers in a real Envoy, on envoy-configs/security-headers.yaml.

use e2e::envoy::{Envoy, EnvoyOptions};
use e2e::http::{Request, Response};
use e2e::upstream::{encode_hex, Upstream};
use e2e::{repo_root, LISTENER_PORT, TLS_LISTENER_PORT, UPSTREAM_PORT};
use security_headers::config::{DEFAULT_HEADERS, DEFAULT_REMOVE_HEADERS, HSTS};

const CONFIG: &str = "security-headers.yaml";

fn start() -> (Envoy, Upstream) {
    let envoy = Envoy::start(CONFIG).unwrap();
    let upstream = Upstream::start(envoy.port(UPSTREAM_PORT)).unwrap();
    (envoy, upstream)
}

fn ca() -> Vec<u8> {
    std::fs::read(repo_root().join("envoy-configs/certs/demo-ca.crt")).unwrap()
}

fn assert_defaults(r: &Response, https: bool) {
    for (name, value) in DEFAULT_HEADERS {
        if *name == HSTS && !https {
            assert!(!r.has_header(name), "HSTS must not be sent over plain HTTP:\n{r}");
            continue;
        }
        assert_eq!(r.header_all(name), vec![value.to_string()], "{name}:\n{r}");
    }
    for name in DEFAULT_REMOVE_HEADERS {
        assert!(!r.has_header(name), "{name} should be removed:\n{r}");
    }
}

#[test]
fn defaults_on_plain_http_without_hsts_and_fingerprints_removed() {
    let (envoy, upstream) = start();
    let r = Request::get("/api/items?id=1").send(envoy.port(LISTENER_PORT)).unwrap();
    assert_eq!(r.status, 200, "{r}");
    assert_defaults(&r, false);
    // The upstream did send them; Envoy passed them; the filter removed them.
    assert!(r.body_text().contains("\"path\":\"/api/items?id=1\""), "{r}");
    assert_eq!(upstream.requests().len(), 1);
    assert!(envoy.wait_stat("wasmcustom.security_headers.responses_decorated", 1) >= 1);
    assert!(envoy.wait_stat("wasmcustom.security_headers.headers_removed", 2) >= 2);
}

#[test]
fn defaults_on_https_include_hsts() {
    let (envoy, _upstream) = start();
    let r = Request::get("/api").send_tls(envoy.port(TLS_LISTENER_PORT), &ca(), "localhost").unwrap();
    assert_eq!(r.status, 200, "{r}");
    assert_defaults(&r, true);
    assert_eq!(r.header(HSTS).as_deref(), Some("max-age=31536000; includeSubDomains"));
}

#[test]
fn untrusted_x_forwarded_proto_does_not_enable_hsts() {
    let (envoy, _upstream) = start();
    let r = Request::get("/").header("x-forwarded-proto", "https").send(envoy.port(LISTENER_PORT)).unwrap();
    assert_eq!(r.status, 200);
    assert!(!r.has_header(HSTS), "{r}");
}

#[test]
fn path_overrides_prefix_and_regex() {
    let (envoy, _upstream) = start();
    let port = envoy.port(LISTENER_PORT);
    let docs = Request::get("/docs/index.html").send(port).unwrap();
    assert!(docs.header("content-security-policy").unwrap().starts_with("default-src 'self'"), "{docs}");
    assert_eq!(docs.header("x-frame-options").as_deref(), Some("DENY"));

    let embed = Request::get("/embed/widget-1?x=2").send(port).unwrap();
    assert_eq!(embed.header("x-frame-options").as_deref(), Some("SAMEORIGIN"), "{embed}");
    assert_eq!(embed.header("content-security-policy").as_deref(), Some("default-src 'none'; frame-ancestors 'self'"));

    // The regex must match the whole path.
    let not_embed = Request::get("/embed/widget-1/more").send(port).unwrap();
    assert_eq!(not_embed.header("x-frame-options").as_deref(), Some("DENY"), "{not_embed}");
}

#[test]
fn upstream_set_values_are_kept_by_default() {
    let (envoy, _upstream) = start();
    let r = Request::get("/app")
        .header("x-echo-header", "content-security-policy: script-src 'nonce-abc'")
        .header("x-echo-header", "X-Frame-Options: SAMEORIGIN")
        .header("x-echo-header", "Server: nginx/1.25.3")
        .send(envoy.port(LISTENER_PORT))
        .unwrap();
    assert_eq!(r.header_all("content-security-policy"), vec!["script-src 'nonce-abc'"], "{r}");
    assert_eq!(r.header_all("x-frame-options"), vec!["SAMEORIGIN"]);
    assert!(!r.has_header("server"), "{r}");
    assert!(envoy.wait_stat("wasmcustom.security_headers.headers_kept", 2) >= 2);
}

#[test]
fn blank_upstream_values_are_replaced_not_kept() {
    // An upstream's empty `X-Frame-Options:` (an unset template variable) is no policy for a
    // browser: under ADD_IF_ABSENT ours replaces it (it used to be kept, leaving the page
    // frameable). The control: Envoy does pass a blank upstream value through.
    let (envoy, _upstream) = start();
    let r = Request::get("/app")
        .header("x-echo-header", "X-Frame-Options:")
        .header("x-echo-header", "Content-Security-Policy: ")
        .header("x-echo-header", "X-Blank:")
        .send(envoy.port(LISTENER_PORT))
        .unwrap();
    assert_eq!(r.header_all("x-blank"), vec![String::new()], "the upstream's blank value reaches the client:\n{r}");
    assert_eq!(r.header_all("x-frame-options"), vec!["DENY"], "{r}");
    assert_eq!(r.header_all("content-security-policy"), vec!["default-src 'none'; frame-ancestors 'none'"], "{r}");
}

#[test]
fn envoy_local_replies_are_decorated_too() {
    // No upstream running: Envoy answers 503 itself, and that answer gets the headers.
    let envoy = Envoy::start(CONFIG).unwrap();
    let r = Request::get("/").send(envoy.port(LISTENER_PORT)).unwrap();
    assert_eq!(r.status, 503, "{r}");
    assert_defaults(&r, false);
}

#[test]
fn odd_upstream_header_bytes_crash_nothing() {
    let (envoy, _upstream) = start();
    let port = envoy.port(LISTENER_PORT);
    let odd: [&[u8]; 4] = [
        b"Server: \xff\xfe\x80",
        b"X-Odd: \xc3\x28 latin1 \xe9",
        b"X-Frame-Options: \x80\x81",
        b"X-Powered-By: \xf0\x9f\x92\xa9",
    ];
    for raw in odd {
        let r = Request::get("/odd").header("x-echo-header-hex", &encode_hex(raw)).send(port).unwrap();
        // Envoy may pass obs-text through (200) or refuse it (502); either way no crash.
        assert!(r.status == 200 || r.status == 502, "{r}");
        if r.status == 200 {
            assert!(!r.has_header("server") && !r.has_header("x-powered-by"), "{r}");
            assert_eq!(r.header("x-content-type-options").as_deref(), Some("nosniff"));
        }
    }
    // Odd bytes in the request too.
    let r = Request::get("/odd\u{7f}path").header_bytes("x-weird", b"\xff\xfe").send(port).unwrap();
    assert!(r.status < 500 || r.status == 502, "{r}");
    // The VM is alive and still decorating.
    let r = Request::get("/after").send(port).unwrap();
    assert_eq!(r.status, 200);
    assert_defaults(&r, false);
    assert!(!envoy.log().contains("panic"), "{}", envoy.log());
}

#[test]
fn every_worker_decorates_under_parallel_load() {
    let (envoy, upstream) = start();
    let port = envoy.port(LISTENER_PORT);
    let threads: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(move || {
                (0..25).all(|i| {
                    let r = Request::get(&format!("/p/{i}")).send(port).unwrap();
                    r.status == 200 && r.header("x-frame-options").as_deref() == Some("DENY") && !r.has_header("server")
                })
            })
        })
        .collect();
    for t in threads {
        assert!(t.join().unwrap());
    }
    assert_eq!(upstream.requests().len(), 200);
    assert_eq!(envoy.wait_stat("wasmcustom.security_headers.responses_decorated", 200), 200);
}

/// Replace the plugin configuration in the shipped config with `json` (negative tests only).
fn with_plugin_config(json: &'static str) -> EnvoyOptions {
    EnvoyOptions {
        edit: Some(Box::new(move |config: String| {
            let start = config.find("value: |").unwrap();
            let end = config[start..].find("vm_config:").unwrap() + start;
            let indent = " ".repeat(20);
            format!("{}value: |\n{indent}{json}\n                {}", &config[..start], &config[end..])
        })),
        ..EnvoyOptions::default()
    }
}

#[test]
fn bad_configs_are_refused_naming_the_field() {
    let cases = [
        (r#"{"headers": {"x-frame-options": "DENY"}, "colour": "blue"}"#, "colour"),
        (r#"{"headers": {"x-frame-options": "a\u000d\u000ab"}}"#, "headers.x-frame-options"),
        (
            r#"{"path_overrides": [{"match": {"safe_regex": {"regex": "/a(["}}}]}"#,
            "path_overrides[0].match.safe_regex.regex",
        ),
        (r#"{"headers": {"bad header": "x"}}"#, "headers.bad header"),
    ];
    for (json, field) in cases {
        let mut envoy = Envoy::spawn(CONFIG, &with_plugin_config(json)).unwrap();
        // Envoy refuses the listener's filter chain and exits; it never serves.
        let status = envoy.wait_exit(std::time::Duration::from_secs(60));
        let log = envoy.log();
        assert!(status.is_some_and(|s| !s.success()), "Envoy kept running with {json}:\n{log}");
        let expected = format!("security-headers: invalid configuration, refusing to start: field `{field}`");
        assert!(log.contains(&expected), "log should contain {expected:?}:\n{log}");
    }
}
