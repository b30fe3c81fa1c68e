//! The `chain` root: several filters of this module in one plugin, so one HTTP stream context
//! per request instead of one per filter (each wasm stream context costs Envoy a fixed amount
//! of CPU per request, whatever the filter does).
//!
//! Configuration (`root_id: chain`):
//!
//! ```text
//! {"filters": [{"root_id": "jwt-auth", "name": "auth", "configuration": {…}}, …]}
//! ```
//!
//! Each member is shaped like Envoy's wasm `PluginConfig`: `root_id` picks the filter, `name`
//! the instance (what the member reads as property `plugin_name`; default
//! `<the chain's own plugin_name>/<root_id>`, so that unnamed members of two plugins sharing a
//! VM never share state keyed by it, such as rate-limit's table), and `configuration` its
//! configuration exactly as the standalone filter takes it. At most
//! [`shared::bundle::CHAIN_MAX_MEMBERS`] members.
//!
//! The chain is itself a [`RootFilter`] whose [`HttpFilter`] runs the members' filters: request
//! callbacks in order, response callbacks in reverse. The members see the host through
//! [`MemberHost`], which records which member made each callout, sent a local reply or set a
//! tick period, so that:
//!
//! - a member that pauses holds the members after it; its wake or callout answer of `Continue`
//!   runs them (the chain answers `Continue` to the glue only when all have gone on). A wake
//!   never goes to a member waiting for its own callout's answer (the members share one
//!   context id: the wake is another member's); a response held after the request stopped is
//!   resumed by the chain alone, never with the request;
//! - a callout answer goes to the member (root or stream) that made the call;
//! - each member root that set a tick period gets its `on_tick` at about that period (the
//!   chain ticks at the smallest one and calls a member once its own period has elapsed, less
//!   half the chain's);
//! - a local reply sent by member `i` stops the request there; the reply's response goes back
//!   through members `i..=0`, the ones that saw the request, as with separate filters.
//!
//! Body and trailers that arrive while a member holds the request (or response) are held by
//! the chain (Envoy buffers the body: the chain answers `Pause`) and delivered, once the
//! member goes on, to every member in order: the held body as one chunk of its buffered size.

use serde::Deserialize;
use serde_json::value::RawValue;
use shared::bundle::CHAIN_MAX_MEMBERS;
use shared::config::ConfigError;
use shared::host::{Host, HostError, HostWrapper, LogLevel};
use shared::{Action, HttpFilter, RootFilter};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;
use std::time::{Duration, SystemTime};

/// The chain's root_id; not allowed as a member.
pub const ROOT_ID: &str = "chain";

/// A [`RootFilter`] behind a pointer: what the chain needs of a member's root.
pub trait DynRoot {
    fn configure(&mut self, host: &dyn Host, raw_config: Option<&[u8]>) -> Result<(), ConfigError>;
    fn new_http(&self, context_id: u32) -> Option<Box<dyn HttpFilter>>;
    fn on_tick(&mut self, host: &dyn Host);
    fn on_http_call_response(&mut self, host: &dyn Host, token: u32, headers: usize, body: usize, trailers: usize);
    fn on_grpc_call_response(&mut self, host: &dyn Host, token: u32, status_code: u32, message_size: usize);
}

impl<R: RootFilter> DynRoot for R {
    fn configure(&mut self, host: &dyn Host, raw_config: Option<&[u8]>) -> Result<(), ConfigError> {
        RootFilter::configure(self, host, raw_config)
    }
    fn new_http(&self, context_id: u32) -> Option<Box<dyn HttpFilter>> {
        self.new_http_filter(context_id).map(|f| Box::new(f) as Box<dyn HttpFilter>)
    }
    fn on_tick(&mut self, host: &dyn Host) {
        RootFilter::on_tick(self, host);
    }
    fn on_http_call_response(&mut self, host: &dyn Host, token: u32, headers: usize, body: usize, trailers: usize) {
        RootFilter::on_http_call_response(self, host, token, headers, body, trailers);
    }
    fn on_grpc_call_response(&mut self, host: &dyn Host, token: u32, status_code: u32, message_size: usize) {
        RootFilter::on_grpc_call_response(self, host, token, status_code, message_size);
    }
}

/// A filter the chain can run: its root_id and a fresh root.
pub type Factory = (&'static str, fn() -> Box<dyn DynRoot>);

/// `R`'s entry for a registry.
pub fn factory<R: RootFilter + Default + 'static>() -> Factory {
    fn make<R: RootFilter + Default + 'static>() -> Box<dyn DynRoot> {
        Box::new(R::default())
    }
    (R::NAME, make::<R>)
}

/// Every filter of this module (`crate::ROOT_IDS`).
fn registry() -> Vec<Factory> {
    vec![
        factory::<security_headers::filter::SecurityHeadersRoot>(),
        factory::<jwt_auth::filter::JwtAuthRoot>(),
        factory::<rate_limit::filter::RateLimitRoot>(),
        factory::<token_fetch::filter::TokenFetchRoot>(),
        factory::<body_logger::filter::BodyLoggerRoot>(),
        // new filters above this line (scripts/new-filter.sh)
    ]
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChainConfig {
    filters: Vec<MemberConfig>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MemberConfig {
    root_id: String,
    #[serde(default)]
    name: Option<String>,
    /// The member's configuration, passed on byte for byte (a JSON string is passed as its
    /// text, like Envoy's `StringValue`).
    #[serde(default)]
    configuration: Option<Box<RawValue>>,
}

/// Who a member is: what it reads as `plugin_root_id` and `plugin_name`.
struct Identity {
    root_id: &'static str,
    name: String,
}

/// One member's tick: the period it asked for and when it last ticked.
#[derive(Clone, Copy, Default)]
struct Tick {
    period: Option<Duration>,
    last: Option<SystemTime>,
}

/// What member roots change through [`MemberHost`] while the chain root calls them.
#[derive(Default)]
struct RootState {
    ticks: RefCell<Vec<Tick>>,
    /// The period the chain asked the host for.
    period: Cell<Option<Duration>>,
    /// Callout token → member root that made it.
    calls: RefCell<BTreeMap<u32, usize>>,
}

impl RootState {
    /// Member `i` asks for `period` (zero: no more ticks); the chain ticks at the smallest.
    fn set_tick_period(&self, host: &dyn Host, i: usize, period: Duration) -> Result<(), HostError> {
        let min = {
            let mut ticks = self.ticks.borrow_mut();
            if let Some(t) = ticks.get_mut(i) {
                t.period = Some(period).filter(|p| !p.is_zero());
            }
            ticks.iter().filter_map(|t| t.period).min()
        };
        if min != self.period.get() {
            host.set_tick_period(min.unwrap_or(Duration::ZERO))?;
            self.period.set(min);
        }
        Ok(())
    }
}

/// The chain's root: one root per member, in order.
pub struct ChainRoot {
    registry: Vec<Factory>,
    members: Vec<Box<dyn DynRoot>>,
    identities: Rc<[Identity]>,
    state: RootState,
}

impl Default for ChainRoot {
    fn default() -> Self {
        ChainRoot::with_registry(registry())
    }
}

impl ChainRoot {
    /// A chain whose members may be the filters of `registry` (tests use test filters).
    pub fn with_registry(registry: Vec<Factory>) -> ChainRoot {
        ChainRoot { registry, members: Vec::new(), identities: Rc::from(Vec::new()), state: RootState::default() }
    }
}

/// The host member root `i` sees.
fn root_host<'a>(host: &'a dyn Host, i: usize, identities: &'a [Identity], state: &'a RootState) -> MemberHost<'a> {
    MemberHost { host, index: i, identity: identities.get(i), calls: &state.calls, root: Some(state), replied: None }
}

