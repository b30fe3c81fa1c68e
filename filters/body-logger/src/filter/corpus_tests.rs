//! The filter on the corpora (`crate::corpus`), encoded bodies (B1) and the worker's capture
//! budget (B7). The same corpora run through a real Envoy in `e2e/tests/body_logger.rs`.

use super::*;
use crate::corpus::{leak_corpus, readable_corpus, LeakCase};
use shared::mock::MockHost;
use std::io::Write;

/// The e2e config's content types plus XML and multipart, with headers logged.
const CONFIG: &str = r#"{"log_headers":true,"content_types":["application/json","application/*+json","text/*","application/x-www-form-urlencoded","application/xml","application/*+xml","multipart/form-data"]}"#;

fn root(json: &str) -> (MockHost, BodyLoggerRoot) {
    let host = MockHost::new();
    let mut root = BodyLoggerRoot::default();
    root.configure(&host, Some(json.as_bytes())).unwrap();
    (host, root)
}

pub(super) fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

fn last_line(host: &MockHost) -> String {
    host.logs().into_iter().rev().map(|(_, m)| m).find(|m| m.starts_with('{')).expect("a log line")
}

/// One exchange as the e2e upstream answers it: the body echoed with the same content type,
/// the case's response headers added. Bodies in chunks of `chunk` bytes.
fn run(root: &BodyLoggerRoot, case: &LeakCase, chunk: usize) -> (MockHost, String) {
    let host = MockHost::new();
    let mut f = root.new_http_filter(1).unwrap();
    let body = if case.gzip { gzip(&case.body) } else { case.body.clone() };
    let mut req: Vec<(&str, &[u8])> = vec![
        (":method", b"POST"),
        (":path", case.path.as_bytes()),
        ("content-type", case.content_type.as_bytes()),
        ("x-request-id", b"corpus"),
    ];
    let mut resp: Vec<(&str, &[u8])> = vec![(":status", b"200"), ("content-type", case.content_type.as_bytes())];
    // Envoy presents repeated `content-encoding` headers as one value joined with `,` (an
    // inline header): the e2e corpus test sends two and shows the filter sees both.
    let encodings = case.content_encoding.join(",");
    if !encodings.is_empty() {
        req.push(("content-encoding", encodings.as_bytes()));
        resp.push(("content-encoding", encodings.as_bytes()));
    }
    for (k, v) in &case.request_headers {
        req.push((k, v.as_bytes()));
    }
    for (k, v) in &case.response_headers {
        resp.push((k, v.as_bytes()));
    }
    host.set_headers_bytes(HeaderMapKind::RequestHeaders, &req);
    f.on_request_headers(&host, false);
    let pieces: Vec<&[u8]> = body.chunks(chunk).collect();
    for (i, p) in pieces.iter().enumerate() {
        host.set_body(Buffer::Request, p);
        f.on_request_body(&host, p.len(), i + 1 == pieces.len());
    }
    host.set_headers_bytes(HeaderMapKind::ResponseHeaders, &resp);
    f.on_response_headers(&host, false);
    for (i, p) in pieces.iter().enumerate() {
        host.set_body(Buffer::Response, p);
        f.on_response_body(&host, p.len(), i + 1 == pieces.len());
    }
    f.on_log(&host);
    let line = last_line(&host);
    (host, line)
}

#[test]
fn leak_corpus_never_reaches_the_line() {
    let (_, root) = root(CONFIG);
    for case in leak_corpus() {
        let sent = case.sent_text();
        for s in &case.secrets {
            assert!(sent.contains(s), "{}: {s} was not planted", case.name);
        }
        for chunk in [1 << 20, 7] {
            let (_, line) = run(&root, &case, chunk);
            case.check_line(&line).unwrap();
            let v: Value = serde_json::from_str(&line).unwrap();
            if !case.encoded() && !case.secrets.is_empty() {
                assert!(v["redactions"].as_u64().unwrap() >= 1, "{}: {line}", case.name);
            }
        }
    }
}

