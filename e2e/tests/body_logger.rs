//! body-logger in a real Envoy, on envoy-configs/body-logger.yaml: bodies pass byte-identical
//! (HTTP/1.1 with content-length and chunked, HTTP/2 with trailers, 0 B to 10 MB), and the one
//! log line per request, read from Envoy's log and from the access log's
//! %FILTER_STATE(wasm.body_log:PLAIN)%, is bounded and holds none of the planted secrets: the
//! leak corpus (`body_logger::corpus`, the shapes of issue 14) never reaches it, the readable
//! corpus is logged as sent, and the per-worker capture budget holds.

use body_logger::config::DEFAULT_MAX_BYTES;
use body_logger::corpus::{leak_corpus, readable_corpus, LeakCase};
use e2e::envoy::{Envoy, EnvoyOptions};
use e2e::http::{read_response, Request, Response};
use e2e::upstream::Upstream;
use e2e::{LISTENER_PORT, UPSTREAM_PORT};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const CONFIG: &str = "body-logger.yaml";
const MAX: usize = DEFAULT_MAX_BYTES;

fn start() -> (Envoy, Upstream) {
    let envoy = Envoy::start(CONFIG).unwrap();
    let upstream = Upstream::start(envoy.port(UPSTREAM_PORT)).unwrap();
    (envoy, upstream)
}

fn sha(b: &[u8]) -> String {
    Sha256::digest(b).iter().map(|x| format!("{x:02x}")).collect()
}

/// The filter's lines in Envoy's log (`… [wasm] … wasm log body-logger …: {json}`).
fn wasm_lines(envoy: &Envoy) -> Vec<Value> {
    envoy
        .log()
        .lines()
        .filter(|l| l.contains("[wasm]") && l.contains("\"request_id\""))
        .filter_map(|l| l.find('{').and_then(|i| serde_json::from_str(&l[i..]).ok()))
        .collect()
}

/// The access log's `body_log=` field, per line (`-` when the filter set nothing).
fn access_lines(envoy: &Envoy) -> Vec<String> {
    envoy
        .log()
        .lines()
        .filter(|l| l.starts_with("[access]"))
        .filter_map(|l| l.split_once(" body_log=").map(|(_, v)| v.to_string()))
        .collect()
}

/// Wait (bounded) for the one log line of request `id` in Envoy's log and the access log;
/// both must be the same JSON, and there must be exactly one of each.
fn line_for(envoy: &Envoy, id: &str) -> Value {
    lines_for(envoy, &[id.to_string()]).remove(0)
}

/// [`line_for`] for many requests at once, in `ids` order: the logs are read once per poll, not
/// once per request (a corpus of hundreds of requests made that quadratic), and the wait that
/// lets a duplicate line show up is paid once.
fn lines_for(envoy: &Envoy, ids: &[String]) -> Vec<Value> {
    use std::collections::HashMap;
    let by_id = |envoy: &Envoy| {
        let mut wasm: HashMap<String, Vec<Value>> = HashMap::new();
        for v in wasm_lines(envoy) {
            if let Some(id) = v["request_id"].as_str() {
                wasm.entry(id.to_string()).or_default().push(v);
            }
        }
        let mut access: HashMap<String, Vec<Value>> = HashMap::new();
        for v in access_lines(envoy).iter().filter_map(|v| serde_json::from_str::<Value>(v).ok()) {
            if let Some(id) = v["request_id"].as_str() {
                access.entry(id.to_string()).or_default().push(v);
            }
        }
        (wasm, access)
    };
    let deadline = Instant::now() + Duration::from_secs(30 + ids.len() as u64 / 10);
    loop {
        let (wasm, access) = by_id(envoy);
        let missing = ids.iter().find(|id| !wasm.contains_key(*id) || !access.contains_key(*id));
        let Some(id) = missing else { break };
        assert!(
            Instant::now() < deadline,
            "no log line for {id} (wasm: {}, access: {})",
            wasm.get(id).map_or(0, Vec::len),
            access.get(id).map_or(0, Vec::len)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Let a duplicate, if any, reach the log too.
    std::thread::sleep(Duration::from_millis(300));
    let (mut wasm, mut access) = by_id(envoy);
    ids.iter()
        .map(|id| {
            let mine = wasm.remove(id).unwrap_or_default();
            let theirs = access.remove(id).unwrap_or_default();
            assert_eq!(mine.len(), 1, "exactly one line for {id}: {mine:?}");
            assert_eq!(theirs.len(), 1, "exactly one access log line for {id}: {theirs:?}");
            assert_eq!(mine[0], theirs[0], "Envoy's log and the access log carry the same line");
            mine[0].clone()
        })
        .collect()
}

/// Deterministic letters (no digits: the card-number scanner must not fire on filler).
fn filler(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"[(x % 52) as usize]
        })
        .collect()
}

