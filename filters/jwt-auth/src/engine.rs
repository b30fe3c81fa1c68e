//! The decision for one request, as jwt_authn's verifiers and authenticator make it — a pure
//! function of the configuration, the keys this worker has, the request headers and the time,
//! so it is unit-tested without a host. It either decides (allow with header edits, or deny with
//! a status) or asks to wait for a provider's remote keys.

use crate::config::{Audiences, Compiled, KeySource, Provider, Requirement};
use crate::extract::{Extractor, Found, RequestHeaders};
use crate::token::{self, Jwt, Status};
use jose::jwks::{Jwks, VerifyError};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;

/// What a worker has for a provider's keys right now.
pub enum Keys {
    Ready(Rc<Jwks>),
    /// Remote keys not fetched yet (or not yet seen by this worker).
    Pending,
    /// Remote keys never arrived within the wait: jwt_authn's `JwksFetchFail`.
    Failed,
}

/// The worker side the engine asks about keys.
pub trait KeyView {
    fn keys(&self, provider: usize) -> Keys;
    /// Whether a token with an unknown `kid` may wait for a refetch of this provider's JWKS.
    fn may_refetch(&self, provider: usize) -> bool;
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderOp {
    Remove(String),
    Add(String, String),
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
/// the SHA-256 of the token (tokens are not kept), oldest entry evicted first, and an entry past
/// its `exp` is never served.
#[derive(Debug, Default)]
pub struct TokenCache {
    capacity: usize,
    map: BTreeMap<[u8; 32], Rc<Jwt>>,
    order: VecDeque<[u8; 32]>,
}

impl TokenCache {
    pub fn new(capacity: usize) -> TokenCache {
        TokenCache { capacity, map: BTreeMap::new(), order: VecDeque::new() }
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
    sanitize_all: Vec<String>,
}

/// One evaluation's mutable state.
struct Run<'a> {
    engine: &'a Engine,
    keys: &'a dyn KeyView,
    caches: &'a mut [TokenCache],
    now: u64,
    request: &'a mut RequestHeaders,
    ops: Vec<HeaderOp>,
    counts: Counts,
    invalid_header: Option<String>,
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
        let mut sanitize_all: Vec<String> = config.providers.iter().flat_map(|p| p.sanitize.iter().cloned()).collect();
        sanitize_all.dedup();
        Engine { config, extractors, all, sanitize_all }
    }

    pub fn new_caches(&self) -> Vec<TokenCache> {
        self.config.providers.iter().map(|p| TokenCache::new(p.cache_size)).collect()
    }

    /// The requirement for this request: the first rule whose path matches; `None` = no JWT
    /// needed (no rule matched).
    pub fn requirement(&self, path: &str) -> Option<&Requirement> {
        self.config.rules.iter().find(|r| r.matcher.matches(path)).map(|r| &r.requirement)
    }

    pub fn evaluate(
        &self,
        requirement: &Requirement,
        request: &mut RequestHeaders,
        keys: &dyn KeyView,
        caches: &mut [TokenCache],
        now: u64,
    ) -> (Verdict, Counts) {
        let mut run = Run {
            engine: self,
            keys,
            caches,
            now,
            request,
            ops: Vec::new(),
            counts: Counts::default(),
            invalid_header: None,
        };
        let verdict = match run.requirement(requirement) {
            Err(w) => Verdict::Wait { provider: w.provider, refetch: w.refetch },
            Ok(Status::Ok) if run.invalid_header.is_some() => {
                Verdict::InvalidHeader(run.invalid_header.take().unwrap_or_default())
            }
            Ok(Status::Ok) => Verdict::Allow(std::mem::take(&mut run.ops)),
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

impl Run<'_> {
    fn requirement(&mut self, r: &Requirement) -> Result<Status, Wait> {
        let engine = self.engine;
        match r {
            Requirement::AllowAll => Ok(Status::Ok),
            Requirement::Provider { index, audiences } => {
                let p = &engine.config.providers[*index];
                self.sanitize(&p.sanitize);
                let extractor = &engine.extractors[*index];
                let found = extractor.extract(self.request);
                self.authenticate(found, Some(*index), audiences.as_ref(), false, false)
            }
            Requirement::AllowMissing | Requirement::AllowMissingOrFailed => {
                self.sanitize(&engine.sanitize_all);
                let found = engine.all.extract(self.request);
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

    /// Remove headers a client must not set itself; only those present cost a host call.
    fn sanitize(&mut self, names: &[String]) {
        for n in names {
            if self.request.get(n).is_some() {
                self.request.remove(n);
                self.ops.push(HeaderOp::Remove(n.clone()));
            }
        }
    }

    /// jwt_authn's authenticator: tokens are taken from the last found; every token must pass
    /// unless failures or missing tokens are allowed.
    fn authenticate(
        &mut self,
        mut found: Vec<Found<'_>>,
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

    fn verify_one(
        &mut self,
        t: &Found<'_>,
        provider: Option<usize>,
        audiences: Option<&Audiences>,
    ) -> Result<Status, Wait> {
        let engine = self.engine;
        let max = engine.config.max_token_bytes;
        let cache_key = provider
            .filter(|i| engine.config.providers[*i].cache_size > 0)
            .and_then(|i| (t.token.len() <= max).then(|| (i, <[u8; 32]>::from(Sha256::digest(&t.token)))));
        let cached = cache_key.and_then(|(i, key)| self.caches.get_mut(i)?.lookup(&key, self.now));
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
            let jwks = match &p.keys {
                KeySource::Local(j) => j.clone(),
                KeySource::Remote(_) => match self.keys.keys(index) {
                    Keys::Ready(j) => {
                        if jwt.kid.as_deref().is_some_and(|k| !j.has_kid(k)) && self.keys.may_refetch(index) {
                            return Err(Wait { provider: index, refetch: true });
                        }
                        j
                    }
                    Keys::Pending => return Err(Wait { provider: index, refetch: false }),
                    Keys::Failed => return Ok(Status::JwksFetchFail),
                },
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
        if let (Some((i, key)), None) = (cache_key, &cached) {
            if let Some(c) = self.caches.get_mut(i) {
                c.insert(key, jwt);
            }
        }
        Ok(Status::Ok)
    }

    /// jwt_authn's `handleGoodJwt`: payload and claim headers, then the token's removal.
    fn good(&mut self, jwt: &Jwt, p: &Provider, t: &Found<'_>) {
        if let Some(h) = &p.forward_payload_header {
            let mut payload = jwt.payload_b64.clone();
            if p.pad_forward_payload_header {
                while !payload.len().is_multiple_of(4) {
                    payload.push('=');
                }
            }
            self.ops.push(HeaderOp::Add(h.clone(), payload));
        }
        for (header, claim) in &p.claim_to_headers {
            if let Some(v) = jwt.claim_text(claim) {
                if v.bytes().any(|b| matches!(b, b'\0' | b'\r' | b'\n')) {
                    self.invalid_header.get_or_insert_with(|| header.clone());
                } else {
                    self.ops.push(HeaderOp::Add(header.clone(), v));
                }
            }
        }
        if !p.forward {
            if let Some(h) = t.header {
                self.ops.push(HeaderOp::Remove(h.to_string()));
            }
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
