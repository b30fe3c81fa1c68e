//! Test keys and token signing for the jwt-auth tests, the differential test and the bench.
//!
//! The keys are fixed and committed (`e2e/fixtures/jwt/`, PKCS#8 PEM from `openssl genpkey`),
//! so the JWKS in the configs never changes: two RSA 2048 (rotation), EC P-256, EC P-384,
//! Ed25519, and an HMAC secret (`hmac.secret`, base64url: the JWKS `oct` key's `k`). Never use
//! them for anything but tests: the private keys are public.
//!
//! Signing is raw: any header and payload bytes (invalid JSON, invalid UTF-8, odd `alg`) are
//! signed with any key, so the malformed and attack corpus is built with real signatures.
//! Signatures come from `ring` (already in the build for rustls; optimised C and assembly, so
//! a debug build signs thousands of tokens per second).

use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use serde_json::{json, Value};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// Issuer of the remote-JWKS provider in envoy-configs/jwt-auth.yaml.
pub const ISSUER: &str = "https://issuer.example.com";
/// Issuer of the local-JWKS provider (inline JWKS, HMAC key too).
pub const LOCAL_ISSUER: &str = "https://local.example.com";
/// The audience both providers accept.
pub const AUDIENCE: &str = "api.example.com";

/// A fixed test key, by its `kid` in the JWKS.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Key {
    Rsa1,
    Rsa2,
    Ec256,
    Ec384,
    Ed25519,
    Hmac,
}

impl Key {
    pub const ALL: [Key; 6] = [Key::Rsa1, Key::Rsa2, Key::Ec256, Key::Ec384, Key::Ed25519, Key::Hmac];

    pub fn kid(self) -> &'static str {
        match self {
            Key::Rsa1 => "rsa-1",
            Key::Rsa2 => "rsa-2",
            Key::Ec256 => "ec-256",
            Key::Ec384 => "ec-384",
            Key::Ed25519 => "ed-1",
            Key::Hmac => "hmac-1",
        }
    }

    fn file(self) -> &'static str {
        match self {
            Key::Rsa1 => "rsa1.pem",
            Key::Rsa2 => "rsa2.pem",
            Key::Ec256 => "ec256.pem",
            Key::Ec384 => "ec384.pem",
            Key::Ed25519 => "ed25519.pem",
            Key::Hmac => "hmac.secret",
        }
    }
}

/// The JWS algorithms jwt-auth supports (plus what it must refuse is built from raw headers).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Alg {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
    HS256,
    HS384,
    HS512,
}

impl Alg {
    pub const ALL: [Alg; 12] = [
        Alg::RS256,
        Alg::RS384,
        Alg::RS512,
        Alg::PS256,
        Alg::PS384,
        Alg::PS512,
        Alg::ES256,
        Alg::ES384,
        Alg::EdDSA,
        Alg::HS256,
        Alg::HS384,
        Alg::HS512,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Alg::RS256 => "RS256",
            Alg::RS384 => "RS384",
            Alg::RS512 => "RS512",
            Alg::PS256 => "PS256",
            Alg::PS384 => "PS384",
            Alg::PS512 => "PS512",
            Alg::ES256 => "ES256",
            Alg::ES384 => "ES384",
            Alg::EdDSA => "EdDSA",
            Alg::HS256 => "HS256",
            Alg::HS384 => "HS384",
            Alg::HS512 => "HS512",
        }
    }

    /// The test key that signs this algorithm by default.
    pub fn default_key(self) -> Key {
        match self {
            Alg::RS256 | Alg::RS384 | Alg::RS512 | Alg::PS256 | Alg::PS384 | Alg::PS512 => Key::Rsa1,
            Alg::ES256 => Key::Ec256,
            Alg::ES384 => Key::Ec384,
            Alg::EdDSA => Key::Ed25519,
            Alg::HS256 | Alg::HS384 | Alg::HS512 => Key::Hmac,
        }
    }

    pub fn is_hmac(self) -> bool {
        matches!(self, Alg::HS256 | Alg::HS384 | Alg::HS512)
    }
}

struct Keys {
    rsa1: RsaKeyPair,
    rsa2: RsaKeyPair,
    ec256: EcdsaKeyPair,
    ec384: EcdsaKeyPair,
    ed25519: Ed25519KeyPair,
    hmac: Vec<u8>,
    rng: SystemRandom,
}

