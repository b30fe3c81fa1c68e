//! The peer suite: the test cases of google/jwt_verify_lib (the library inside Envoy's
//! jwt_authn) and of Envoy's own `jwt_authn/authenticator_test.cc`, as data under
//! `e2e/fixtures/jwt-peer/` (Apache-2.0, see the NOTICE there), each run through native jwt_authn
//! and jwt-auth in one Envoy given the same JSON. Expected answers are native's, at run time.
//!
//! A case is (JWKS, provider config, requirement, requests). Each JWKS is served by the loopback
//! JWKS server on a path of its own (`remote_jwks`) and, where the original loads it, also given
//! inline (`local_jwks`). Every case gets its own providers and a path prefix in one shared
//! configuration, except those that need one of their own (one more listener pair): a requirement
//! that looks providers up by issuer (`allow_missing*`), and inline JWKS, which a side may refuse
//! at load. Listeners come by LDS, so a refused one is an answer ("refused at load"), not an
//! Envoy that does not start. Requests marked so also go with their signature changed four ways
//! (the originals' `fuzzJwtSignature`: a bit flipped at each end, cut to one byte, one byte
//! short). Compared: status, body, `WWW-Authenticate`, and what the upstream received (path and
//! every header).
//!
//! Where the two differ, the request must be listed below with its cause: in
//! [`KNOWN_BEING_FIXED`] (bugs and deviations someone is closing), in [`DELIBERATE`] (documented
//! choices), and under Envoy 1.36 in [`ENVOY_1_36`] too (the suite follows 1.40). The test fails
//! when an unlisted request differs and when a listed one agrees: prune the list as fixes land.
//! `JWT_AUTH_UNDER_TEST=native` puts jwt_authn on both listeners: a check of the harness (no
//! difference at all is allowed then).

use e2e::envoy::{free_port, Envoy, EnvoyOptions};
use e2e::http::{Request, Response};
use e2e::jwks_server::JwksServer;
use e2e::jwt::{b64_decode, b64url};
use e2e::upstream::{Recorded, Upstream};
use e2e::{repo_root, JWKS_PORT, UPSTREAM_PORT};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

// ---- what is known to differ ----

/// Differences someone is fixing, by request, with why: the test fails when one of them starts
/// agreeing, so the entry is removed with the fix. Empty: issue 13's causes 1 (query token left
/// in the path with `forward: false`) and 2 (`max_lifetime` / `require_expiration` answered
/// `Jwt is expired`) are fixed; causes 3 and 4 (X.509 JWKS, trailing commas) were closed by jose.
const KNOWN_BEING_FIXED: &[(&str, &str)] = &[];

const STRIP_EVERY_TOKEN: &str =
    "issue 13 J5: with `forward: false` every token location of the providers evaluated is \
     removed, failed tokens too (a forged token under allow_missing/allow_failed must not reach the upstream); \
     jwt_authn removes only the tokens that verified";

const MAX_TOKEN_BYTES: &str = "max_token_bytes (8192 by default): a longer token gets `Jwt is too large` unparsed; \
     jwt_authn has no cap";

/// Deliberate, documented deviations (jwt-auth's README, "Differences from jwt_authn").
const DELIBERATE: &[(&str, &str)] = &[
    ("authenticator_test.cc AuthenticatorTest.TestAllowFailedMultipleIssuers: GoodToken, expired-auth ExpiredToken, other-auth OtherGoodToken [remote, as given]", STRIP_EVERY_TOKEN),
    ("authenticator_test.cc AuthenticatorTest.TestAllowFailedMultipleIssuers: GoodToken, expired-auth ExpiredToken, other-auth OtherGoodToken [remote, trailing commas removed]", STRIP_EVERY_TOKEN),
    ("authenticator_test.cc AuthenticatorTest.TestAllowFailedMultipleTokens: a ExpiredToken, b GoodToken, c InvalidAudToken [remote, as given]", STRIP_EVERY_TOKEN),
    ("authenticator_test.cc AuthenticatorTest.TestAllowFailedMultipleTokens: a ExpiredToken, b GoodToken, c InvalidAudToken [remote, trailing commas removed]", STRIP_EVERY_TOKEN),
    ("authenticator_test.cc AuthenticatorTest.TestMultipleJWTOneBadAllowFails: GoodToken header, NonExistKidToken query [remote, as given]", STRIP_EVERY_TOKEN),
    ("authenticator_test.cc AuthenticatorTest.TestMultipleJWTOneBadAllowFails: GoodToken header, NonExistKidToken query [remote, trailing commas removed]", STRIP_EVERY_TOKEN),
    ("jwt_test.cc JwtParseTest.GoodJwtLongClaim: GoodJwtLongClaim.jwt_text [remote]", MAX_TOKEN_BYTES),
    ("jwt_test.cc JwtParseTest.GoodJwtLongCustomClaims: GoodJwtLongCustomClaims.jwt_text [remote]", MAX_TOKEN_BYTES),
    ("jwt_test.cc JwtParseTest.TestTooLargeJwt: 10240 x \"c\" [remote]", MAX_TOKEN_BYTES),
    ("verify_jwk_rsa_test.cc VerifyJwkRsaTest.LongClaimsWithCorrectKidOk: JwtTextWithLongClaimsCorrectKid [local]", MAX_TOKEN_BYTES),
    ("verify_jwk_rsa_test.cc VerifyJwkRsaTest.LongClaimsWithCorrectKidOk: JwtTextWithLongClaimsCorrectKid [remote, signature bit 0 of byte 0 flipped]", MAX_TOKEN_BYTES),
    ("verify_jwk_rsa_test.cc VerifyJwkRsaTest.LongClaimsWithCorrectKidOk: JwtTextWithLongClaimsCorrectKid [remote, signature cut to its first byte]", MAX_TOKEN_BYTES),
    ("verify_jwk_rsa_test.cc VerifyJwkRsaTest.LongClaimsWithCorrectKidOk: JwtTextWithLongClaimsCorrectKid [remote, signature one byte short]", MAX_TOKEN_BYTES),
    ("verify_jwk_rsa_test.cc VerifyJwkRsaTest.LongClaimsWithCorrectKidOk: JwtTextWithLongClaimsCorrectKid [remote, signature top bit of the last byte flipped]", MAX_TOKEN_BYTES),
    ("verify_jwk_rsa_test.cc VerifyJwkRsaTest.LongClaimsWithCorrectKidOk: JwtTextWithLongClaimsCorrectKid [remote]", MAX_TOKEN_BYTES),
];

