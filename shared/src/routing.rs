//! Resume and callout routing: which stream a wake or a callout answer goes to, and when a
//! paused stream goes on. The SDK glue (`shared::glue`, wasm only) and the test harness
//! (`shared::proxytest`, native) both drive filters through this module, so unit tests run the
//! routing code Envoy runs.
//!
//! - [`Stream`] wraps one stream's filter and remembers which phase (request, response) its
//!   last callback left paused. A later answer (`on_wake`, a callout answer) of `Continue`
//!   resumes exactly the paused phases; `Pause` keeps them paused; an answer to a stream that
//!   is not paused resumes nothing.
//! - [`Router`] is one per worker VM: a registry of live streams by context id, a queue of
//!   wakes, and the callouts streams made while the router was delivering to them. A root's
//!   [`Host::wake`] only queues; the queue is delivered when the current callback returns
//!   ([`Router::deliver`]), never re-entrantly, each stream at most once per delivery.
//!
//! Why the router records some callouts: the SDK (0.2.5) files a callout under the context it
//! last dispatched a callback to. A stream called by the router from inside a root callback
//! (a wake) is not that context, so the SDK hands the answer to the root; the router recognises
//! the token and passes it on to the stream that made the call.

use crate::host::{Host, HostWrapper};
use crate::plugin::{Action, HttpFilter, RootFilter};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::rc::{Rc, Weak};

/// One HTTP stream's filter and the phases its callbacks left paused.
pub struct Stream<F> {
    context_id: u32,
    filter: F,
    request_paused: bool,
    response_paused: bool,
}

impl<F: HttpFilter> Stream<F> {
    pub fn new(context_id: u32, filter: F) -> Stream<F> {
        Stream { context_id, filter, request_paused: false, response_paused: false }
    }

    pub fn context_id(&self) -> u32 {
        self.context_id
    }

    pub fn filter(&self) -> &F {
        &self.filter
    }

    pub fn filter_mut(&mut self) -> &mut F {
        &mut self.filter
    }

    /// A phase is paused: its last callback answered `Pause` and nothing resumed it since.
    pub fn is_paused(&self) -> bool {
        self.request_paused || self.response_paused
    }

    fn request(&mut self, action: Action) -> Action {
        self.request_paused = action == Action::Pause;
        action
    }

    fn response(&mut self, action: Action) -> Action {
        self.response_paused = action == Action::Pause;
        action
    }

    pub fn on_request_headers(&mut self, host: &dyn Host, end_of_stream: bool) -> Action {
        let a = self.filter.on_request_headers(host, end_of_stream);
        self.request(a)
    }
    pub fn on_request_body(&mut self, host: &dyn Host, body_size: usize, end_of_stream: bool) -> Action {
        let a = self.filter.on_request_body(host, body_size, end_of_stream);
        self.request(a)
    }
    pub fn on_request_trailers(&mut self, host: &dyn Host) -> Action {
        let a = self.filter.on_request_trailers(host);
        self.request(a)
    }
    pub fn on_response_headers(&mut self, host: &dyn Host, end_of_stream: bool) -> Action {
        let a = self.filter.on_response_headers(host, end_of_stream);
        self.response(a)
    }
    pub fn on_response_body(&mut self, host: &dyn Host, body_size: usize, end_of_stream: bool) -> Action {
        let a = self.filter.on_response_body(host, body_size, end_of_stream);
        self.response(a)
    }
    pub fn on_response_trailers(&mut self, host: &dyn Host) -> Action {
        let a = self.filter.on_response_trailers(host);
        self.response(a)
    }
    pub fn on_log(&mut self, host: &dyn Host) {
        self.filter.on_log(host);
    }

    /// The answer to a callout this stream made; the filter's action decides whether the
    /// paused phase goes on. Returns that action.
    pub fn on_http_call_response(
        &mut self,
        host: &dyn Host,
        token: u32,
        num_headers: usize,
        body_size: usize,
        num_trailers: usize,
    ) -> Action {
        let a = self.filter.on_http_call_response(host, token, num_headers, body_size, num_trailers);
        self.go_on(host, a);
        a
    }

    pub fn on_grpc_call_response(
        &mut self,
        host: &dyn Host,
        token: u32,
        status_code: u32,
        message_size: usize,
    ) -> Action {
        let a = self.filter.on_grpc_call_response(host, token, status_code, message_size);
        self.go_on(host, a);
        a
    }

    /// A wake from the root: only a paused stream is asked again (`None`: not paused).
    pub fn on_wake(&mut self, host: &dyn Host) -> Option<Action> {
        if !self.is_paused() {
            return None;
        }
        let a = self.filter.on_wake(host);
        self.go_on(host, a);
        Some(a)
    }