pub fn fixtures_dir() -> std::path::PathBuf {
    crate::repo_root().join("e2e").join("fixtures").join("jwt")
}

fn fixture(key: Key) -> String {
    let path = fixtures_dir().join(key.file());
    std::fs::read_to_string(&path).unwrap_or_else(|e| fatal(&format!("{}: {e}", path.display())))
}

/// Test-support code: a missing or broken fixture is a broken checkout, not a test result.
#[allow(clippy::panic)]
fn fatal(message: &str) -> ! {
    panic!("jwt test keys: {message}")
}

fn pem_der(pem: &str) -> Vec<u8> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    b64_decode(&body, false).unwrap_or_else(|| fatal("bad PEM"))
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let rng = SystemRandom::new();
        let rsa =
            |k: Key| RsaKeyPair::from_pkcs8(&pem_der(&fixture(k))).unwrap_or_else(|e| fatal(&format!("{k:?}: {e}")));
        let ec = |k: Key, alg: &'static signature::EcdsaSigningAlgorithm| {
            EcdsaKeyPair::from_pkcs8(alg, &pem_der(&fixture(k)), &rng).unwrap_or_else(|e| fatal(&format!("{k:?}: {e}")))
        };
        Keys {
            rsa1: rsa(Key::Rsa1),
            rsa2: rsa(Key::Rsa2),
            ec256: ec(Key::Ec256, &signature::ECDSA_P256_SHA256_FIXED_SIGNING),
            ec384: ec(Key::Ec384, &signature::ECDSA_P384_SHA384_FIXED_SIGNING),
            ed25519: Ed25519KeyPair::from_pkcs8_maybe_unchecked(&pem_der(&fixture(Key::Ed25519)))
                .unwrap_or_else(|e| fatal(&format!("Ed25519: {e}"))),
            hmac: b64_decode(fixture(Key::Hmac).trim(), true).unwrap_or_else(|| fatal("hmac.secret: not base64url")),
            rng,
        }
    })
}

fn rsa(key: Key) -> &'static RsaKeyPair {
    match key {
        Key::Rsa2 => &keys().rsa2,
        _ => &keys().rsa1,
    }
}

/// The HMAC secret's bytes (the JWKS `oct` key).
pub fn hmac_secret() -> &'static [u8] {
    &keys().hmac
}

/// The signature of `input` by `key` under `alg`. `alg` and `key` need not fit each other only
/// where that makes sense as an attack: an HS alg signs with `key`'s public key bytes when
/// `key` is not the HMAC key ([`public_key_pem`]), the key-confusion attack.
pub fn sign(alg: Alg, key: Key, input: &[u8]) -> Vec<u8> {
    let k = keys();
    if alg.is_hmac() {
        let secret = if key == Key::Hmac { k.hmac.clone() } else { public_key_pem(key).into_bytes() };
        let h = match alg {
            Alg::HS256 => ring::hmac::HMAC_SHA256,
            Alg::HS384 => ring::hmac::HMAC_SHA384,
            _ => ring::hmac::HMAC_SHA512,
        };
        return ring::hmac::sign(&ring::hmac::Key::new(h, &secret), input).as_ref().to_vec();
    }
    let rsa_alg: Option<&'static dyn signature::RsaEncoding> = match alg {
        Alg::RS256 => Some(&signature::RSA_PKCS1_SHA256),
        Alg::RS384 => Some(&signature::RSA_PKCS1_SHA384),
        Alg::RS512 => Some(&signature::RSA_PKCS1_SHA512),
        Alg::PS256 => Some(&signature::RSA_PSS_SHA256),
        Alg::PS384 => Some(&signature::RSA_PSS_SHA384),
        Alg::PS512 => Some(&signature::RSA_PSS_SHA512),
        _ => None,
    };
    if let Some(enc) = rsa_alg {
        let pair = rsa(key);
        let mut sig = vec![0; pair.public().modulus_len()];
        pair.sign(enc, &k.rng, input, &mut sig).unwrap_or_else(|e| fatal(&format!("RSA sign: {e}")));
        return sig;
    }
    let signed = match (alg, key) {
        (Alg::ES256, _) => k.ec256.sign(&k.rng, input),
        (Alg::ES384, _) => k.ec384.sign(&k.rng, input),
        _ => return k.ed25519.sign(input).as_ref().to_vec(),
    };
    signed.map(|s| s.as_ref().to_vec()).unwrap_or_else(|e| fatal(&format!("ECDSA sign: {e}")))
}

