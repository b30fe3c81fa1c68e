//! The emulator and the router it shares with the SDK glue, on a toy filter ("gate"): a request
//! with `x-wait` pauses until the root wakes it (on its tick), then decides on its own
//! `x-verdict` header; `x-call` makes a callout from the stream.

use super::*;
use crate::host::HostExt;
use crate::plugin::HttpFilter;

type Log = Rc<RefCell<Vec<String>>>;

#[derive(Default)]
struct GateRoot {
    waiting: Rc<RefCell<Vec<u32>>>,
    log: Log,
    root_answers: Vec<u32>,
    grpc_answers: Vec<(u32, u32, Vec<u8>, Vec<u8>)>,
}

struct Gate {
    id: u32,
    waiting: Rc<RefCell<Vec<u32>>>,
    log: Log,
    wakes: u32,
}

impl RootFilter for GateRoot {
    type Http = Gate;
    const NAME: &'static str = "gate";

    fn configure(&mut self, host: &dyn Host, raw: Option<&[u8]>) -> Result<(), ConfigError> {
        if raw == Some(b"refuse") {
            return Err(ConfigError::new("x", "refused"));
        }
        host.set_tick_period(Duration::from_secs(1)).map_err(|e| ConfigError::new("", e.to_string()))
    }

    fn new_http_filter(&self, id: u32) -> Option<Gate> {
        Some(Gate { id, waiting: self.waiting.clone(), log: self.log.clone(), wakes: 0 })
    }

    fn on_tick(&mut self, host: &dyn Host) {
        for id in self.waiting.borrow_mut().drain(..) {
            host.wake(id).unwrap();
            self.log.borrow_mut().push(format!("root woke {id}"));
        }
        self.log.borrow_mut().push("tick returns".into());
    }

    fn on_http_call_response(&mut self, _host: &dyn Host, token: u32, _h: usize, _b: usize, _t: usize) {
        self.root_answers.push(token);
    }

    fn on_grpc_call_response(&mut self, host: &dyn Host, token: u32, status: u32, size: usize) {
        let message = host.body(BodyKind::GrpcReceive, 0, size).unwrap_or_default();
        let (code, text) = host.call_status().unwrap();
        assert_eq!(code, status);
        self.grpc_answers.push((token, status, message, text));
    }
}

impl Gate {
    fn call(&self, host: &dyn Host) -> Action {
        let path = host.request_header(":path").unwrap_or_default();
        host.dispatch_http_call("c", &[(":path", &path)], None, Duration::from_secs(1)).unwrap();
        Action::Pause
    }
}

impl HttpFilter for Gate {
    fn on_request_headers(&mut self, host: &dyn Host, _eos: bool) -> Action {
        if host.request_header("x-call").is_some() {
            return self.call(host);
        }
        if host.request_header("x-wait").is_some() {
            self.waiting.borrow_mut().push(self.id);
            return Action::Pause;
        }
        Action::Continue
    }

    fn on_response_headers(&mut self, _host: &dyn Host, _eos: bool) -> Action {
        // Responses wait too when asked to (a response-phase pause).
        if self.wakes == 0
            && self.waiting.borrow().is_empty()
            && self.log.borrow().iter().any(|l| l == "pause responses")
        {
            self.waiting.borrow_mut().push(self.id);
            return Action::Pause;
        }
        Action::Continue
    }

    fn on_wake(&mut self, host: &dyn Host) -> Action {
        self.wakes += 1;
        let verdict = host.request_header("x-verdict").unwrap_or_default();
        let path = host.request_header(":path").unwrap_or_default();
        self.log.borrow_mut().push(format!("{} woke, read {path}", self.id));
        match verdict.as_str() {
            "allow" => {
                host.set_header(HeaderMapKind::RequestHeaders, "x-decided", path.as_bytes()).unwrap();
                Action::Continue
            }
            "call" => self.call(host),
            "again" => {
                // Wakes itself: must not loop within one delivery.
                host.wake(self.id).unwrap();
                Action::Pause
            }
            _ => {
                host.send_local_response(403, &[], path.as_bytes()).unwrap();
                Action::Pause
            }
        }
    }