fn post(path: &str, id: &str, content_type: &str, body: &[u8]) -> Request {
    Request::get(path)
        .method("POST")
        .header("x-request-id", id)
        .header("content-type", content_type)
        .header("x-echo-content-type", content_type)
        .body(body)
}

#[test]
fn bodies_from_0_to_10_mb_pass_byte_identical_and_the_log_is_bounded() {
    let (envoy, upstream) = start();
    let port = envoy.port(LISTENER_PORT);
    let sizes = [0, 1, MAX - 1, MAX, MAX + 1, 64 * 1024, 1024 * 1024, 10 * 1024 * 1024];
    for (i, size) in sizes.into_iter().enumerate() {
        let body = filler(size, i as u64 + 7);
        let id = format!("size-{size}");
        let r = post("/upload", &id, "text/plain", &body).send(port).unwrap();
        assert_eq!(r.status, 200, "{size}");
        let got = upstream.requests().into_iter().find(|q| q.header_value("x-request-id").as_deref() == Some(&id));
        let got = got.unwrap_or_else(|| panic!("{id} never reached the upstream"));
        assert_eq!(sha(&got.body), sha(&body), "{size} bytes: the upstream got other bytes");
        if size > 0 {
            // (An empty request gets the upstream's JSON summary instead of an echo.)
            assert_eq!(sha(&r.body), sha(&body), "{size} bytes: the client got other bytes back");
        }

        let line = line_for(&envoy, &id);
        let want = size.min(MAX);
        for dir in ["request", "response"] {
            let d = &line[dir];
            if size == 0 && dir == "response" {
                assert_eq!(d["bytes"], r.body.len() as u64);
                assert_eq!(d["body"].as_str().unwrap().as_bytes(), &r.body[..r.body.len().min(MAX)]);
                continue;
            }
            assert_eq!(d["bytes"], size as u64, "{id} {dir}: {d}");
            assert_eq!(d["captured_bytes"], want as u64, "{id} {dir}");
            assert_eq!(d["truncated"], size > MAX, "{id} {dir}");
            assert_eq!(d["complete"], true, "{id} {dir}");
            let logged = d["body"].as_str().unwrap();
            assert!(logged.len() <= MAX, "{id} {dir}: {} bytes logged", logged.len());
            assert_eq!(logged.as_bytes(), &body[..want], "{id} {dir}: the first max_bytes, unchanged");
        }
        assert_eq!(line["method"], "POST");
        assert_eq!(line["path"], "/upload");
        assert_eq!(line["status"], 200);
    }
    assert!(envoy.wait_stat("wasmcustom.body_logger.logged", sizes.len() as u64) >= sizes.len() as u64);
    // Truncated: both directions of the four bodies above max_bytes.
    assert_eq!(envoy.wait_stat("wasmcustom.body_logger.truncated", 8), 8);
    assert!(!envoy.log().contains("panic"));
}

