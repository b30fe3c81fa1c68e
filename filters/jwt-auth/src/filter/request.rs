//! The request path: sanitize, pick the rule, decide, apply the verdict — or wait for keys and
//! decide again when woken.

use super::{Worker, NAME};
use crate::engine::{HeaderOp, KeyView, Settled, TokenCache, Verdict};
use crate::extract::RequestHeaders;
use crate::token::Status;
use jose::jwks::Jwks;
use shared::host::HeaderMapKind;
use shared::matching::RouteName;
use shared::time::{duration_ms, millis};
use shared::{reply, Action, Host, LogLevel};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// An entry of the worker's wait list: whom to wake, and when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Waiter {
    pub context_id: u32,
    pub provider: usize,
    /// The provider's records taken when this request started waiting; one more (new keys, or
    /// a refetch that brought the same) wakes it.
    pub records_taken: u64,
    pub deadline_ms: u64,
}

impl shared::waiting::Waiter for Waiter {
    fn context_id(&self) -> u32 {
        self.context_id
    }
}

/// What a paused stream waits for (kept by the stream, read when it is woken).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Wait {
    /// The request's rule (matched once, at the first decision).
    rule: usize,
    provider: usize,
    /// It asked for a refetch (unknown `kid`).
    refetch: bool,
    deadline_ms: u64,
    /// The provider's failed fetches in this worker when it started waiting: one more ends
    /// the wait.
    failures: u64,
    /// What this request waited for before.
    settled: Settled,
}

/// The outcome of deciding a request.
pub(super) enum Decision {
    /// Decided: the action (a denial's reply is already sent).
    Done(Action),
    /// Waits for keys (registered in the worker's wait list).
    Wait(Wait),
}

/// Past the fetch timeout, how much longer a request waits for an answer that is on its way.
const WAIT_MARGIN: Duration = Duration::from_millis(500);

/// The engine's view of this worker's keys and caches.
struct View<'a> {
    worker: &'a Worker,
    host: &'a dyn Host,
    now_ms: u64,
}

impl KeyView for View<'_> {
    fn remote_keys(&self, provider: usize) -> Option<Rc<Jwks>> {
        self.worker.providers.get(provider)?.remote.as_ref()?.jwks()
    }

    fn may_refetch(&self, provider: usize) -> bool {
        let interval = duration_ms(self.worker.engine.config.unknown_kid_refetch_interval);
        self.worker
            .providers
            .get(provider)
            .and_then(|p| p.remote.as_ref())
            .is_some_and(|r| r.refetch_allowed(self.host, self.now_ms, interval))
    }

    fn cache(&self, provider: usize) -> Option<&RefCell<TokenCache>> {
        Some(&self.worker.providers.get(provider)?.cache)
    }
}

fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Worker {
    /// `on_request_headers`: the request's first decision.
    pub(super) fn start(&self, host: &dyn Host, context_id: u32) -> Decision {
        let mut request = RequestHeaders::from_raw(host.header_pairs(HeaderMapKind::RequestHeaders));
        // Before anything else, on every request (no rule, CORS preflight included): the
        // headers only this filter may set.
        apply(host, &self.engine.sanitize(&mut request));
        let config = &self.engine.config;
        if config.bypass_cors_preflight
            && request.get_str(":method") == "OPTIONS"
            && !request.get_str("origin").is_empty()
            && !request.get_str("access-control-request-method").is_empty()
        {
            self.stats.allowed.inc(host);
            return Decision::Done(Action::Continue);
        }
        let Some(rule) = self.engine.rule(request.get_str(":path"), &RouteName::of(host)) else {
            self.stats.allowed.inc(host);
            return Decision::Done(Action::Continue);
        };
        // Keys another worker published since this worker's last tick.
        self.take_missing_keys(host);
        self.decide(host, context_id, &request, rule, Settled::default())
    }

    /// `on_wake`: decide again, with what this wait taught.
    pub(super) fn resume(&self, host: &dyn Host, context_id: u32, wait: Wait) -> Decision {
        let mut settled = wait.settled;
        let failed = self.providers.get(wait.provider).and_then(|p| p.remote.as_ref()).map_or(0, |r| r.failures());
        if millis(host.now()) >= wait.deadline_ms || failed != wait.failures {
            settled.give_up(wait.provider);
        } else if wait.refetch {
            // Woken by the refetched keys (maybe the same keys).
            settled.refetched(wait.provider);
        }
        // The forged headers went at the first decision (Envoy's map, as edited then); again
        // in case a removal failed.
        let mut request = RequestHeaders::from_raw(host.header_pairs(HeaderMapKind::RequestHeaders));
        apply(host, &self.engine.sanitize(&mut request));
        self.decide(host, context_id, &request, wait.rule, settled)
    }

    /// Evaluate until decided or waiting. A wait that cannot be registered (wait list full, no
    /// refetch to be had) is settled and the request evaluated again: each round settles one
    /// more provider, so this ends; the bound is a guard.
    fn decide(
        &self,
        host: &dyn Host,
        context_id: u32,
        request: &RequestHeaders,
        rule: usize,
        mut settled: Settled,
    ) -> Decision {
        let Some(requirement) = self.engine.requirement_of(rule) else {
            self.stats.allowed.inc(host);
            return Decision::Done(Action::Continue);
        };
        let now = host.now();
        let view = View { worker: self, host, now_ms: millis(now) };
        for _ in 0..=2 * self.providers.len() {
            let (verdict, counts) = self.engine.evaluate(requirement, request, &view, &settled, unix_seconds(now));
            self.stats.count(host, counts);
            match verdict {
                Verdict::Allow(ops) => {
                    apply(host, &ops);
                    self.stats.allowed.inc(host);
                    return Decision::Done(Action::Continue);
                }
                Verdict::Deny(status) => {
                    self.deny(host, status, request);
                    return Decision::Done(Action::Pause);
                }
                Verdict::InvalidHeader(header) => {
                    self.stats.allowed.inc(host);
                    let body = format!("invalid header value for: {header}");
                    if reply::send_text(host, 503, &body, &[]).is_err() {
                        host.log(LogLevel::Error, &format!("{NAME}: cannot send the 503 reply"));
                    }
                    return Decision::Done(Action::Pause);
                }
                Verdict::Wait { provider, refetch } => {
                    if let Some((deadline_ms, failures)) = self.enqueue(host, context_id, provider, refetch, now) {
                        let settled = settled.clone();
                        return Decision::Wait(Wait { rule, provider, refetch, deadline_ms, failures, settled });
                    }
                    // No wait: decide with the keys there are.
                    if refetch {
                        settled.refetched(provider);
                    } else {
                        settled.give_up(provider);
                    }
                }
            }
        }
        host.log(LogLevel::Error, &format!("{NAME}: a request kept asking to wait; answering it"));
        self.deny(host, Status::JwksFetchFail, request);
        Decision::Done(Action::Pause)
    }

    /// Register a wait for `provider`'s keys (claiming the proxy's refetch for an unknown
    /// `kid`): the wait's deadline and the provider's failed fetches so far; `None` when the
    /// request cannot wait.
    fn enqueue(
        &self,
        host: &dyn Host,
        context_id: u32,
        provider: usize,
        refetch: bool,
        now: SystemTime,
    ) -> Option<(u64, u64)> {
        let remote = self.providers.get(provider)?.remote.as_ref()?;
        if self.waiting.is_full() || remote.timeout.is_zero() {
            return None;
        }
        let now_ms = millis(now);
        if refetch {
            let interval = duration_ms(self.engine.config.unknown_kid_refetch_interval);
            if !remote.claim_refetch(host, now_ms, interval) {
                return None;
            }
            remote.refresh_soon();
        }
        let deadline_ms = now_ms.saturating_add(duration_ms(remote.timeout + WAIT_MARGIN));
        // Not full (checked above; nothing else runs in between).
        self.waiting.push(Waiter { context_id, provider, records_taken: remote.records_taken(), deadline_ms });
        Some((deadline_ms, remote.failures()))
    }

    fn deny(&self, host: &dyn Host, status: Status, request: &RequestHeaders) {
        self.stats.denied.inc(host);
        if let Some(c) = self.stats.denied_by.get(status.reason()) {
            c.inc(host);
        }
        let code = if status == Status::JwtAudienceNotAllowed { 403 } else { 401 };
        let mut challenge = format!("Bearer realm=\"{}\"", realm(request));
        if status != Status::JwtMissed {
            challenge.push_str(", error=\"invalid_token\"");
        }
        if reply::send_text(host, code, status.message(), &[("www-authenticate", &challenge)]).is_err() {
            host.log(LogLevel::Error, &format!("{NAME}: cannot send the {code} reply"));
        }
    }

    /// Wake the waiting requests whose provider has new keys or whose wait is over: each
    /// decides again in its `on_wake`.
    pub(super) fn serve_waiters(&self, host: &dyn Host, now: SystemTime) {
        if self.waiting.is_empty() {
            return;
        }
        let now_ms = millis(now);
        let taken = |p: usize| self.providers.get(p).and_then(|s| s.remote.as_ref()).map_or(0, |r| r.records_taken());
        for w in self.waiting.take(|w| now_ms >= w.deadline_ms || taken(w.provider) != w.records_taken) {
            // A stream that is gone by then is skipped by the glue.
            let _ = host.wake(w.context_id);
        }
    }

    /// A fetch of `provider`'s keys failed in this worker: the requests waiting for it get
    /// their answer now, not at their deadline.
    pub(super) fn end_waits_for(&self, provider: usize, now: SystemTime) {
        let now_ms = millis(now);
        self.waiting.update(|w| {
            if w.provider == provider {
                w.deadline_ms = w.deadline_ms.min(now_ms);
            }
        });
    }
}

/// jwt_authn's realm: the request's original URI, `<x-forwarded-proto>://<host><path>`, the
/// path (query included) cut at 256 bytes as Envoy's `buildOriginalUri` does for jwt_authn.
fn realm(request: &RequestHeaders) -> String {
    const MAX_PATH: usize = 256;
    let scheme = match request.get_str("x-forwarded-proto") {
        "" => request.get_str(":scheme"),
        s => s,
    };
    let path = request.get(":path").unwrap_or_default();
    let path = String::from_utf8_lossy(&path[..path.len().min(MAX_PATH)]);
    let text = format!("{scheme}://{}{path}", request.get_str(":authority"));
    // A header value must not carry control characters or a quote that ends the realm early.
    text.chars().filter(|c| !c.is_control() && *c != '"' && *c != '\\').collect()
}

/// Request header edits, one host call each.
fn apply(host: &dyn Host, ops: &[HeaderOp]) {
    for op in ops {
        let result = match op {
            HeaderOp::Remove(name) => host.remove_header(HeaderMapKind::RequestHeaders, name),
            HeaderOp::Add(name, value) => host.add_header(HeaderMapKind::RequestHeaders, name, value),
            HeaderOp::Set(name, value) => host.set_header(HeaderMapKind::RequestHeaders, name, value),
        };
        if let Err(e) = result {
            host.log(LogLevel::Warn, &format!("{NAME}: cannot edit request headers: {e}"));
        }
    }
}