    fn on_http_call_response(&mut self, host: &dyn Host, _token: u32, _h: usize, _b: usize, _t: usize) -> Action {
        let status = host.header_str(HeaderMapKind::HttpCallResponseHeaders, ":status").unwrap_or_default();
        self.log.borrow_mut().push(format!("{} got its answer {status}", self.id));
        if status == "200" {
            return Action::Continue;
        }
        let _ = host.send_local_response(502, &[], b"upstream auth failed");
        Action::Pause
    }

    fn on_grpc_call_response(&mut self, host: &dyn Host, _token: u32, status: u32, _size: usize) -> Action {
        if status == 0 {
            return Action::Continue;
        }
        let (_, text) = host.call_status().unwrap();
        let _ = host.send_local_response(503, &[], &text);
        Action::Pause
    }
}

fn gate(proxy: &Proxy) -> Worker<GateRoot> {
    proxy.worker("")
}

fn get(path: &str, extra: &[(&'static str, &'static str)]) -> Vec<(String, String)> {
    let mut h = vec![(":path".to_string(), path.to_string()), (":method".into(), "GET".into())];
    h.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    h
}

fn send(w: &mut Worker<GateRoot>, headers: &[(String, String)]) -> (u32, Action) {
    let pairs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    w.request(&pairs)
}

#[test]
fn a_paused_stream_is_woken_after_the_root_returns_and_reads_its_own_headers() {
    let proxy = Proxy::new();
    let mut w = gate(&proxy);
    let (a, act) = send(&mut w, &get("/a", &[("x-wait", "1"), ("x-verdict", "deny")]));
    assert_eq!(act, Action::Pause);
    // Stream B comes and goes while A waits.
    let (b, act) = send(&mut w, &get("/b", &[("x-verdict", "allow")]));
    assert_eq!(act, Action::Continue);
    w.complete(b);
    w.tick();
    let log = w.root().log.borrow().clone();
    assert_eq!(log, vec![format!("root woke {a}"), "tick returns".into(), format!("{a} woke, read /a")]);
    let reply = w.local_reply(a).expect("A answered");
    assert_eq!((reply.status, reply.body_text()), (403, "/a".into()), "A decided on its own request");
    assert!(w.local_reply(b).is_none());
    assert!(w.resumes().is_empty(), "a denial is not resumed");
}

#[test]
fn continue_from_on_wake_resumes_exactly_the_woken_stream() {
    let proxy = Proxy::new();
    let mut w = gate(&proxy);
    let (a, _) = send(&mut w, &get("/a", &[("x-wait", "1"), ("x-verdict", "allow")]));
    let (b, _) = send(&mut w, &get("/b", &[("x-wait", "1"), ("x-verdict", "deny")]));
    let (c, _) = send(&mut w, &get("/c", &[("x-wait", "1"), ("x-verdict", "allow")]));
    assert!(w.is_paused(a) && w.is_paused(b) && w.is_paused(c));
    w.tick();
    assert_eq!(w.resumes(), vec![(a, Phase::Request), (c, Phase::Request)]);
    assert_eq!(w.request_header_values(a, "x-decided"), vec!["/a"]);
    assert_eq!(w.request_header_values(c, "x-decided"), vec!["/c"]);
    assert!(w.request_header_values(b, "x-decided").is_empty());
    assert_eq!(w.local_replies().iter().map(|(id, r)| (*id, r.status)).collect::<Vec<_>>(), vec![(b, 403)]);
    assert!(!w.is_paused(a) && w.is_paused(b) && !w.is_paused(c));
    // A second wake of a stream that is no longer paused asks nothing.
    w.host(w.root_id()).wake(a).unwrap();
    w.tick();
    assert_eq!(w.filter(a).wakes, 1);
}