/// Under Envoy 1.36, these requests flip: listed above but answered alike by 1.36, or answered
/// alike by 1.40 but not by 1.36. The suite follows 1.40; this is what 1.36 does instead.
// Empty: Envoy 1.36.4 answers every request of the suite as 1.40.0 does (status, body,
// WWW-Authenticate, upstream path and headers, and which inline JWKS load).
const ENVOY_1_36: &[(&str, &str)] = &[];

// ---- the data ----

const FIXTURES: &str = "e2e/fixtures/jwt-peer";
/// `http_uri.timeout`, as in Envoy's own tests; also how long jwt-auth lets a request wait for
/// keys it cannot get.
const FETCH_TIMEOUT: &str = "5s";
/// Longer than any answer takes: a request still unanswered then gets none (a hang is an answer
/// of its own here).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
const PARALLEL_REQUESTS: usize = 32;

fn native() -> bool {
    std::env::var("JWT_AUTH_UNDER_TEST").is_ok_and(|v| v == "native")
}

/// One fixture file: a source file's JWKS, tokens, cases, and the cases left out, with reasons.
struct Fixture {
    /// The original file, e.g. `verify_jwk_rsa_test.cc`.
    source: String,
    jwks: BTreeMap<String, String>,
    /// JWKS given two ways (as written; trailing commas removed): each case using it runs with
    /// both, as (label, JWKS, whether signature changes are sent with it).
    variants: BTreeMap<String, Vec<(String, String, bool)>>,
    tokens: BTreeMap<String, String>,
    cases: Vec<Value>,
    excluded: Vec<(String, String)>,
}

fn strings(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_else(|| panic!("{k}: not a string")).to_string()))
        .collect()
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_else(|| panic!("`{key}` missing in {v}"))
}

fn load_fixtures() -> Vec<Fixture> {
    let mut files = Vec::new();
    let mut dirs = vec![repo_root().join(FIXTURES)];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "json") {
                files.push(path);
            }
        }
    }
    files.sort();
    files.iter().map(|p| load_fixture(p)).collect()
}

fn load_fixture(path: &Path) -> Fixture {
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let source = str_of(&doc["source"], "path").rsplit('/').next().unwrap_or_default().to_string();
    let variants = doc["jwks_variants"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(name, list)| {
            let list = list
                .as_array()
                .unwrap()
                .iter()
                .map(|v| (str_of(v, "label").into(), str_of(v, "jwks").into(), v["signature_variants"] != false));
            (name.clone(), list.collect())
        })
        .collect();
    let excluded = doc["excluded"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| (str_of(e, "test").to_string(), str_of(e, "reason").to_string()))
        .collect();
    Fixture {
        source,
        jwks: strings(&doc["jwks"]),
        variants,
        tokens: strings(&doc["tokens"]),
        cases: doc["cases"].as_array().cloned().unwrap_or_default(),
        excluded,
    }
}

// ---- cases → configurations and requests ----

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Delivery {
    Remote,
    Local,
}

/// A case with one JWKS variant and one delivery: its providers and rules, and its requests.
struct Instance {
    /// `shared`; or the instance's id (`c12`, also its path prefix) when it needs a configuration
    /// of its own: a requirement that looks providers up by issuer, or an inline JWKS (one side
    /// may refuse it at load, which must not take other cases' listeners down).
    world: String,
    providers: Map<String, Value>,
    rules: Vec<Value>,
    bypass_cors_preflight: bool,
    requests: Vec<(String, Request)>,
}

