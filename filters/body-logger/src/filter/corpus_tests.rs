//! The filter on the corpora (`crate::corpus`), encoded bodies (B1) and the worker's capture
//! budget (B7), on the emulated proxy. The same corpora run through a real Envoy in
//! `e2e/tests/body_logger.rs`.

use super::*;
use crate::corpus::{leak_corpus, readable_corpus, LeakCase};
use serde_json::{json, Map, Value};
use shared::mock::MockHost;
use shared::proxytest::{Proxy, Worker};
use std::io::Write;

type W = Worker<BodyLoggerRoot>;

/// The e2e config's content types plus XML and multipart, with headers logged.
const CONFIG: &str = r#"{"log_headers":true,"content_types":["application/json","application/*+json","text/*","application/x-www-form-urlencoded","application/xml","application/*+xml","multipart/form-data"]}"#;

fn worker(json: &str) -> W {
    Proxy::new().worker(json)
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

fn last_line(w: &W) -> String {
    w.proxy().logs().into_iter().rev().map(|(_, m)| m).find(|m| m.starts_with('{')).expect("a log line")
}

fn last(w: &W) -> Value {
    serde_json::from_str(&last_line(w)).unwrap()
}

fn metric(w: &W, name: &str) -> i64 {
    w.proxy().metric(&format!("body_logger.{name}")).unwrap()
}

/// One exchange as the e2e upstream answers it: the body echoed with the same content type,
/// the case's response headers added. Bodies in chunks of `chunk` bytes. The line.
fn run(w: &mut W, case: &LeakCase, chunk: usize) -> String {
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
    let id = w.new_stream();
    w.request_headers_bytes(id, &req, false);
    let pieces: Vec<&[u8]> = body.chunks(chunk).collect();
    for (i, p) in pieces.iter().enumerate() {
        w.request_body(id, p, i + 1 == pieces.len());
    }
    w.response_headers_bytes(id, &resp, false);
    for (i, p) in pieces.iter().enumerate() {
        w.response_body(id, p, i + 1 == pieces.len());
    }
    w.complete(id);
    last_line(w)
}

#[test]
fn leak_corpus_never_reaches_the_line() {
    let mut w = worker(CONFIG);
    for case in leak_corpus() {
        let sent = case.sent_text();
        for s in &case.secrets {
            assert!(sent.contains(s), "{}: {s} was not planted", case.name);
        }
        for chunk in [1 << 20, 7] {
            let line = run(&mut w, &case, chunk);
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
    let mut w = worker(CONFIG);
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
        let line = run(&mut w, &leak, 1 << 20);
        let v: Value = serde_json::from_str(&line).unwrap();
        for dir in ["request", "response"] {
            case.check_logged(v[dir]["body"].as_str().unwrap()).unwrap();
        }
        assert_eq!(v["path"], "/readable?page=2&sort=asc");
        assert_eq!(v["request_headers"]["user-agent"], "curl/8.5.0");
        assert_eq!(v["redactions"], 0, "{line}");
    }
}

/// The control: redacting everything fails the readable corpus.
#[test]
fn redacting_everything_fails_the_readable_checks() {
    let mut w = worker(
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
        let line = run(&mut w, &leak, 1 << 20);
        let v: Value = serde_json::from_str(&line).unwrap();
        assert!(case.check_logged(v["request"]["body"].as_str().unwrap()).is_err(), "{}", case.name);
    }
}

// ---- B1: encoded bodies ----

#[test]
fn encoded_bodies_are_skipped_and_counted_in_both_directions() {
    let mut w = worker("{}");
    let plain = br#"{"access_token":"GZSECRET","token_type":"Bearer"}"#;
    for (encoding, body) in [
        (Some(&b"gzip"[..]), gzip(plain)),
        (Some(b"GZIP"), gzip(plain)),
        (Some(b"br"), plain.to_vec()),
        (Some(b"identity, gzip"), gzip(plain)),
        (Some(b"x-custom"), plain.to_vec()),
        (None, gzip(plain)), // unlabelled: the gzip magic
    ] {
        let before = metric(&w, "skipped_content_encoding");
        let mut req: Vec<(&str, &[u8])> =
            vec![(":method", b"POST"), (":path", b"/"), ("content-type", b"application/json")];
        let mut resp: Vec<(&str, &[u8])> =
            vec![(":status", b"200"), ("content-type", b"application/json; charset=utf-8")];
        if let Some(e) = encoding {
            req.push(("content-encoding", e));
            resp.push(("content-encoding", e));
        }
        let id = w.new_stream();
        w.request_headers_bytes(id, &req, false);
        w.request_body(id, &body, true);
        w.response_headers_bytes(id, &resp, false);
        w.response_body(id, &body, true);
        w.complete(id);
        let line = last_line(&w);
        let v: Value = serde_json::from_str(&line).unwrap();
        for dir in ["request", "response"] {
            assert_eq!(v[dir]["skipped"], "content_encoding", "{encoding:?} {dir}: {line}");
            assert_eq!(v[dir]["body"], Value::Null);
            assert_eq!(v[dir]["bytes"], body.len());
        }
        assert!(!line.contains("GZSECRET"));
        assert_eq!(metric(&w, "skipped_content_encoding"), before + 2, "{encoding:?}");
        assert_eq!(metric(&w, "skipped_content_type"), 0);
    }
    // `identity` (any case, with spaces) is no encoding.
    let id = w.new_stream();
    w.request_headers(
        id,
        &[(":method", "POST"), (":path", "/"), ("content-type", "text/plain"), ("content-encoding", " Identity ")],
        false,
    );
    w.request_body(id, b"hello", true);
    w.complete(id);
    assert_eq!(last(&w)["request"]["body"], "hello");
}

// ---- B7: the worker's capture budget ----

fn post(len: Option<usize>) -> Vec<(&'static str, String)> {
    let mut h =
        vec![(":method", "POST".to_string()), (":path", "/".to_string()), ("content-type", "text/plain".to_string())];
    if let Some(n) = len {
        h.push(("content-length", n.to_string()));
    }
    h
}

/// A stream whose request headers went through; its id.
fn open(w: &mut W, headers: &[(&'static str, String)]) -> u32 {
    let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let id = w.new_stream();
    w.request_headers(id, &h, false);
    id
}

fn used(w: &W) -> usize {
    w.root().budget.used()
}

#[test]
fn streams_over_the_budget_are_skipped_counted_and_the_budget_comes_back() {
    let mut w = worker(r#"{"max_bytes":100,"capture_budget_bytes":250}"#);
    // A chunked body reserves max_bytes; a content-length below it reserves that.
    let a = open(&mut w, &post(None));
    assert_eq!(used(&w), 100);
    let b = open(&mut w, &post(Some(60)));
    assert_eq!(used(&w), 160);
    let c = open(&mut w, &post(Some(100)));
    assert_eq!(used(&w), 160, "c does not fit: 90 left");
    // c's body is counted, not captured; the stream goes on.
    assert_eq!(w.request_body(c, &[b'c'; 100], true), Action::Continue);
    w.complete(c);
    let line = last(&w);
    assert_eq!(line["request"]["skipped"], "budget");
    assert_eq!(line["request"]["body"], Value::Null);
    assert_eq!(line["request"]["bytes"], 100);
    assert_eq!(metric(&w, "skipped_budget"), 1);
    // A smaller stream still fits; a header-only one needs nothing.
    let d = open(&mut w, &post(Some(90)));
    assert_eq!(used(&w), 250);
    let e = w.new_stream();
    w.request_headers(e, &[(":method", "GET"), (":path", "/")], true);
    w.complete(e);
    assert_eq!(last(&w)["request"].get("skipped"), None);
    // Ending streams gives their bytes back, also a filter dropped without a line.
    w.request_body(a, &[b'a'; 30], true);
    w.complete(a);
    assert_eq!(last(&w)["request"]["body"], "a".repeat(30));
    assert_eq!(used(&w), 150);
    w.complete(d);
    assert_eq!(used(&w), 60);
    let host = MockHost::on(w.proxy());
    let mut dropped = w.root().new_http_filter(99).unwrap();
    host.set_request_headers(&[(":method", "POST"), (":path", "/"), ("content-type", "text/plain")]);
    dropped.on_request_headers(&host, false);
    assert_eq!(used(&w), 160);
    drop(dropped);
    assert_eq!(used(&w), 60);
    w.complete(b);
    assert_eq!(used(&w), 0);
    // The response direction has its own share.
    let f = open(&mut w, &post(Some(100)));
    w.response_headers(f, &[(":status", "200"), ("content-type", "text/plain"), ("content-length", "200")], false);
    assert_eq!(used(&w), 200);
    let g = open(&mut w, &post(Some(100)));
    w.response_headers(g, &[(":status", "200"), ("content-type", "text/plain")], false);
    assert_eq!(used(&w), 200, "neither of g's directions fits in the 50 left");
    w.complete(g);
    let line = last(&w);
    assert_eq!(line["request"]["skipped"], "budget");
    assert_eq!(line["response"]["skipped"], "budget");
    assert_eq!(metric(&w, "skipped_budget"), 3);
    w.complete(f);
    assert_eq!(used(&w), 0);
}

#[test]
fn logged_headers_count_against_the_budget() {
    let mut w = worker(r#"{"max_bytes":100,"capture_budget_bytes":300,"log_headers":true}"#);
    let mut headers = post(Some(100));
    headers.push(("x-big", "v".repeat(40)));
    let bytes: usize = headers.iter().map(|(k, v)| k.len() + v.len()).sum();
    let a = open(&mut w, &headers);
    assert_eq!(used(&w), 100 + bytes);
    let b = open(&mut w, &headers);
    assert_eq!(used(&w), 100 + bytes, "b does not fit");
    w.complete(b);
    let line = last(&w);
    assert_eq!(line["request_headers"], Value::Null, "headers dropped with the capture: {line}");
    assert_eq!(line["request"]["skipped"], "budget");
    w.complete(a);
    assert_eq!(last(&w)["request_headers"]["x-big"].as_str().map(str::len), Some(40));
    assert_eq!(used(&w), 0);
}

#[test]
fn a_capture_never_grows_past_its_reservation() {
    // content-length says 10; the body is longer (a lying client): 10 bytes kept, truncated.
    let mut w = worker(r#"{"max_bytes":100}"#);
    let id = open(&mut w, &post(Some(10)));
    w.request_body(id, &[b'x'; 50], true);
    {
        let f = w.filter(id);
        let rec = f.record.as_ref().unwrap();
        assert_eq!(rec.request.captured.len(), 10);
        assert!(rec.request.captured.capacity() <= 10);
    }
    assert_eq!(used(&w), 10);
    w.complete(id);
    assert_eq!(last(&w)["request"]["truncated"], true);
    assert_eq!(used(&w), 0);
}