/// `b64(header).b64(payload).b64(signature)` over raw bytes.
pub fn raw_token(header: &[u8], payload: &[u8], alg: Alg, key: Key) -> String {
    let input = format!("{}.{}", b64url(header), b64url(payload));
    let sig = sign(alg, key, input.as_bytes());
    format!("{input}.{}", b64url(&sig))
}

/// The standard header for `alg` signed by `key`: `{"alg","typ":"JWT","kid"}`.
pub fn header(alg: Alg, key: Key) -> Value {
    json!({"alg": alg.name(), "typ": "JWT", "kid": key.kid()})
}

/// A token with `alg`'s default key, the standard header, and this payload.
pub fn token(alg: Alg, payload: &Value) -> String {
    token_with(alg, alg.default_key(), &header(alg, alg.default_key()), payload)
}

pub fn token_with(alg: Alg, key: Key, header: &Value, payload: &Value) -> String {
    raw_token(header.to_string().as_bytes(), payload.to_string().as_bytes(), alg, key)
}

pub fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// Claims accepted by the remote provider: its issuer and audience, one hour left.
pub fn claims(sub: &str) -> Value {
    claims_for(ISSUER, sub)
}

pub fn claims_for(issuer: &str, sub: &str) -> Value {
    let now = now();
    json!({"iss": issuer, "sub": sub, "aud": AUDIENCE, "iat": now, "exp": now + 3600})
}

/// Merge `extra` into `base` (an object), replacing keys; `null` in `extra` removes the key.
pub fn with(mut base: Value, extra: Value) -> Value {
    if let (Some(b), Some(e)) = (base.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            if v.is_null() {
                b.remove(k);
            } else {
                b.insert(k.clone(), v.clone());
            }
        }
    }
    base
}

/// The public JWK of `key` (no `alg`, so one RSA key serves RS* and PS*).
pub fn jwk(key: Key) -> Value {
    let k = keys();
    let kid = key.kid();
    match key {
        Key::Rsa1 | Key::Rsa2 => {
            let c = ring::rsa::PublicKeyComponents::<Vec<u8>>::from(rsa(key).public());
            let trim = |b: &[u8]| b64url(&b[b.iter().position(|x| *x != 0).unwrap_or(b.len())..]);
            json!({"kty": "RSA", "kid": kid, "use": "sig", "n": trim(&c.n), "e": trim(&c.e)})
        }
        Key::Ec256 | Key::Ec384 => {
            let (pair, crv, size) = if key == Key::Ec256 { (&k.ec256, "P-256", 32) } else { (&k.ec384, "P-384", 48) };
            // Uncompressed point: 0x04 || x || y.
            let point = pair.public_key().as_ref();
            json!({"kty": "EC", "kid": kid, "use": "sig", "crv": crv,
                "x": b64url(&point[1..1 + size]), "y": b64url(&point[1 + size..])})
        }
        Key::Ed25519 => {
            json!({"kty": "OKP", "kid": kid, "use": "sig", "crv": "Ed25519", "x": b64url(k.ed25519.public_key().as_ref())})
        }
        Key::Hmac => json!({"kty": "oct", "kid": kid, "use": "sig", "k": b64url(&k.hmac)}),
    }
}

/// `{"keys":[…]}` of these keys' public JWKs.
pub fn jwks(keys: &[Key]) -> String {
    json!({"keys": keys.iter().map(|k| jwk(*k)).collect::<Vec<_>>()}).to_string()
}