    /// `Continue` from a later answer: resume what is paused. A stream that is gone refuses
    /// the resume; there is nothing left to do for it then.
    fn go_on(&mut self, host: &dyn Host, action: Action) {
        if action != Action::Continue {
            return;
        }
        if std::mem::take(&mut self.request_paused) {
            let _ = host.resume_request();
        }
        if std::mem::take(&mut self.response_paused) {
            let _ = host.resume_response();
        }
    }
}

/// What the router delivers to a stream.
#[derive(Clone, Copy, Debug)]
enum Event {
    Wake,
    HttpCall { token: u32, num_headers: usize, body_size: usize, num_trailers: usize },
    GrpcCall { token: u32, status_code: u32, message_size: usize },
}

/// A registered stream, whatever its filter type (several roots may share one VM).
trait Routable {
    /// `false`: the stream is busy in a callback right now (re-entrant call); try later.
    fn deliver(&self, host: &dyn Host, event: Event) -> bool;
}

impl<F: HttpFilter> Routable for RefCell<Stream<F>> {
    fn deliver(&self, host: &dyn Host, event: Event) -> bool {
        let Ok(mut s) = self.try_borrow_mut() else { return false };
        match event {
            Event::Wake => {
                s.on_wake(host);
            }
            Event::HttpCall { token, num_headers, body_size, num_trailers } => {
                s.on_http_call_response(host, token, num_headers, body_size, num_trailers);
            }
            Event::GrpcCall { token, status_code, message_size } => {
                s.on_grpc_call_response(host, token, status_code, message_size);
            }
        }
        true
    }
}

/// A stream shared by its owner (the SDK's context, or the harness) and the router.
pub struct StreamHandle<F> {
    stream: Rc<RefCell<Stream<F>>>,
}

impl<F: HttpFilter + 'static> StreamHandle<F> {
    /// A new stream, registered with `router` until [`StreamHandle::on_log`] or drop.
    pub fn new(router: &Router, context_id: u32, filter: F) -> StreamHandle<F> {
        let stream = Rc::new(RefCell::new(Stream::new(context_id, filter)));
        let routable: Rc<dyn Routable> = stream.clone();
        router.streams.borrow_mut().insert(context_id, Rc::downgrade(&routable));
        StreamHandle { stream }
    }

    pub fn context_id(&self) -> u32 {
        self.stream.borrow().context_id
    }

    /// The stream itself, e.g. for a test to look at its filter. Do not hold it across a
    /// callback.
    pub fn stream(&self) -> &RefCell<Stream<F>> {
        &self.stream
    }

    /// Run one callback of this stream, then deliver the wakes it queued.
    fn call<T>(&self, router: &Router, host: &dyn Host, f: impl FnOnce(&mut Stream<F>) -> T) -> T {
        let out = f(&mut self.stream.borrow_mut());
        router.deliver(host);
        out
    }

    pub fn on_request_headers(&self, router: &Router, host: &dyn Host, end_of_stream: bool) -> Action {
        self.call(router, host, |s| s.on_request_headers(host, end_of_stream))
    }
    pub fn on_request_body(&self, router: &Router, host: &dyn Host, body_size: usize, end_of_stream: bool) -> Action {
        self.call(router, host, |s| s.on_request_body(host, body_size, end_of_stream))
    }
    pub fn on_request_trailers(&self, router: &Router, host: &dyn Host) -> Action {
        self.call(router, host, |s| s.on_request_trailers(host))
    }
    pub fn on_response_headers(&self, router: &Router, host: &dyn Host, end_of_stream: bool) -> Action {
        self.call(router, host, |s| s.on_response_headers(host, end_of_stream))
    }
    pub fn on_response_body(&self, router: &Router, host: &dyn Host, body_size: usize, end_of_stream: bool) -> Action {
        self.call(router, host, |s| s.on_response_body(host, body_size, end_of_stream))
    }
    pub fn on_response_trailers(&self, router: &Router, host: &dyn Host) -> Action {
        self.call(router, host, |s| s.on_response_trailers(host))
    }
    /// A callout answer the SDK routed to this stream (the effective context is this stream).
    pub fn on_http_call_response(
        &self,
        router: &Router,
        host: &dyn Host,
        token: u32,
        num_headers: usize,
        body_size: usize,
        num_trailers: usize,
    ) -> Action {
        self.call(router, host, |s| s.on_http_call_response(host, token, num_headers, body_size, num_trailers))
    }
    pub fn on_grpc_call_response(
        &self,
        router: &Router,
        host: &dyn Host,
        token: u32,
        status_code: u32,
        message_size: usize,
    ) -> Action {
        self.call(router, host, |s| s.on_grpc_call_response(host, token, status_code, message_size))
    }
    /// The stream is complete: the filter's `on_log`, then no more wakes or answers reach it.
    pub fn on_log(&self, router: &Router, host: &dyn Host) {
        let id = self.context_id();
        self.call(router, host, |s| s.on_log(host));
        router.unregister(id);
    }
}