/// What each side is given: one `JwtAuthentication`.
#[derive(Default)]
struct World {
    providers: Map<String, Value>,
    rules: Vec<Value>,
    bypass_cors_preflight: bool,
}

impl World {
    fn config(&self) -> Value {
        json!({"providers": self.providers, "rules": self.rules, "bypass_cors_preflight": self.bypass_cors_preflight})
    }
}

/// `{Name}` in `text` replaced with the token of that name.
fn substitute(text: &str, tokens: &BTreeMap<String, String>) -> String {
    let mut out = text.to_string();
    for (name, token) in tokens {
        out = out.replace(&format!("{{{name}}}"), token);
    }
    out
}

/// jwt_verify_lib's `fuzzJwtSignature`, sampled: each end's bit flipped, each truncation's ends.
fn signature_variants(token: &str) -> Vec<(&'static str, String)> {
    let (signed, signature) = token.rsplit_once('.').expect("a token with a signature");
    let bytes = b64_decode(signature, true).expect("base64url signature");
    let with = |b: &[u8]| format!("{signed}.{}", b64url(b));
    let mut first = bytes.clone();
    first[0] ^= 1;
    let mut last = bytes.clone();
    *last.last_mut().unwrap() ^= 0x80;
    vec![
        ("signature bit 0 of byte 0 flipped", with(&first)),
        ("signature top bit of the last byte flipped", with(&last)),
        ("signature cut to its first byte", with(&bytes[..1])),
        ("signature one byte short", with(&bytes[..bytes.len() - 1])),
    ]
}

/// Provider names in a requirement prefixed with the instance's id.
fn rename_providers(requirement: &Value, prefix: &str) -> Value {
    match requirement {
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| match (k.as_str(), v) {
                    ("provider_name", Value::String(name)) => (k.clone(), json!(format!("{prefix}{name}"))),
                    _ => (k.clone(), rename_providers(v, prefix)),
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(|v| rename_providers(v, prefix)).collect()),
        other => other.clone(),
    }
}

struct Suite {
    instances: Vec<Instance>,
    /// Remote JWKS by path.
    jwks_paths: BTreeMap<String, String>,
    /// Original tests brought in.
    cases: usize,
    excluded: Vec<(String, String)>,
}

/// One case set up one way: a JWKS variant, a delivery, an id.
struct Setup<'a> {
    fx: &'a Fixture,
    case: &'a Value,
    /// `verify_jwk_rsa_test.cc VerifyJwkRsaTest.NoKidOK`
    base: String,
    /// `c12`: the path prefix, and the provider-name prefix in the shared configuration.
    id: String,
    isolated: bool,
    delivery: Delivery,
    /// JWKS name → the variant's JWKS name.
    jwks_of: BTreeMap<String, String>,
    /// `remote` / `local`, and the JWKS variant when there is one.
    tags: Vec<String>,
    signature_variants: bool,
}

