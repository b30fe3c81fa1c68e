//! A gRPC test upstream and its client, for the filters' behaviour on gRPC calls
//! (`tests/grpc.rs`): the service `e2e.Echo` over h2c on a loopback port, with
//! - `Unary` (`EchoRequest` → one `EchoReply` with the request's text), and
//! - `Stream` (`EchoRequest` → `count` replies `"<text> <i>"`, then trailers with `grpc-status: 0`
//!   and the custom trailer [`STREAM_TRAILER`]).
//!
//! The messages are hand-written prost structs and the service a hand-written tonic service
//! (what `tonic-build` would generate, without protoc). Every call is recorded with its
//! metadata ([`GrpcServer::calls`]), so a test sees whether a denied call reached the upstream.
//!
//! The upstream is the cluster `upstream` of the shipped configs (template port `18080`), turned
//! to HTTP/2 by [`http2_upstream`].

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::codegen::{http, tokio_stream, Body, BoxFuture, Context, Poll, Service, StdError};
use tonic::metadata::MetadataMap;
use tonic::server::NamedService;
use tonic::{Code, Request, Response, Status};
use tonic_prost::ProstCodec;

pub const SERVICE: &str = "e2e.Echo";
pub const UNARY: &str = "/e2e.Echo/Unary";
pub const STREAM: &str = "/e2e.Echo/Stream";
/// The custom trailer `Stream` ends with, next to `grpc-status: 0`.
pub const STREAM_TRAILER: (&str, &str) = ("x-stream-trailer", "all-sent");

#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoRequest {
    #[prost(string, tag = "1")]
    pub text: String,
    /// `Stream`: how many replies.
    #[prost(uint32, tag = "2")]
    pub count: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoReply {
    #[prost(string, tag = "1")]
    pub text: String,
    #[prost(uint32, tag = "2")]
    pub index: u32,
}

/// One call the upstream received: its path and its metadata (request headers).
#[derive(Clone, Debug)]
pub struct Call {
    pub path: String,
    pub metadata: Vec<(String, Vec<u8>)>,
}

impl Call {
    pub fn header(&self, name: &str) -> Option<String> {
        self.metadata.iter().find(|(n, _)| n == name).map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }
}

type Calls = Arc<Mutex<Vec<Call>>>;

/// The service, as tonic-build would write it: route on the path, decode with prost.
#[derive(Clone)]
struct Echo {
    calls: Calls,
}

impl NamedService for Echo {
    const NAME: &'static str = SERVICE;
}

type ReplyStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<EchoReply, Status>> + Send>>;

struct Unary;

impl tonic::server::UnaryService<EchoRequest> for Unary {
    type Response = EchoReply;
    type Future = BoxFuture<Response<EchoReply>, Status>;
    fn call(&mut self, request: Request<EchoRequest>) -> Self::Future {
        let text = request.into_inner().text;
        Box::pin(async move { Ok(Response::new(EchoReply { text, index: 0 })) })
    }
}

struct Streaming;

impl tonic::server::ServerStreamingService<EchoRequest> for Streaming {
    type Response = EchoReply;
    type ResponseStream = ReplyStream;
    type Future = BoxFuture<Response<ReplyStream>, Status>;
    fn call(&mut self, request: Request<EchoRequest>) -> Self::Future {
        let EchoRequest { text, count } = request.into_inner();
        let mut items: Vec<Result<EchoReply, Status>> =
            (0..count).map(|index| Ok(EchoReply { text: format!("{text} {index}"), index })).collect();
        // A stream's `Err` becomes its trailers: with `Ok`, `grpc-status: 0` plus the metadata.
        let mut trailers = MetadataMap::new();
        trailers.insert(STREAM_TRAILER.0, STREAM_TRAILER.1.parse().unwrap_or_else(|_| unreachable!()));
        items.push(Err(Status::with_metadata(Code::Ok, "", trailers)));
        let stream: ReplyStream = Box::pin(tokio_stream::iter(items));
        Box::pin(async move { Ok(Response::new(stream)) })
    }
}

impl<B> Service<http::Request<B>> for Echo
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path().to_string();
        let metadata = request.headers().iter().map(|(n, v)| (n.as_str().to_string(), v.as_bytes().to_vec())).collect();
        if let Ok(mut calls) = self.calls.lock() {
            calls.push(Call { path: path.clone(), metadata });
        }
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(ProstCodec::<EchoReply, EchoRequest>::default());
            Ok(match path.as_str() {
                UNARY => grpc.unary(Unary, request).await,
                STREAM => grpc.server_streaming(Streaming, request).await,
                _ => Status::unimplemented(format!("no method {path}")).into_http(),
            })
        })
    }
}

/// `e2e.Echo` on `127.0.0.1:<port>` (h2c), in its own thread; stopped and joined on drop.
pub struct GrpcServer {
    pub port: u16,
    calls: Calls,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl GrpcServer {
    pub fn start(port: u16) -> Result<GrpcServer, String> {
        // Bound before returning: the first call must not race the server's start.
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).map_err(|e| format!("bind {port}: {e}"))?;
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        let calls: Calls = Arc::default();
        let echo = Echo { calls: calls.clone() };
        let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
        let thread = std::thread::spawn(move || {
            runtime.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
                let incoming = tonic::transport::server::TcpIncoming::from(listener);
                let _ = tonic::transport::Server::builder()
                    .add_service(echo)
                    .serve_with_incoming_shutdown(incoming, async {
                        let _ = stop.await;
                    })
                    .await;
            });
        });
        Ok(GrpcServer { port, calls, shutdown: Some(shutdown), thread: Some(thread) })
    }

    /// Every call received so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
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

