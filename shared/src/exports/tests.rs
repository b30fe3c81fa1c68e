//! The entry points driven natively, as Envoy drives them: contexts created by id, callbacks,
//! callout answers handed to the root, contexts deleted. The host calls the entry points make
//! themselves (a log line, closing a stream, making a stream effective) go to [`host`], which
//! records them; the test roots and streams record what reached them. Each test runs on its
//! own thread, so each has its own contexts (they are thread-local, one VM per worker).

use super::*;

/// The stand-in for `crate::abi`'s host calls that `exports` makes.
pub(super) mod host {
    use crate::abi::StreamType;
    use crate::host::{HostError, LogLevel};
    use std::cell::RefCell;

    thread_local! {
        static CALLS: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
        /// Contexts the host no longer knows: `set_effective_context` refuses them.
        static GONE_ON_HOST: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
    }

    fn record(call: String) {
        CALLS.with(|c| c.borrow_mut().push(call));
    }

    /// The host calls made so far, taken.
    pub fn calls() -> Vec<String> {
        CALLS.with(|c| c.take())
    }

    pub fn forget_on_host(context_id: u32) {
        GONE_ON_HOST.with(|g| g.borrow_mut().push(context_id));
    }

    pub fn call_ctors() {
        record("call_ctors".into());
    }

    pub fn log(level: LogLevel, message: &str) -> Result<(), HostError> {
        record(format!("log {level:?}: {message}"));
        Ok(())
    }

    pub fn close_stream(stream: StreamType) -> Result<(), HostError> {
        record(format!("close_stream {stream:?}"));
        Ok(())
    }

    pub fn set_effective_context(context_id: u32) -> Result<(), HostError> {
        record(format!("set_effective_context {context_id}"));
        match GONE_ON_HOST.with(|g| g.borrow().contains(&context_id)) {
            true => Err(HostError::BadArgument),
            false => Ok(()),
        }
    }
}

thread_local! {
    /// What reached the test's contexts, in order.
    static SEEN: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    /// Set by a test: the stream a root's next tick wakes (as the router does after a wait).
    static WAKE_ON_TICK: Cell<Option<u32>> = const { Cell::new(None) };
    /// The host's clock for `callback_time`, and how many times it was read.
    static CLOCK: Cell<u64> = const { Cell::new(1_000) };
    static CLOCK_READS: Cell<u32> = const { Cell::new(0) };
}

fn seen(event: String) {
    // `try_with`: the contexts' own thread-local drops the streams left at the thread's end,
    // maybe after this one is gone.
    let _ = SEEN.try_with(|s| s.borrow_mut().push(event));
}

fn take_seen() -> Vec<String> {
    SEEN.with(|s| s.take())
}

fn read_clock() -> Option<u64> {
    CLOCK_READS.with(|r| r.set(r.get() + 1));
    Some(CLOCK.with(Cell::get))
}

/// Root `id`: its own callout is token `50 + id`, made at `on_configure`.
struct TestRoot {
    id: u32,
}

impl RootContext for TestRoot {
    fn on_configure(&mut self) -> bool {
        register_callout(50 + self.id);
        true
    }
    fn on_tick(&mut self) {
        seen(format!("root {} tick", self.id));
        // The router resumes a waiting stream from the root's tick: it makes the stream
        // effective (glue: `ProxyWasmHost::set_effective_context` → `set_active`), and the
        // stream dispatches a callout, token `200 + stream`.
        if let Some(stream) = WAKE_ON_TICK.with(Cell::take) {
            set_active(stream);
            register_callout(200 + stream);
        }
    }
    fn on_http_call_response(&mut self, token: u32, _headers: usize, _body: usize, _trailers: usize) {
        seen(format!("root {} answer {token}", self.id));
    }
    fn on_grpc_call_response(&mut self, token: u32, status_code: u32, _message_size: usize) {
        seen(format!("root {} grpc {token} status {status_code}", self.id));
    }
    fn create_http_context(&self, context_id: u32) -> Box<dyn HttpContext> {
        Box::new(TestStream { id: context_id })
    }
}

/// Stream `id`: its callout is token `100 + id`, made at request headers.
struct TestStream {
    id: u32,
}

