//! The decision for one request, as jwt_authn's verifiers and authenticator make it — a pure
//! function of the configuration, the keys the worker has ([`KeyView`]), what this request
//! already waited for ([`Settled`]), the request headers and the time, so it is unit-tested with
//! a fake key view. It either decides (allow with header edits, or deny with a status) or asks to
//! wait for a provider's remote keys.
//!
//! Termination: a request waits at most twice per remote provider (once for its first keys, once
//! for a refetch on an unknown `kid`). [`Settled`] records both and the engine never asks for
//! either again, so however the waits end (keys, a failed fetch, a deadline, a full wait list),
//! every request is answered after at most `2 × providers` waits. No recursion: the caller loops.

use crate::config::{Audiences, Compiled, KeySource, Provider, Requirement};
use crate::extract::{Extractor, Found, Place, RequestHeaders};
use crate::token::{self, Jwt, Status};
use jose::jwks::{Jwks, VerifyError};
use sha2::{Digest, Sha256};
use shared::hash::{keyed128, HashKey};
use shared::matching::RouteName;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::rc::Rc;

/// What the engine asks of the worker it runs in.
pub trait KeyView {
    /// A remote provider's keys as this worker has them; `None` while it has none.
    fn remote_keys(&self, provider: usize) -> Option<Rc<Jwks>>;
    /// Whether a token with an unknown `kid` may wait for a refetch of this provider's JWKS now
    /// (the rate limit; the caller still claims the refetch when the request waits).
    fn may_refetch(&self, provider: usize) -> bool;
    /// The provider's verified-token cache.
    fn cache(&self, provider: usize) -> Option<&RefCell<TokenCache>>;
}

/// What one request has already waited for, carried by the stream from one decision to the next.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settled {
    /// Providers whose refetch (unknown `kid`) this request waited for or could not wait for:
    /// decided with the keys there are.
    refetched: BTreeSet<usize>,
    /// Providers whose first keys this request stopped waiting for: `Jwks remote fetch is
    /// failed` while there are none.
    given_up: BTreeSet<usize>,
}

impl Settled {
    /// The refetch of `provider`'s keys happened (or will not): no more waiting for it.
    pub fn refetched(&mut self, provider: usize) {
        self.refetched.insert(provider);
    }

