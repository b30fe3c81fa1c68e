//! The host capabilities no shipped filter uses yet, each in a real Envoy: gRPC calls and their
//! status (`dispatch_grpc_call`, `call_status`), whole-map replace (`set_headers`) and `random`.
//! They run through the test-only probe module (e2e/probe, `dist/test/probe.wasm`) on
//! e2e/probe/envoy.yaml, steered by request headers; the probe's doc lists them.

use e2e::envoy::{Envoy, EnvoyOptions};
use e2e::http::{Request, Response};
use e2e::upstream::{encode_hex, Upstream};
use e2e::{repo_root, LISTENER_PORT, UPSTREAM_PORT};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use tonic_health::ServingStatus;

const GRPC_PORT: u16 = 18090;

fn start() -> (Envoy, Upstream) {
    let envoy = Envoy::start_path(&repo_root().join("e2e/probe/envoy.yaml"), EnvoyOptions::default()).unwrap();
    let upstream = Upstream::start(envoy.port(UPSTREAM_PORT)).unwrap();
    (envoy, upstream)
}

/// grpc.health.v1.Health (tonic-health) on a loopback port, recording the `x-probe-meta`
/// metadata of each call. Stopped and joined on drop.
struct GrpcServer {
    metadata: Arc<Mutex<Vec<Vec<u8>>>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl GrpcServer {
    fn start(port: u16) -> GrpcServer {
        // Bound before returning: the first call must not race the server's start.
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let metadata = Arc::new(Mutex::new(Vec::new()));
        let seen = metadata.clone();
        let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async move {
                let (reporter, health) = tonic_health::server::health_reporter();
                reporter.set_service_status("probe.NotServing", ServingStatus::NotServing).await;
                let record = move |request: tonic::Request<()>| {
                    if let Some(value) = request.metadata().get("x-probe-meta") {
                        seen.lock().unwrap().push(value.as_bytes().to_vec());
                    }
                    Ok(request)
                };
                let incoming =
                    tonic::transport::server::TcpIncoming::from(tokio::net::TcpListener::from_std(listener).unwrap());
                tonic::transport::Server::builder()
                    .add_service(tonic::service::interceptor::InterceptedService::new(health, record))
                    .serve_with_incoming_shutdown(incoming, async {
                        let _ = stop.await;
                    })
                    .await
                    .unwrap();
            });
        });
        GrpcServer { metadata, shutdown: Some(shutdown), thread: Some(thread) }
    }

    fn metadata(&self) -> Vec<Vec<u8>> {
        self.metadata.lock().unwrap().clone()
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// (status code, message, response message hex) as the probe reported them from
/// `call_status` and the gRPC receive buffer.
fn grpc(envoy: &Envoy, service: &str, extra: &[(&str, &str)]) -> (String, String, String, Response) {
    let mut request = Request::get("/grpc").header("x-probe-grpc", service);
    for (name, value) in extra {
        request = request.header(name, value);
    }
    let r = request.send(envoy.port(LISTENER_PORT)).unwrap();
    assert_eq!(r.status, 200, "{r}");
    let field = |name: &str| r.header(name).unwrap_or_else(|| panic!("no {name}:\n{r}"));
    (field("x-probe-grpc-status"), field("x-probe-grpc-message"), field("x-probe-grpc-response"), r.clone())
}

#[test]
fn grpc_call_answers_reach_the_calling_stream_with_status_and_message() {
    let (envoy, _upstream) = start();
    let server = GrpcServer::start(envoy.port(GRPC_PORT));

    // Overall health: HealthCheckResponse { status: SERVING (1) } = 08 01, status OK.
    let (status, message, response, r) = grpc(&envoy, "", &[("x-probe-grpc-meta", "probe-metadata-1")]);
    assert_eq!((status.as_str(), message.as_str(), response.as_str()), ("0", "", "0801"), "{r}");
    assert_eq!(r.header("x-probe-grpc-callback-status").as_deref(), Some("0"));
    // The request message is read by the server: a registered service answers its own status
    // (NOT_SERVING = 2), so a different response proves the request message went out.
    let (status, _, response, r) = grpc(&envoy, "probe.NotServing", &[]);
    assert_eq!((status.as_str(), response.as_str()), ("0", "0802"), "{r}");
    // Initial metadata arrived as gRPC metadata.
    assert_eq!(server.metadata(), vec![b"probe-metadata-1".to_vec()]);
}

#[test]
fn grpc_failures_surface_their_status_code_and_message_through_call_status() {
    let (envoy, _upstream) = start();
    let _server = GrpcServer::start(envoy.port(GRPC_PORT));

    // The server answers NOT_FOUND for a service it does not know. The message is the
    // grpc-message header as sent (percent-encoded, as the gRPC spec has it); Envoy appends
    // its response details (`{via_upstream}`).
    let (status, message, response, r) = grpc(&envoy, "no.such.Service", &[]);
    assert_eq!((status.as_str(), response.as_str()), ("5", ""), "{r}");
    assert!(message.starts_with("service%20not%20registered"), "{r}");
    // The callback's own argument carries the same code.
    assert_eq!(r.header("x-probe-grpc-callback-status").as_deref(), Some("5"), "{r}");

    // A method the server does not have: UNIMPLEMENTED.
    let (status, _, response, r) = grpc(&envoy, "", &[("x-probe-grpc-method", "NoSuchMethod")]);
    assert_eq!((status.as_str(), response.as_str()), ("12", ""), "{r}");

    // Nothing listens behind this cluster: UNAVAILABLE, with Envoy's reason as the message.
    let (status, message, _, r) = grpc(&envoy, "", &[("x-probe-grpc-cluster", "probe_grpc_down")]);
    assert_eq!(status, "14", "{r}");
    assert!(!message.is_empty(), "{r}");
}

#[test]
fn grpc_cluster_names_are_never_misread_as_a_serialized_grpc_service() {
    let (envoy, _upstream) = start();
    let _server = GrpcServer::start(envoy.port(GRPC_PORT));
    // "hx" is well-formed protobuf (field 13, varint 'x'). Passed bare, Envoy would parse it as
    // a GrpcService with no target; shared::abi passes an encoded GrpcService naming it.
    let (status, _, response, r) = grpc(&envoy, "", &[("x-probe-grpc-cluster", "hx")]);
    assert_eq!((status.as_str(), response.as_str()), ("0", "0801"), "{r}");

    // A cluster Envoy does not have: refused when dispatched, nothing pending.
    let r = Request::get("/").header("x-probe-grpc", "").header("x-probe-grpc-cluster", "no_such_cluster");
    let r = r.send(envoy.port(LISTENER_PORT)).unwrap();
    assert_eq!((r.status, r.header("x-probe-error").as_deref()), (503, Some("host failure")), "{r}");
    // A name too long to encode is refused before the host sees it.
    let long = "c".repeat(shared::abi::MAX_GRPC_CLUSTER_LEN + 1);
    let r = Request::get("/").header("x-probe-grpc", "").header("x-probe-grpc-cluster", &long);
    let r = r.send(envoy.port(LISTENER_PORT)).unwrap();
    assert_eq!((r.status, r.header("x-probe-error").as_deref()), (503, Some("bad argument")), "{r}");
}

/// A response header line with obs-text bytes, which the echo upstream sends as is.
const RESPONSE_ODD: &[u8] = b"x-resp-odd: caf\xe9 \xff";

/// Headers as the client sends them, chosen to break a careless whole-map replace: repeated
/// names (order matters), obs-text bytes, an empty value, a long value, mixed-case names.
fn tricky_headers(edit: &str) -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("x-probe-edit", edit.as_bytes().to_vec()),
        ("x-rep", b"first".to_vec()),
        ("X-Mixed-Case", b"Value With Spaces".to_vec()),
        ("x-rep", b"second".to_vec()),
        ("x-odd", b"caf\xe9 \x80\xff tail".to_vec()),
        ("x-empty", Vec::new()),
        ("x-probe-drop", b"the edit removes this one".to_vec()),
        ("x-long", vec![b'l'; 6000]),
        ("x-rep", b"third".to_vec()),
        // The echo upstream answers with these as response headers (repeated too).
        ("x-echo-header", b"x-resp-rep: one".to_vec()),
        ("x-echo-header", b"x-resp-rep: two".to_vec()),
        ("x-echo-header", b"x-powered-by: demo".to_vec()),
        ("x-echo-header-hex", encode_hex(RESPONSE_ODD).into_bytes()),
    ]
}