#[test]
fn wakes_of_streams_that_are_gone_or_unknown_do_nothing() {
    let proxy = Proxy::new();
    let mut w = gate(&proxy);
    let (a, _) = send(&mut w, &get("/a", &[("x-wait", "1"), ("x-verdict", "allow")]));
    let (b, _) = send(&mut w, &get("/b", &[("x-wait", "1"), ("x-verdict", "allow")]));
    w.complete(a);
    // Envoy lost b without telling the VM: the router finds out from set_effective_context.
    w.forget_context(b);
    w.host(w.root_id()).wake(999).unwrap();
    w.tick();
    assert!(w.resumes().is_empty());
    assert_eq!(w.live_streams(), 0, "b was dropped from the registry");
    assert_eq!(w.filter(b).wakes, 0);
}

#[test]
fn a_stream_that_wakes_itself_does_not_loop() {
    let proxy = Proxy::new();
    let mut w = gate(&proxy);
    let (a, _) = send(&mut w, &get("/a", &[("x-wait", "1"), ("x-verdict", "again")]));
    w.tick();
    assert_eq!(w.filter(a).wakes, 1, "once per delivery");
    w.tick();
    assert_eq!(w.filter(a).wakes, 2, "the self-wake waited for the next callback");
}

#[test]
fn a_streams_callout_answer_comes_back_to_it_and_continue_resumes_it() {
    let proxy = Proxy::new();
    let mut w = gate(&proxy);
    let (a, act) = send(&mut w, &get("/a", &[("x-call", "1")]));
    let (b, _) = send(&mut w, &get("/b", &[("x-call", "1")]));
    assert_eq!(act, Action::Pause);
    let calls = w.http_calls();
    assert_eq!(
        calls.iter().map(|c| (c.context_id, c.header(":path"))).collect::<Vec<_>>(),
        vec![(a, Some("/a")), (b, Some("/b"))]
    );
    // Answers in the other order, each to the stream that asked.
    w.answer_http_call(calls[1].token, &[(":status", "500")], b"");
    w.answer_http_call(calls[0].token, &[(":status", "200")], b"");
    assert_eq!(w.resumes(), vec![(a, Phase::Request)]);
    assert_eq!(w.local_reply(b).map(|r| r.status), Some(502));
    assert!(w.root().root_answers.is_empty());
    assert_eq!(w.actions(a).last(), Some(&(Callback::HttpCallResponse, Action::Continue)));
    assert!(w.pending_calls().is_empty());
}

#[test]
fn a_callout_made_from_on_wake_is_answered_to_that_stream_not_to_the_root() {
    // The SDK files a callout under the context it last called back: the root, during a
    // wake. The router recognises the token and hands the answer to the stream.
    let proxy = Proxy::new();
    let mut w = gate(&proxy);
    let (a, _) = send(&mut w, &get("/a", &[("x-wait", "1"), ("x-verdict", "call")]));
    w.tick();
    let call = w.last_http_call();
    assert_eq!(call.context_id, a, "Envoy files it under the effective context, the stream");
    w.answer_http_call(call.token, &[(":status", "200")], b"");
    assert!(w.root().root_answers.is_empty(), "the root never saw the stream's answer");
    assert_eq!(w.resumes(), vec![(a, Phase::Request)]);
    assert!(w.root().log.borrow().contains(&format!("{a} got its answer 200")));
}

#[test]
fn the_roots_own_callouts_still_reach_the_root() {
    let proxy = Proxy::new();
    let mut w = gate(&proxy);
    let token = w.host(w.root_id()).dispatch_http_call("c", &[], None, Duration::from_secs(1)).unwrap();
    w.answer_http_call(token, &[(":status", "200")], b"x");
    assert_eq!(w.root().root_answers, vec![token]);
}

#[test]
#[should_panic(expected = "cancelled")]
fn a_completed_streams_callouts_are_cancelled() {
    let proxy = Proxy::new();
    let mut w = gate(&proxy);
    let (a, _) = send(&mut w, &get("/a", &[("x-call", "1")]));
    let token = w.last_http_call().token;
    w.complete(a);
    assert!(w.pending_calls().is_empty());
    w.answer_http_call(token, &[(":status", "200")], b"");
}