impl Setup<'_> {
    fn provider_prefix(&self) -> String {
        if self.isolated {
            String::new()
        } else {
            format!("{}-", self.id)
        }
    }

    /// The case's providers with their JWKS delivered (remote JWKS recorded in `jwks_paths`).
    fn providers(&self, jwks_port: u16, started: u64, jwks_paths: &mut BTreeMap<String, String>) -> Map<String, Value> {
        let mut out = Map::new();
        for (name, spec) in self.case["providers"].as_object().expect("providers") {
            let mut p = spec.as_object().cloned().unwrap();
            let jwks_ref = p.remove("jwks").and_then(|v| v.as_str().map(String::from)).expect("jwks");
            let jwks_name = self.jwks_of.get(&jwks_ref).unwrap_or(&jwks_ref);
            let text = self.fx.jwks.get(jwks_name).unwrap_or_else(|| panic!("{}: no JWKS {jwks_name:?}", self.base));
            match self.delivery {
                Delivery::Remote => {
                    let path = format!("/{}/{name}", self.id);
                    jwks_paths.insert(path.clone(), text.clone());
                    let uri = format!("http://127.0.0.1:{jwks_port}{path}");
                    p.insert(
                        "remote_jwks".into(),
                        json!({"http_uri": {"uri": uri, "cluster": "jwks", "timeout": FETCH_TIMEOUT}}),
                    );
                }
                Delivery::Local => {
                    p.insert("local_jwks".into(), json!({"inline_string": text}));
                }
            }
            // "now" placed for the exp check only: skew + (start of the run - now).
            if let Some(now) = p.remove("emulate_now").and_then(|v| v.as_u64()) {
                let skew = p.get("clock_skew_seconds").and_then(Value::as_u64).unwrap_or(60);
                p.insert("clock_skew_seconds".into(), json!(skew + started - now));
            }
            out.insert(format!("{}{name}", self.provider_prefix()), Value::Object(p));
        }
        out
    }

    /// One rule per route (`/c12/<route>/`), or one for the case (`/c12/`).
    fn rules(&self) -> Vec<Value> {
        let prefix = self.provider_prefix();
        let rule = |path: String, requires: &Value| json!({"match": {"prefix": path}, "requires": rename_providers(requires, &prefix)});
        match self.case["routes"].as_object() {
            Some(routes) => routes.iter().map(|(route, req)| rule(format!("/{}/{route}/", self.id), req)).collect(),
            None => {
                let providers = self.case["providers"].as_object().expect("providers");
                let requires = self.case.get("requires").cloned().unwrap_or_else(|| {
                    assert_eq!(providers.len(), 1, "{}: several providers, say which is required", self.base);
                    json!({"provider_name": providers.keys().next().unwrap()})
                });
                vec![rule(format!("/{}/", self.id), &requires)]
            }
        }
    }

    /// The case's requests, named, with their signature variants when asked for.
    fn requests(&self) -> Vec<(String, Request)> {
        let tokens = &self.fx.tokens;
        let mut out = Vec::new();
        for r in self.case["requests"].as_array().expect("requests") {
            let route = r["route"].as_str().map(|x| format!("{x}/")).unwrap_or_default();
            let query = r["query"].as_str().map(|q| format!("?{}", substitute(q, tokens))).unwrap_or_default();
            let headers: Vec<(String, String)> = r["headers"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|h| (h[0].as_str().unwrap().to_string(), substitute(h[1].as_str().unwrap(), tokens)))
                .collect();
            let token = r["token"]
                .as_str()
                .map(|t| tokens.get(t).unwrap_or_else(|| panic!("{}: no token {t:?}", self.base)).as_str());
            let label = str_of(r, "label");
            let make = |token: Option<&str>, variant: Option<&str>| {
                let mut req = Request::get(&format!("/{}/{route}r{query}", self.id));
                if let Some(t) = token {
                    req = req.header("authorization", &format!("Bearer {t}"));
                }
                for (k, v) in &headers {
                    req = req.header(k, v);
                }
                let tags: Vec<&str> = self.tags.iter().map(String::as_str).chain(variant).collect();
                (format!("{}: {label} [{}]", self.base, tags.join(", ")), req)
            };
            out.push(make(token, None));
            if r["signature_variants"] == true && self.delivery == Delivery::Remote && self.signature_variants {
                for (what, changed) in signature_variants(token.expect("signature variants need a token")) {
                    out.push(make(Some(&changed), Some(what)));
                }
            }
        }
        out
    }
}

/// Every case of every fixture, once per JWKS variant and delivery.
fn build_suite(fixtures: &[Fixture], jwks_port: u16, started: u64) -> Suite {
    let mut instances = Vec::new();
    let mut jwks_paths = BTreeMap::new();
    let mut tests = BTreeSet::new();
    let mut excluded = Vec::new();
    for fx in fixtures {
        excluded.extend(fx.excluded.iter().map(|(t, why)| (format!("{} {t}", fx.source), why.clone())));
        for case in &fx.cases {
            tests.insert(format!("{} {}", fx.source, str_of(case, "test")));
            let base = format!("{} {}", fx.source, case["name"].as_str().unwrap_or_else(|| str_of(case, "test")));
            // One run per variant of a JWKS the case uses (at most one such JWKS per case).
            let mut variants = vec![(None, BTreeMap::new(), true)];
            for p in case["providers"].as_object().expect("providers").values() {
                if let Some(list) = fx.variants.get(str_of(p, "jwks")) {
                    variants = list
                        .iter()
                        .map(|(label, jwks, fuzz)| {
                            (Some(label.clone()), BTreeMap::from([(str_of(p, "jwks").into(), jwks.clone())]), *fuzz)
                        })
                        .collect();
                }
            }
            let deliveries = match case["deliveries"].as_array() {
                Some(list) => {
                    list.iter().map(|d| if d == "local" { Delivery::Local } else { Delivery::Remote }).collect()
                }
                None if case["local"] == true => vec![Delivery::Remote, Delivery::Local],
                None => vec![Delivery::Remote],
            };
            for (variant, jwks_of, fuzz) in variants {
                for &delivery in &deliveries {
                    let id = format!("c{}", instances.len() + 1);
                    let mut tags = vec![if delivery == Delivery::Remote { "remote" } else { "local" }.to_string()];
                    tags.extend(variant.clone());
                    let setup = Setup {
                        fx,
                        case,
                        base: base.clone(),
                        isolated: case["isolated"] == true || delivery == Delivery::Local,
                        id,
                        delivery,
                        jwks_of: jwks_of.clone(),
                        tags,
                        signature_variants: fuzz,
                    };
                    instances.push(Instance {
                        world: if setup.isolated { setup.id.clone() } else { "shared".into() },
                        providers: setup.providers(jwks_port, started, &mut jwks_paths),
                        rules: setup.rules(),
                        bypass_cors_preflight: case["bypass_cors_preflight"] == true,
                        requests: setup.requests(),
                    });
                }
            }
        }
    }
    Suite { instances, jwks_paths, cases: tests.len(), excluded }
}