fn send_tricky(envoy: &Envoy, edit: &str) -> Response {
    let mut request = Request::get("/headers?q=1");
    for (name, value) in tricky_headers(edit) {
        request = request.header_bytes(name, &value);
    }
    let r = request.send(envoy.port(LISTENER_PORT)).unwrap();
    assert_eq!(r.status, 200, "{r}");
    r
}

fn values<'a>(headers: &'a [(String, Vec<u8>)], name: &str) -> Vec<&'a [u8]> {
    headers.iter().filter(|(n, _)| n == name).map(|(_, v)| v.as_slice()).collect()
}

#[test]
fn set_headers_replaces_whole_maps_and_every_other_header_survives() {
    let (envoy, upstream) = start();

    let r = send_tricky(&envoy, "set-headers");
    let sent = upstream.requests().pop().unwrap();
    assert_eq!((sent.method.as_str(), sent.path.as_str()), ("GET", "/headers?q=1"), "pseudo-headers survive");
    for (name, _) in tricky_headers("set-headers") {
        let name = name.to_ascii_lowercase();
        if name == "x-probe-drop" {
            continue;
        }
        let want: Vec<Vec<u8>> = tricky_headers("set-headers")
            .into_iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(&name))
            .map(|(_, v)| v)
            .collect();
        assert_eq!(values(&sent.headers, &name), want, "{name} upstream");
    }
    // It was a replace: the added header is there once, the dropped one is gone.
    assert_eq!(values(&sent.headers, "x-probe-added"), vec![b"1"]);
    assert!(values(&sent.headers, "x-probe-drop").is_empty());
    assert!(values(&sent.headers, "x-probe-error").is_empty(), "{:?}", sent.headers);

    // The response map was replaced too: the upstream's repeated headers survive in order,
    // x-powered-by (the echo upstream's default) is gone, the added header is there.
    assert_eq!(r.header_all("x-resp-rep"), vec!["one", "two"], "{r}");
    assert_eq!(values(&r.headers, "x-resp-odd"), vec![&RESPONSE_ODD[12..]], "{r}");
    assert_eq!(r.header_all("x-probe-added"), vec!["1"], "{r}");
    assert!(!r.has_header("x-powered-by"), "{r}");

    // Control: without the edit the dropped header reaches the upstream and nothing is added
    // (the assertions above can fail).
    let r = send_tricky(&envoy, "none");
    assert!(r.has_header("x-powered-by") && !r.has_header("x-probe-added"), "{r}");
    let plain = upstream.requests().pop().unwrap();
    assert_eq!(values(&plain.headers, "x-probe-drop").len(), 1);
    assert!(values(&plain.headers, "x-probe-added").is_empty());

    // Differential: the same edits made header by header give the upstream the same headers
    // in the same order (but for the request id and the mode header itself).
    send_tricky(&envoy, "per-header");
    let per_header = upstream.requests().pop().unwrap();
    let comparable = |headers: &[(String, Vec<u8>)]| -> Vec<(String, Vec<u8>)> {
        headers.iter().filter(|(n, _)| n != "x-request-id" && n != "x-probe-edit").cloned().collect()
    };
    assert_eq!(comparable(&sent.headers), comparable(&per_header.headers));
}

