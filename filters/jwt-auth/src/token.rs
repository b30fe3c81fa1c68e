//! A JWT (RFC 7519, JWS compact form) parsed as jwt_authn parses it, with jwt_authn's
//! statuses and texts, plus the RFC 8725 checks jwt_authn lacks (`crit`, a size cap).

use jose::jwks::Alg;
use serde_json::{Map, Value};
use shared::base64 as b64;

/// jwt_authn's verification statuses (Envoy `source/common/jwt/status.h`) that this filter can
/// produce, plus two of ours.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    Ok,
    JwtMissed,
    JwtNotYetValid,
    JwtExpired,
    JwtBadFormat,
    JwtHeaderParseErrorBadBase64,
    JwtHeaderParseErrorBadJson,
    JwtHeaderBadAlg,
    JwtHeaderNotImplementedAlg,
    JwtHeaderBadKid,
    JwtPayloadParseErrorBadBase64,
    JwtPayloadParseErrorBadJson,
    JwtPayloadParseErrorIssNotString,
    JwtPayloadParseErrorSubNotString,
    JwtPayloadParseErrorIatNotInteger,
    JwtPayloadParseErrorIatOutOfRange,
    JwtPayloadParseErrorNbfNotInteger,
    JwtPayloadParseErrorNbfOutOfRange,
    JwtPayloadParseErrorExpNotInteger,
    JwtPayloadParseErrorExpOutOfRange,
    JwtPayloadParseErrorJtiNotString,
    JwtPayloadParseErrorAudNotString,
    JwtSignatureParseErrorBadBase64,
    JwtEd25519SignatureWrongLength,
    JwtUnknownIssuer,
    JwtAudienceNotAllowed,
    JwtVerificationFail,
    JwksNoValidKeys,
    JwksKidAlgMismatch,
    JwksFetchFail,
    /// Ours (RFC 8725 §3.x): longer than `max_token_bytes`.
    JwtTooLarge,
    /// Ours (RFC 7515 §4.1.11): `crit` names an extension this filter does not understand.
    JwtHeaderUnsupportedCrit,
    /// `require_expiration` / `max_lifetime` not met: jwt_authn's `JwtVerificationFail` (same
    /// answer), counted apart (`denied_lifetime`).
    JwtLifetimeNotAllowed,
}

impl Status {
    /// The response body, in jwt_authn's words (`getStatusString`).
    pub fn message(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::JwtMissed => "Jwt is missing",
            Status::JwtNotYetValid => "Jwt not yet valid",
            Status::JwtExpired => "Jwt is expired",
            Status::JwtBadFormat => "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections",
            Status::JwtHeaderParseErrorBadBase64 => "Jwt header is an invalid Base64url encoded",
            Status::JwtHeaderParseErrorBadJson => "Jwt header is an invalid JSON",
            Status::JwtHeaderBadAlg => "Jwt header [alg] field is required and must be a string",
            Status::JwtHeaderNotImplementedAlg => "Jwt header [alg] is not supported",
            Status::JwtHeaderBadKid => "Jwt header [kid] field is not a string",
            Status::JwtPayloadParseErrorBadBase64 => "Jwt payload is an invalid Base64url encoded",
            Status::JwtPayloadParseErrorBadJson => "Jwt payload is an invalid JSON",
            Status::JwtPayloadParseErrorIssNotString => "Jwt payload [iss] field is not a string",
            Status::JwtPayloadParseErrorSubNotString => "Jwt payload [sub] field is not a string",
            Status::JwtPayloadParseErrorIatNotInteger => "Jwt payload [iat] field is not an integer",
            Status::JwtPayloadParseErrorIatOutOfRange => "Jwt payload [iat] field is not a positive 64 bit integer",
            Status::JwtPayloadParseErrorNbfNotInteger => "Jwt payload [nbf] field is not an integer",
            Status::JwtPayloadParseErrorNbfOutOfRange => "Jwt payload [nbf] field is not a positive 64 bit integer",
            Status::JwtPayloadParseErrorExpNotInteger => "Jwt payload [exp] field is not an integer",
            Status::JwtPayloadParseErrorExpOutOfRange => "Jwt payload [exp] field is not a positive 64 bit integer",
            Status::JwtPayloadParseErrorJtiNotString => "Jwt payload [jti] field is not a string",
            Status::JwtPayloadParseErrorAudNotString => "Jwt payload [aud] field is not a string or string list",
            Status::JwtSignatureParseErrorBadBase64 => "Jwt signature is an invalid Base64url encoded",
            Status::JwtEd25519SignatureWrongLength => "Jwt ED25519 signature is wrong length",
            Status::JwtUnknownIssuer => "Jwt issuer is not configured",
            Status::JwtAudienceNotAllowed => "Audiences in Jwt are not allowed",
            // jwt_authn's verifier fails `require_expiration` / `max_lifetime` with
            // JwtVerificationFail (Envoy's authenticator_test TestLifetimeConstraint).
            Status::JwtVerificationFail | Status::JwtLifetimeNotAllowed => "Jwt verification fails",
            Status::JwksNoValidKeys => "Jwks doesn't have any valid public key",
            Status::JwksKidAlgMismatch => "Jwks doesn't have key to match kid or alg from Jwt",
            Status::JwksFetchFail => "Jwks remote fetch is failed",
            Status::JwtTooLarge => "Jwt is too large",
            Status::JwtHeaderUnsupportedCrit => "Jwt header [crit] lists an unsupported extension",
        }
    }

    /// The `denied_<reason>` stat a failure counts under.
    pub fn reason(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::JwtMissed => "missing",
            Status::JwtExpired => "expired",
            Status::JwtNotYetValid => "not_yet_valid",
            Status::JwtUnknownIssuer => "unknown_issuer",
            Status::JwtAudienceNotAllowed => "audience",
            Status::JwksKidAlgMismatch | Status::JwksNoValidKeys => "no_matching_key",
            Status::JwtVerificationFail | Status::JwtEd25519SignatureWrongLength => "bad_signature",
            Status::JwksFetchFail => "jwks_unavailable",
            Status::JwtLifetimeNotAllowed => "lifetime",
            _ => "malformed",
        }
    }

    pub const REASONS: [&'static str; 10] = [
        "missing",
        "malformed",
        "expired",
        "not_yet_valid",
        "unknown_issuer",
        "audience",
        "no_matching_key",
        "bad_signature",
        "jwks_unavailable",
        "lifetime",
    ];
}