impl RootFilter for ChainRoot {
    type Http = ChainStream;
    const NAME: &'static str = ROOT_ID;

    fn configure(&mut self, host: &dyn Host, raw_config: Option<&[u8]>) -> Result<(), ConfigError> {
        let config: ChainConfig = shared::config::parse(raw_config)?;
        if config.filters.is_empty() {
            return Err(ConfigError::new("filters", "at least one filter is required"));
        }
        if config.filters.len() > CHAIN_MAX_MEMBERS {
            return Err(ConfigError::new(
                "filters",
                format!("at most {CHAIN_MAX_MEMBERS} filters, not {}", config.filters.len()),
            ));
        }
        // An unnamed member's name: the chain's own plugin name and its root_id, unique among the
        // plugins of a VM as the plugins' names are (shared data is per VM id, not per plugin).
        let own = host.property(&["plugin_name"]).map(|v| String::from_utf8_lossy(&v).into_owned()).unwrap_or_default();
        let mut identities = Vec::with_capacity(config.filters.len());
        let mut roots = Vec::with_capacity(config.filters.len());
        for (i, m) in config.filters.iter().enumerate() {
            let at = format!("filters[{i}]");
            let Some((root_id, make)) = self.registry.iter().find(|(id, _)| *id == m.root_id) else {
                let known: Vec<&str> = self.registry.iter().map(|(id, _)| *id).collect();
                let why = if m.root_id == ROOT_ID { " (a chain cannot be a member of a chain)" } else { "" };
                return Err(ConfigError::new(
                    format!("{at}.root_id"),
                    format!("unknown filter \"{}\"{why}; known: {}", m.root_id, known.join(", ")),
                ));
            };
            let name = m.name.clone().unwrap_or_else(|| format!("{own}/{root_id}"));
            if name.is_empty() {
                return Err(ConfigError::new(format!("{at}.name"), "must not be empty"));
            }
            if let Some(j) = identities.iter().position(|id: &Identity| id.name == name) {
                return Err(ConfigError::new(
                    format!("{at}.name"),
                    format!(
                        "\"{name}\" is already the name of filters[{j}]; \
                         give every member a distinct name (two of the same filter need one each)"
                    ),
                ));
            }
            identities.push(Identity { root_id, name });
            roots.push(make());
        }
        self.identities = Rc::from(identities);
        self.state = RootState::default();
        *self.state.ticks.borrow_mut() = vec![Tick::default(); roots.len()];
        let mut members = Vec::with_capacity(roots.len());
        for (i, (m, mut root)) in config.filters.iter().zip(roots).enumerate() {
            let raw = m.configuration.as_deref().map(RawValue::get);
            // A JSON string is the configuration's text (Envoy's StringValue form).
            let text = raw.and_then(|r| serde_json::from_str::<String>(r).ok());
            let bytes = text.as_deref().or(raw).map(str::as_bytes);
            let member_host = root_host(host, i, &self.identities, &self.state);
            let root_id = self.identities.get(i).map_or("", |id| id.root_id);
            if let Err(e) = root.configure(&member_host, bytes) {
                // The line the filter logs on its own too (the chain's names the member).
                host.log(LogLevel::Critical, &format!("{root_id}: invalid configuration, refusing to start: {e}"));
                return Err(e.within(&format!("filters[{i}].configuration")));
            }
            host.log(LogLevel::Info, &format!("{root_id} {}: configured", env!("CARGO_PKG_VERSION")));
            members.push(root);
        }
        self.members = members;
        Ok(())
    }

    fn new_http_filter(&self, context_id: u32) -> Option<ChainStream> {
        let mut filters = Vec::with_capacity(self.members.len());
        for m in &self.members {
            filters.push(m.new_http(context_id)?);
        }
        Some(ChainStream {
            filters,
            ctx: StreamCtx {
                identities: self.identities.clone(),
                calls: RefCell::new(BTreeMap::new()),
                replied: Cell::new(false),
            },
            request: Phase::default(),
            response: Phase::default(),
            reached: 0,
            responders: None,
        })
    }

    fn on_tick(&mut self, host: &dyn Host) {
        let now = host.now();
        let slack = self.state.period.get().unwrap_or_default() / 2;
        for i in 0..self.members.len() {
            let Some(tick) = self.state.ticks.borrow().get(i).copied() else { continue };
            let Some(period) = tick.period else { continue };
            let due = tick
                .last
                .is_none_or(|last| now.duration_since(last).unwrap_or_default().saturating_add(slack) >= period);
            if !due {
                continue;
            }
            if let Some(t) = self.state.ticks.borrow_mut().get_mut(i) {
                t.last = Some(now);
            }
            let h = root_host(host, i, &self.identities, &self.state);
            if let Some(m) = self.members.get_mut(i) {
                m.on_tick(&h);
            }
        }
    }

    fn on_http_call_response(&mut self, host: &dyn Host, token: u32, headers: usize, body: usize, trailers: usize) {
        let Some(i) = self.state.calls.borrow_mut().remove(&token) else { return };
        let h = root_host(host, i, &self.identities, &self.state);
        if let Some(m) = self.members.get_mut(i) {
            m.on_http_call_response(&h, token, headers, body, trailers);
        }
    }

    fn on_grpc_call_response(&mut self, host: &dyn Host, token: u32, status_code: u32, message_size: usize) {
        let Some(i) = self.state.calls.borrow_mut().remove(&token) else { return };
        let h = root_host(host, i, &self.identities, &self.state);
        if let Some(m) = self.members.get_mut(i) {
            m.on_grpc_call_response(&h, token, status_code, message_size);
        }
    }
}

/// One callback's worth of a phase: what the chain passes to each member in turn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Headers { end_of_stream: bool },
    Body { size: usize, end_of_stream: bool },
    Trailers,
}

/// A phase (request or response): the steps not yet delivered to every member, and how far
/// the first of them got.
#[derive(Default)]
struct Phase {
    pending: VecDeque<Step>,
    /// Position, in this phase's order, of the next member to get `pending[0]`.
    at: usize,
    /// The member at `at` answered `Pause` to `pending[0]` and waits (wake or callout answer).
    paused: bool,
    /// No member gets anything more of this phase (a local reply was sent, or the response
    /// began before the request got through).
    stopped: bool,
}

impl Phase {
    fn holds(&self) -> bool {
        self.paused || self.stopped
    }