impl HttpContext for TestStream {
    fn on_request_headers(&mut self, _end_of_stream: bool) -> Action {
        seen(format!("stream {} request headers", self.id));
        register_callout(100 + self.id);
        Action::Pause
    }
    fn on_request_body(&mut self, _body_size: usize, _end_of_stream: bool) -> Action {
        // Re-entered while running (a host that called back into the VM): busy, refused.
        let nested = on_request_headers(self.id, 0, 0);
        seen(format!("stream {} nested request headers: {nested}", self.id));
        Action::Continue
    }
    fn on_response_headers(&mut self, _end_of_stream: bool) -> Action {
        let first = callback_time(read_clock);
        CLOCK.with(|c| c.set(c.get() + 7));
        let second = callback_time(read_clock);
        seen(format!("stream {} time {first:?} {second:?}", self.id));
        Action::Continue
    }
    fn on_http_call_response(&mut self, token: u32, _headers: usize, _body: usize, _trailers: usize) {
        seen(format!("stream {} answer {token}", self.id));
    }
    fn on_grpc_call_response(&mut self, token: u32, status_code: u32, _message_size: usize) {
        seen(format!("stream {} grpc {token} status {status_code}", self.id));
    }
    fn on_log(&mut self) {
        seen(format!("stream {} log", self.id));
    }
}

impl Drop for TestStream {
    fn drop(&mut self) {
        seen(format!("stream {} dropped", self.id));
    }
}

fn new_test_root(context_id: u32) -> Box<dyn RootContext> {
    Box::new(TestRoot { id: context_id })
}

/// A VM as Envoy starts it: `_initialize`, root 1 created, started and configured.
fn vm_with_root() {
    initialize(new_test_root);
    proxy_on_context_create(1, 0);
    assert_eq!(proxy_on_vm_start(1, 0), 1);
    assert_eq!(proxy_on_configure(1, 0), 1);
    assert_eq!(host::calls(), ["call_ctors"]);
}

#[test]
fn callbacks_reach_the_context_they_name() {
    vm_with_root();
    proxy_on_context_create(2, 1);
    proxy_on_context_create(3, 1);
    assert_eq!(on_request_headers(3, 4, 1), Action::Pause as u32);
    assert_eq!(on_request_headers(2, 4, 0), Action::Pause as u32);
    proxy_on_tick(1);
    on_log(2);
    proxy_on_delete(2);
    assert_eq!(
        take_seen(),
        ["stream 3 request headers", "stream 2 request headers", "root 1 tick", "stream 2 log", "stream 2 dropped"]
    );
    assert!(host::calls().is_empty(), "no host call of its own: {:?}", host::calls());
}

#[test]
fn an_answer_goes_to_the_context_that_made_the_call() {
    vm_with_root();
    proxy_on_context_create(2, 1);
    proxy_on_context_create(3, 1);
    on_request_headers(2, 0, 0);
    on_request_headers(3, 0, 0);
    take_seen();
    // Envoy hands every answer to the root context.
    proxy_on_http_call_response(1, 103, 0, 0, 0);
    proxy_on_grpc_close(1, 102, 14);
    proxy_on_http_call_response(1, 51, 0, 0, 0);
    assert_eq!(take_seen(), ["stream 3 answer 103", "stream 2 grpc 102 status 14", "root 1 answer 51"]);
    assert_eq!(host::calls(), ["set_effective_context 3", "set_effective_context 2"], "streams made effective first");
    // A token nobody registered is the root's own (the SDK's behaviour).
    proxy_on_http_call_response(1, 999, 0, 0, 0);
    assert_eq!(take_seen(), ["root 1 answer 999"]);
}

/// Review fix: an answer for a stream deleted while its call was out fell back to the root,
/// whose filter took it for its own call (a token fetch, a JWKS).
#[test]
fn an_answer_for_a_deleted_stream_is_dropped_not_handed_to_the_root() {
    vm_with_root();
    proxy_on_context_create(2, 1);
    proxy_on_context_create(3, 1);
    on_request_headers(2, 0, 0);
    on_request_headers(3, 0, 0);
    proxy_on_delete(2);
    proxy_on_delete(3);
    take_seen();
    // The host made the calls on the root's behalf, so it still answers them, to the root.
    proxy_on_http_call_response(1, 102, 0, 0, 0);
    proxy_on_grpc_receive(1, 103, 10);
    assert_eq!(take_seen(), Vec::<String>::new(), "nobody gets them");
    assert!(host::calls().is_empty());
    // The root's own call still reaches it.
    proxy_on_http_call_response(1, 51, 0, 0, 0);
    assert_eq!(take_seen(), ["root 1 answer 51"]);
}