/// A parsed, not yet verified token.
#[derive(Clone, Debug, PartialEq)]
pub struct Jwt {
    pub alg: Alg,
    pub kid: Option<String>,
    pub iss: String,
    pub audiences: Vec<String>,
    /// 0 = absent (as jwt_authn: an `exp` of 0 is no expiry).
    pub exp: u64,
    pub nbf: u64,
    /// The payload as in the token (base64url, unpadded as sent), for `forward_payload_header`.
    pub payload_b64: String,
    pub payload: Map<String, Value>,
    /// `header.payload`, what the signature covers.
    pub signing_input_len: usize,
    pub signature: Vec<u8>,
}

/// Parse `token` as jwt_authn's `Jwt::parseFromString` does, in its order of checks.
pub fn parse(token: &[u8], max_bytes: usize) -> Result<Jwt, Status> {
    if token.len() > max_bytes {
        return Err(Status::JwtTooLarge);
    }
    // absl::StrSplit(jwt, '.', SkipEmpty()): empty sections vanish ("a..b" has 2).
    let parts: Vec<&[u8]> = token.split(|b| *b == b'.').filter(|p| !p.is_empty()).collect();
    let [header_b64, payload_b64, signature_b64] = parts.as_slice() else {
        return Err(Status::JwtBadFormat);
    };
    let header_bytes = b64::decode_url(header_b64).ok_or(Status::JwtHeaderParseErrorBadBase64)?;
    let header = json_object(&header_bytes).ok_or(Status::JwtHeaderParseErrorBadJson)?;
    let alg_name = match header.get("alg") {
        Some(Value::String(s)) => s.as_str(),
        _ => return Err(Status::JwtHeaderBadAlg),
    };
    let alg = match Alg::from_name(alg_name) {
        Some(a) => a,
        None => return Err(Status::JwtHeaderNotImplementedAlg),
    };
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(Status::JwtHeaderBadKid),
    };
    // RFC 7515 §4.1.11: a `crit` we do not understand (we understand none) must be refused.
    if header.contains_key("crit") {
        return Err(Status::JwtHeaderUnsupportedCrit);
    }
    let payload_bytes = b64::decode_url(payload_b64).ok_or(Status::JwtPayloadParseErrorBadBase64)?;
    let payload = json_object(&payload_bytes).ok_or(Status::JwtPayloadParseErrorBadJson)?;
    let iss = match payload.get("iss") {
        None => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(Status::JwtPayloadParseErrorIssNotString),
    };
    if matches!(payload.get("sub"), Some(v) if !v.is_string()) {
        return Err(Status::JwtPayloadParseErrorSubNotString);
    }
    let _iat = uint_claim(
        &payload,
        "iat",
        Status::JwtPayloadParseErrorIatNotInteger,
        Status::JwtPayloadParseErrorIatOutOfRange,
    )?;
    let nbf = uint_claim(
        &payload,
        "nbf",
        Status::JwtPayloadParseErrorNbfNotInteger,
        Status::JwtPayloadParseErrorNbfOutOfRange,
    )?;
    let exp = uint_claim(
        &payload,
        "exp",
        Status::JwtPayloadParseErrorExpNotInteger,
        Status::JwtPayloadParseErrorExpOutOfRange,
    )?;
    if matches!(payload.get("jti"), Some(v) if !v.is_string()) {
        return Err(Status::JwtPayloadParseErrorJtiNotString);
    }
    let audiences = match payload.get("aud") {
        None => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    Value::String(s) => out.push(s.clone()),
                    _ => return Err(Status::JwtPayloadParseErrorAudNotString),
                }
            }
            out
        }
        Some(_) => return Err(Status::JwtPayloadParseErrorAudNotString),
    };
    let signature = b64::decode_url(signature_b64).ok_or(Status::JwtSignatureParseErrorBadBase64)?;
    Ok(Jwt {
        alg,
        kid,
        iss,
        audiences,
        exp,
        nbf,
        // Base64url characters only (checked by the decode), so this is ASCII.
        payload_b64: String::from_utf8_lossy(payload_b64).into_owned(),
        payload,
        signing_input_len: header_b64.len() + 1 + payload_b64.len(),
        signature,
    })
}