    /// Queue a step that arrived while a member holds the phase. Body chunks are merged into
    /// one of the buffered size (Envoy buffers while the chain answers `Pause`), so the queue
    /// stays short whatever the client sends.
    fn hold(&mut self, step: Step) {
        if self.stopped {
            return;
        }
        let queued = self.pending.len();
        if let (Step::Body { size, end_of_stream }, Some(Step::Body { size: s, end_of_stream: e })) =
            (step, self.pending.back_mut())
        {
            if queued > 1 {
                *s = size;
                *e = end_of_stream;
                return;
            }
        }
        self.pending.push_back(step);
    }
}

/// What a stream's members share through [`MemberHost`].
struct StreamCtx {
    identities: Rc<[Identity]>,
    /// Callout token → member that made it.
    calls: RefCell<BTreeMap<u32, usize>>,
    /// A member sent (or tried to send) a local reply.
    replied: Cell<bool>,
}

impl StreamCtx {
    fn host<'a>(&'a self, host: &'a dyn Host, i: usize) -> MemberHost<'a> {
        MemberHost {
            host,
            index: i,
            identity: self.identities.get(i),
            calls: &self.calls,
            root: None,
            replied: Some(&self.replied),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Which {
    Request,
    Response,
}

/// One stream through every member of the chain.
pub struct ChainStream {
    filters: Vec<Box<dyn HttpFilter>>,
    ctx: StreamCtx,
    request: Phase,
    response: Phase,
    /// How many members got the request headers (0..reached).
    reached: usize,
    /// Members the response goes through (in reverse), fixed when it begins.
    responders: Option<usize>,
}

impl ChainStream {
    fn phase(&mut self, which: Which) -> &mut Phase {
        match which {
            Which::Request => &mut self.request,
            Which::Response => &mut self.response,
        }
    }

    /// The member at position `at` of a phase's order.
    fn member_at(&self, which: Which, at: usize) -> Option<usize> {
        match which {
            Which::Request => (at < self.filters.len()).then_some(at),
            Which::Response => self.responders.unwrap_or(0).checked_sub(at)?.checked_sub(1),
        }
    }

    /// The member holding a phase, if one is paused in it.
    fn paused_member(&self, which: Which) -> Option<usize> {
        let p = match which {
            Which::Request => &self.request,
            Which::Response => &self.response,
        };
        if p.paused && !p.stopped {
            self.member_at(which, p.at)
        } else {
            None
        }
    }

    /// A new callback of a phase: deliver it, or hold it while a member holds the phase.
    fn arrive(&mut self, host: &dyn Host, which: Which, step: Step) -> Action {
        let phase = self.phase(which);
        if phase.holds() {
            phase.hold(step);
            return Action::Pause;
        }
        phase.pending.push_back(step);
        self.drive(host, which)
    }

    /// Deliver the pending steps of a phase, member by member, until a member pauses or every
    /// member got every step (`Continue`).
    fn drive(&mut self, host: &dyn Host, which: Which) -> Action {
        loop {
            let phase = self.phase(which);
            if phase.holds() {
                return Action::Pause;
            }
            let Some(&step) = phase.pending.front() else { return Action::Continue };
            let at = phase.at;
            let Some(i) = self.member_at(which, at) else {
                let phase = self.phase(which);
                phase.pending.pop_front();
                phase.at = 0;
                continue;
            };
            if which == Which::Request && matches!(step, Step::Headers { .. }) {
                self.reached = self.reached.max(i.saturating_add(1));
            }
            let action = self.call(host, which, i, step);
            let replied = which == Which::Request && self.ctx.replied.get();
            let phase = self.phase(which);
            if replied {
                phase.stopped = true;
                phase.pending.clear();
                return Action::Pause;
            }
            if action == Action::Pause {
                phase.paused = true;
                return Action::Pause;
            }
            phase.at = at.saturating_add(1);
        }
    }

    fn call(&mut self, host: &dyn Host, which: Which, i: usize, step: Step) -> Action {
        let h = self.ctx.host(host, i);
        let Some(f) = self.filters.get_mut(i) else { return Action::Continue };
        match (which, step) {
            (Which::Request, Step::Headers { end_of_stream }) => f.on_request_headers(&h, end_of_stream),
            (Which::Request, Step::Body { size, end_of_stream }) => f.on_request_body(&h, size, end_of_stream),
            (Which::Request, Step::Trailers) => f.on_request_trailers(&h),
            (Which::Response, Step::Headers { end_of_stream }) => f.on_response_headers(&h, end_of_stream),
            (Which::Response, Step::Body { size, end_of_stream }) => f.on_response_body(&h, size, end_of_stream),
            (Which::Response, Step::Trailers) => f.on_response_trailers(&h),
        }
    }

    /// The paused member of `which` answered `action` to a wake or callout answer.
    fn go_on(&mut self, host: &dyn Host, which: Which, action: Action) -> Action {
        let replied = which == Which::Request && self.ctx.replied.get();
        let phase = self.phase(which);
        if replied {
            phase.stopped = true;
            phase.pending.clear();
        } else if action == Action::Continue {
            phase.paused = false;
            phase.at = phase.at.saturating_add(1);
        }
        self.drive(host, which);
        if which == Which::Response && !self.response.holds() && self.request.holds() {
            // The request stopped for good (a local reply, or the response began before it got
            // through) and Envoy still holds it: `Continue` would have the glue resume it along
            // with the response. Resume the response alone; the request stays where it stopped.
            let _ = host.resume_response();
            return Action::Pause;
        }
        self.answer()
    }

    /// The chain's answer to a wake or callout answer: `Continue` (the glue resumes what is
    /// paused) only when no member holds either phase.
    fn answer(&self) -> Action {
        if self.request.holds() || self.response.holds() {
            Action::Pause
        } else {
            Action::Continue
        }
    }

    /// Who a callout answer or wake is for: the member that made the call (`None`: the
    /// paused one).
    fn deliver(
        &mut self,
        host: &dyn Host,
        member: Option<usize>,
        callback: impl FnOnce(&mut dyn HttpFilter, &dyn Host) -> Action,
    ) -> Action {
        let paused = [Which::Request, Which::Response]
            .into_iter()
            .find_map(|w| self.paused_member(w).filter(|p| member.is_none_or(|m| m == *p)).map(|p| (w, p)));
        let target = match (member, paused) {
            (_, Some((_, p))) => p,
            (Some(m), None) => m,
            (None, None) => return self.answer(),
        };
        let action = {
            let h = self.ctx.host(host, target);
            match self.filters.get_mut(target) {
                Some(f) => callback(&mut **f, &h),
                None => return self.answer(),
            }
        };
        match paused {
            Some((which, _)) => self.go_on(host, which, action),
            // Not a paused member: its answer decides nothing (as for a stream that is not paused).
            None => self.answer(),
        }
    }

    fn start_response(&mut self) {
        if self.responders.is_none() {
            self.responders = Some(self.reached);
            // The response began: the request goes no further through the chain.
            if !self.request.pending.is_empty() || self.request.paused {
                self.request.stopped = true;
                self.request.pending.clear();
            }
        }
    }
}

impl HttpFilter for ChainStream {
    fn on_request_headers(&mut self, host: &dyn Host, end_of_stream: bool) -> Action {
        self.arrive(host, Which::Request, Step::Headers { end_of_stream })
    }
    fn on_request_body(&mut self, host: &dyn Host, body_size: usize, end_of_stream: bool) -> Action {
        self.arrive(host, Which::Request, Step::Body { size: body_size, end_of_stream })
    }
    fn on_request_trailers(&mut self, host: &dyn Host) -> Action {
        self.arrive(host, Which::Request, Step::Trailers)
    }
    fn on_response_headers(&mut self, host: &dyn Host, end_of_stream: bool) -> Action {
        self.start_response();
        self.arrive(host, Which::Response, Step::Headers { end_of_stream })
    }
    fn on_response_body(&mut self, host: &dyn Host, body_size: usize, end_of_stream: bool) -> Action {
        self.start_response();
        self.arrive(host, Which::Response, Step::Body { size: body_size, end_of_stream })
    }
    fn on_response_trailers(&mut self, host: &dyn Host) -> Action {
        self.start_response();
        self.arrive(host, Which::Response, Step::Trailers)
    }
    fn on_http_call_response(
        &mut self,
        host: &dyn Host,
        token: u32,
        num_headers: usize,
        body_size: usize,
        num_trailers: usize,
    ) -> Action {
        let Some(m) = self.ctx.calls.borrow_mut().remove(&token) else { return self.answer() };
        self.deliver(host, Some(m), |f, h| f.on_http_call_response(h, token, num_headers, body_size, num_trailers))
    }
    fn on_grpc_call_response(&mut self, host: &dyn Host, token: u32, status_code: u32, message_size: usize) -> Action {
        let Some(m) = self.ctx.calls.borrow_mut().remove(&token) else { return self.answer() };
        self.deliver(host, Some(m), |f, h| f.on_grpc_call_response(h, token, status_code, message_size))
    }
    /// A wake is for the member that holds the chain (a root wakes a stream that waits),
    /// unless that member waits for the answer to a callout of its own: every member's root
    /// wakes by this one context id, so the wake is another member's (a stale one), and a
    /// member that does answer wakes (jwt-auth, token-fetch) must not decide on one it did not
    /// wait for. (A member that never asked for wakes keeps the trait's default, `Pause`.)
    /// Otherwise its answer decides for it.
    fn on_wake(&mut self, host: &dyn Host) -> Action {
        let paused = [Which::Request, Which::Response].into_iter().find_map(|w| self.paused_member(w));
        if paused.is_some_and(|p| self.ctx.calls.borrow().values().any(|m| *m == p)) {
            return self.answer();
        }
        self.deliver(host, None, |f, h| f.on_wake(h))
    }
    fn on_log(&mut self, host: &dyn Host) {
        for (i, f) in self.filters.iter_mut().enumerate() {
            f.on_log(&self.ctx.host(host, i));
        }
    }
}

/// The host a member sees: the chain's, except that it is told its own `plugin_name` and
/// `plugin_root_id`, its callouts are recorded as its own, its local reply stops the chain,
/// and (a root) its tick period is one of the chain's. It never resumes Envoy: the chain does.
pub struct MemberHost<'a> {
    host: &'a dyn Host,
    index: usize,
    identity: Option<&'a Identity>,
    calls: &'a RefCell<BTreeMap<u32, usize>>,
    root: Option<&'a RootState>,
    replied: Option<&'a Cell<bool>>,
}

impl HostWrapper for MemberHost<'_> {
    fn inner(&self) -> &dyn Host {
        self.host
    }
    fn on_callout(&self, token: u32) {
        self.calls.borrow_mut().insert(token, self.index);
    }
    fn property_override(&self, path: &[&str]) -> Option<Vec<u8>> {
        let id = self.identity?;
        match path {
            ["plugin_name"] => Some(id.name.as_bytes().to_vec()),
            ["plugin_root_id"] => Some(id.root_id.as_bytes().to_vec()),
            _ => None,
        }
    }
    /// A member that sends a local reply denies the request: the chain stops it there even if
    /// the host refuses the reply, so that no later wake or answer can take it further.
    fn before_local_response(&self) {
        if let Some(replied) = self.replied {
            replied.set(true);
        }
    }
    /// The chain resumes Envoy when every member went on; a member never does.
    fn may_resume(&self) -> bool {
        false
    }
    fn tick_period_override(&self, period: Duration) -> Option<Result<(), HostError>> {
        self.root.map(|root| root.set_tick_period(self.host, self.index, period))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::host::{BodyKind, HeaderMapKind};
    use shared::proxytest::{Proxy, Worker};

    /// A test filter, configured by JSON: it logs `<plugin_name> <callback>` for every callback
    /// and does what its configuration says.
    #[derive(Default, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct ProbeConfig {
        /// On request headers: make a callout and pause until its answer.
        call: bool,
        /// On request headers: pause until the root's next tick wakes the stream.
        wait: bool,
        /// Answer with this status from request headers (or, with `call`, from the answer).
        reply: Option<u32>,
        /// The root's tick period, in seconds.
        tick: Option<u64>,
        /// The root makes a callout at configure.
        root_call: bool,
        /// Refuse the configuration.
        refuse: bool,
        /// On response headers: pause until the root's next tick wakes the stream.
        wait_response: bool,
        /// The root keeps the streams it woke and wakes them again at every tick (a stale
        /// wait list).
        stale: bool,
        /// On wake: log its `plugin_root_id` and what resuming the request itself returns, and
        /// pause again.
        resume: bool,
    }

    #[derive(Default)]
    struct ProbeRoot {
        name: String,
        config: Rc<ProbeConfig>,
        waiting: Rc<RefCell<Vec<u32>>>,
    }

    struct Probe {
        name: String,
        id: u32,
        config: Rc<ProbeConfig>,
        waiting: Rc<RefCell<Vec<u32>>>,
    }

    fn name(host: &dyn Host) -> String {
        String::from_utf8_lossy(&host.property(&["plugin_name"]).unwrap_or_default()).into_owned()
    }

    impl RootFilter for ProbeRoot {
        type Http = Probe;
        const NAME: &'static str = "probe";
        fn configure(&mut self, host: &dyn Host, raw: Option<&[u8]>) -> Result<(), ConfigError> {
            let c: ProbeConfig = shared::config::parse(raw)?;
            if c.refuse {
                return Err(ConfigError::new("refuse", "refused"));
            }
            self.name = name(host);
            if let Some(s) = c.tick {
                host.set_tick_period(Duration::from_secs(s)).unwrap();
            }
            if c.root_call {
                host.dispatch_http_call("c", &[(":path", "/root")], None, Duration::from_secs(1)).unwrap();
            }
            self.config = Rc::new(c);
            Ok(())
        }
        fn new_http_filter(&self, id: u32) -> Option<Probe> {
            Some(Probe { name: self.name.clone(), id, config: self.config.clone(), waiting: self.waiting.clone() })
        }
        fn on_tick(&mut self, host: &dyn Host) {
            host.log(LogLevel::Info, &format!("{} tick", self.name));
            let ids: Vec<u32> = if self.config.stale {
                self.waiting.borrow().clone()
            } else {
                self.waiting.borrow_mut().drain(..).collect()
            };
            for id in ids {
                host.wake(id).unwrap();
            }
        }
        fn on_http_call_response(&mut self, host: &dyn Host, _t: u32, _h: usize, _b: usize, _tr: usize) {
            host.log(LogLevel::Info, &format!("{} root answer", self.name));
        }
    }

    impl Probe {
        fn log(&self, host: &dyn Host, what: &str) {
            host.log(LogLevel::Info, &format!("{} {what}", self.name));
        }
    }

    impl HttpFilter for Probe {
        fn on_request_headers(&mut self, host: &dyn Host, _eos: bool) -> Action {
            self.log(host, "request_headers");
            host.add_header(HeaderMapKind::RequestHeaders, "x-seen", self.name.as_bytes()).unwrap();
            if self.config.call {
                host.dispatch_http_call("c", &[(":path", "/")], None, Duration::from_secs(1)).unwrap();
                return Action::Pause;
            }
            if self.config.wait {
                self.waiting.borrow_mut().push(self.id);
                return Action::Pause;
            }
            if let Some(status) = self.config.reply {
                let _ = host.send_local_response(status, &[], b"no");
                return Action::Pause;
            }
            Action::Continue
        }
        fn on_request_body(&mut self, host: &dyn Host, size: usize, eos: bool) -> Action {
            let body = host.body(BodyKind::Request, 0, size).unwrap_or_default();
            self.log(host, &format!("request_body {} {eos}", String::from_utf8_lossy(&body)));
            Action::Continue
        }
        fn on_request_trailers(&mut self, host: &dyn Host) -> Action {
            self.log(host, "request_trailers");
            Action::Continue
        }
        fn on_response_headers(&mut self, host: &dyn Host, _eos: bool) -> Action {
            self.log(host, "response_headers");
            host.add_header(HeaderMapKind::ResponseHeaders, "x-seen", self.name.as_bytes()).unwrap();
            if self.config.wait_response {
                self.waiting.borrow_mut().push(self.id);
                return Action::Pause;
            }
            Action::Continue
        }
        fn on_response_body(&mut self, host: &dyn Host, _size: usize, eos: bool) -> Action {
            self.log(host, &format!("response_body {eos}"));
            Action::Continue
        }
        fn on_response_trailers(&mut self, host: &dyn Host) -> Action {
            self.log(host, "response_trailers");
            Action::Continue
        }
        fn on_http_call_response(&mut self, host: &dyn Host, _t: u32, _h: usize, _b: usize, _tr: usize) -> Action {
            self.log(host, "answer");
            if let Some(status) = self.config.reply {
                let _ = host.send_local_response(status, &[], b"no");
                return Action::Pause;
            }
            Action::Continue
        }
        fn on_wake(&mut self, host: &dyn Host) -> Action {
            self.log(host, "wake");
            if self.config.resume {
                let root_id = host.property(&["plugin_root_id"]).unwrap_or_default();
                let resumed = host.resume_request();
                self.log(host, &format!("{} {resumed:?}", String::from_utf8_lossy(&root_id)));
                return Action::Pause;
            }
            Action::Continue
        }
        fn on_log(&mut self, host: &dyn Host) {
            self.log(host, "log");
        }
    }

    fn chain(proxy: &Proxy, config: &str) -> Result<Worker<ChainRoot>, ConfigError> {
        Worker::start(proxy, ChainRoot::with_registry(vec![factory::<ProbeRoot>()]), config)
    }

    fn members(list: &[(&str, &str)]) -> String {
        let m: Vec<String> = list
            .iter()
            .map(|(n, c)| format!(r#"{{"root_id": "probe", "name": "{n}", "configuration": {c}}}"#))
            .collect();
        format!(r#"{{"filters": [{}]}}"#, m.join(","))
    }

    /// The log lines of the probes, in order.
    fn lines(proxy: &Proxy) -> Vec<String> {
        proxy.logs().into_iter().map(|(_, l)| l).filter(|l| !l.ends_with(": configured")).collect()
    }

    fn take(proxy: &Proxy, seen: &mut usize) -> Vec<String> {
        let l = lines(proxy);
        let out = l[*seen..].to_vec();
        *seen = l.len();
        out
    }

    #[test]
    fn requests_go_through_members_in_order_and_responses_in_reverse() {
        let p = Proxy::new();
        let mut w = chain(&p, &members(&[("a", "{}"), ("b", "{}"), ("c", "{}")])).unwrap();
        let mut seen = 0;
        let id = w.new_stream();
        assert_eq!(w.request_headers(id, &[(":path", "/")], false), Action::Continue);
        assert_eq!(w.request_body(id, b"hi", false), Action::Continue);
        assert_eq!(w.request_trailers(id, &[("t", "1")]), Action::Continue);
        assert_eq!(w.request_header_values(id, "x-seen"), ["a", "b", "c"]);
        assert_eq!(w.response_headers(id, &[(":status", "200")], false), Action::Continue);
        assert_eq!(w.response_body(id, b"ok", false), Action::Continue);
        assert_eq!(w.response_trailers(id, &[("t", "1")]), Action::Continue);
        assert_eq!(w.response_header_values(id, "x-seen"), ["c", "b", "a"]);
        w.complete(id);
        assert_eq!(
            take(&p, &mut seen),
            [
                "a request_headers",
                "b request_headers",
                "c request_headers",
                "a request_body hi false",
                "b request_body hi false",
                "c request_body hi false",
                "a request_trailers",
                "b request_trailers",
                "c request_trailers",
                "c response_headers",
                "b response_headers",
                "a response_headers",
                "c response_body false",
                "b response_body false",
                "a response_body false",
                "c response_trailers",
                "b response_trailers",
                "a response_trailers",
                "a log",
                "b log",
                "c log",
            ]
        );
    }

    #[test]
    fn a_member_waiting_for_its_callout_holds_the_later_ones_and_its_answer_runs_them() {
        let p = Proxy::new();
        let mut w = chain(&p, &members(&[("a", "{}"), ("b", r#"{"call": true}"#), ("c", "{}")])).unwrap();
        let mut seen = 0;
        let id = w.new_stream();
        assert_eq!(w.request_headers(id, &[(":path", "/")], false), Action::Pause);
        assert_eq!(take(&p, &mut seen), ["a request_headers", "b request_headers"]);
        // The body arrives while b waits: held (Envoy buffers), delivered once b goes on.
        assert_eq!(w.request_body(id, b"hello", true), Action::Pause);
        assert_eq!(take(&p, &mut seen), Vec::<String>::new());
        assert!(w.resumes().is_empty());
        let token = w.last_http_call().token;
        w.answer_http_call(token, &[(":status", "200")], b"");
        assert_eq!(
            take(&p, &mut seen),
            [
                "b answer",
                "c request_headers",
                "a request_body hello true",
                "b request_body hello true",
                "c request_body hello true"
            ]
        );
        // Envoy is resumed once, when every member went on.
        assert_eq!(w.resumes().len(), 1, "{:?}", w.resumes());
        assert_eq!(w.request_header_values(id, "x-seen"), ["a", "b", "c"]);
    }

    #[test]
    fn without_the_answer_the_later_members_never_see_the_request() {
        // Control for the test above: nothing resumes a member that waits.
        let p = Proxy::new();
        let mut w = chain(&p, &members(&[("a", "{}"), ("b", r#"{"call": true}"#), ("c", "{}")])).unwrap();
        let id = w.new_stream();
        assert_eq!(w.request_headers(id, &[(":path", "/")], true), Action::Pause);
        w.tick();
        assert!(w.resumes().is_empty());
        assert_eq!(w.request_header_values(id, "x-seen"), ["a", "b"]);
    }

    #[test]
    fn a_wake_goes_to_the_member_that_waits_and_a_second_pause_holds_again() {
        let p = Proxy::new();
        let config = members(&[("a", r#"{"wait": true, "tick": 1}"#), ("b", r#"{"call": true}"#), ("c", "{}")]);
        let mut w = chain(&p, &config).unwrap();
        let mut seen = 0;
        let id = w.new_stream();
        assert_eq!(w.request_headers(id, &[(":path", "/")], true), Action::Pause);
        assert_eq!(take(&p, &mut seen), ["a request_headers"]);
        w.tick();
        // a goes on, b pauses again: Envoy is not resumed.
        assert_eq!(take(&p, &mut seen), ["a tick", "a wake", "b request_headers"]);
        assert!(w.resumes().is_empty());
        let token = w.last_http_call().token;
        w.answer_http_call(token, &[(":status", "200")], b"");
        assert_eq!(take(&p, &mut seen), ["b answer", "c request_headers"]);
        assert_eq!(w.resumes().len(), 1);
    }

    #[test]
    fn a_local_reply_goes_back_through_the_members_that_saw_the_request_only() {
        let p = Proxy::new();
        let mut w = chain(&p, &members(&[("a", "{}"), ("b", r#"{"reply": 401}"#), ("c", "{}")])).unwrap();
        let mut seen = 0;
        let id = w.new_stream();
        assert_eq!(w.request_headers(id, &[(":path", "/")], false), Action::Pause);
        assert_eq!(w.local_reply(id).unwrap().status, 401);
        // The rest of the request goes nowhere.
        assert_eq!(w.request_body(id, b"x", true), Action::Pause);
        // Envoy sends the reply's headers through this same context: b, then a decorate it.
        assert_eq!(w.response_headers(id, &[(":status", "401")], true), Action::Continue);
        assert_eq!(w.response_header_values(id, "x-seen"), ["b", "a"]);
        w.complete(id);
        assert_eq!(
            take(&p, &mut seen),
            [
                "a request_headers",
                "b request_headers",
                "b response_headers",
                "a response_headers",
                "a log",
                "b log",
                "c log"
            ]
        );
    }

    #[test]
    fn a_local_reply_from_a_callout_answer_stops_the_chain_there_too() {
        let p = Proxy::new();
        let mut w = chain(&p, &members(&[("a", "{}"), ("b", r#"{"call": true, "reply": 429}"#), ("c", "{}")])).unwrap();
        let id = w.new_stream();
        assert_eq!(w.request_headers(id, &[(":path", "/")], true), Action::Pause);
        let token = w.last_http_call().token;
        w.answer_http_call(token, &[(":status", "200")], b"");
        assert_eq!(w.local_reply(id).unwrap().status, 429);
        assert!(w.resumes().is_empty());
        assert_eq!(w.request_header_values(id, "x-seen"), ["a", "b"]);
        assert_eq!(w.response_headers(id, &[(":status", "429")], true), Action::Continue);
        assert_eq!(w.response_header_values(id, "x-seen"), ["b", "a"]);
    }

    #[test]
    fn a_member_holding_a_denials_reply_resumes_the_response_alone() {
        use shared::proxytest::Phase as Envoy;
        // Control: a request that got through; a holds its response until its root's tick.
        let p = Proxy::new();
        let mut w = chain(&p, &members(&[("a", r#"{"wait_response": true, "tick": 1}"#), ("b", "{}")])).unwrap();
        let id = w.new_stream();
        assert_eq!(w.request_headers(id, &[(":path", "/")], true), Action::Continue);
        assert_eq!(w.response_headers(id, &[(":status", "200")], true), Action::Pause);
        w.tick();
        assert_eq!(w.resumes(), [(id, Envoy::Response)]);
        // b denies: its 401 goes back through b, then a, which holds it the same way. Once a
        // goes on, the reply must reach the client, and the denied request still never goes on.
        let p = Proxy::new();
        let config =
            members(&[("a", r#"{"wait_response": true, "tick": 1}"#), ("b", r#"{"reply": 401}"#), ("c", "{}")]);
        let mut w = chain(&p, &config).unwrap();
        let id = w.new_stream();
        assert_eq!(w.request_headers(id, &[(":path", "/")], true), Action::Pause);
        assert_eq!(w.response_headers(id, &[(":status", "401")], true), Action::Pause);
        w.tick();
        assert_eq!(w.resumes(), [(id, Envoy::Response)]);
        assert_eq!(w.request_header_values(id, "x-seen"), ["a", "b"]);
        // The same when Envoy answers (a timeout) while b still waits for its callout: the
        // response goes on, and b's late answer neither resumes the request nor runs c.
        let p = Proxy::new();
        let config =
            members(&[("a", r#"{"wait_response": true, "tick": 1}"#), ("b", r#"{"call": true}"#), ("c", "{}")]);
        let mut w = chain(&p, &config).unwrap();
        let id = w.new_stream();
        assert_eq!(w.request_headers(id, &[(":path", "/")], true), Action::Pause);
        assert_eq!(w.response_headers(id, &[(":status", "504")], true), Action::Pause);
        w.tick();
        assert_eq!(w.resumes(), [(id, Envoy::Response)]);
        let token = w.last_http_call().token;
        w.answer_http_call(token, &[(":status", "200")], b"");
        assert_eq!(w.resumes(), [(id, Envoy::Response)]);
        assert_eq!(w.request_header_values(id, "x-seen"), ["a", "b"]);
    }

    #[test]
    fn a_wake_from_another_members_root_does_not_move_a_member_waiting_for_its_callout() {
        // a's root keeps waking the streams that once waited on it (a stale wait list); the
        // members share the stream's context id, so its wakes reach whichever member waits.
        let p = Proxy::new();
        let config =
            members(&[("a", r#"{"wait": true, "tick": 1, "stale": true}"#), ("b", r#"{"call": true}"#), ("c", "{}")]);
        let mut w = chain(&p, &config).unwrap();
        let mut seen = 0;
        let id = w.new_stream();
        assert_eq!(w.request_headers(id, &[(":path", "/")], true), Action::Pause);
        assert_eq!(take(&p, &mut seen), ["a request_headers"]);
        w.tick();
        assert_eq!(take(&p, &mut seen), ["a tick", "a wake", "b request_headers"]);
        p.advance(Duration::from_secs(1));
        w.tick();
        // b waits for its callout's answer, not for a wake: c must not see the request yet.
        assert_eq!(take(&p, &mut seen), ["a tick"]);
        assert!(w.resumes().is_empty());
        // Control: the answer b waits for runs c and resumes Envoy once.
        let token = w.last_http_call().token;
        w.answer_http_call(token, &[(":status", "200")], b"");
        assert_eq!(take(&p, &mut seen), ["b answer", "c request_headers"]);
        assert_eq!(w.resumes().len(), 1);
    }

    #[test]
    fn a_member_whose_local_reply_is_refused_still_stops_the_request() {
        // b denies but the host refuses its reply (here: a reply already stands on the stream);
        // b answers `Pause`. A stray wake (a's stale root) must not take the request past it.
        let p = Proxy::new();
        let config =
            members(&[("a", r#"{"wait": true, "tick": 1, "stale": true}"#), ("b", r#"{"reply": 401}"#), ("c", "{}")]);
        let mut w = chain(&p, &config).unwrap();
        let id = w.new_stream();
        w.host(id).send_local_response(503, &[], b"first").unwrap();
        assert_eq!(w.request_headers(id, &[(":path", "/")], true), Action::Pause);
        w.tick();
        assert_eq!(w.request_header_values(id, "x-seen"), ["a", "b"]);
        p.advance(Duration::from_secs(1));
        w.tick();
        assert_eq!(w.request_header_values(id, "x-seen"), ["a", "b"]);
        assert!(w.resumes().is_empty());
        // Control: b accepting the request, the same wakes let it through to c.
        let p = Proxy::new();
        let config = members(&[("a", r#"{"wait": true, "tick": 1, "stale": true}"#), ("b", "{}"), ("c", "{}")]);
        let mut w = chain(&p, &config).unwrap();
        let id = w.new_stream();
        assert_eq!(w.request_headers(id, &[(":path", "/")], true), Action::Pause);
        w.tick();
        assert_eq!(w.request_header_values(id, "x-seen"), ["a", "b", "c"]);
        assert_eq!(w.resumes().len(), 1);
    }

    #[test]
    fn members_read_their_own_plugin_name() {
        let p = Proxy::new();
        p.set_property(&["plugin_name"], b"the-chain");
        let mut w = chain(&p, r#"{"filters": [{"root_id": "probe"}, {"root_id": "probe", "name": "two"}]}"#).unwrap();
        let (id, _) = w.request(&[(":path", "/")]);
        // The default name is the chain's own, then the root_id.
        assert_eq!(w.request_header_values(id, "x-seen"), ["the-chain/probe", "two"]);
        // Control: the chain itself reads the plugin's own name.
        assert_eq!(w.host(id).property(&["plugin_name"]).unwrap(), b"the-chain");
    }

    #[test]
    fn a_member_reads_its_own_root_id_and_never_resumes_envoy() {
        let p = Proxy::new();
        p.set_property(&["plugin_root_id"], b"chain");
        let mut w = chain(&p, &members(&[("a", r#"{"wait": true, "tick": 1, "resume": true}"#), ("b", "{}")])).unwrap();
        let (id, _) = w.request(&[(":path", "/")]);
        w.tick();
        // a, woken while Envoy holds the request, tries to resume it: refused, and b still waits.
        assert_eq!(lines(&p), ["a request_headers", "a tick", "a wake", "a probe Err(Failure)"]);
        assert!(w.resumes().is_empty(), "{:?}", w.resumes());
        assert_eq!(w.request_header_values(id, "x-seen"), ["a"]);
        // Control: the chain itself reads the plugin's own root id.
        assert_eq!(w.host(id).property(&["plugin_root_id"]).unwrap(), b"chain");
    }

    #[test]
    fn ticks_reach_each_member_root_at_its_own_period() {
        let p = Proxy::new();
        let mut w =
            chain(&p, &members(&[("fast", r#"{"tick": 2}"#), ("none", "{}"), ("slow", r#"{"tick": 6}"#)])).unwrap();
        assert_eq!(w.tick_period(), Some(Duration::from_secs(2)));
        let mut seen = 0;
        let mut ticks = BTreeMap::<String, u32>::new();
        for _ in 0..6 {
            w.tick();
            p.advance(Duration::from_secs(2));
            for l in take(&p, &mut seen) {
                *ticks.entry(l).or_default() += 1;
            }
        }
        // 12 s: fast every 2 s, slow every 6 s (first tick at once).
        assert_eq!(ticks.get("fast tick"), Some(&6));
        assert_eq!(ticks.get("slow tick"), Some(&2));
        assert_eq!(ticks.get("none tick"), None);
    }

    #[test]
    fn a_root_callout_answer_goes_to_the_member_root_that_made_it() {
        let p = Proxy::new();
        let mut w = chain(&p, &members(&[("a", "{}"), ("b", r#"{"root_call": true}"#)])).unwrap();
        let mut seen = 0;
        let token = w.last_http_call().token;
        w.answer_http_call(token, &[(":status", "200")], b"");
        assert_eq!(take(&p, &mut seen), ["b root answer"]);
    }

    #[test]
    fn trailers_of_a_grpc_response_go_in_reverse_after_the_body() {
        let p = Proxy::new();
        let mut w = chain(&p, &members(&[("a", "{}"), ("b", "{}")])).unwrap();
        let (id, _) = w.request(&[(":path", "/")]);
        let mut seen = lines(&p).len();
        w.response_headers(id, &[(":status", "200")], false);
        w.response_body(id, b"m", false);
        w.response_trailers(id, &[("grpc-status", "0")]);
        assert_eq!(
            take(&p, &mut seen),
            [
                "b response_headers",
                "a response_headers",
                "b response_body false",
                "a response_body false",
                "b response_trailers",
                "a response_trailers"
            ]
        );
    }

    fn refusal(config: &str) -> String {
        chain(&Proxy::new(), config).err().map(|e| e.to_string()).unwrap_or_default()
    }

    #[test]
    fn bad_configurations_are_refused_naming_the_field() {
        assert!(refusal(r#"{"filters": []}"#).contains("`filters`: at least one"), "{}", refusal(r#"{"filters": []}"#));
        let e = refusal(r#"{"filters": [{"root_id": "probe"}, {"root_id": "x"}]}"#);
        assert!(e.contains("`filters[1].root_id`: unknown filter \"x\"; known: probe"), "{e}");
        let e = refusal(r#"{"filters": [{"root_id": "chain"}]}"#);
        assert!(e.contains("`filters[0].root_id`") && e.contains("cannot be a member"), "{e}");
        // Two unnamed members of one filter have one default name (the chain's plugin_name is
        // empty here); a name equal to another member's default is a duplicate too.
        let e = refusal(r#"{"filters": [{"root_id": "probe"}, {"root_id": "probe"}]}"#);
        assert!(e.contains("`filters[1].name`: \"/probe\" is already the name of filters[0]"), "{e}");
        let e = refusal(r#"{"filters": [{"root_id": "probe"}, {"root_id": "probe", "name": "/probe"}]}"#);
        assert!(e.contains("`filters[1].name`: \"/probe\" is already the name of filters[0]"), "{e}");
        let e = refusal(r#"{"filters": [{"root_id": "probe", "name": "/probe"}, {"root_id": "probe"}]}"#);
        assert!(e.contains("`filters[1].name`: \"/probe\" is already the name of filters[0]"), "{e}");
        let e = refusal(&members(&[("a", "{}"), ("b", r#"{"nope": 1}"#)]));
        assert!(e.contains("`filters[1].configuration.nope`"), "{e}");
        let e = refusal(&members(&[("a", "{}"), ("b", "{}"), ("c", r#"{"refuse": true}"#)]));
        assert!(e.contains("`filters[2].configuration.refuse`: refused"), "{e}");
        let e = refusal(r#"{"filters": [{"root_id": "probe", "extra": 1}]}"#);
        assert!(e.contains("`filters[0].extra`: unknown field `extra`"), "{e}");
        // Control: the same members, well configured, start; a string configuration is its text.
        assert!(chain(&Proxy::new(), &members(&[("a", "{}"), ("b", r#""{\"call\": true}""#)])).is_ok());
    }

    #[test]
    fn at_most_sixteen_members() {
        let list: Vec<(String, &str)> = (0..=CHAIN_MAX_MEMBERS).map(|i| (format!("m{i}"), "{}")).collect();
        let refs: Vec<(&str, &str)> = list.iter().map(|(n, c)| (n.as_str(), *c)).collect();
        let e = refusal(&members(&refs));
        assert!(e.contains("`filters`: at most 16 filters, not 17"), "{e}");
        // Control: sixteen start.
        assert_eq!(CHAIN_MAX_MEMBERS, 16);
        assert!(chain(&Proxy::new(), &members(&refs[..CHAIN_MAX_MEMBERS])).is_ok());
    }

    const LIMIT_2: &str = r#"{"rules": [{"name": "all", "actions": [{"generic_key": {"descriptor_value": "x"}}],
        "token_bucket": {"max_tokens": 2, "tokens_per_fill": 1, "fill_interval": "60s"}}]}"#;

    fn real(proxy: &Proxy, config: &str) -> Worker<ChainRoot> {
        Worker::start(proxy, ChainRoot::default(), config).unwrap()
    }

    fn statuses<R: RootFilter>(w: &mut Worker<R>, n: usize) -> Vec<u32> {
        (0..n)
            .map(|_| {
                let (id, _) = w.request(&[(":path", "/"), (":method", "GET"), (":authority", "a")]);
                w.local_reply(id).map_or(200, |r| r.status)
            })
            .collect()
    }

    #[test]
    fn two_rate_limit_members_never_share_buckets() {
        let p = Proxy::new();
        let two = format!(
            r#"{{"filters": [{{"root_id": "rate-limit", "name": "one", "configuration": {LIMIT_2}}},
                            {{"root_id": "rate-limit", "name": "two", "configuration": {LIMIT_2}}}]}}"#
        );
        let mut w = real(&p, &two);
        // Each request takes a token from each member's bucket: two requests pass. Shared
        // buckets (one name for both) would refuse the second.
        assert_eq!(statuses(&mut w, 3), [200, 200, 429]);
        // Control: the same two limits under one name (two chains on one proxy, each request
        // through both, as two workers would): one bucket, two tokens a request.
        let p = Proxy::new();
        let one = format!(r#"{{"filters": [{{"root_id": "rate-limit", "name": "one", "configuration": {LIMIT_2}}}]}}"#);
        let (mut a, mut b) = (real(&p, &one), real(&p, &one));
        let both: Vec<u32> = (0..2)
            .map(|_| {
                let s = statuses(&mut a, 1)[0];
                if s != 200 {
                    return s;
                }
                statuses(&mut b, 1)[0]
            })
            .collect();
        assert_eq!(both, [200, 429]);
    }

    #[test]
    fn unnamed_rate_limit_members_of_two_chains_in_one_vm_never_share_buckets() {
        // Two chain plugins of one VM (two listeners, say), each with an unnamed rate-limit
        // member: shared data is per VM, so only the members' names keep their tables apart.
        let p = Proxy::new();
        let one = format!(r#"{{"filters": [{{"root_id": "rate-limit", "configuration": {LIMIT_2}}}]}}"#);
        p.set_property(&["plugin_name"], b"listener-a");
        let mut a = real(&p, &one);
        p.set_property(&["plugin_name"], b"listener-b");
        let mut b = real(&p, &one);
        assert_eq!(statuses(&mut a, 2), [200, 200]);
        // b's bucket is its own: full. One shared bucket would refuse these.
        assert_eq!(statuses(&mut b, 2), [200, 200]);
        // Control: each bucket does limit.
        assert_eq!(statuses(&mut a, 1), [429]);
        assert_eq!(statuses(&mut b, 1), [429]);
        // Nor beside a standalone rate-limit plugin of the bundle named after its root_id.
        p.set_property(&["plugin_name"], b"rate-limit");
        let mut alone = Worker::start(&p, rate_limit::filter::RateLimitRoot::default(), LIMIT_2).unwrap();
        assert_eq!(statuses(&mut alone, 3), [200, 200, 429]);
    }

    #[test]
    fn security_headers_decorates_a_jwt_auth_401_from_inside_the_chain() {
        let p = Proxy::new();
        let config = r#"{"filters": [
            {"root_id": "security-headers", "configuration": {}},
            {"root_id": "jwt-auth", "configuration": {
                "providers": {"p": {"issuer": "i", "remote_jwks": {"http_uri": {"uri": "http://j/k", "cluster": "j", "timeout": "1s"}}}},
                "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "p"}}]}},
            {"root_id": "body-logger", "configuration": {"paths": [{"prefix": "/"}]}}
        ]}"#;
        let mut w = real(&p, config);
        let (id, action) = w.request(&[(":path", "/"), (":method", "GET"), (":authority", "a")]);
        assert_eq!(action, Action::Pause);
        let reply = w.local_reply(id).unwrap();
        assert_eq!(reply.status, 401);
        w.response_headers(id, &[(":status", "401")], true);
        assert!(!w.response_header_values(id, "x-content-type-options").is_empty());
        w.complete(id);
        // Control: a request the chain lets through is decorated the same way.
        let p = Proxy::new();
        let mut w = real(&p, r#"{"filters": [{"root_id": "security-headers"}]}"#);
        let (id, _) = w.request(&[(":path", "/")]);
        w.response_headers(id, &[(":status", "200")], true);
        assert!(!w.response_header_values(id, "x-content-type-options").is_empty());
    }
}