#[test]
fn grpc_answers_reach_the_root_and_streams_with_status_and_message() {
    let proxy = Proxy::new();
    let mut w = gate(&proxy);
    let root = w.host(w.root_id());
    let md: &[(&str, &[u8])] = &[("x-md", b"1")];
    let t1 = root.dispatch_grpc_call("rls", "svc.Rls", "Check", md, b"req", Duration::from_secs(1)).unwrap();
    let t2 = root.dispatch_grpc_call("rls", "svc.Rls", "Check", &[], b"req", Duration::from_secs(1)).unwrap();
    let calls = w.grpc_calls();
    assert_eq!((calls[0].service.as_str(), calls[0].method.as_str()), ("svc.Rls", "Check"));
    assert_eq!(calls[0].initial_metadata, vec![("x-md".to_string(), b"1".to_vec())]);
    w.answer_grpc_call(t1, 0, b"reply");
    w.answer_grpc_call(t2, 14, b"unavailable");
    assert_eq!(
        w.root().grpc_answers,
        vec![(t1, 0, b"reply".to_vec(), Vec::new()), (t2, 14, Vec::new(), b"unavailable".to_vec())]
    );
    // A stream's gRPC callout: a failure answers it, a success resumes it.
    let (a, _) = w.request(&[(":path", "/a")]);
    let (b, _) = w.request(&[(":path", "/b")]);
    for (id, status) in [(a, 0), (b, 4)] {
        let host = w.host(id);
        let t = host.dispatch_grpc_call("rls", "s", "m", &[], b"", Duration::from_secs(1)).unwrap();
        // Paused, as a filter would be while waiting.
        w.answer_grpc_call(t, status, b"deadline");
    }
    assert_eq!(w.local_reply(b).map(|r| (r.status, r.body_text())), Some((503, "deadline".into())));
    assert!(w.resumes().is_empty(), "neither stream was paused: nothing to resume");
}

#[test]
fn a_response_phase_pause_is_resumed_as_a_response() {
    let proxy = Proxy::new();
    let mut w = gate(&proxy);
    w.root().log.borrow_mut().push("pause responses".into());
    let (a, act) = send(&mut w, &get("/a", &[("x-verdict", "allow")]));
    assert_eq!(act, Action::Continue);
    assert_eq!(w.response_headers(a, &[(":status", "200")], true), Action::Pause);
    w.tick();
    assert_eq!(w.resumes(), vec![(a, Phase::Response)]);
}

struct Bad;
impl HttpFilter for Bad {
    fn on_request_headers(&mut self, host: &dyn Host, _eos: bool) -> Action {
        let _ = host.resume_request();
        Action::Continue
    }
}
#[derive(Default)]
struct BadRoot;
impl RootFilter for BadRoot {
    type Http = Bad;
    const NAME: &'static str = "bad";
    fn configure(&mut self, _h: &dyn Host, _r: Option<&[u8]>) -> Result<(), ConfigError> {
        Ok(())
    }
    fn new_http_filter(&self, _id: u32) -> Option<Bad> {
        Some(Bad)
    }
}

#[test]
#[should_panic(expected = "resumed but not paused")]
fn resuming_a_stream_that_is_not_paused_fails_the_test() {
    let proxy = Proxy::new();
    let mut w: Worker<BadRoot> = proxy.worker("");
    w.request(&[(":path", "/")]);
}