fn json_object(bytes: &[u8]) -> Option<Map<String, Value>> {
    match serde_json::from_slice::<Value>(bytes).ok()? {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

/// jwt_authn's `StructUtils::GetUInt64`: absent = 0; a JSON number in [0, 2^64) is truncated
/// to an integer; anything else is one of the two errors.
fn uint_claim(payload: &Map<String, Value>, name: &str, not_integer: Status, range: Status) -> Result<u64, Status> {
    match payload.get(name) {
        None => Ok(0),
        Some(Value::Number(n)) => {
            // Protobuf's Struct holds every JSON number as a double, so do the same (even a
            // u64 like 18446744073709551615 becomes 2^64, which is out of range).
            let f = n.as_f64().ok_or(range)?;
            if !(0.0..18_446_744_073_709_551_616.0).contains(&f) {
                return Err(range);
            }
            // Truncation toward zero, as the C++ cast does; the range check makes it exact.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            Ok(f as u64)
        }
        Some(_) => Err(not_integer),
    }
}

impl Jwt {
    /// jwt_authn's `verifyTimeConstraint`.
    pub fn check_time(&self, now: u64, skew: u64) -> Status {
        if now.saturating_add(skew) < self.nbf {
            return Status::JwtNotYetValid;
        }
        if self.exp != 0 && now > self.exp.saturating_add(skew) {
            return Status::JwtExpired;
        }
        Status::Ok
    }

    /// jwt_authn's `isLifetimeAllowed` (`require_expiration`, `max_lifetime`): the remaining
    /// lifetime must be below the maximum; no `exp` fails when one is required.
    pub fn lifetime_allowed(&self, now: u64, max_exp: Option<Option<std::time::Duration>>) -> bool {
        match max_exp {
            None => true,
            Some(_) if self.exp == 0 => false,
            Some(None) => true,
            Some(Some(max)) => {
                let remaining = i128::from(self.exp) - i128::from(now);
                remaining < i128::from(max.as_secs())
                    || (remaining == i128::from(max.as_secs()) && max.subsec_nanos() > 0)
            }
        }
    }

    /// A claim (nested as `a.b`) as a header value, as jwt_authn's `claim_to_headers` renders
    /// it: strings as is, whole numbers as integers, other numbers as `%f`, booleans as
    /// `true`/`false`, objects and lists as base64 (padded) of their JSON; null, empty and
    /// absent claims give nothing.
    pub fn claim_text(&self, path: &[String]) -> Option<String> {
        let (first, rest) = path.split_first()?;
        let mut value = self.payload.get(first)?;
        for p in rest {
            value = value.as_object()?.get(p)?;
        }
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Bool(b) => b.to_string(),
            Value::Number(n) => number_text(n),
            Value::Object(_) | Value::Array(_) => b64::encode(serde_json::to_string(value).ok()?.as_bytes()),
            Value::Null => return None,
        };
        (!text.is_empty()).then_some(text)
    }
}

fn number_text(n: &serde_json::Number) -> String {
    if let Some(u) = n.as_u64() {
        return u.to_string();
    }
    let f = n.as_f64().unwrap_or(0.0);
    if (0.0..18_446_744_073_709_551_616.0).contains(&f) && f.fract() == 0.0 {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        return (f as u64).to_string();
    }
    // std::to_string(double) is printf("%f").
    format!("{f:.6}")
}

/// Token and key builders for the crate's tests (HS256 with one test secret).
#[cfg(test)]
pub(crate) mod testing {
    use sha2::{Digest, Sha256};

    pub const SECRET: &[u8] = b"a-test-secret-of-32-bytes-length";

    pub fn b64url(data: &[u8]) -> String {
        super::b64::encode_url(data)
    }

    fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
        let mut k = [0u8; 64];
        k[..key.len()].copy_from_slice(key);
        let inner: Vec<u8> = k.iter().map(|b| b ^ 0x36).chain(msg.iter().copied()).collect();
        let inner_hash = Sha256::digest(&inner);
        let outer: Vec<u8> = k.iter().map(|b| b ^ 0x5c).chain(inner_hash.iter().copied()).collect();
        Sha256::digest(&outer).to_vec()
    }

    /// A JWS with this header and payload, HS256-signed with `key`.
    pub fn sign(header: &str, payload: &str, key: &[u8]) -> String {
        let input = format!("{}.{}", b64url(header.as_bytes()), b64url(payload.as_bytes()));
        let sig = hmac_sha256(key, input.as_bytes());
        format!("{input}.{}", b64url(&sig))
    }

    /// A good token for the key [`jwks`]`("h1")`.
    pub fn hs(payload: &str) -> String {
        sign(r#"{"alg":"HS256","kid":"h1"}"#, payload, SECRET)
    }

    /// A JWKS with the test secret as an HS256 key of this `kid`.
    pub fn jwks(kid: &str) -> String {
        format!(r#"{{"keys":[{{"kty":"oct","kid":"{kid}","alg":"HS256","k":"{}"}}]}}"#, b64url(SECRET))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        b64::encode_url(s.as_bytes())
    }
    fn tok(header: &str, payload: &str) -> String {
        format!("{}.{}.{}", b64(header), b64(payload), b64("sig"))
    }
    fn p(t: &str) -> Result<Jwt, Status> {
        parse(t.as_bytes(), 8192)
    }

    #[test]
    fn parses_a_token() {
        let j =
            p(&tok(r#"{"alg":"RS256","kid":"k1"}"#, r#"{"iss":"i","aud":["a","b"],"exp":10,"nbf":5.7,"x":{"y":2}}"#))
                .unwrap();
        assert_eq!((j.alg, j.kid.as_deref(), j.iss.as_str()), (Alg::RS256, Some("k1"), "i"));
        assert_eq!((j.exp, j.nbf, j.audiences.len()), (10, 5, 2));
        assert_eq!(j.claim_text(&["x".into(), "y".into()]).as_deref(), Some("2"));
        assert_eq!(j.signature, b"sig");
    }

    #[test]
    fn statuses_in_jwt_authn_order() {
        use Status::*;
        let cases: &[(&str, Status)] = &[
            ("abc", JwtBadFormat),
            ("a.b", JwtBadFormat),
            ("a..b", JwtBadFormat),
            ("a.b.c.d.e", JwtBadFormat),
            ("a*.b.c", JwtHeaderParseErrorBadBase64),
        ];
        for (t, want) in cases {
            assert_eq!(p(t).unwrap_err(), *want, "{t}");
        }
        let h = |h: &str| tok(h, r#"{"iss":"i"}"#);
        assert_eq!(p(&h("[1]")).unwrap_err(), JwtHeaderParseErrorBadJson);
        assert_eq!(p(&h(r#"{"alg":1}"#)).unwrap_err(), JwtHeaderBadAlg);
        assert_eq!(p(&h(r#"{}"#)).unwrap_err(), JwtHeaderBadAlg);
        for none in ["none", "None", "NONE", "rs256", "es512", "ES256K", ""] {
            assert_eq!(p(&h(&format!(r#"{{"alg":"{none}"}}"#))).unwrap_err(), JwtHeaderNotImplementedAlg, "{none}");
        }
        assert_eq!(p(&h(r#"{"alg":"RS256","kid":5}"#)).unwrap_err(), JwtHeaderBadKid);
        assert_eq!(p(&h(r#"{"alg":"RS256","crit":["exp"]}"#)).unwrap_err(), JwtHeaderUnsupportedCrit);
        let pl = |pl: &str| tok(r#"{"alg":"RS256"}"#, pl);
        assert_eq!(p(&pl("nope")).unwrap_err(), JwtPayloadParseErrorBadJson);
        assert_eq!(p(&pl(r#"{"iss":1}"#)).unwrap_err(), JwtPayloadParseErrorIssNotString);
        assert_eq!(p(&pl(r#"{"sub":[]}"#)).unwrap_err(), JwtPayloadParseErrorSubNotString);
        assert_eq!(p(&pl(r#"{"iat":"1"}"#)).unwrap_err(), JwtPayloadParseErrorIatNotInteger);
        assert_eq!(p(&pl(r#"{"nbf":-1}"#)).unwrap_err(), JwtPayloadParseErrorNbfOutOfRange);
        assert_eq!(p(&pl(r#"{"exp":"tomorrow"}"#)).unwrap_err(), JwtPayloadParseErrorExpNotInteger);
        assert_eq!(p(&pl(r#"{"exp":1e300}"#)).unwrap_err(), JwtPayloadParseErrorExpOutOfRange);
        assert_eq!(p(&pl(r#"{"exp":18446744073709551615}"#)).unwrap_err(), JwtPayloadParseErrorExpOutOfRange);
        assert_eq!(p(&pl(r#"{"jti":1}"#)).unwrap_err(), JwtPayloadParseErrorJtiNotString);
        assert_eq!(p(&pl(r#"{"aud":["a",1]}"#)).unwrap_err(), JwtPayloadParseErrorAudNotString);
        assert_eq!(p(&pl(r#"{"aud":{}}"#)).unwrap_err(), JwtPayloadParseErrorAudNotString);
        let bad_sig = format!("{}.{}.a+b", b64(r#"{"alg":"RS256"}"#), b64("{}"));
        assert_eq!(p(&bad_sig).unwrap_err(), JwtSignatureParseErrorBadBase64);
        // Invalid UTF-8 inside the JSON.
        let raw = b64::encode_url(&[b'{', b'"', 0xff, b'"', b':', b'1', b'}']);
        assert_eq!(p(&format!("{}.{raw}.c2ln", b64(r#"{"alg":"RS256"}"#))).unwrap_err(), JwtPayloadParseErrorBadJson);
        assert_eq!(parse(tok(r#"{"alg":"RS256"}"#, "{}").as_bytes(), 10).unwrap_err(), JwtTooLarge);
    }

    #[test]
    fn time_and_lifetime() {
        let j = p(&tok(r#"{"alg":"HS256"}"#, r#"{"exp":1000,"nbf":900}"#)).unwrap();
        assert_eq!(j.check_time(800, 60), Status::JwtNotYetValid);
        assert_eq!(j.check_time(839, 60), Status::JwtNotYetValid);
        assert_eq!(j.check_time(840, 60), Status::Ok);
        assert_eq!(j.check_time(1060, 60), Status::Ok);
        assert_eq!(j.check_time(1061, 60), Status::JwtExpired);
        assert!(j.lifetime_allowed(0, None));
        assert!(j.lifetime_allowed(0, Some(None)));
        assert!(j.lifetime_allowed(500, Some(Some(std::time::Duration::from_secs(501)))));
        assert!(!j.lifetime_allowed(500, Some(Some(std::time::Duration::from_secs(500)))));
        let no_exp = p(&tok(r#"{"alg":"HS256"}"#, r#"{"exp":0}"#)).unwrap();
        assert!(no_exp.lifetime_allowed(0, None) && !no_exp.lifetime_allowed(0, Some(None)));
        assert_eq!(no_exp.check_time(u64::MAX, 60), Status::Ok);
    }

    #[test]
    fn claim_rendering() {
        let j =
            p(&tok(r#"{"alg":"HS256"}"#, r#"{"s":"v","b":true,"f":1.5,"i":3.0,"n":-2,"o":{"a":"x"},"l":[1],"e":""}"#))
                .unwrap();
        let c = |s: &str| j.claim_text(&s.split('.').map(String::from).collect::<Vec<_>>());
        assert_eq!(c("s").as_deref(), Some("v"));
        assert_eq!(c("b").as_deref(), Some("true"));
        assert_eq!(c("f").as_deref(), Some("1.500000"));
        assert_eq!(c("i").as_deref(), Some("3"));
        assert_eq!(c("n").as_deref(), Some("-2.000000"));
        assert_eq!(c("o.a").as_deref(), Some("x"));
        assert_eq!(c("o").as_deref(), Some("eyJhIjoieCJ9"));
        assert_eq!(c("l").as_deref(), Some("WzFd"));
        assert_eq!(c("e"), None);
        assert_eq!(c("missing.x"), None);
    }
}