/// One per worker VM: the live streams, the queued wakes, and the callouts streams made while
/// the router was delivering to them.
#[derive(Default)]
pub struct Router {
    streams: RefCell<BTreeMap<u32, Weak<dyn Routable>>>,
    wakes: RefCell<VecDeque<u32>>,
    /// Callout token → the stream that made it from a router delivery (see the module doc).
    calls: RefCell<BTreeMap<u32, u32>>,
    delivering: Cell<bool>,
}

impl Router {
    pub fn new() -> Router {
        Router::default()
    }

    /// Queue a wake of stream `context_id` ([`Host::wake`]). Delivered by the next
    /// [`Router::deliver`]; a stream that is gone by then is skipped.
    pub fn wake(&self, context_id: u32) {
        self.wakes.borrow_mut().push_back(context_id);
    }

    /// Forget a stream (it completed or its context was deleted), with any callout it made.
    pub fn unregister(&self, context_id: u32) {
        self.streams.borrow_mut().remove(&context_id);
        self.calls.borrow_mut().retain(|_, stream| *stream != context_id);
    }

    /// Streams registered and still alive.
    pub fn len(&self) -> usize {
        self.streams.borrow().values().filter(|w| w.strong_count() > 0).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn get(&self, context_id: u32) -> Option<Rc<dyn Routable>> {
        let stream = self.streams.borrow().get(&context_id)?.upgrade();
        if stream.is_none() {
            self.unregister(context_id);
        }
        stream
    }

    /// Deliver the queued wakes: for each, make the stream the effective context, call its
    /// `on_wake` and resume it on `Continue`. Call when a callback returns. A wake queued
    /// during the delivery is delivered too, but each stream at most once per call (a stream
    /// that wakes itself waits for the next callback), so this always ends.
    pub fn deliver(&self, host: &dyn Host) {
        if self.wakes.borrow().is_empty() || self.delivering.replace(true) {
            return;
        }
        let mut delivered = BTreeSet::new();
        let mut later = Vec::new();
        loop {
            let Some(id) = self.wakes.borrow_mut().pop_front() else { break };
            if !delivered.insert(id) {
                later.push(id);
                continue;
            }
            let Some(stream) = self.get(id) else { continue };
            if host.set_effective_context(id).is_err() {
                // Envoy no longer has this stream.
                self.unregister(id);
                continue;
            }
            if !stream.deliver(&Tracking { host, router: self, stream: id }, Event::Wake) {
                delivered.remove(&id);
                later.push(id);
            }
        }
        self.wakes.borrow_mut().extend(later);
        self.delivering.set(false);
    }

    /// A callout answer the SDK handed to a root context. `true` when the call was made by a
    /// stream during a router delivery: the answer went to that stream (if it still exists).
    fn forward(&self, host: &dyn Host, token: u32, event: Event) -> bool {
        let Some(id) = self.calls.borrow_mut().remove(&token) else { return false };
        if let Some(stream) = self.get(id) {
            if host.set_effective_context(id).is_ok() {
                // Not busy: roots and streams never run at the same time.
                stream.deliver(&Tracking { host, router: self, stream: id }, event);
            }
        }
        true
    }

    /// The root's `on_tick`, then the wakes it queued.
    pub fn on_tick<R: RootFilter>(&self, root: &mut R, host: &dyn Host) {
        root.on_tick(host);
        self.deliver(host);
    }

    /// A callout answer delivered to the root context: the root's, or a stream's (see
    /// [`Router`]); then the wakes it queued.
    pub fn on_http_call_response<R: RootFilter>(
        &self,
        root: &mut R,
        host: &dyn Host,
        token: u32,
        num_headers: usize,
        body_size: usize,
        num_trailers: usize,
    ) {
        let event = Event::HttpCall { token, num_headers, body_size, num_trailers };
        if !self.forward(host, token, event) {
            root.on_http_call_response(host, token, num_headers, body_size, num_trailers);
        }
        self.deliver(host);
    }

    pub fn on_grpc_call_response<R: RootFilter>(
        &self,
        root: &mut R,
        host: &dyn Host,
        token: u32,
        status_code: u32,
        message_size: usize,
    ) {
        let event = Event::GrpcCall { token, status_code, message_size };
        if !self.forward(host, token, event) {
            root.on_grpc_call_response(host, token, status_code, message_size);
        }
        self.deliver(host);
    }
}

/// The host a stream sees while the router delivers to it: the real one, except that the
/// callouts it makes are remembered as its own (see [`Router`]).
struct Tracking<'a> {
    host: &'a dyn Host,
    router: &'a Router,
    stream: u32,
}

impl HostWrapper for Tracking<'_> {
    fn inner(&self) -> &dyn Host {
        self.host
    }
    fn on_callout(&self, token: u32) {
        self.router.calls.borrow_mut().insert(token, self.stream);
    }
}