#[test]
fn streams_keep_their_own_state() {
    let proxy = Proxy::new();
    let mut w = gate(&proxy);
    let a = w.new_stream();
    let b = w.new_stream();
    w.request_headers(a, &[(":path", "/a")], false);
    w.request_headers_bytes(b, &[(":path", b"/b"), ("x-raw", b"\xff")], false);
    w.request_body(a, b"body-a", true);
    w.set_property(b, &["source", "address"], b"10.0.0.2:1");
    proxy.set_property(&["source", "address"], b"10.0.0.1:1");
    assert_eq!(w.host(a).property(&["source", "address"]).unwrap(), b"10.0.0.1:1");
    assert_eq!(w.host(b).property(&["source", "address"]).unwrap(), b"10.0.0.2:1");
    assert_eq!(w.host(a).body(BodyKind::Request, 0, 100).unwrap(), b"body-a");
    assert_eq!(w.host(b).body(BodyKind::Request, 0, 100).unwrap(), b"");
    assert_eq!(w.header_values(b, HeaderMapKind::RequestHeaders, "x-raw"), vec!["\u{fffd}"]);
    assert_eq!(
        w.actions(a),
        vec![(Callback::RequestHeaders, Action::Continue), (Callback::RequestBody, Action::Continue)]
    );
    w.response_headers(a, &[(":status", "200")], true);
    w.complete(a);
    assert!(w.is_complete(a) && !w.is_complete(b));
    // The root has no headers, and a root may not answer a request it does not address.
    let root = w.host(w.root_id());
    assert_eq!(root.header(HeaderMapKind::RequestHeaders, ":path"), None);
    assert_eq!(root.send_local_response(500, &[], b""), Err(HostError::BadArgument));
    assert_eq!(root.set_effective_context(a), Err(HostError::BadArgument), "a is gone");
    root.set_effective_context(b).unwrap();
    assert_eq!(root.request_header(":path").as_deref(), Some("/b"));
}

#[test]
fn host_calls_are_counted_by_kind_around_one_request() {
    let proxy = Proxy::new();
    let mut w = gate(&proxy);
    let ((_, action), calls) = proxy.count_host_calls(|| w.request(&[(":path", "/")]));
    assert_eq!(action, Action::Continue);
    // x-call, then x-wait: two header reads.
    assert_eq!(calls.get(HostCall::GetHeaderMapValue), 2);
    assert_eq!(calls.total(), 2, "{calls}");
    let ((a, _), calls) =
        proxy.count_host_calls(|| w.request(&[(":path", "/"), ("x-wait", "1"), ("x-verdict", "allow")]));
    assert_eq!(calls.total(), 2);
    let (_, calls) = proxy.count_host_calls(|| w.tick());
    // Wake: set_effective_context; on_wake: 2 reads, 1 write; the glue's resume.
    assert_eq!(calls.get(HostCall::SetEffectiveContext), 1);
    assert_eq!(calls.get(HostCall::GetHeaderMapValue), 2);
    assert_eq!(calls.get(HostCall::ReplaceHeaderMapValue), 1);
    assert_eq!(calls.get(HostCall::ContinueStream), 1);
    assert_eq!(calls.to_string(), "total 5: proxy_get_header_map_value 2, proxy_replace_header_map_value 1, proxy_continue_stream 1, proxy_set_effective_context 1");
    assert_eq!(w.resumes(), vec![(a, Phase::Request)]);
    proxy.reset_host_calls();
    assert_eq!(proxy.host_calls().total(), 0);
}

#[test]
fn workers_share_shared_data_with_envoys_cas_and_nothing_else() {
    let proxy = Proxy::new();
    let a = gate(&proxy);
    let b = gate(&proxy);
    let (ha, hb) = (a.host(a.root_id()), b.host(b.root_id()));
    ha.set_shared_data("k", b"1", None).unwrap();
    let (v, cas) = hb.shared_data("k");
    assert_eq!(v.as_deref(), Some(&b"1"[..]));
    hb.set_shared_data("k", b"2", cas).unwrap();
    assert_eq!(ha.set_shared_data("k", b"3", cas), Err(HostError::CasMismatch), "b's write moved the token");
    // A new key is created whatever the token (Envoy does not CAS-protect a creation).
    ha.set_shared_data("new", b"x", Some(12345)).unwrap();
    assert_eq!(proxy.shared_data("new").0.as_deref(), Some(&b"x"[..]));
    // Each worker has its own tick period and callouts.
    assert_eq!(a.tick_period(), Some(Duration::from_secs(1)));
    ha.dispatch_http_call("c", &[], None, Duration::from_secs(1)).unwrap();
    assert_eq!((a.http_calls().len(), b.http_calls().len()), (1, 0));
}