/// An Envoy config with its cluster `upstream` speaking HTTP/2 (h2c), as a gRPC upstream needs.
/// The shipped configs declare the cluster as `  - name: upstream` followed by its
/// `connect_timeout`; `None` if `config` has no such cluster.
pub fn http2_upstream(config: &str) -> Option<String> {
    let anchor = "  - name: upstream\n";
    let at = config.find(anchor)? + anchor.len();
    let options = concat!(
        "    typed_extension_protocol_options:\n",
        "      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n",
        "        \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n",
        "        explicit_http_config: { http2_protocol_options: {} }\n",
    );
    let mut out = config.to_string();
    out.insert_str(at, options);
    Some(out)
}

/// What a call returned, as a client sees it. (One at a time, never collected: the variants'
/// sizes do not matter.)
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Outcome {
    /// The unary reply, or every streamed reply; the response headers and the trailers
    /// (`grpc-status` 0 plus custom ones; for a unary call tonic merges them into the
    /// metadata).
    Ok { replies: Vec<EchoReply>, headers: MetadataMap, trailers: Option<MetadataMap> },
    /// A non-zero `grpc-status`: code, message (percent-decoded) and the metadata of the
    /// answer (a trailers-only answer's headers).
    Err(Status),
}

impl Outcome {
    /// The status, or panics with what came instead.
    pub fn status(&self) -> &Status {
        match self {
            Outcome::Err(s) => s,
            Outcome::Ok { replies, .. } => panic!("expected a gRPC error, got {} replies", replies.len()),
        }
    }

    pub fn replies(&self) -> &[EchoReply] {
        match self {
            Outcome::Ok { replies, .. } => replies,
            Outcome::Err(s) => panic!("expected replies, got {s:?}"),
        }
    }
}

/// A real tonic client (HTTP/2 with prior knowledge) to `127.0.0.1:<port>`, one connection per
/// client, driving `e2e.Echo` through Envoy.
pub struct GrpcClient {
    runtime: tokio::runtime::Runtime,
    grpc: tonic::client::Grpc<tonic::transport::Channel>,
}

impl GrpcClient {
    pub fn connect(port: u16) -> Result<GrpcClient, String> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
        let channel = runtime
            .block_on(
                tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
                    .map_err(|e| e.to_string())?
                    .timeout(std::time::Duration::from_secs(30))
                    .connect(),
            )
            .map_err(|e| format!("connect {port}: {e}"))?;
        Ok(GrpcClient { runtime, grpc: tonic::client::Grpc::new(channel) })
    }

    fn request(message: EchoRequest, metadata: &[(&str, &str)]) -> Request<EchoRequest> {
        let mut request = Request::new(message);
        for (name, value) in metadata {
            if let (Ok(name), Ok(value)) = (
                name.parse::<tonic::metadata::AsciiMetadataKey>(),
                value.parse::<tonic::metadata::AsciiMetadataValue>(),
            ) {
                request.metadata_mut().append(name, value);
            }
        }
        request
    }

    /// `Unary` with `text` and the given metadata (request headers).
    pub fn unary(&mut self, text: &str, metadata: &[(&str, &str)]) -> Outcome {
        self.unary_at(UNARY, text, metadata)
    }

    /// A unary call with `Unary`'s messages to another `path` (a method the server lacks).
    pub fn unary_at(&mut self, path: &str, text: &str, metadata: &[(&str, &str)]) -> Outcome {
        let request = Self::request(EchoRequest { text: text.into(), count: 0 }, metadata);
        let Ok(path) = PathAndQuery::try_from(path) else {
            return Outcome::Err(Status::invalid_argument(format!("bad path {path}")));
        };
        let grpc = &mut self.grpc;
        self.runtime.block_on(async move {
            if let Err(e) = grpc.ready().await {
                return Outcome::Err(Status::unavailable(format!("not ready: {e}")));
            }
            match grpc.unary(request, path, ProstCodec::default()).await {
                Ok(response) => {
                    let (headers, reply, _) = response.into_parts();
                    Outcome::Ok { replies: vec![reply], headers, trailers: None }
                }
                Err(status) => Outcome::Err(status),
            }
        })
    }

    /// `Stream` asking for `count` replies; reads them all, then the trailers.
    pub fn stream(&mut self, text: &str, count: u32, metadata: &[(&str, &str)]) -> Outcome {
        let request = Self::request(EchoRequest { text: text.into(), count }, metadata);
        let grpc = &mut self.grpc;
        self.runtime.block_on(async move {
            if let Err(e) = grpc.ready().await {
                return Outcome::Err(Status::unavailable(format!("not ready: {e}")));
            }
            let response =
                match grpc.server_streaming(request, PathAndQuery::from_static(STREAM), ProstCodec::default()).await {
                    Ok(r) => r,
                    Err(status) => return Outcome::Err(status),
                };
            let (headers, mut body, _) = response.into_parts();
            let mut replies = Vec::new();
            loop {
                match body.message().await {
                    Ok(Some(m)) => replies.push(m),
                    Ok(None) => break,
                    Err(status) => return Outcome::Err(status),
                }
            }
            match body.trailers().await {
                Ok(trailers) => Outcome::Ok { replies, headers, trailers },
                Err(status) => Outcome::Err(status),
            }
        })
    }
}