    /// Stop waiting for `provider` altogether (deadline, failed fetch, no room to wait).
    /// `false` when it was given up already.
    pub fn give_up(&mut self, provider: usize) -> bool {
        self.refetched.insert(provider);
        self.given_up.insert(provider)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderOp {
    Remove(String),
    Add(String, Vec<u8>),
    /// Replace every value (`:path` without a token parameter).
    Set(String, Vec<u8>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow(Vec<HeaderOp>),
    Deny(Status),
    /// Pause the request until `provider`'s keys change (`refetch`: ask for a refetch first).
    Wait {
        provider: usize,
        refetch: bool,
    },
    /// Valid, but a claim for `claim_to_headers` cannot be a header value (CR, LF, NUL): the
    /// request cannot go on. Envoy answers jwt_authn's attempt with a 503
    /// `invalid header value for: <header>`, and so does this filter.
    InvalidHeader(String),
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub cache_hits: u64,
    pub cache_misses: u64,
}

/// Per-worker verified-token cache of one provider (jwt_authn's `JwtCache`): bounded, keyed by
/// a 128-bit digest of the token (tokens are not kept), oldest entry evicted first, and an
/// entry past its `exp` is never served. The digest is SipHash-2-4-128 under this worker's
/// random key ([`TokenCache::keyed`]): nobody without the key can aim a token at another's
/// entry; without a key (the host gave no random bytes) it is SHA-256, several times costlier
/// in wasm.
#[derive(Debug, Default)]
pub struct TokenCache {
    capacity: usize,
    key: Option<HashKey>,
    map: BTreeMap<[u8; 32], Rc<Jwt>>,
    order: VecDeque<[u8; 32]>,
}

impl TokenCache {
    pub fn new(capacity: usize) -> TokenCache {
        TokenCache { capacity, key: None, map: BTreeMap::new(), order: VecDeque::new() }
    }

    /// Digest tokens with SipHash-2-4-128 under `key` (secret, random per worker).
    pub fn keyed(mut self, key: HashKey) -> TokenCache {
        self.key = Some(key);
        self
    }

    /// The entry key of `token`.
    fn digest(&self, token: &[u8]) -> [u8; 32] {
        match &self.key {
            Some(key) => {
                let mut out = [0u8; 32];
                let (head, _) = out.split_at_mut(16);
                head.copy_from_slice(&keyed128(key, token));
                out
            }
            None => Sha256::digest(token).into(),
        }
    }

    fn lookup(&mut self, key: &[u8; 32], now: u64) -> Option<Rc<Jwt>> {
        let jwt = self.map.get(key)?;
        if jwt.exp != 0 && now > jwt.exp {
            self.map.remove(key);
            return None;
        }
        Some(jwt.clone())
    }

    fn insert(&mut self, key: [u8; 32], jwt: Rc<Jwt>) {
        if self.capacity == 0 {
            return;
        }
        if self.map.insert(key, jwt).is_none() {
            self.order.push_back(key);
        }
        while self.map.len() > self.capacity || self.order.len() > self.capacity.saturating_mul(2) {
            let Some(old) = self.order.pop_front() else { break };
            self.map.remove(&old);
        }
    }

    pub fn clear(&mut self) {
        self.map.clear();
        self.order.clear();
    }
}

/// The compiled configuration plus what is derived from it once per worker.
pub struct Engine {
    pub config: Compiled,
    extractors: Vec<Extractor>,
    all: Extractor,
    /// Every header a provider writes (`forward_payload_header`, `claim_to_headers`).
    written: Vec<String>,
}

/// One evaluation's mutable state.
struct Run<'a> {
    engine: &'a Engine,
    keys: &'a dyn KeyView,
    settled: &'a Settled,
    now: u64,
    request: &'a RequestHeaders,
    ops: Vec<HeaderOp>,
    counts: Counts,
    invalid_header: Option<String>,
    /// Every token place read, and whether its readers all have `forward: false`.
    read: Vec<(Place<'a>, bool)>,
    /// Places of good tokens whose provider does not forward them (jwt_authn's removal).
    verified_not_forwarded: Vec<Place<'a>>,
}

/// Internal: stop the whole evaluation and wait.
struct Wait {
    provider: usize,
    refetch: bool,
}

impl Engine {
    pub fn new(config: Compiled) -> Engine {
        let extractors = config.providers.iter().map(|p| Extractor::new([p])).collect();
        let all = Extractor::new(&config.providers);
        let mut written: Vec<String> = config.providers.iter().flat_map(|p| p.writes.iter().cloned()).collect();
        written.sort();
        written.dedup();
        Engine { config, extractors, all, written }
    }

    pub fn new_cache(&self, provider: usize) -> TokenCache {
        TokenCache::new(self.config.providers.get(provider).map_or(0, |p| p.cache_size))
    }

    /// Remove from `request` every header a provider writes, whatever the path and the rule:
    /// only this filter may set them (jwt_authn 1.40 does the same; 1.36 only for the providers
    /// of the requirement). Returns the removals to make, one per header present (none for a
    /// request that forges nothing).
    pub fn sanitize(&self, request: &mut RequestHeaders) -> Vec<HeaderOp> {
        let mut ops = Vec::new();
        for name in &self.written {
            if request.get(name).is_some() {
                request.remove(name);
                ops.push(HeaderOp::Remove(name.clone()));
            }
        }
        ops
    }

    /// The rule for this request: the first whose `match` holds for its path or route (read
    /// from `route` only when a rule names one); `None` = no JWT needed (no rule matched).
    pub fn rule(&self, path: &str, route: &RouteName) -> Option<usize> {
        self.config.rules.iter().position(|r| r.matcher.matches(Some(path), route))
    }

    /// The requirement of rule `index` (from [`rule`](Engine::rule)).
    pub fn requirement_of(&self, index: usize) -> Option<&Requirement> {
        self.config.rules.get(index).map(|r| &r.requirement)
    }

    /// The requirement for this request: its rule's.
    pub fn requirement(&self, path: &str, route: &RouteName) -> Option<&Requirement> {
        self.rule(path, route).and_then(|i| self.requirement_of(i))
    }

    /// Decide `requirement` for `request` (already [`sanitized`](Engine::sanitize)).
    pub fn evaluate(
        &self,
        requirement: &Requirement,
        request: &RequestHeaders,
        keys: &dyn KeyView,
        settled: &Settled,
        now: u64,
    ) -> (Verdict, Counts) {
        let mut run = Run {
            engine: self,
            keys,
            settled,
            now,
            request,
            ops: Vec::new(),
            counts: Counts::default(),
            invalid_header: None,
            read: Vec::new(),
            verified_not_forwarded: Vec::new(),
        };
        let verdict = match run.requirement(requirement) {
            Err(w) => Verdict::Wait { provider: w.provider, refetch: w.refetch },
            Ok(Status::Ok) if run.invalid_header.is_some() => {
                Verdict::InvalidHeader(run.invalid_header.take().unwrap_or_default())
            }
            Ok(Status::Ok) => {
                run.strip_tokens();
                Verdict::Allow(std::mem::take(&mut run.ops))
            }
            Ok(status) => Verdict::Deny(status),
        };
        (verdict, run.counts)
    }

    /// The provider for an issuer when no provider is named (`allow_missing*`): the first with
    /// that issuer, else the first without one (jwt_authn `findByIssuer`).
    fn find_by_issuer(&self, iss: &str) -> Option<usize> {
        let ps = &self.config.providers;
        ps.iter().position(|p| p.issuer == iss).or_else(|| {
            if iss.is_empty() {
                None
            } else {
                ps.iter().position(|p| p.issuer.is_empty())
            }
        })
    }
}

impl<'a> Run<'a> {
    fn requirement(&mut self, r: &Requirement) -> Result<Status, Wait> {
        let engine = self.engine;
        match r {
            Requirement::AllowAll => Ok(Status::Ok),
            Requirement::Provider { index, audiences } => {
                let found = self.extract(&engine.extractors[*index]);
                self.authenticate(found, Some(*index), audiences.as_ref(), false, false)
            }
            Requirement::AllowMissing | Requirement::AllowMissingOrFailed => {
                let found = self.extract(&engine.all);
                let failed_ok = matches!(r, Requirement::AllowMissingOrFailed);
                self.authenticate(found, None, None, failed_ok, true)
            }
            Requirement::All(children) => {
                for c in children {
                    let s = self.requirement(c)?;
                    if s != Status::Ok {
                        return Ok(s);
                    }
                }
                Ok(Status::Ok)
            }
            Requirement::Any { children, allow_missing, allow_missing_or_failed } => {
                let mut statuses = Vec::with_capacity(children.len());
                for c in children {
                    let s = self.requirement(c)?;
                    if s == Status::Ok {
                        return Ok(Status::Ok);
                    }
                    statuses.push(s);
                }
                // jwt_authn: prefer errors other than JwtMissed/JwtUnknownIssuer, and
                // JwtUnknownIssuer over JwtMissed.
                let mut fin = Status::JwtMissed;
                for s in statuses {
                    if (s != Status::JwtMissed && s != Status::JwtUnknownIssuer) || fin == Status::JwtMissed {
                        fin = s;
                    }
                }
                if *allow_missing_or_failed || (*allow_missing && fin == Status::JwtMissed) {
                    fin = Status::Ok;
                }
                Ok(fin)
            }
        }
    }

    /// The tokens `extractor` finds, their places noted for [`Run::strip_tokens`].
    fn extract(&mut self, extractor: &'a Extractor) -> Vec<Found<'a>> {
        let found = extractor.extract(self.request);
        self.read.extend(found.iter().map(|f| (f.place, f.strip)));
        found
    }

    /// jwt_authn's authenticator: tokens are taken from the last found; every token must pass
    /// unless failures or missing tokens are allowed.
    fn authenticate(
        &mut self,
        mut found: Vec<Found<'a>>,
        provider: Option<usize>,
        audiences: Option<&Audiences>,
        allow_failed: bool,
        allow_missing: bool,
    ) -> Result<Status, Wait> {
        if found.is_empty() {
            return Ok(done(Status::JwtMissed, allow_failed, allow_missing));
        }
        while let Some(t) = found.pop() {
            let status = self.verify_one(&t, provider, audiences)?;
            if (status != Status::Ok && !allow_failed && !allow_missing) || found.is_empty() {
                return Ok(done(status, allow_failed, allow_missing));
            }
        }
        Ok(Status::Ok)
    }

    /// The provider's keys, or why there are none, or a wait.
    fn jwks(&self, index: usize, p: &Provider, jwt: &Jwt) -> Result<Result<Rc<Jwks>, Status>, Wait> {
        let remote = match &p.keys {
            KeySource::Local(j) => return Ok(Ok(j.clone())),
            KeySource::Remote(_) => self.keys.remote_keys(index),
        };
        Ok(match remote {
            Some(j) => {
                let unknown_kid = jwt.kid.as_deref().is_some_and(|k| !j.has_kid(k));
                if unknown_kid && !self.settled.refetched.contains(&index) && self.keys.may_refetch(index) {
                    return Err(Wait { provider: index, refetch: true });
                }
                Ok(j)
            }
            None if self.settled.given_up.contains(&index) => Err(Status::JwksFetchFail),
            None => return Err(Wait { provider: index, refetch: false }),
        })
    }

    fn verify_one(
        &mut self,
        t: &Found<'a>,
        provider: Option<usize>,
        audiences: Option<&Audiences>,
    ) -> Result<Status, Wait> {
        let engine = self.engine;
        let max = engine.config.max_token_bytes;
        let cache = provider.and_then(|i| self.keys.cache(i)).filter(|c| c.borrow().capacity > 0);
        let cache_key = cache.filter(|_| t.token.len() <= max).map(|c| (c, c.borrow().digest(&t.token)));
        let cached = cache_key.as_ref().and_then(|(c, key)| c.borrow_mut().lookup(key, self.now));
        if cache_key.is_some() {
            if cached.is_some() {
                self.counts.cache_hits += 1;
            } else {
                self.counts.cache_misses += 1;
            }
        }
        let jwt = match &cached {
            Some(j) => j.clone(),
            None => match token::parse(&t.token, max) {
                Ok(j) => Rc::new(j),
                Err(s) => return Ok(s),
            },
        };
        if !t.issuers.allows(&jwt.iss) {
            return Ok(Status::JwtUnknownIssuer);
        }
        let Some(index) = provider.or_else(|| engine.find_by_issuer(&jwt.iss)) else {
            return Ok(Status::JwtUnknownIssuer);
        };
        let p: &Provider = &engine.config.providers[index];
        let time = jwt.check_time(self.now, p.clock_skew_seconds);
        if time != Status::Ok {
            return Ok(time);
        }
        if !jwt.lifetime_allowed(self.now, p.max_exp) {
            return Ok(Status::JwtLifetimeNotAllowed);
        }
        if !audiences.unwrap_or(&p.audiences).allows(&jwt.audiences) {
            return Ok(Status::JwtAudienceNotAllowed);
        }
        if cached.is_none() {
            // `require_kid`: a token without kid selects no key (bounds the keys tried per token).
            if p.require_kid && jwt.kid.as_deref().is_none_or(str::is_empty) {
                return Ok(Status::JwksKidAlgMismatch);
            }
            let jwks = match self.jwks(index, p, &jwt)? {
                Ok(j) => j,
                Err(status) => return Ok(status),
            };
            let signing_input = t.token.get(..jwt.signing_input_len).unwrap_or_default();
            match jwks.verify(jwt.alg, jwt.kid.as_deref(), signing_input, &jwt.signature) {
                Ok(()) => {}
                Err(VerifyError::NoMatchingKey) => return Ok(Status::JwksKidAlgMismatch),
                Err(VerifyError::BadSignature) => return Ok(Status::JwtVerificationFail),
                Err(VerifyError::Ed25519SignatureWrongLength) => return Ok(Status::JwtEd25519SignatureWrongLength),
                Err(VerifyError::NoKeys) => return Ok(Status::JwksNoValidKeys),
            }
        }
        self.good(&jwt, p, t);
        if let (Some((c, key)), None) = (cache_key, &cached) {
            c.borrow_mut().insert(key, jwt);
        }
        Ok(Status::Ok)
    }

    /// jwt_authn's `handleGoodJwt`: payload and claim headers, then the token's removal.
    fn good(&mut self, jwt: &Jwt, p: &Provider, t: &Found<'a>) {
        if let Some(h) = &p.forward_payload_header {
            let mut payload = jwt.payload_b64.clone();
            if p.pad_forward_payload_header {
                while !payload.len().is_multiple_of(4) {
                    payload.push('=');
                }
            }
            self.ops.push(HeaderOp::Add(h.clone(), payload.into_bytes()));
        }
        for (header, claim) in &p.claim_to_headers {
            if let Some(v) = jwt.claim_text(claim) {
                if v.bytes().any(|b| matches!(b, b'\0' | b'\r' | b'\n')) {
                    self.invalid_header.get_or_insert_with(|| header.clone());
                } else {
                    self.ops.push(HeaderOp::Add(header.clone(), v.into_bytes()));
                }
            }
        }
        if !p.forward {
            self.verified_not_forwarded.push(t.place);
        }
    }

    /// Remove the tokens of a request that goes on: a good token whose provider does not
    /// forward it (jwt_authn), and any other token read at a place whose every reader has
    /// `forward: false` (ours: a failed or unchecked token is not forwarded either).
    fn strip_tokens(&mut self) {
        let mut places: Vec<Place<'a>> = self.verified_not_forwarded.clone();
        for (place, strip) in &self.read {
            if *strip && self.read.iter().all(|(p, s)| p != place || *s) {
                places.push(*place);
            }
        }
        places.sort();
        places.dedup();
        let mut params = Vec::new();
        let mut cookies = Vec::new();
        for place in places {
            match place {
                Place::Header(h) => self.ops.push(HeaderOp::Remove(h.to_string())),
                Place::Param(name) => params.push(name),
                Place::Cookie(name) => cookies.push(name),
            }
        }
        if let Some(path) = (!params.is_empty()).then(|| self.request.path_without_params(&params)).flatten() {
            self.ops.push(HeaderOp::Set(":path".into(), path));
        }
        if let Some(values) = (!cookies.is_empty()).then(|| self.request.cookies_without(&cookies)).flatten() {
            self.ops.push(HeaderOp::Remove("cookie".into()));
            self.ops.extend(values.into_iter().map(|v| HeaderOp::Add("cookie".into(), v)));
        }
    }
}

/// jwt_authn's `doneWithStatus` verdict for an authenticator.
fn done(status: Status, allow_failed: bool, allow_missing: bool) -> Status {
    if allow_failed || (allow_missing && status == Status::JwtMissed) {
        Status::Ok
    } else {
        status
    }
}

#[cfg(test)]
mod tests;