/// The control: a line that logs the exchange as it was fails every case's check, so the
/// checks above can fail.
#[test]
fn leak_checks_fail_on_an_unredacted_line() {
    for case in leak_corpus() {
        let raw = String::from_utf8_lossy(&case.body).into_owned();
        let unredacted = json!({
            "path": case.path,
            "request": {"body": raw, "skipped": null},
            "response": {"body": raw, "skipped": null},
            "request_headers": case.request_headers.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<Map<_, _>>(),
            "response_headers": case.response_headers.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<Map<_, _>>(),
        })
        .to_string();
        assert!(case.check_line(&unredacted).is_err(), "{}: the check passed an unredacted line", case.name);
    }
}

#[test]
fn readable_corpus_is_logged_as_is() {
    let (host, root) = root(CONFIG);
    for case in readable_corpus() {
        let leak = LeakCase {
            name: case.name,
            path: "/readable?page=2&sort=asc".into(),
            content_type: case.content_type,
            content_encoding: vec![],
            gzip: false,
            body: case.body.as_bytes().to_vec(),
            request_headers: vec![("user-agent", "curl/8.5.0".into()), ("accept", "*/*".into())],
            response_headers: vec![],
            secrets: vec![],
        };
        let (_, line) = run(&root, &leak, 1 << 20);
        let v: Value = serde_json::from_str(&line).unwrap();
        for dir in ["request", "response"] {
            case.check_logged(v[dir]["body"].as_str().unwrap()).unwrap();
        }
        assert_eq!(v["path"], "/readable?page=2&sort=asc");
        assert_eq!(v["request_headers"]["user-agent"], "curl/8.5.0");
        assert_eq!(v["redactions"], 0, "{line}");
    }
    let _ = host;
}

/// The control: redacting everything fails the readable corpus.
#[test]
fn redacting_everything_fails_the_readable_checks() {
    let (_, root) = root(
        r#"{"content_types":["application/json","application/x-www-form-urlencoded","text/*","application/xml","multipart/form-data"],"redact":{"patterns":[{"name":"all","regex":"(?s).+"}]}}"#,
    );
    for case in readable_corpus() {
        let leak = LeakCase {
            name: case.name,
            path: "/".into(),
            content_type: case.content_type,
            content_encoding: vec![],
            gzip: false,
            body: case.body.as_bytes().to_vec(),
            request_headers: vec![],
            response_headers: vec![],
            secrets: vec![],
        };
        let (_, line) = run(&root, &leak, 1 << 20);
        let v: Value = serde_json::from_str(&line).unwrap();
        assert!(case.check_logged(v["request"]["body"].as_str().unwrap()).is_err(), "{}", case.name);
    }
}

// ---- B1: encoded bodies ----