#[test]
fn set_headers_past_the_hosts_pair_limit_is_refused_and_the_request_loses_nothing() {
    let (envoy, upstream) = start();
    // Envoy's host reads a pairs buffer of more than 1024 pairs as *no pairs*: replacing the map
    // with it would delete every header (pseudo-headers included) and report success.
    let mut request = Request::get("/many").header("x-probe-edit", "set-headers");
    for i in 0..1100 {
        request = request.header(&format!("x-many-{i}"), &i.to_string());
    }
    let r = request.send(envoy.port(LISTENER_PORT)).unwrap();
    assert_eq!(r.status, 200, "{r}");
    let sent = upstream.requests().pop().unwrap();
    assert_eq!(sent.path, "/many");
    for i in 0..1100 {
        assert_eq!(values(&sent.headers, &format!("x-many-{i}")), vec![i.to_string().as_bytes()], "x-many-{i}");
    }
    assert_eq!(values(&sent.headers, "x-probe-error"), vec![b"bad argument"]);
}

#[test]
fn random_bytes_differ_between_requests_and_fill_the_whole_buffer() {
    let (envoy, _upstream) = start();
    let random = |n: usize| {
        let r = Request::get("/").header("x-probe-random", &n.to_string()).send(envoy.port(LISTENER_PORT)).unwrap();
        assert_eq!(r.status, 200, "{r}");
        r
    };
    let a = random(32);
    let b = random(32);
    assert_eq!(a.header("x-probe-random-len").as_deref(), Some("32"));
    let head = |r: &Response| r.header("x-probe-random-head").unwrap();
    assert_eq!(head(&a).len(), 64, "{a}");
    assert_ne!(head(&a), head(&b), "two requests, two different values");

    // Larger than the host's 64 KiB per call: served in chunks, the last one filled as well.
    let big = random(200_000);
    assert_eq!(big.header("x-probe-random-len").as_deref(), Some("200000"), "{big}");
    assert_eq!(big.header("x-probe-random-distinct").as_deref(), Some("256"), "{big}");
    assert_ne!(big.header("x-probe-random-tail").unwrap(), "00".repeat(32), "{big}");
}