#[test]
fn planted_secrets_never_reach_the_log_but_reach_the_upstream_unchanged() {
    let (envoy, upstream) = start();
    let port = envoy.port(LISTENER_PORT);
    // A JSON value cut by max_bytes: the secret starts a few bytes before the boundary.
    let prefix = r#"{"note":""#;
    let key = r#"","password":""#;
    let pad = MAX - prefix.len() - key.len() - 6;
    let cut_json = format!("{prefix}{}{key}CUTSECRET-tail-beyond-the-capture\"}}", "p".repeat(pad));
    assert!(cut_json.find("CUTSECRET").unwrap() < MAX && cut_json.find("CUTSECRET").unwrap() + 9 > MAX);

    let cases: Vec<(&str, &str, String, &[&str])> = vec![
        (
            "json",
            "application/json",
            r#"{"user":"ann","Password":"JSONSECRET1","profile":{"keys":[{"API_KEY":"JSONSECRET2"}],"client_secret":{"v":"JSONSECRET3"}},"iban":"DE89JSONSECRET4","pay":"sk_live_JSONSECRET5x"}"#.to_string(),
            &["JSONSECRET1", "JSONSECRET2", "JSONSECRET3", "JSONSECRET4", "JSONSECRET5"],
        ),
        (
            "form",
            "application/x-www-form-urlencoded; charset=utf-8",
            "user=ann&password=FORMSECRET1&pass%77ord=FORMSECRET2&access_token=FORMSECRET3&x=1".to_string(),
            &["FORMSECRET1", "FORMSECRET2", "FORMSECRET3"],
        ),
        (
            "text",
            "text/plain",
            "hello\npassword: TEXTSECRET1\nAuthorization: Bearer TEXTSECRET2\ncard 4111 1111 1111 1111 ok\n\
             jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJURVhUU0VDUkVUMyJ9.c2ln"
                .to_string(),
            &["TEXTSECRET1", "TEXTSECRET2", "4111 1111", "eyJzdWIiOiJURVhUU0VDUkVUMyJ9"],
        ),
        ("cut", "application/json", cut_json, &["CUTSEC", "CUTSE", "-tail-"]),
        (
            "invalid-json",
            "application/json",
            "{not json, \"token\": \"BADJSONSECRET1\", Bearer BADJSONSECRET2 \u{7f}".to_string(),
            &["BADJSONSECRET1", "BADJSONSECRET2"],
        ),
    ];
    for (name, content_type, body, secrets) in cases {
        let id = format!("secrets-{name}");
        let r = post(&format!("/s/{name}?access_token=QUERYSECRET"), &id, content_type, body.as_bytes())
            .header("authorization", "Bearer HEADERSECRET")
            .header("cookie", "sid=COOKIESECRET")
            .send(port)
            .unwrap();
        assert_eq!(r.status, 200, "{name}: {r}");
        assert_eq!(r.body, body.as_bytes(), "{name}: the client got the body back unchanged");
        let got = upstream.requests().into_iter().find(|q| q.header_value("x-request-id").as_deref() == Some(&id));
        let got = got.unwrap();
        assert_eq!(got.body, body.as_bytes(), "{name}: the upstream got the body unchanged");
        assert_eq!(got.header_value("authorization").as_deref(), Some("Bearer HEADERSECRET"));

        let line = line_for(&envoy, &id);
        let text = line.to_string();
        for secret in secrets.iter().chain(&["QUERYSECRET", "HEADERSECRET", "COOKIESECRET"]) {
            assert!(!text.contains(secret), "{name}: {secret} is in the log line: {text}");
        }
        assert!(line["redactions"].as_u64().unwrap() >= secrets.len() as u64, "{name}: {text}");
        assert!(line["request"]["body"].as_str().unwrap().len() <= MAX + 16, "{name}");
        assert_eq!(line["request_headers"]["authorization"], "[REDACTED]");
        assert_eq!(line["path"], format!("/s/{name}?access_token=[REDACTED]"));
    }
    // The access log's copy is the same redacted line: no secret anywhere in Envoy's output.
    let log = envoy.log();
    for s in ["JSONSECRET", "FORMSECRET", "TEXTSECRET", "CUTSEC", "BADJSONSECRET", "QUERYSECRET", "HEADERSECRET"] {
        assert!(!log.contains(s), "{s} in Envoy's output");
    }
    assert!(envoy.wait_stat("wasmcustom.body_logger.redactions", 20) >= 20);
}