#[test]
fn encoded_bodies_are_skipped_and_counted_in_both_directions() {
    let (host, root) = root("{}");
    let plain = br#"{"access_token":"GZSECRET","token_type":"Bearer"}"#;
    for (encoding, body) in [
        (Some(&b"gzip"[..]), gzip(plain)),
        (Some(b"GZIP"), gzip(plain)),
        (Some(b"br"), plain.to_vec()),
        (Some(b"identity, gzip"), gzip(plain)),
        (Some(b"x-custom"), plain.to_vec()),
        (None, gzip(plain)), // unlabelled: the gzip magic
    ] {
        let before = host.metric("body_logger.skipped_content_encoding").unwrap();
        let mut f = root.new_http_filter(1).unwrap();
        let mut req: Vec<(&str, &[u8])> =
            vec![(":method", b"POST"), (":path", b"/"), ("content-type", b"application/json")];
        let mut resp: Vec<(&str, &[u8])> =
            vec![(":status", b"200"), ("content-type", b"application/json; charset=utf-8")];
        if let Some(e) = encoding {
            req.push(("content-encoding", e));
            resp.push(("content-encoding", e));
        }
        host.set_headers_bytes(HeaderMapKind::RequestHeaders, &req);
        f.on_request_headers(&host, false);
        host.set_body(Buffer::Request, &body);
        f.on_request_body(&host, body.len(), true);
        host.set_headers_bytes(HeaderMapKind::ResponseHeaders, &resp);
        f.on_response_headers(&host, false);
        host.set_body(Buffer::Response, &body);
        f.on_response_body(&host, body.len(), true);
        f.on_log(&host);
        let line = last_line(&host);
        let v: Value = serde_json::from_str(&line).unwrap();
        for dir in ["request", "response"] {
            assert_eq!(v[dir]["skipped"], "content_encoding", "{encoding:?} {dir}: {line}");
            assert_eq!(v[dir]["body"], Value::Null);
            assert_eq!(v[dir]["bytes"], body.len());
        }
        assert!(!line.contains("GZSECRET"));
        assert_eq!(host.metric("body_logger.skipped_content_encoding"), Some(before + 2), "{encoding:?}");
        assert_eq!(host.metric("body_logger.skipped_content_type"), Some(0));
    }
    // `identity` (any case, with spaces) is no encoding.
    let mut f = root.new_http_filter(1).unwrap();
    host.set_headers_bytes(
        HeaderMapKind::RequestHeaders,
        &[(":method", b"POST"), (":path", b"/"), ("content-type", b"text/plain"), ("content-encoding", b" Identity ")],
    );
    f.on_request_headers(&host, false);
    host.set_body(Buffer::Request, b"hello");
    f.on_request_body(&host, 5, true);
    f.on_log(&host);
    let v: Value = serde_json::from_str(&last_line(&host)).unwrap();
    assert_eq!(v["request"]["body"], "hello");
}

// ---- B7: the worker's capture budget ----

fn open(root: &BodyLoggerRoot, host: &MockHost, headers: &[(&str, &str)]) -> BodyLogger {
    let mut f = root.new_http_filter(1).unwrap();
    host.set_request_headers(headers);
    f.on_request_headers(host, false);
    f
}

fn post(len: Option<usize>) -> Vec<(&'static str, String)> {
    let mut h =
        vec![(":method", "POST".to_string()), (":path", "/".to_string()), ("content-type", "text/plain".to_string())];
    if let Some(n) = len {
        h.push(("content-length", n.to_string()));
    }
    h
}