// ---- running ----

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Side {
    Wasm,
    Native,
}

impl Side {
    fn listener(self, world: &str) -> String {
        format!("{world}-{}", if self == Side::Wasm { "wasm" } else { "native" })
    }
}

/// What a client and the upstream can tell about one request.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    Reply {
        status: u16,
        /// Empty when the upstream answered (its echo shows the listener's port).
        body: String,
        www_authenticate: Option<String>,
        /// Path and headers (sorted) the upstream received; `None`: it received nothing.
        upstream: Option<(String, Vec<(String, String)>)>,
    },
    /// No answer at all, or a broken one.
    NoReply(String),
    /// The listener's configuration was refused at load (what Envoy said).
    NotLoaded(Said),
}

/// What a refusal said: shown in the table, not compared (the two word it differently).
#[derive(Clone, Debug)]
struct Said(String);

impl PartialEq for Said {
    fn eq(&self, _: &Said) -> bool {
        true
    }
}

impl Eq for Said {}

impl Outcome {
    fn status(&self) -> Option<u16> {
        match self {
            Outcome::Reply { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Long values (tokens, payloads) shortened for the table.
fn short(v: &str) -> String {
    let n = v.chars().count();
    if n > 64 {
        let head: String = v.chars().take(30).collect();
        let tail: String = v.chars().skip(n - 30).collect();
        format!("{head}…({n})…{tail}")
    } else {
        v.to_string()
    }
}

/// `jwt-auth | jwt_authn` cells naming only what differs.
fn differences(a: &Outcome, b: &Outcome) -> String {
    let (mut left, mut right) = (Vec::new(), Vec::new());
    match (a, b) {
        (
            Outcome::Reply { status: s1, body: b1, www_authenticate: w1, upstream: u1 },
            Outcome::Reply { status: s2, body: b2, www_authenticate: w2, upstream: u2 },
        ) => {
            if s1 != s2 {
                left.push(format!("{s1}"));
                right.push(format!("{s2}"));
            }
            if b1 != b2 {
                left.push(format!("{:?}", short(b1)));
                right.push(format!("{:?}", short(b2)));
            }
            if w1 != w2 {
                left.push(format!("www-authenticate {:?}", w1.as_deref().map(short)));
                right.push(format!("www-authenticate {:?}", w2.as_deref().map(short)));
            }
            match (u1, u2) {
                (Some((p1, h1)), Some((p2, h2))) => {
                    if p1 != p2 {
                        left.push(format!("upstream path {:?}", short(p1)));
                        right.push(format!("upstream path {:?}", short(p2)));
                    }
                    let only = |x: &[(String, String)], y: &[(String, String)]| {
                        x.iter()
                            .filter(|h| !y.contains(h))
                            .map(|(k, v)| format!("{k}: {}", short(v)))
                            .collect::<Vec<_>>()
                    };
                    let (o1, o2) = (only(h1, h2), only(h2, h1));
                    if !o1.is_empty() || !o2.is_empty() {
                        left.push(format!("upstream headers only here: [{}]", o1.join("; ")));
                        right.push(format!("upstream headers only here: [{}]", o2.join("; ")));
                    }
                }
                (x, y) if x.is_some() != y.is_some() => {
                    left.push(format!("reached upstream: {}", x.is_some()));
                    right.push(format!("reached upstream: {}", y.is_some()));
                }
                _ => {}
            }
        }
        _ => {
            let brief = |o: &Outcome| match o {
                Outcome::Reply { status, body, .. } => format!("{status} {:?}", short(body)),
                Outcome::NoReply(why) => format!("no reply: {why}"),
                Outcome::NotLoaded(Said(why)) => format!("refused at load: {}", short(why)),
            };
            left.push(brief(a));
            right.push(brief(b));
        }
    }
    format!("{} | {}", left.join("; "), right.join("; "))
}

fn yaml_to_json(text: &str) -> Value {
    serde_norway::from_str(text).expect("config YAML")
}

fn native_filter(config: &Value) -> Value {
    let mut typed = config.clone();
    typed["@type"] = json!("type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication");
    json!({"name": "envoy.filters.http.jwt_authn", "typed_config": typed})
}

/// jwt-auth.yaml's jwt-auth filter with `config` as its configuration.
fn wasm_filter(template: &Value, config: &Value) -> Value {
    let mut f = template.clone();
    f["typed_config"]["config"]["configuration"]["value"] = json!(config.to_string());
    f
}

/// jwt-auth.yaml (admin, clusters) with its listener replaced by a pair per world (jwt-auth,
/// jwt_authn), given by LDS from `lds_path`: a configuration one side refuses at load is then
/// one rejected listener, not an Envoy that does not start.
fn envoy_config(
    text: &str,
    worlds: &BTreeMap<String, World>,
    ports: &BTreeMap<String, u16>,
    lds_path: &Path,
) -> String {
    let mut config = yaml_to_json(text);
    let template = config["static_resources"]["listeners"][0].clone();
    let wasm_template = template["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"][0].clone();
    assert_eq!(wasm_template["name"], "jwt-auth", "jwt-auth.yaml's first filter");
    let mut listeners = Vec::new();
    for (name, world) in worlds {
        for side in [Side::Wasm, Side::Native] {
            let mut l = template.clone();
            let label = side.listener(name);
            l["@type"] = json!("type.googleapis.com/envoy.config.listener.v3.Listener");
            l["name"] = json!(label);
            l["address"]["socket_address"]["port_value"] = json!(ports[&label]);
            let hcm = &mut l["filter_chains"][0]["filters"][0]["typed_config"];
            hcm["stat_prefix"] = json!(label);
            hcm["http_filters"][0] = if side == Side::Native || native() {
                native_filter(&world.config())
            } else {
                wasm_filter(&wasm_template, &world.config())
            };
            listeners.push(l);
        }
    }
    std::fs::write(lds_path, json!({"resources": listeners}).to_string()).unwrap();
    config["static_resources"].as_object_mut().unwrap().remove("listeners");
    config["dynamic_resources"] = json!({"lds_config": {"path_config_source": {"path": lds_path.display().to_string()}, "resource_api_version": "V3"}});
    config["node"] = json!({"id": "peer-suite", "cluster": "peer-suite"});
    config.to_string()
}

/// Listeners Envoy refused, with its words: the block after `Error adding/updating listener(s) `
/// in its log, one `name: reason` a line (logged by 1.36 and 1.40 alike).
fn refused_listeners(log: &str) -> BTreeMap<String, String> {
    let marker = "Error adding/updating listener(s) ";
    let mut refused = BTreeMap::new();
    let mut lines = log.lines();
    while let Some(line) = lines.next() {
        let Some((_, first)) = line.split_once(marker) else { continue };
        let rest = lines.by_ref().take_while(|l| !l.is_empty() && !l.starts_with('['));
        for entry in std::iter::once(first).chain(rest) {
            if let Some((name, why)) = entry.split_once(": ") {
                refused.insert(name.to_string(), why.to_string());
            }
        }
    }
    refused
}

/// Which LDS listeners Envoy took (`Ok`) or refused (`Err`, with its words), once it has said so
/// for every one of `names`.
fn listeners_loaded(envoy: &Envoy, names: &[String]) -> BTreeMap<String, Result<(), String>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let active = e2e::http::get(envoy.admin_port(), "/listeners").map(|r| r.body_text()).unwrap_or_default();
        let refused = refused_listeners(&envoy.log());
        let state: BTreeMap<String, Result<(), String>> = names
            .iter()
            .filter_map(|n| match refused.get(n) {
                Some(why) => Some((n.clone(), Err(why.clone()))),
                None if active.lines().any(|l| l.starts_with(&format!("{n}::"))) => Some((n.clone(), Ok(()))),
                None => None,
            })
            .collect();
        if state.len() == names.len() {
            return state;
        }
        assert!(Instant::now() < deadline, "Envoy did not take or refuse every listener:\n{}", envoy.log());
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn normalize(text: &str, port: u16) -> String {
    text.replace(&format!("localhost:{port}"), "localhost:PORT")
}

fn outcome(reply: &Result<Response, String>, seen: Option<&Recorded>, port: u16) -> Outcome {
    let r = match reply {
        Ok(r) => r,
        Err(e) if e.contains("timed out") || e.contains("temporarily unavailable") => {
            return Outcome::NoReply(format!("none within {ANSWER_TIMEOUT:?}"))
        }
        Err(e) => return Outcome::NoReply(e.clone()),
    };
    let upstream = seen.map(|q| {
        let mut headers: Vec<(String, String)> = q
            .headers
            .iter()
            .filter(|(k, _)| k != "x-peer-case" && k != "x-request-id")
            .map(|(k, v)| (k.clone(), normalize(&String::from_utf8_lossy(v), port)))
            .collect();
        headers.sort();
        (q.path.clone(), headers)
    });
    Outcome::Reply {
        status: r.status,
        body: if upstream.is_some() { String::new() } else { r.body_text() },
        www_authenticate: r.header("www-authenticate").map(|v| normalize(&v, port)),
        upstream,
    }
}

/// The suite's Envoy, its listeners, and the upstream behind them.
struct Running {
    envoy: Envoy,
    upstream: Upstream,
    ports: BTreeMap<String, u16>,
    /// Per listener: taken, or refused with Envoy's words.
    loaded: BTreeMap<String, Result<(), String>>,
    /// Requests sent so far: the next tag.
    sent: AtomicUsize,
}

impl Running {
    fn start(suite: &Suite, jwks: &JwksServer) -> Running {
        let began = Instant::now();
        let mut worlds: BTreeMap<String, World> = BTreeMap::new();
        for inst in &suite.instances {
            let w = worlds.entry(inst.world.clone()).or_default();
            w.providers.extend(inst.providers.clone());
            w.rules.extend(inst.rules.iter().cloned());
            w.bypass_cors_preflight |= inst.bypass_cors_preflight;
        }
        for (path, body) in &suite.jwks_paths {
            jwks.set_path_body(path, body);
        }
        let ports: BTreeMap<String, u16> =
            worlds.keys().flat_map(|w| [Side::Wasm, Side::Native].map(|s| (s.listener(w), free_port()))).collect();
        let lds_path = std::env::temp_dir().join(format!("peer-suite-lds-{}-{}.json", std::process::id(), free_port()));
        let mut opts = EnvoyOptions::default();
        opts.preset_ports.insert(JWKS_PORT, jwks.port);
        let (edit_ports, edit_path) = (ports.clone(), lds_path.clone());
        opts.edit = Some(Box::new(move |text| envoy_config(&text, &worlds, &edit_ports, &edit_path)));
        let envoy = Envoy::start_with("jwt-auth.yaml", opts).unwrap();
        let loaded = listeners_loaded(&envoy, &ports.keys().cloned().collect::<Vec<_>>());
        let _ = std::fs::remove_file(&lds_path);
        let upstream = Upstream::start(envoy.port(UPSTREAM_PORT)).unwrap();
        eprintln!("suite's Envoy ready, {} listeners, in {:.1?}", ports.len(), began.elapsed());
        Running { envoy, upstream, ports, loaded, sent: AtomicUsize::new(0) }
    }

    /// The suite's requests (those named in `only`, when given) through both sides, in parallel:
    /// request name → (jwt-auth's outcome, native's).
    fn answers(&mut self, suite: &Suite, only: Option<&BTreeSet<String>>) -> BTreeMap<String, (Outcome, Outcome)> {
        let mut outcomes: BTreeMap<String, [Option<Outcome>; 2]> = BTreeMap::new();
        let mut jobs = Vec::new();
        for inst in &suite.instances {
            for (name, req) in inst.requests.iter().filter(|(n, _)| only.is_none_or(|o| o.contains(n))) {
                for side in [Side::Wasm, Side::Native] {
                    let listener = side.listener(&inst.world);
                    match &self.loaded[&listener] {
                        Err(why) => {
                            outcomes.entry(name.clone()).or_default()[side as usize] =
                                Some(Outcome::NotLoaded(Said(why.clone())))
                        }
                        Ok(()) => {
                            // The tag finds the request upstream.
                            let tag = self.sent.fetch_add(1, Ordering::Relaxed).to_string();
                            jobs.push((tag, name.clone(), side, self.ports[&listener], req.clone()));
                        }
                    }
                }
            }
        }
        type Replies = Vec<(String, Side, u16, String, Result<Response, String>)>;
        let replies: Arc<Mutex<Replies>> = Arc::default();
        let queue = Arc::new(Mutex::new(jobs));
        let workers: Vec<_> = (0..PARALLEL_REQUESTS)
            .map(|_| {
                let (queue, replies) = (queue.clone(), replies.clone());
                std::thread::spawn(move || loop {
                    let Some((tag, name, side, port, req)) = queue.lock().unwrap().pop() else { return };
                    let reply = req.header("x-peer-case", &tag).send_within(port, ANSWER_TIMEOUT);
                    replies.lock().unwrap().push((name, side, port, tag, reply));
                })
            })
            .collect();
        for t in workers {
            t.join().unwrap();
        }
        // Recorded before the upstream answered: every request that reached it is there now.
        let seen: BTreeMap<String, Recorded> = self
            .upstream
            .requests()
            .into_iter()
            .filter_map(|r| r.header_value("x-peer-case").map(|tag| (tag, r)))
            .collect();
        for (name, side, port, tag, reply) in std::mem::take(&mut *replies.lock().unwrap()) {
            outcomes.entry(name).or_default()[side as usize] = Some(outcome(&reply, seen.get(&tag), port));
        }
        assert_eq!(self.envoy.exited(), None, "Envoy still runs");
        outcomes.into_iter().map(|(name, [a, b])| (name, (a.unwrap(), b.unwrap()))).collect()
    }
}

/// Requests whose answers contradict the lists: they differ unlisted, or agree listed.
fn contradicting(
    outcomes: &BTreeMap<String, (Outcome, Outcome)>,
    expected: &BTreeMap<&str, String>,
) -> BTreeSet<String> {
    outcomes
        .iter()
        .filter(|(name, (wasm, theirs))| (wasm != theirs) != expected.contains_key(name.as_str()))
        .map(|(name, _)| name.clone())
        .collect()
}

fn envoy_1_36() -> bool {
    e2e::envoy_version().is_some_and(|(major, minor, _)| (major, minor) == (1, 36))
}

/// The lists' requests this Envoy is expected to answer otherwise than jwt-auth, with why.
fn expected_differences() -> BTreeMap<&'static str, String> {
    let mut expected: BTreeMap<&str, String> = KNOWN_BEING_FIXED
        .iter()
        .map(|(name, why)| (*name, format!("being fixed: {why}")))
        .chain(DELIBERATE.iter().map(|(name, why)| (*name, format!("deliberate: {why}"))))
        .collect();
    if envoy_1_36() {
        for (name, what) in ENVOY_1_36 {
            if expected.remove(name).is_none() {
                expected.insert(name, format!("Envoy 1.36: {what}"));
            }
        }
    }
    expected
}

#[test]
fn peer_suite_answers_as_native_jwt_authn() {
    let began = Instant::now();
    let started = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let fixtures = load_fixtures();
    let jwks = JwksServer::start(0, "").unwrap();
    let suite = build_suite(&fixtures, jwks.port, started);
    let expected = if native() { BTreeMap::new() } else { expected_differences() };
    let mut running = Running::start(&suite, &jwks);
    let mut outcomes = running.answers(&suite, None);
    eprintln!("{} requests answered in {:.1?}", outcomes.len(), began.elapsed());
    // A contradiction is asked once more: what a loaded machine can do once (a JWKS fetch past
    // its timeout) must not fail the suite; a real difference answers the same again.
    let again = contradicting(&outcomes, &expected);
    if !again.is_empty() {
        eprintln!("asked again, answers contradicting the lists: {again:#?}");
        outcomes.extend(running.answers(&suite, Some(&again)));
    }

    let mut unexpected = Vec::new();
    let mut by_reason: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, (wasm, theirs)) in &outcomes {
        match (wasm != theirs, expected.get(name.as_str())) {
            (false, None) => {}
            (true, Some(why)) => {
                by_reason.entry(why.clone()).or_default().push(format!("| {name} | {} |", differences(wasm, theirs)))
            }
            (true, None) => unexpected.push(format!("| {name} | {} |", differences(wasm, theirs))),
            (false, Some(why)) => unexpected.push(format!("| {name} | listed ({why}) but answered alike |")),
        }
    }
    let listed = KNOWN_BEING_FIXED.iter().map(|(n, _)| *n).chain(DELIBERATE.iter().map(|(n, _)| *n));
    for name in listed.chain(ENVOY_1_36.iter().map(|(n, _)| *n)) {
        if !outcomes.contains_key(name) {
            unexpected.push(format!("| {name} | listed, but the suite has no such request |"));
        }
    }
    let mut table = Vec::new();
    for (why, rows) in &by_reason {
        table.push(format!("\n{why} ({}):", rows.len()));
        table.extend(rows.iter().cloned());
    }
    let differing: usize = by_reason.values().map(Vec::len).sum();
    eprintln!(
        "peer suite on Envoy {:?}: {} cases from {} files ({} tests excluded), {} instances, {} requests; \
         {} answered alike, {} listed differences, {} unexpected; {:.1?}{}",
        e2e::envoy_version(),
        suite.cases,
        fixtures.len(),
        suite.excluded.len(),
        suite.instances.len(),
        outcomes.len(),
        outcomes.len() - differing - unexpected.len(),
        differing,
        unexpected.len(),
        began.elapsed(),
        table.join("\n")
    );
    if let Some(path) = std::env::var_os("PEER_SUITE_REPORT") {
        let mut report = table.clone();
        report.push("\nunexpected:".into());
        report.extend(unexpected.iter().cloned());
        report.push("\nevery request, native's answer:".into());
        report.extend(outcomes.iter().map(|(name, (w, n))| {
            let brief = match n {
                Outcome::Reply { status, body, .. } => format!("{status} {body:?}"),
                other => format!("{other:?}"),
            };
            format!("- {name}: {brief}{}", if w == n { "" } else { " (jwt-auth differs)" })
        }));
        report.push("\nexcluded:".into());
        report.extend(suite.excluded.iter().map(|(test, why)| format!("- {test}: {why}")));
        std::fs::write(path, report.join("\n")).unwrap();
    }
    assert!(
        unexpected.is_empty(),
        "jwt-auth and jwt_authn: {} unexpected (new differences, or listed ones that now agree):\n\
         | request | jwt-auth | jwt_authn |\n|---|---|---|\n{}",
        unexpected.len(),
        unexpected.join("\n")
    );

    // The suite means something only if native says yes and no to it, and refuses every changed
    // signature of a token it accepts.
    let count = |s: u16| outcomes.values().filter(|(_, n)| n.status() == Some(s)).count();
    assert!(
        count(200) >= 60 && count(401) >= 100 && count(403) >= 3,
        "native: {} × 200, {} × 401, {} × 403",
        count(200),
        count(401),
        count(403)
    );
    let native_status = |name: &str| outcomes.get(name).and_then(|(_, n)| n.status());
    let mut changed = 0;
    for name in outcomes.keys().filter(|n| n.contains(", signature ")) {
        let (head, _) = name.rsplit_once(", signature ").unwrap();
        if native_status(&format!("{head}]")) == Some(200) {
            assert_ne!(native_status(name), Some(200), "{name}: native accepted a changed signature");
            changed += 1;
        }
    }
    assert!(changed >= 60, "only {changed} changed signatures of accepted tokens");
}