#[test]
fn chunked_upload_from_the_client() {
    let (envoy, upstream) = start();
    let port = envoy.port(LISTENER_PORT);
    let chunks: Vec<Vec<u8>> = (0..40).map(|i| filler(97 + i * 13, i as u64 + 1)).collect();
    let all: Vec<u8> = chunks.concat();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "POST /chunked HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\nx-request-id: chunked-1\r\n\
         content-type: application/json\r\nx-echo-content-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    .unwrap();
    for c in &chunks {
        write!(s, "{:x}\r\n", c.len()).unwrap();
        s.write_all(c).unwrap();
        s.write_all(b"\r\n").unwrap();
        s.flush().unwrap();
    }
    s.write_all(b"0\r\n\r\n").unwrap();
    let r: Response = read_response(&mut BufReader::new(s), false).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(sha(&r.body), sha(&all));
    let got = upstream.requests().into_iter().find(|q| q.path == "/chunked").unwrap();
    assert_eq!(sha(&got.body), sha(&all), "the upstream got the chunks' bytes, in order");

    let line = line_for(&envoy, "chunked-1");
    assert_eq!(line["request"]["bytes"], all.len() as u64);
    assert_eq!(line["request"]["captured_bytes"], MAX as u64);
    assert_eq!(line["request"]["body"].as_str().unwrap().as_bytes(), &all[..MAX]);
    assert_eq!(line["request"]["complete"], true);
}

/// HTTP/2 over cleartext (prior knowledge): a body in several DATA frames, then trailers, so
/// the request's end of stream comes with the trailers, not with a body chunk.
fn h2_post_with_trailers(
    port: u16,
    path: &str,
    headers: &[(&str, &str)],
    chunks: &[Vec<u8>],
    trailers: &[(&'static str, &str)],
) -> Result<(u16, Vec<u8>), String> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.map_err(|e| e.to_string())?;
        let (client, connection) = h2::client::handshake(tcp).await.map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let mut client = client.ready().await.map_err(|e| e.to_string())?;
        let mut request = http::Request::builder().method("POST").uri(format!("http://localhost:{port}{path}"));
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let request = request.body(()).map_err(|e| e.to_string())?;
        let (response, mut stream) = client.send_request(request, false).map_err(|e| e.to_string())?;
        for c in chunks {
            stream.send_data(bytes::Bytes::copy_from_slice(c), false).map_err(|e| e.to_string())?;
        }
        let mut t = http::HeaderMap::new();
        for (k, v) in trailers {
            t.insert(*k, http::HeaderValue::from_str(v).map_err(|e| e.to_string())?);
        }
        stream.send_trailers(t).map_err(|e| e.to_string())?;
        let response = tokio::time::timeout(Duration::from_secs(30), response)
            .await
            .map_err(|_| "no response in 30 s".to_string())?
            .map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let mut body = response.into_body();
        let mut out = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.map_err(|e| e.to_string())?;
            let _ = body.flow_control().release_capacity(chunk.len());
            out.extend_from_slice(&chunk);
        }
        Ok((status, out))
    })
}

#[test]
fn http2_body_then_trailers_is_logged_once_with_the_full_capture() {
    let (envoy, upstream) = start();
    let port = envoy.port(LISTENER_PORT);
    for (id, sizes) in [("h2-small", vec![10, 20, 30]), ("h2-large", vec![3000, 3000, 50_000])] {
        let chunks: Vec<Vec<u8>> = sizes.iter().enumerate().map(|(i, n)| filler(*n, i as u64 + 3)).collect();
        let all = chunks.concat();
        let (status, body) = h2_post_with_trailers(
            port,
            "/h2",
            &[("x-request-id", id), ("content-type", "text/plain"), ("x-echo-content-type", "text/plain")],
            &chunks,
            &[("x-checksum", "abc")],
        )
        .unwrap();
        assert_eq!(status, 200, "{id}");
        assert_eq!(sha(&body), sha(&all), "{id}: the client got the body back");
        let got = upstream.requests().into_iter().find(|q| q.header_value("x-request-id").as_deref() == Some(id));
        assert_eq!(sha(&got.unwrap().body), sha(&all), "{id}: the upstream got the body");

        let line = line_for(&envoy, id);
        let want = all.len().min(MAX);
        assert_eq!(line["request"]["bytes"], all.len() as u64, "{id}");
        assert_eq!(line["request"]["complete"], true, "{id}: end of stream came with the trailers");
        assert_eq!(line["request"]["body"].as_str().unwrap().as_bytes(), &all[..want], "{id}");
        assert_eq!(line["response"]["body"].as_str().unwrap().as_bytes(), &all[..want], "{id}");
        assert_eq!(line["status"], 200);
    }
}

