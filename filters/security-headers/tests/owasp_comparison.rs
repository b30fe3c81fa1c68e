//! Our defaults against the OWASP Secure Headers Project's published lists (peer vectors):
//! `tests/fixtures/oshp-2024-09-02.json` holds OSHP's `ci/headers_add.json` and
//! `ci/headers_remove.json` of 2024-09-02 (source and licence inside the file). The tables
//! below state, header by header, what we send that OSHP lists, what we send differently and
//! what we leave out, each with its reason (README, "Defaults and why"). The test fails when
//! the code drifts from a row, or when the fixture holds a header no row speaks for.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test: a failure is a finding

use security_headers::config::{Config, DEFAULT_HEADERS, DEFAULT_REMOVE_HEADERS};
use security_headers::filter::SecurityHeadersRoot;
use shared::proxytest::{Proxy, Worker};
use shared::Action;

const FIXTURE: &str = include_str!("fixtures/oshp-2024-09-02.json");

#[derive(Debug)]
struct Oshp {
    add: Vec<(String, String)>,
    remove: Vec<String>,
}

fn oshp() -> Oshp {
    let v: serde_json::Value = serde_json::from_str(FIXTURE).expect("the fixture is JSON");
    assert!(v["source"].as_str().is_some_and(|s| s.contains("OWASP")) && v["licence"].as_str().is_some());
    let add = v["headers_add"]
        .as_array()
        .expect("headers_add")
        .iter()
        .map(|h| (h["name"].as_str().unwrap().to_ascii_lowercase(), h["value"].as_str().unwrap().to_string()))
        .collect();
    let remove = v["headers_remove"]
        .as_array()
        .expect("headers_remove")
        .iter()
        .map(|n| n.as_str().unwrap().to_ascii_lowercase())
        .collect();
    Oshp { add, remove }
}