fn refs<'a>(h: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    h.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[test]
fn streams_over_the_budget_are_skipped_counted_and_the_budget_comes_back() {
    let (host, root) = root(r#"{"max_bytes":100,"capture_budget_bytes":250}"#);
    let budget = root.budget.clone();
    // A chunked body reserves max_bytes; a content-length below it reserves that.
    let mut a = open(&root, &host, &refs(&post(None)));
    assert_eq!(budget.used(), 100);
    let mut b = open(&root, &host, &refs(&post(Some(60))));
    assert_eq!(budget.used(), 160);
    let mut c = open(&root, &host, &refs(&post(Some(100))));
    assert_eq!(budget.used(), 160, "c does not fit: 90 left");
    // c's body is counted, not captured; the stream goes on.
    host.set_body(Buffer::Request, &[b'c'; 100]);
    assert_eq!(c.on_request_body(&host, 100, true), Action::Continue);
    c.on_log(&host);
    let line: Value = serde_json::from_str(&last_line(&host)).unwrap();
    assert_eq!(line["request"]["skipped"], "budget");
    assert_eq!(line["request"]["body"], Value::Null);
    assert_eq!(line["request"]["bytes"], 100);
    assert_eq!(host.metric("body_logger.skipped_budget"), Some(1));
    // A smaller stream still fits; a header-only one needs nothing.
    let d = open(&root, &host, &refs(&post(Some(90))));
    assert_eq!(budget.used(), 250);
    let mut e = root.new_http_filter(1).unwrap();
    host.set_request_headers(&[(":method", "GET"), (":path", "/")]);
    e.on_request_headers(&host, true);
    e.on_log(&host);
    let line: Value = serde_json::from_str(&last_line(&host)).unwrap();
    assert_eq!(line["request"].get("skipped"), None, "{line}");
    // Ending streams (logged, or dropped without a line) gives their bytes back.
    host.set_body(Buffer::Request, &[b'a'; 30]);
    a.on_request_body(&host, 30, true);
    a.on_log(&host);
    let line: Value = serde_json::from_str(&last_line(&host)).unwrap();
    assert_eq!(line["request"]["body"], "a".repeat(30));
    assert_eq!(budget.used(), 150);
    drop(d);
    assert_eq!(budget.used(), 60);
    b.on_log(&host);
    assert_eq!(budget.used(), 0);
    // The response direction has its own share.
    let mut f = open(&root, &host, &refs(&post(Some(100))));
    host.set_response_headers(&[(":status", "200"), ("content-type", "text/plain"), ("content-length", "200")]);
    f.on_response_headers(&host, false);
    assert_eq!(budget.used(), 200);
    let mut g = open(&root, &host, &refs(&post(Some(100))));
    host.set_response_headers(&[(":status", "200"), ("content-type", "text/plain")]);
    g.on_response_headers(&host, false);
    assert_eq!(budget.used(), 200, "g's request (100) fits in 50? no: both skipped");
    g.on_log(&host);
    let line: Value = serde_json::from_str(&last_line(&host)).unwrap();
    assert_eq!(line["request"]["skipped"], "budget");
    assert_eq!(line["response"]["skipped"], "budget");
    assert_eq!(host.metric("body_logger.skipped_budget"), Some(3));
    f.on_log(&host);
    assert_eq!(budget.used(), 0);
}

#[test]
fn logged_headers_count_against_the_budget() {
    let (host, root) = root(r#"{"max_bytes":100,"capture_budget_bytes":300,"log_headers":true}"#);
    let budget = root.budget.clone();
    let big = "v".repeat(40);
    let mut headers = post(Some(100));
    headers.push(("x-big", big));
    let headers = refs(&headers);
    let bytes: usize = headers.iter().map(|(k, v)| k.len() + v.len()).sum();
    let mut a = open(&root, &host, &headers);
    assert_eq!(budget.used(), 100 + bytes);
    let mut b = open(&root, &host, &headers);
    assert_eq!(budget.used(), 100 + bytes, "b does not fit");
    b.on_log(&host);
    let line: Value = serde_json::from_str(&last_line(&host)).unwrap();
    assert_eq!(line["request_headers"], Value::Null, "headers dropped with the capture: {line}");
    assert_eq!(line["request"]["skipped"], "budget");
    a.on_log(&host);
    let line: Value = serde_json::from_str(&last_line(&host)).unwrap();
    assert_eq!(line["request_headers"]["x-big"].as_str().map(str::len), Some(40));
    assert_eq!(budget.used(), 0);
}

#[test]
fn a_capture_never_grows_past_its_reservation() {
    // content-length says 10; the body is longer (a lying client): 10 bytes kept, truncated.
    let (host, root) = root(r#"{"max_bytes":100}"#);
    let mut f = open(&root, &host, &refs(&post(Some(10))));
    host.set_body(Buffer::Request, &[b'x'; 50]);
    f.on_request_body(&host, 50, true);
    let rec = f.record.as_ref().unwrap();
    assert_eq!(rec.request.captured.len(), 10);
    assert!(rec.request.captured.capacity() <= 10);
    assert_eq!(root.budget.used(), 10);
    f.on_log(&host);
    let line: Value = serde_json::from_str(&last_line(&host)).unwrap();
    assert_eq!(line["request"]["truncated"], true);
    assert_eq!(root.budget.used(), 0);
}