#[test]
fn binary_is_skipped_and_unselected_requests_leave_the_access_log_field_empty() {
    let (envoy, _upstream) = start();
    let port = envoy.port(LISTENER_PORT);
    let png = b"\x89PNG\r\n\x1a\n\x00\x00password=notreally";
    let r = post("/img", "bin-1", "image/png", png).send(port).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body, png);
    let line = line_for(&envoy, "bin-1");
    assert_eq!(line["request"]["skipped"], "content_type");
    assert_eq!(line["request"]["body"], Value::Null);
    assert_eq!(line["request"]["bytes"], png.len() as u64);
    assert_eq!(envoy.wait_stat("wasmcustom.body_logger.skipped_content_type", 2), 2);

    // The same file with sampling off: nothing logged, the access-log field is `-`.
    let envoy = Envoy::start_with(
        CONFIG,
        EnvoyOptions {
            edit: Some(Box::new(|c: String| c.replace(r#""sample_rate": 1.0"#, r#""sample_rate": 0"#))),
            ..EnvoyOptions::default()
        },
    )
    .unwrap();
    let _upstream = Upstream::start(envoy.port(UPSTREAM_PORT)).unwrap();
    let r = post("/x", "sampled-out", "application/json", b"{}").send(envoy.port(LISTENER_PORT)).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(envoy.wait_stat("wasmcustom.body_logger.sampled_out", 1), 1);
    let deadline = Instant::now() + Duration::from_secs(30);
    while access_lines(&envoy).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(access_lines(&envoy), vec!["-"]);
    assert!(wasm_lines(&envoy).is_empty());
}

#[test]
fn bad_configs_are_refused_naming_the_field() {
    for (from, to, field) in [
        (r#""max_bytes": 4096"#, r#""max_bytes": 0"#, "max_bytes"),
        (r#""sample_rate": 1.0"#, r#""sample_rate": 1.5"#, "sample_rate"),
        (r#""regex": "sk_(live|test)_[A-Za-z0-9]{8,}""#, r#""regex": "sk_(""#, "redact.patterns[0].regex"),
        (r#""log_level": "info""#, r#""log_level": "loud""#, "log_level"),
        // A quote in the replacement would end the JSON string it is written into.
        (
            r#""additional_fields": ["iban"],"#,
            r#""additional_fields": ["iban"], "replacement": "[\"]","#,
            "redact.replacement",
        ),
    ] {
        let (from, to) = (from.to_string(), to.to_string());
        let opts = EnvoyOptions {
            edit: Some(Box::new(move |c: String| {
                assert!(c.contains(&from), "{from} not in the config");
                c.replace(&from, &to)
            })),
            ..EnvoyOptions::default()
        };
        let mut envoy = Envoy::spawn(CONFIG, &opts).unwrap();
        let status = envoy.wait_exit(Duration::from_secs(60));
        assert!(status.is_some_and(|s| !s.success()), "Envoy accepted a bad {field}");
        let log = envoy.log();
        assert!(
            log.contains(&format!("body-logger: invalid configuration, refusing to start: field `{field}`")),
            "{field}:\n{log}"
        );
    }
}

// ---- the corpora (issue 14) ----

const SHIPPED_CONTENT_TYPES: &str =
    r#""content_types": ["application/json", "application/*+json", "text/*", "application/x-www-form-urlencoded"],"#;

/// The shipped config with XML and multipart captured too (the corpora use them), and `edit`.
fn corpus_options(extra: &'static [(&'static str, &'static str)]) -> EnvoyOptions {
    EnvoyOptions {
        edit: Some(Box::new(move |c: String| {
            assert!(c.contains(SHIPPED_CONTENT_TYPES), "the shipped content_types changed");
            let mut c = c.replace(
                SHIPPED_CONTENT_TYPES,
                r#""content_types": ["application/json", "application/*+json", "text/*", "application/x-www-form-urlencoded", "application/xml", "application/*+xml", "multipart/form-data"],"#,
            );
            for (from, to) in extra {
                assert!(c.contains(from), "{from} not in the config");
                c = c.replace(from, to);
            }
            c
        })),
        ..EnvoyOptions::default()
    }
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

fn gunzip(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(b), &mut out).unwrap();
    out
}

/// The case as the client sends it; the echo upstream answers with the same body, its
/// content type, its content-encoding and the case's response headers.
fn case_request(case: &LeakCase, id: &str) -> Request {
    let body = if case.gzip { gzip(&case.body) } else { case.body.clone() };
    let mut r = Request::get(&case.path)
        .method("POST")
        .header("x-request-id", id)
        .header("content-type", case.content_type)
        .header("x-echo-content-type", case.content_type);
    for e in &case.content_encoding {
        r = r.header("content-encoding", e).header("x-echo-header", &format!("content-encoding: {e}"));
    }
    for (k, v) in &case.request_headers {
        r = r.header(k, v);
    }
    for (k, v) in &case.response_headers {
        r = r.header("x-echo-header", &format!("{k}: {v}"));
    }
    r.body(&body)
}

#[test]
fn leak_corpus_never_reaches_the_log_and_reaches_the_upstream_unchanged() {
    let envoy = Envoy::start_with(CONFIG, corpus_options(&[])).unwrap();
    let upstream = Upstream::start(envoy.port(UPSTREAM_PORT)).unwrap();
    let port = envoy.port(LISTENER_PORT);
    let cases = leak_corpus();
    let mut all_secrets = Vec::new();
    for case in &cases {
        let id = format!("leak-{}", case.name);
        let request = case_request(case, &id);
        let r = request.send(port).unwrap();
        assert_eq!(r.status, 200, "{}: {r}", case.name);
        assert_eq!(r.body, request.body, "{}: the client got the body back unchanged", case.name);
        let got = upstream.requests().into_iter().find(|q| q.header_value("x-request-id").as_deref() == Some(&id));
        let got = got.unwrap_or_else(|| panic!("{} never reached the upstream", case.name));
        assert_eq!(got.body, request.body, "{}: the upstream got the body unchanged", case.name);
        // Every planted secret is in what the upstream got (the plain body, its path and
        // headers) or in what the client got back (the upstream's response headers).
        let plain = if case.gzip { gunzip(&got.body) } else { got.body.clone() };
        let mut received = String::from_utf8_lossy(&plain).into_owned() + &got.path;
        for (_, v) in got.headers.iter().chain(&r.headers) {
            received.push_str(&String::from_utf8_lossy(v));
        }
        for s in &case.secrets {
            assert!(received.contains(s), "{}: {s} did not reach the upstream or the client", case.name);
        }
        all_secrets.extend(case.secrets.iter().copied());
    }
    let ids: Vec<String> = cases.iter().map(|case| format!("leak-{}", case.name)).collect();
    for (case, line) in cases.iter().zip(lines_for(&envoy, &ids)) {
        case.check_line(&line.to_string()).unwrap();
    }
    // Nowhere in Envoy's output (its log, the access log) either.
    let log = envoy.log();
    for s in all_secrets {
        assert!(!log.contains(s), "{s} in Envoy's output");
    }
    let encoded = cases.iter().filter(|c| c.encoded()).count() as u64;
    assert_eq!(envoy.wait_stat("wasmcustom.body_logger.skipped_content_encoding", 2 * encoded), 2 * encoded);
}

#[test]
fn readable_corpus_is_logged_as_sent_and_redacting_everything_fails_it() {
    let send = |envoy: &Envoy, tag: &str| -> Vec<(String, Value)> {
        let port = envoy.port(LISTENER_PORT);
        let cases = readable_corpus();
        let ids: Vec<String> = cases.iter().map(|case| format!("{tag}-{}", case.name)).collect();
        for (case, id) in cases.iter().zip(&ids) {
            let r = post("/readable?page=2", id, case.content_type, case.body.as_bytes()).send(port).unwrap();
            assert_eq!(r.status, 200);
        }
        cases.iter().map(|case| case.name.to_string()).zip(lines_for(envoy, &ids)).collect()
    };
    let envoy = Envoy::start_with(CONFIG, corpus_options(&[])).unwrap();
    let _upstream = Upstream::start(envoy.port(UPSTREAM_PORT)).unwrap();
    for (case, (name, line)) in readable_corpus().iter().zip(send(&envoy, "readable")) {
        for dir in ["request", "response"] {
            case.check_logged(line[dir]["body"].as_str().unwrap()).unwrap();
        }
        assert_eq!(line["redactions"], 0, "{name}: {line}");
        assert_eq!(line["path"], "/readable?page=2");
    }
    drop(envoy);
    // The control: the same corpus with everything redacted fails every check.
    let envoy = Envoy::start_with(
        CONFIG,
        corpus_options(&[(
            r#""patterns": [{ "name": "api-keys", "regex": "sk_(live|test)_[A-Za-z0-9]{8,}" }]"#,
            r#""patterns": [{ "name": "all", "regex": "(?s).+" }]"#,
        )]),
    )
    .unwrap();
    let _upstream = Upstream::start(envoy.port(UPSTREAM_PORT)).unwrap();
    for (case, (name, line)) in readable_corpus().iter().zip(send(&envoy, "everything")) {
        let logged = line["request"]["body"].as_str().unwrap();
        assert!(case.check_logged(logged).is_err(), "{name}: the readable check passed {logged:?}");
    }
}

// ---- the per-worker capture budget (issue 14, B7) ----

/// A POST whose headers and first bytes are sent, the rest held back.
fn held_post(port: u16, id: &str, len: usize) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "POST /held HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\nx-request-id: {id}\r\n\
         content-type: text/plain\r\nx-echo-content-type: text/plain\r\ncontent-length: {len}\r\n\r\n"
    )
    .unwrap();
    s.write_all(&filler(10, 1)).unwrap();
    s.flush().unwrap();
    s
}

#[test]
fn streams_over_the_capture_budget_are_skipped_counted_and_the_vm_goes_on() {
    // One worker (the budget is per worker), 1 KiB captures, room for four.
    let envoy = Envoy::start_with(
        CONFIG,
        EnvoyOptions {
            concurrency: 1,
            edit: Some(Box::new(|c: String| {
                assert!(c.contains(r#""max_bytes": 4096,"#) && c.contains(r#""log_headers": true,"#));
                c.replace(r#""max_bytes": 4096,"#, r#""max_bytes": 1024, "capture_budget_bytes": 4096,"#)
                    .replace(r#""log_headers": true,"#, r#""log_headers": false,"#)
            })),
            ..EnvoyOptions::default()
        },
    )
    .unwrap();
    let _upstream = Upstream::start(envoy.port(UPSTREAM_PORT)).unwrap();
    let port = envoy.port(LISTENER_PORT);
    // Four slow uploads hold 4 × 1024 bytes (their content-length).
    let held: Vec<TcpStream> = (0..4).map(|i| held_post(port, &format!("held-{i}"), 1024)).collect();
    // They are past the filter once the router has sent them upstream.
    envoy.wait_stat("cluster.upstream.upstream_rq_total", 4);
    // A fifth request finds the budget spent: both directions skipped, the stream unharmed.
    let body = filler(1024, 5);
    let r = post("/over", "over-budget", "text/plain", &body).send(port).unwrap();
    assert_eq!((r.status, &r.body), (200, &body));
    let line = line_for(&envoy, "over-budget");
    for dir in ["request", "response"] {
        assert_eq!(line[dir]["skipped"], "budget", "{dir}: {line}");
        assert_eq!(line[dir]["body"], Value::Null);
        assert_eq!(line[dir]["bytes"], 1024);
    }
    assert!(envoy.wait_stat("wasmcustom.body_logger.skipped_budget", 2) >= 2);
    // The held uploads finish (or their clients go away): their captures are logged and the
    // budget comes back.
    for (i, mut s) in held.into_iter().enumerate() {
        if i == 3 {
            drop(s); // a client that disconnects: the stream is reset, its line still written
            continue;
        }
        s.write_all(&filler(1014, 2)).unwrap();
        let r = read_response(&mut BufReader::new(s), false).unwrap();
        assert_eq!(r.status, 200);
        let line = line_for(&envoy, &format!("held-{i}"));
        assert_eq!(line["request"]["captured_bytes"], 1024, "{line}");
        assert!(line["request"].get("skipped").is_none(), "{line}");
    }
    let line = line_for(&envoy, "held-3");
    assert_eq!(line["request"]["complete"], false);
    // The VM is alive and the budget free again: a later request is captured whole.
    let body = filler(1000, 6);
    let r = post("/after", "after-budget", "text/plain", &body).send(port).unwrap();
    assert_eq!(r.status, 200);
    let line = line_for(&envoy, "after-budget");
    for dir in ["request", "response"] {
        assert_eq!(line[dir]["body"].as_str().unwrap().as_bytes(), &body[..], "{dir}");
    }
    let log = envoy.log();
    assert!(!log.contains("panic") && !log.contains("wasm trap") && !log.contains("Function: proxy_on"), "{log}");
}

// ---- path rules see the normalized path ----

const NORMALIZATION: &str = "          normalize_path: true\n          merge_slashes: true\n          path_with_escaped_slashes_action: UNESCAPE_AND_REDIRECT\n";

#[test]
fn path_rules_see_the_normalized_path() {
    let api_only = |normalize: bool| EnvoyOptions {
        edit: Some(Box::new(move |c: String| {
            assert!(c.contains(r#""paths": [{ "prefix": "/" }],"#) && c.contains(NORMALIZATION));
            let c = c.replace(r#""paths": [{ "prefix": "/" }],"#, r#""paths": [{ "prefix": "/api/" }],"#);
            if normalize {
                c
            } else {
                c.replace(NORMALIZATION, "")
            }
        })),
        ..EnvoyOptions::default()
    };
    let spellings = ["//api/x", "/x/../api/y", "/./api/z"];
    // The shipped HCM settings: every spelling is seen as /api/…, and logged.
    let envoy = Envoy::start_with(CONFIG, api_only(true)).unwrap();
    let _upstream = Upstream::start(envoy.port(UPSTREAM_PORT)).unwrap();
    for (i, path) in spellings.iter().enumerate() {
        let id = format!("normalized-{i}");
        let r = Request::get(path).header("x-request-id", &id).send(envoy.port(LISTENER_PORT)).unwrap();
        assert_eq!(r.status, 200, "{path}");
        let line = line_for(&envoy, &id);
        assert!(line["path"].as_str().unwrap().starts_with("/api/"), "{path}: {line}");
    }
    drop(envoy);
    // The control: without them, the same requests reach the upstream but not the rule.
    let envoy = Envoy::start_with(CONFIG, api_only(false)).unwrap();
    let upstream = Upstream::start(envoy.port(UPSTREAM_PORT)).unwrap();
    for (i, path) in spellings.iter().enumerate() {
        let r = Request::get(path).header("x-request-id", &format!("raw-{i}")).send(envoy.port(LISTENER_PORT)).unwrap();
        assert_eq!(r.status, 200, "{path}");
    }
    assert_eq!(upstream.requests().len(), spellings.len());
    let deadline = Instant::now() + Duration::from_secs(10);
    while access_lines(&envoy).len() < spellings.len() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(access_lines(&envoy), vec!["-"; spellings.len()], "unlogged without normalization");
}