#[test]
fn random_bytes_differ_per_proxy_and_can_fail() {
    let (p, q) = (Proxy::new(), Proxy::new());
    let (mut x, mut y) = ([0u8; 32], [0u8; 32]);
    p.host().random(&mut x).unwrap();
    q.host().random(&mut y).unwrap();
    assert_ne!(x, y);
    let mut z = [0u8; 32];
    p.host().random(&mut z).unwrap();
    assert_ne!(x, z, "and per call");
    p.fail_random(true);
    assert_eq!(p.host().random(&mut z), Err(HostError::Failure));
}

#[test]
fn a_refused_configuration_is_an_error() {
    let proxy = Proxy::new();
    let e = Worker::start(&proxy, GateRoot::default(), "refuse").err().unwrap();
    assert_eq!(e.field, "x");
}

/// Calls every `Host` method once (what each returns does not matter here).
fn call_every_host_method(host: &dyn Host) {
    let map = HeaderMapKind::RequestHeaders;
    let _ = host.now();
    host.log(LogLevel::Info, "x");
    let _ = host.log_level();
    let _ = host.header(map, "a");
    let _ = host.headers(map);
    let _ = host.set_header(map, "a", b"1");
    let _ = host.add_header(map, "b", b"2");
    let _ = host.remove_header(map, "b");
    let _ = host.set_headers(map, &[("a", b"1")]);
    let _ = host.body(BodyKind::Request, 0, 10);
    let _ = host.send_local_response(500, &[], b"");
    let _ = host.resume_response();
    let _ = host.set_effective_context(1);
    let _ = host.property(&["a"]);
    let _ = host.set_property(&["a"], b"1");
    let _ = host.shared_data("k");
    let _ = host.set_shared_data("k", b"v", None);
    let _ = host.dispatch_http_call("c", &[], None, Duration::from_secs(1));
    let _ = host.dispatch_grpc_call("c", "s", "m", &[], b"", Duration::from_secs(1));
    let _ = host.call_status();
    let _ = host.random(&mut [0u8; 4]);
    let _ = host.set_tick_period(Duration::from_secs(1));
    let _ = host.define_metric(MetricKind::Counter, "m");
    host.increment_metric(0, 1);
    host.record_metric(0, 1);
}

#[derive(Default)]
struct AllRoot {
    waiting: Rc<RefCell<Vec<u32>>>,
}
struct All {
    id: u32,
    waiting: Rc<RefCell<Vec<u32>>>,
}
impl RootFilter for AllRoot {
    type Http = All;
    const NAME: &'static str = "all";
    fn configure(&mut self, _h: &dyn Host, _r: Option<&[u8]>) -> Result<(), ConfigError> {
        Ok(())
    }
    fn new_http_filter(&self, id: u32) -> Option<All> {
        Some(All { id, waiting: self.waiting.clone() })
    }
    fn on_tick(&mut self, host: &dyn Host) {
        for id in self.waiting.borrow_mut().drain(..) {
            host.wake(id).unwrap();
        }
    }
}
impl HttpFilter for All {
    fn on_request_headers(&mut self, _host: &dyn Host, _eos: bool) -> Action {
        self.waiting.borrow_mut().push(self.id);
        Action::Pause
    }
    fn on_wake(&mut self, host: &dyn Host) -> Action {
        call_every_host_method(host);
        // Answered by the local reply above (so the resume_response in there is harmless).
        Action::Pause
    }
}

#[test]
fn every_host_method_reaches_the_host_through_the_routers_wrapper_and_mock_host() {
    // routing::Tracking and MockHost are HostWrappers: a method its forwarding impl misses
    // falls back to the trait's refusing default and is never counted.
    let proxy = Proxy::new();
    let mut w: Worker<AllRoot> = proxy.worker("");
    w.request(&[(":path", "/")]);
    let (_, through_router) = proxy.count_host_calls(|| w.tick());
    let mock = crate::mock::MockHost::on(&proxy);
    let (_, through_mock) = proxy.count_host_calls(|| call_every_host_method(&mock));
    for kind in HostCall::ALL {
        assert!(through_router.get(kind) >= 1, "{} not forwarded by routing::Tracking", kind.abi_name());
        assert!(through_mock.get(kind) >= 1, "{} not forwarded by MockHost", kind.abi_name());
    }
}