/// Review fix: a stream the router resumes from the root's callback dispatched under the
/// root's id, so its answer went to the root instead of the stream.
#[test]
fn a_call_made_by_a_stream_woken_from_the_roots_tick_is_answered_to_the_stream() {
    vm_with_root();
    proxy_on_context_create(2, 1);
    WAKE_ON_TICK.with(|w| w.set(Some(2)));
    proxy_on_tick(1);
    take_seen();
    proxy_on_http_call_response(1, 202, 0, 0, 0);
    assert_eq!(take_seen(), ["stream 2 answer 202"]);
    assert_eq!(host::calls(), ["set_effective_context 2"]);
}

#[test]
fn a_stream_the_host_no_longer_knows_gets_no_answer() {
    vm_with_root();
    proxy_on_context_create(2, 1);
    on_request_headers(2, 0, 0);
    take_seen();
    host::forget_on_host(2);
    proxy_on_http_call_response(1, 102, 0, 0, 0);
    assert_eq!(take_seen(), Vec::<String>::new(), "its host calls would address another context");
    assert_eq!(host::calls(), ["set_effective_context 2"]);
}

#[test]
fn a_callback_for_an_unknown_or_busy_stream_resets_it_instead_of_trapping() {
    vm_with_root();
    assert_eq!(on_response_headers(9, 0, 0), Action::Pause as u32);
    let calls = host::calls();
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert!(calls[0].starts_with("log Critical: proxy_on_response_headers: no context 9"), "{calls:?}");
    assert_eq!(calls[1..], ["close_stream HttpRequest", "close_stream HttpResponse"]);
    // Re-entered while its own callback runs: refused the same way, the outer call completes.
    proxy_on_context_create(2, 1);
    assert_eq!(on_request_body(2, 10, 1), Action::Continue as u32);
    assert_eq!(take_seen(), ["stream 2 nested request headers: 1"]);
    assert_eq!(host::calls().len(), 3);
    // Unknown contexts elsewhere: nothing happens, nothing traps.
    on_log(9);
    proxy_on_tick(9);
    proxy_on_delete(9);
    proxy_on_context_create(10, 8);
    assert_eq!(proxy_on_configure(8, 0), 0, "no root 8: refused");
    assert_eq!(take_seen(), Vec::<String>::new());
    assert_eq!(host::calls(), ["log Critical: proxy_on_context_create: no root context 8"]);
}

#[test]
fn a_module_that_registered_no_root_says_so() {
    proxy_on_context_create(1, 0);
    assert_eq!(proxy_on_vm_start(1, 0), 0);
    assert_eq!(host::calls(), ["log Critical: proxy_on_context_create: this module registered no root context"]);
}

/// Review fix: a host buffer the VM cannot allocate trapped it; now the host call fails.
#[test]
fn an_allocation_the_vm_cannot_make_answers_null() {
    assert!(proxy_on_memory_allocate(usize::MAX).is_null());
    assert!(proxy_on_memory_allocate(isize::MAX as usize).is_null());
    let size = 64;
    let buf = proxy_on_memory_allocate(size);
    assert!(!buf.is_null());
    // Taken back as `abi`'s readers do, so the test leaks nothing.
    // SAFETY: `buf` is the `Box<[u8]>` of `size` bytes the call just made.
    drop(unsafe { Vec::from_raw_parts(buf, size, size) });
}

#[test]
fn the_time_is_read_once_per_callback() {
    vm_with_root();
    proxy_on_context_create(2, 1);
    on_response_headers(2, 0, 0);
    on_response_headers(2, 0, 0);
    assert_eq!(take_seen(), ["stream 2 time Some(1000) Some(1000)", "stream 2 time Some(1007) Some(1007)"]);
    assert_eq!(CLOCK_READS.with(Cell::get), 2, "one read per callback, a fresh one at the next");
}