/// The remote JWKS as first served (and as committed in `fixtures/jwt/jwks.json`): every
/// asymmetric key but `rsa-2`, which rotation brings in.
pub const REMOTE_KEYS: [Key; 4] = [Key::Rsa1, Key::Ec256, Key::Ec384, Key::Ed25519];
/// After rotation: `rsa-1` retired, `rsa-2` in.
pub const ROTATED_KEYS: [Key; 4] = [Key::Rsa2, Key::Ec256, Key::Ec384, Key::Ed25519];
/// The local provider's inline JWKS (`fixtures/jwt/local-jwks.json`): with the HMAC key.
pub const LOCAL_KEYS: [Key; 5] = [Key::Rsa1, Key::Ec256, Key::Ec384, Key::Ed25519, Key::Hmac];

/// A PEM of `key`'s public key (SubjectPublicKeyInfo for RSA as the key-confusion attacker
/// would find it published). Only its bytes matter: it is the attacker's HMAC secret.
pub fn public_key_pem(key: Key) -> String {
    let jwk = jwk(key);
    format!("-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n", jwk)
}

// ---- base64 (shared's codec, the one the filters use) ----

/// base64url without padding (JWS compact serialization).
pub use shared::base64::encode_url as b64url;

/// Decode base64 (standard alphabet, or url-safe when `url`), padding optional.
pub fn b64_decode(text: &str, url: bool) -> Option<Vec<u8>> {
    if url {
        shared::base64::decode_url(text.as_bytes())
    } else {
        shared::base64::decode(text.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_round_trips() {
        for n in 0..40 {
            let bytes: Vec<u8> = (0..n).map(|i| (i * 37 + 11) as u8).collect();
            assert_eq!(b64_decode(&b64url(&bytes), true).unwrap(), bytes);
        }
        assert_eq!(b64url(b"\xfb\xff"), "-_8");
    }

    #[test]
    fn committed_jwks_match_the_keys() {
        for (file, keys) in [
            ("jwks.json", &REMOTE_KEYS[..]),
            ("jwks-rotated.json", &ROTATED_KEYS[..]),
            ("local-jwks.json", &LOCAL_KEYS[..]),
        ] {
            let committed: Value =
                serde_json::from_str(&std::fs::read_to_string(fixtures_dir().join(file)).unwrap()).unwrap();
            let computed: Value = serde_json::from_str(&jwks(keys)).unwrap();
            assert_eq!(
                committed, computed,
                "{file}: regenerate with `cargo run -p e2e --bin jwks_server -- --write-fixtures`"
            );
        }
    }

    #[test]
    fn every_alg_signs_and_ring_verifies() {
        for alg in Alg::ALL {
            let t = token(alg, &claims("x"));
            let parts: Vec<&str> = t.split('.').collect();
            assert_eq!(parts.len(), 3);
            let input = format!("{}.{}", parts[0], parts[1]);
            let sig = b64_decode(parts[2], true).unwrap();
            let jwk = jwk(alg.default_key());
            let ok = match alg {
                Alg::HS256 | Alg::HS384 | Alg::HS512 => sig == sign(alg, Key::Hmac, input.as_bytes()),
                _ => {
                    let vk: &dyn signature::VerificationAlgorithm = match alg {
                        Alg::RS256 => &signature::RSA_PKCS1_2048_8192_SHA256,
                        Alg::RS384 => &signature::RSA_PKCS1_2048_8192_SHA384,
                        Alg::RS512 => &signature::RSA_PKCS1_2048_8192_SHA512,
                        Alg::PS256 => &signature::RSA_PSS_2048_8192_SHA256,
                        Alg::PS384 => &signature::RSA_PSS_2048_8192_SHA384,
                        Alg::PS512 => &signature::RSA_PSS_2048_8192_SHA512,
                        Alg::ES256 => &signature::ECDSA_P256_SHA256_FIXED,
                        Alg::ES384 => &signature::ECDSA_P384_SHA384_FIXED,
                        _ => &signature::ED25519,
                    };
                    let public: Vec<u8> = match alg.default_key() {
                        Key::Rsa1 => rsa(Key::Rsa1).public().as_ref().to_vec(),
                        Key::Ec256 => keys().ec256.public_key().as_ref().to_vec(),
                        Key::Ec384 => keys().ec384.public_key().as_ref().to_vec(),
                        _ => keys().ed25519.public_key().as_ref().to_vec(),
                    };
                    signature::UnparsedPublicKey::new(vk, public).verify(input.as_bytes(), &sig).is_ok()
                }
            };
            assert!(ok, "{alg:?} ({jwk})");
        }
    }
}