/// A wrapper that uses every [`crate::host::HostWrapper`] hook, as the chain's `MemberHost` does.
struct Hooked<'a> {
    host: &'a dyn Host,
    replied: Cell<bool>,
}
impl crate::host::HostWrapper for Hooked<'_> {
    fn inner(&self) -> &dyn Host {
        self.host
    }
    fn property_override(&self, path: &[&str]) -> Option<Vec<u8>> {
        (path == ["own"]).then(|| b"mine".to_vec())
    }
    fn before_local_response(&self) {
        self.replied.set(true);
    }
    fn may_resume(&self) -> bool {
        false
    }
    fn tick_period_override(&self, _period: Duration) -> Option<Result<(), HostError>> {
        Some(Ok(()))
    }
}

#[test]
fn a_wrappers_hooks_change_only_their_own_call() {
    let proxy = Proxy::new();
    let mock = crate::mock::MockHost::on(&proxy);
    let hooked = Hooked { host: &mock, replied: Cell::new(false) };
    let (_, calls) = proxy.count_host_calls(|| call_every_host_method(&hooked));
    // Resuming and the tick period are the hooks' own; every other call still reaches the host
    // (the property `a` too, and the local reply after its hook).
    let kept = [HostCall::ContinueStream, HostCall::SetTickPeriodMilliseconds];
    for kind in HostCall::ALL {
        assert_eq!(calls.get(kind) >= 1, !kept.contains(&kind), "{}", kind.abi_name());
    }
    assert!(hooked.replied.get(), "before_local_response not called");
    assert_eq!(hooked.resume_request(), Err(HostError::Failure));
    let (own, calls) = proxy.count_host_calls(|| hooked.property(&["own"]));
    assert_eq!(own.as_deref(), Some(&b"mine"[..]));
    assert_eq!(calls.total(), 0, "an overridden property still asked the host");
}

/// A filter that pauses for its own callout and leaves `on_wake` to the trait's default.
#[derive(Default)]
struct CalloutRoot;

struct Callout;

impl RootFilter for CalloutRoot {
    type Http = Callout;
    const NAME: &'static str = "callout";
    fn configure(&mut self, _host: &dyn Host, _raw: Option<&[u8]>) -> Result<(), ConfigError> {
        Ok(())
    }
    fn new_http_filter(&self, _id: u32) -> Option<Callout> {
        Some(Callout)
    }
}

impl HttpFilter for Callout {
    fn on_request_headers(&mut self, host: &dyn Host, _eos: bool) -> Action {
        host.dispatch_http_call("c", &[(":path", "/")], None, Duration::from_secs(1)).unwrap();
        Action::Pause
    }
}

#[test]
fn a_stray_wake_leaves_a_stream_waiting_for_its_callout_paused() {
    let proxy = Proxy::new();
    let mut w: Worker<CalloutRoot> = proxy.worker("");
    let (a, act) = w.request(&[(":path", "/a")]);
    assert_eq!(act, Action::Pause);
    // A wake it never asked for (another root of the VM, a stale wait list) reaches it after
    // the root's callback: the default `on_wake` keeps it paused (`Continue` would let the
    // request through before its callout answered: fail open).
    w.host(w.root_id()).wake(a).unwrap();
    w.tick();
    assert!(w.is_paused(a));
    assert!(w.resumes().is_empty(), "{:?}", w.resumes());
    // Control: the answer it waits for lets it go on.
    let token = w.last_http_call().token;
    w.answer_http_call(token, &[(":status", "200")], b"");
    assert_eq!(w.resumes(), vec![(a, Phase::Request)]);
    assert!(!w.is_paused(a));
}