/// What we do with a header OSHP proposes to add.
enum Ours {
    /// Our default has OSHP's value (header values compared as browsers do: case-insensitive
    /// for these tokens).
    Same,
    /// Sent by default, with another value, for this reason.
    Differs(&'static str),
    /// Not sent by default (settable in `headers`), for this reason.
    NotSent(&'static str),
}

const ADD: &[(&str, Ours)] = &[
    ("cache-control", Ours::NotSent("caching belongs to the application; proxy-wide no-store turns off every cache")),
    ("clear-site-data", Ours::NotSent("on every response it logs users out: OSHP itself advises the logout path only")),
    (
        "content-security-policy",
        Ours::Differs("API-oriented: default-src 'none' loads nothing, stricter than OSHP's 'self'"),
    ),
    ("cross-origin-embedder-policy", Ours::NotSent("breaks pages embedding third-party content; nothing for JSON")),
    ("cross-origin-opener-policy", Ours::Same),
    ("cross-origin-resource-policy", Ours::Same),
    (
        "permissions-policy",
        Ours::Differs(
            "a short list of powerful features no API uses; OSHP's also turns off fullscreen, autoplay, clipboard",
        ),
    ),
    ("referrer-policy", Ours::Same),
    ("strict-transport-security", Ours::Same),
    ("x-content-type-options", Ours::Same),
    ("x-frame-options", Ours::Same),
    ("x-permitted-cross-domain-policies", Ours::Same),
];

/// Sent by default though not in OSHP's list to add.
const EXTRA_ADD: &[(&str, &str)] =
    &[("x-xss-protection", "OSHP lists it as deprecated and says to send 0 if sent: turns off legacy XSS auditors")];

/// In our default removal list though not in OSHP's.
const EXTRA_REMOVE: &[(&str, &str)] = &[
    ("x-runtime", "Rails' request timing"),
    ("x-version", "an application's version"),
    ("x-backend-server", "the backend's host name"),
];

/// Why the rest of OSHP's removal list is not in our default list.
const REST_OF_OSHP_REMOVE: &str = "every listed name costs one lookup per response; the default covers the common \
     offenders, and remove_headers takes OSHP's whole list (the_oshp_lists_configure_and_apply)";

fn default_value(name: &str) -> Option<&'static str> {
    DEFAULT_HEADERS.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
}

#[test]
fn our_defaults_against_the_oshp_proposal() {
    let oshp = oshp();
    assert_eq!(oshp.add.len(), ADD.len(), "a header of OSHP's list has no row");
    for (name, value) in &oshp.add {
        let (_, ours) = ADD.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no row for {name}"));
        match (ours, default_value(name)) {
            (Ours::Same, Some(v)) => assert!(v.eq_ignore_ascii_case(value), "{name}: ours {v:?}, OSHP {value:?}"),
            (Ours::Differs(why), Some(v)) => {
                assert!(!v.eq_ignore_ascii_case(value) && !why.is_empty(), "{name}: the same value now")
            }
            (Ours::NotSent(why), None) => assert!(!why.is_empty()),
            (_, v) => panic!("{name}: our default is {v:?}, the row says otherwise"),
        }
    }
    // Every default we send is either in OSHP's list or an extra with a reason.
    for (name, _) in DEFAULT_HEADERS {
        let in_oshp = oshp.add.iter().any(|(n, _)| n == name);
        let extra = EXTRA_ADD.iter().any(|(n, _)| n == name);
        assert!(in_oshp != extra, "{name}: in OSHP's list {in_oshp}, an extra {extra}");
    }
    assert_eq!(default_value("x-xss-protection"), Some("0"));
}

#[test]
fn our_removal_list_against_oshp() {
    let oshp = oshp();
    let (from_oshp, extra): (Vec<&str>, Vec<&str>) =
        DEFAULT_REMOVE_HEADERS.iter().partition(|n| oshp.remove.iter().any(|r| r == *n));
    assert_eq!(from_oshp, ["server", "x-powered-by", "x-aspnet-version", "x-aspnetmvc-version", "x-generator"]);
    assert_eq!(extra, EXTRA_REMOVE.iter().map(|(n, _)| *n).collect::<Vec<_>>());
    assert_eq!(oshp.remove.len() - from_oshp.len(), 64, "{REST_OF_OSHP_REMOVE}");
}

/// OSHP's lists as a configuration: `headers` = its proposal, `remove_headers` = its list.
fn oshp_config(oshp: &Oshp) -> String {
    let headers: serde_json::Map<String, serde_json::Value> =
        oshp.add.iter().map(|(n, v)| (n.clone(), serde_json::Value::from(v.as_str()))).collect();
    serde_json::json!({ "headers": headers, "remove_headers": oshp.remove }).to_string()
}

#[test]
fn the_oshp_lists_configure_and_apply() {
    // A user who follows OSHP pastes its two lists: accepted, and on a response every
    // proposed header is there with OSHP's value and every listed one is gone, whatever its
    // case and however often the upstream sent it.
    let oshp = oshp();
    let p = Proxy::new();
    p.set_property(&["connection", "tls_version"], b"TLSv1.3");
    let mut w: Worker<SecurityHeadersRoot> = p.worker(&oshp_config(&oshp));
    let (id, action) = w.request(&[(":path", "/"), (":method", "GET"), (":scheme", "https")]);
    assert_eq!(action, Action::Continue);
    let mut upstream: Vec<(String, String)> = vec![(":status".into(), "200".into())];
    for (i, name) in oshp.remove.iter().enumerate() {
        let spelled = if i % 2 == 0 { name.to_ascii_uppercase() } else { name.clone() };
        upstream.push((spelled, format!("v{i}")));
        upstream.push((name.clone(), "again".into()));
    }
    let upstream: Vec<(&str, &str)> = upstream.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    assert_eq!(w.response_headers(id, &upstream, false), Action::Continue);
    for name in &oshp.remove {
        assert!(w.response_header_values(id, name).is_empty(), "{name} not removed");
    }
    for (name, value) in &oshp.add {
        assert_eq!(w.response_header_values(id, name), vec![value.clone()], "{name}");
    }
    // Our defaults that OSHP does not list stay (x-xss-protection: 0).
    for (name, value) in EXTRA_ADD.iter().map(|(n, _)| (*n, default_value(n).unwrap())) {
        assert_eq!(w.response_header_values(id, name), vec![value.to_string()], "{name}");
    }
    assert_eq!(p.metric("security_headers.headers_removed"), Some(oshp.remove.len() as i64));
    // The same lists compile through the two-phase loader directly (field paths on refusal).
    assert!(shared::config::load(Some(oshp_config(&oshp).as_bytes()), Config::compile).is_ok());
}
