//! JSON Web Key Sets (RFC 7517) and JWS signature verification (RFC 7515/7518/8037).
//!
//! Keys are parsed once per JWKS (at configure for `local_jwks`, once per fetched generation
//! for `remote_jwks`), with every piece of key material a verification needs precomputed then,
//! so the request path only does the signature math.
//!
//! Key selection follows Envoy's jwt_authn (jwt_verify_lib `verifyJwt`): a key is tried when
//! the token has no `kid` or the key has no `kid` or they are equal, and the key's `alg` is
//! absent or equal to the token's. If no key passes that selection the answer is
//! [`VerifyError::NoMatchingKey`] ("Jwks doesn't have key to match kid or alg from Jwt"); if
//! some did but none verified, [`VerifyError::BadSignature`] ("Jwt verification fails"). A key
//! of the wrong type for the alg (an RSA key for an HS256 token) never verifies. One bound of
//! ours on top: [`MAX_LOOSE_SLOW_KEYS`].
//!
//! Two key kinds jwt_authn uses are skipped here as too weak ([`SkippedKey::weak`]): RSA keys
//! under 2048 bits (RFC 7518 §3.3) and Ed25519 keys of small order (any signature with R = B,
//! s = 1 "verifies" under the identity). A set is refused only when no usable key remains.

use crate::crypto::hash::HashAlg;
use crate::crypto::p256::P256Key;
use crate::crypto::p384::P384Key;
use crate::crypto::p521::P521Key;
use crate::crypto::rsa::RsaPublicKey;
use crate::json;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Map, Value};
use sha2::{Sha256, Sha384, Sha512};
use shared::base64::decode_url;
use std::fmt;
use subtle::ConstantTimeEq;

/// RFC 7518 §3.3: "A key of size 2048 bits or larger MUST be used with these algorithms."
pub const MIN_RSA_BITS: usize = 2048;

/// P-384 and P-521 keys tried per token when they were selected only because the token or the
/// key has no `kid` (keys whose `kid` equals the token's are always tried). jwt_authn tries
/// every such key, so a made-up ES384/ES512 token costs one slow verification per key (~3–6 ms
/// each in V8, CRYPTO.md); two keeps a rotation (current and next key, tokens without `kid`)
/// working and bounds a junk token at twice the cost of one that names a real `kid`. RSA,
/// P-256, EdDSA and HMAC keys are all tried, as jwt_authn (`require_kid` in jwt-auth bounds
/// those).
pub const MAX_LOOSE_SLOW_KEYS: usize = 2;

/// A JWS `alg` this filter verifies. `none` is never one.
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
    ES512,
    EdDSA,
    HS256,
    HS384,
    HS512,
}

impl Alg {
    /// Exact, case-sensitive JWS names (`none`, `None`, `rs256` are not algorithms here).
    pub fn from_name(name: &str) -> Option<Alg> {
        Some(match name {
            "RS256" => Alg::RS256,
            "RS384" => Alg::RS384,
            "RS512" => Alg::RS512,
            "PS256" => Alg::PS256,
            "PS384" => Alg::PS384,
            "PS512" => Alg::PS512,
            "ES256" => Alg::ES256,
            "ES384" => Alg::ES384,
            "ES512" => Alg::ES512,
            "EdDSA" => Alg::EdDSA,
            "HS256" => Alg::HS256,
            "HS384" => Alg::HS384,
            "HS512" => Alg::HS512,
            _ => return None,
        })
    }

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
            Alg::ES512 => "ES512",
            Alg::EdDSA => "EdDSA",
            Alg::HS256 => "HS256",
            Alg::HS384 => "HS384",
            Alg::HS512 => "HS512",
        }
    }

    fn hash(self) -> HashAlg {
        match self {
            Alg::RS256 | Alg::PS256 | Alg::ES256 | Alg::HS256 | Alg::EdDSA => HashAlg::Sha256,
            Alg::RS384 | Alg::PS384 | Alg::ES384 | Alg::HS384 => HashAlg::Sha384,
            Alg::RS512 | Alg::PS512 | Alg::ES512 | Alg::HS512 => HashAlg::Sha512,
        }
    }
}

/// Why a JWKS was refused (no usable key at all, or not a JWKS).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JwksError(pub String);

impl fmt::Display for JwksError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A key of the document that the set does not use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedKey {
    /// Position in `keys` (in the X.509 form: in the order of the kids, sorted).
    pub index: usize,
    /// Its `kid` ("" when none).
    pub kid: String,
    /// jwt_authn's words when jwt_authn skips it too; ours when only this crate does.
    pub reason: String,
    /// jwt_authn would use this key; it is skipped here as too weak (RFC 7518 §3.3 size, small
    /// Ed25519 order) or, in the X.509 form, of a kind this crate cannot verify with.
    pub weak: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VerifyError {
    /// No key passed the kid/alg selection (jwt_authn: `JwksKidAlgMismatch`).
    NoMatchingKey,
    /// Keys were tried and none verified the signature (jwt_authn: `JwtVerificationFail`).
    BadSignature,
    /// An Ed25519 key was reached with a signature that is not 64 bytes, whatever the token's
    /// `alg` (jwt_authn: `JwtEd25519SignatureWrongLength`, which stops its key loop).
    Ed25519SignatureWrongLength,
    /// The set has no key at all: an empty `local_jwks` (jwt_authn: `JwksNoValidKeys`).
    NoKeys,
}

/// HMAC key state: the inner and outer pads are hashed once, at parse; each verification
/// clones the keyed state.
#[derive(Clone)]
struct HmacKey {
    s256: Hmac<Sha256>,
    s384: Hmac<Sha384>,
    s512: Hmac<Sha512>,
}

impl HmacKey {
    fn new(k: &[u8]) -> Option<HmacKey> {
        Some(HmacKey {
            s256: Hmac::<Sha256>::new_from_slice(k).ok()?,
            s384: Hmac::<Sha384>::new_from_slice(k).ok()?,
            s512: Hmac::<Sha512>::new_from_slice(k).ok()?,
        })
    }

    fn verify(&self, hash: HashAlg, input: &[u8], sig: &[u8]) -> bool {
        fn check<M: Mac + Clone>(m: &M, input: &[u8], sig: &[u8]) -> bool {
            let mut m = m.clone();
            m.update(input);
            let tag = m.finalize().into_bytes();
            tag.len() == sig.len() && bool::from(tag.as_slice().ct_eq(sig))
        }
        match hash {
            HashAlg::Sha256 => check(&self.s256, input, sig),
            HashAlg::Sha384 => check(&self.s384, input, sig),
            HashAlg::Sha512 => check(&self.s512, input, sig),
        }
    }
}

enum Material {
    Rsa(Box<RsaPublicKey>),
    P256(Box<P256Key>),
    P384(Box<P384Key>),
    P521(Box<P521Key>),
    /// `None`: 32 bytes that are not a curve point. jwt_authn keeps such a key (BoringSSL only
    /// decodes it when verifying, and then fails), so it is kept and never verifies.
    Ed25519(Option<Box<ed25519_dalek::VerifyingKey>>),
    Hmac(Box<HmacKey>),
}

impl fmt::Debug for Material {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key bytes (HMAC keys are secrets).
        f.write_str(match self {
            Material::Rsa(_) => "RSA",
            Material::P256(_) => "EC P-256",
            Material::P384(_) => "EC P-384",
            Material::P521(_) => "EC P-521",
            Material::Ed25519(_) => "OKP Ed25519",
            Material::Hmac(_) => "oct",
        })
    }
}

impl Material {
    /// Whether `sig` verifies `input` under `alg` with this key. The alg must fit the key type
    /// (and curve); anything else never verifies.
    fn verify(&self, alg: Alg, input: &[u8], sig: &[u8]) -> bool {
        match (self, alg) {
            (Material::Rsa(k), Alg::RS256 | Alg::RS384 | Alg::RS512) => k.verify_pkcs1v15(alg.hash(), input, sig),
            (Material::Rsa(k), Alg::PS256 | Alg::PS384 | Alg::PS512) => k.verify_pss(alg.hash(), input, sig, None),
            (Material::P256(k), Alg::ES256) => {
                sig.len() == 64 && k.verify_prehash(HashAlg::Sha256.digest(input).as_bytes(), sig)
            }
            (Material::P384(k), Alg::ES384) => {
                sig.len() == 96 && k.verify_prehash(HashAlg::Sha384.digest(input).as_bytes(), sig)
            }
            (Material::P521(k), Alg::ES512) => {
                sig.len() == 132 && k.verify_prehash(HashAlg::Sha512.digest(input).as_bytes(), sig)
            }
            // Strict: a small-order R is refused too (small-order keys never get here).
            (Material::Ed25519(Some(k)), Alg::EdDSA) => match <&[u8; 64]>::try_from(sig) {
                Ok(bytes) => k.verify_strict(input, &ed25519_dalek::Signature::from_bytes(bytes)).is_ok(),
                Err(_) => false,
            },
            (Material::Hmac(k), Alg::HS256 | Alg::HS384 | Alg::HS512) => k.verify(alg.hash(), input, sig),
            _ => false,
        }
    }

    /// Whether verifying with this key for `alg` is one of the slow ones [`MAX_LOOSE_SLOW_KEYS`]
    /// bounds (other pairings either are fast or never verify).
    fn is_slow_for(&self, alg: Alg) -> bool {
        matches!((self, alg), (Material::P384(_), Alg::ES384) | (Material::P521(_), Alg::ES512))
    }
}

#[derive(Debug)]
struct Key {
    /// Empty when absent (or not a string), as jwt_authn.
    kid: String,
    /// The JWK's `alg` as written (jwt_authn compares it with the token's verbatim), empty
    /// when absent.
    alg: String,
    material: Material,
}

/// A parsed key set. Cheap to share (`Rc`) between the requests of one worker.
#[derive(Debug, Default)]
pub struct Jwks {
    keys: Vec<Key>,
    skipped: Vec<SkippedKey>,
}

/// Why one key is not used: jwt_authn's refusal, or ours (jwt_authn would use it).
enum Skip {
    Invalid(String),
    Weak(String),
}

impl From<&str> for Skip {
    fn from(s: &str) -> Skip {
        Skip::Invalid(s.to_string())
    }
}

impl From<String> for Skip {
    fn from(s: String) -> Skip {
        Skip::Invalid(s)
    }
}

/// jwt_authn's `StructUtils::GetString`: missing, wrong type, or the string.
enum Field<'a> {
    Missing,
    WrongType,
    Str(&'a str),
}

fn field<'a>(obj: &'a Map<String, Value>, name: &str) -> Field<'a> {
    match obj.get(name) {
        None => Field::Missing,
        Some(Value::String(s)) => Field::Str(s),
        Some(_) => Field::WrongType,
    }
}

/// A string field that must be there, with jwt_authn's texts for missing and not a string.
fn required<'a>(obj: &'a Map<String, Value>, name: &str, missing: &str, bad: &str) -> Result<&'a str, Skip> {
    match field(obj, name) {
        Field::Missing => Err(missing.into()),
        Field::WrongType => Err(bad.into()),
        Field::Str(s) => Ok(s),
    }
}

fn optional_str(obj: &Map<String, Value>, name: &str) -> String {
    match field(obj, name) {
        Field::Str(s) => s.to_string(),
        _ => String::new(),
    }
}

const RSA_PARSE_ERROR: &str = "Jwks RSA [n] or [e] field is missing or has a parse error";

/// An RSA key jwt_authn accepts, unless it is under [`MIN_RSA_BITS`].
fn rsa_key(n: &[u8], e: &[u8]) -> Result<Material, Skip> {
    let key = RsaPublicKey::new(n, e).ok_or(RSA_PARSE_ERROR)?;
    if key.modulus_bits() < MIN_RSA_BITS {
        return Err(Skip::Weak(format!(
            "RSA key of {} bits, under the {MIN_RSA_BITS} RFC 7518 §3.3 requires",
            key.modulus_bits()
        )));
    }
    Ok(Material::Rsa(Box::new(key)))
}

fn parse_rsa(obj: &Map<String, Value>, alg: &str) -> Result<Material, Skip> {
    if !(alg.is_empty() || alg.starts_with("RS") || alg.starts_with("PS")) {
        return Err("[alg] is not started with [RS] or [PS] for an RSA key".into());
    }
    let n = required(obj, "n", "[n] field is missing for a RSA key", "[n] field is not string for a RSA key")?;
    let e = required(obj, "e", "[e] field is missing for a RSA key", "[e] field is not string for a RSA key")?;
    let n = decode_url(n.as_bytes()).ok_or(RSA_PARSE_ERROR)?;
    let e = decode_url(e.as_bytes()).ok_or(RSA_PARSE_ERROR)?;
    rsa_key(&n, &e)
}

fn parse_ec(obj: &Map<String, Value>, alg: &str) -> Result<Material, Skip> {
    if !alg.is_empty() && !alg.starts_with("ES") {
        return Err("[alg] is not started with [ES] for an EC key".into());
    }
    let crv = match field(obj, "crv") {
        Field::Missing => "",
        Field::WrongType => return Err("[crv] field is not string for an EC key".into()),
        Field::Str(s) => s,
    };
    if !alg.is_empty()
        && !crv.is_empty()
        && !matches!((alg, crv), ("ES256", "P-256") | ("ES384", "P-384") | ("ES512", "P-521"))
    {
        return Err("[crv] field specified is not compatible with [alg] for an EC key".into());
    }
    // Neither alg nor crv: P-256, as jwt_authn.
    let curve = if alg == "ES256" || crv == "P-256" || (alg.is_empty() && crv.is_empty()) {
        256
    } else if alg == "ES384" || crv == "P-384" {
        384
    } else if alg == "ES512" || crv == "P-521" {
        521
    } else {
        return Err("[crv] or [alg] field is not supported for an EC key".into());
    };
    let x = required(obj, "x", "[x] field is missing for an EC key", "[x] field is not string for an EC key")?;
    let y = required(obj, "y", "[y] field is missing for an EC key", "[y] field is not string for an EC key")?;
    const BAD_B64: &str = "Jwks EC [x] or [y] field is an invalid Base64.";
    const BAD_POINT: &str = "Jwks EC [x] and [y] fields have a parse error.";
    let x = decode_url(x.as_bytes()).ok_or(BAD_B64)?;
    let y = decode_url(y.as_bytes()).ok_or(BAD_B64)?;
    Ok(match curve {
        256 => Material::P256(Box::new(P256Key::new(&x, &y).ok_or(BAD_POINT)?)),
        384 => Material::P384(Box::new(P384Key::new(&x, &y).ok_or(BAD_POINT)?)),
        _ => Material::P521(Box::new(P521Key::new(&x, &y).ok_or(BAD_POINT)?)),
    })
}

fn parse_oct(obj: &Map<String, Value>, alg: &str) -> Result<Material, Skip> {
    if !alg.is_empty() && !matches!(alg, "HS256" | "HS384" | "HS512") {
        return Err("[alg] does not start with [HS] for an HMAC key".into());
    }
    let k = required(obj, "k", "[k] field is missing for an HMAC key", "[k] field is not string for an HMAC key")?;
    const BAD: &str = "Jwks Oct key is an invalid Base64";
    let k = decode_url(k.as_bytes()).ok_or(BAD)?;
    if k.is_empty() {
        return Err(BAD.into());
    }
    Ok(Material::Hmac(Box::new(HmacKey::new(&k).ok_or(BAD)?)))
}

fn parse_okp(obj: &Map<String, Value>, alg: &str) -> Result<Material, Skip> {
    if !alg.is_empty() && alg != "EdDSA" {
        return Err("[alg] is not [EdDSA] for an OKP key".into());
    }
    let crv =
        required(obj, "crv", "[crv] field is missing for an OKP key", "[crv] field is not string for an OKP key")?;
    if crv != "Ed25519" {
        return Err("[crv] field is not supported for an OKP key".into());
    }
    let x = required(obj, "x", "[x] field is missing for an OKP key", "[x] field is not string for an OKP key")?;
    let x = decode_url(x.as_bytes()).ok_or("Jwks OKP [x] field is an invalid Base64.")?;
    let x: [u8; 32] = x.as_slice().try_into().map_err(|_| "Jwks OKP [x] field is wrong length.")?;
    let key = ed25519_dalek::VerifyingKey::from_bytes(&x).ok();
    if key.is_some_and(|k| k.is_weak()) {
        return Err(Skip::Weak("Ed25519 key of small order (it would verify forged signatures)".into()));
    }
    Ok(Material::Ed25519(key.map(Box::new)))
}

fn parse_key(obj: &Map<String, Value>) -> Result<Material, Skip> {
    let kty = required(obj, "kty", "[kty] is missing in [keys]", "[kty] is bad in [keys]")?;
    let alg = optional_str(obj, "alg");
    match kty {
        "EC" => parse_ec(obj, &alg),
        "RSA" => parse_rsa(obj, &alg),
        "oct" => parse_oct(obj, &alg),
        "OKP" => parse_okp(obj, &alg),
        _ => Err("[kty] is not supported in [keys]".into()),
    }
}

/// jwt_authn's bounds of a certificate in the X.509 form.
const X509_PREFIX: &str = "-----BEGIN CERTIFICATE-----\n";
const X509_SUFFIX: &str = "\n-----END CERTIFICATE-----\n";
const X509_PARSE_ERROR: &str = "X509 parse pubkey fails";
const X509_NOT_RSA: &str = "X509 parse pubkey internal fails: get pubkey";

/// jwt_authn's `shouldCheckX509`: a non-empty object (without `keys`) whose every member has a
/// non-empty name and a string value in PEM certificate bounds.
fn is_x509_form(doc: &Map<String, Value>) -> bool {
    !doc.is_empty()
        && doc.iter().all(|(kid, v)| {
            !kid.is_empty() && v.as_str().is_some_and(|pem| pem.starts_with(X509_PREFIX) && pem.ends_with(X509_SUFFIX))
        })
}

/// The RSA public key of a PEM certificate: (n, e) big-endian. Certificate fields are parsed
/// (x509-cert, strict DER) but not judged, as jwt_authn: dates, issuer, extensions and the
/// certificate's own signature are ignored; only the subject key is used.
fn x509_rsa_key(pem: &str) -> Result<(Vec<u8>, Vec<u8>), &'static str> {
    use der::{Decode, DecodePem, Reader};
    use x509_cert::Certificate;
    const RSA_ENCRYPTION: der::asn1::ObjectIdentifier = der::asn1::ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
    let cert = Certificate::from_pem(pem.as_bytes()).map_err(|_| X509_PARSE_ERROR)?;
    let spki = cert.tbs_certificate().subject_public_key_info();
    if spki.algorithm.oid != RSA_ENCRYPTION {
        return Err(X509_NOT_RSA);
    }
    // RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER } (RFC 8017 A.1.1)
    let bits = spki.subject_public_key.as_bytes().ok_or(X509_NOT_RSA)?;
    let mut reader = der::SliceReader::new(bits).map_err(|_| X509_NOT_RSA)?;
    let (n, e) = reader
        .sequence(|r| Ok((der::asn1::UintRef::decode(r)?, der::asn1::UintRef::decode(r)?)))
        .map_err(|_: der::Error| X509_NOT_RSA)?;
    reader.finish().map_err(|_| X509_NOT_RSA)?;
    Ok((n.as_bytes().to_vec(), e.as_bytes().to_vec()))
}

impl Jwks {
    /// Parse a JWKS document as jwt_authn does: JSON in its dialect ([`json`]); entries that
    /// are not objects, and keys that are invalid (unknown `kty`/`crv`, an `alg` that does not
    /// fit the key type, bad base64url, an EC point not on its curve, an RSA exponent other than
    /// 3 or 65537 or a modulus outside 512..=16384 bits, …) are skipped, and so are weak keys
    /// (see the module); the set is refused only when no usable key remains, with the first
    /// skipped key's reason (jwt_authn keeps the first failure) or "Jwks doesn't have any
    /// valid public key". `use` is not looked at (jwt_authn does not either).
    ///
    /// The X.509 form (`{"<kid>": "-----BEGIN CERTIFICATE-----\n…\n-----END CERTIFICATE-----\n"}`,
    /// Google service accounts and Firebase) gives one RSA key per certificate, without `alg`;
    /// as in jwt_authn, one certificate that does not parse or holds no RSA key refuses the set.
    pub fn parse(text: &[u8]) -> Result<Jwks, JwksError> {
        let err = |s: &str| JwksError(s.to_string());
        let doc = json::parse_object(text).map_err(|_| err("Jwks is an invalid JSON"))?;
        let set = match doc.get("keys") {
            Some(Value::Array(list)) => Jwks::from_jwk_list(list),
            Some(_) => return Err(err("[keys] in Jwks is not an array")),
            None if is_x509_form(&doc) => Jwks::from_x509(&doc)?,
            None => return Err(err("Jwks does not have [keys] field")),
        };
        if set.keys.is_empty() {
            return Err(JwksError(match set.skipped.first() {
                Some(s) => s.reason.clone(),
                None => "Jwks doesn't have any valid public key".to_string(),
            }));
        }
        Ok(set)
    }

    fn from_jwk_list(list: &[Value]) -> Jwks {
        let mut set = Jwks::default();
        for (index, entry) in list.iter().enumerate() {
            let Value::Object(obj) = entry else {
                continue;
            };
            let kid = optional_str(obj, "kid");
            match parse_key(obj) {
                Ok(material) => set.keys.push(Key { kid, alg: optional_str(obj, "alg"), material }),
                Err(skip) => set.skip(index, kid, skip),
            }
        }
        set
    }

    fn from_x509(doc: &Map<String, Value>) -> Result<Jwks, JwksError> {
        let mut set = Jwks::default();
        for (index, (kid, pem)) in doc.iter().enumerate() {
            let (n, e) = x509_rsa_key(pem.as_str().unwrap_or("")).map_err(|e| JwksError(e.to_string()))?;
            // jwt_authn takes any RSA key from a certificate; ours must also be one we verify
            // with (e of 3 or 65537, 2048..=16384 bits): anything else is skipped, not fatal.
            match rsa_key(&n, &e) {
                Ok(material) => set.keys.push(Key { kid: kid.clone(), alg: String::new(), material }),
                Err(Skip::Invalid(reason) | Skip::Weak(reason)) => {
                    set.skip(index, kid.clone(), Skip::Weak(format!("certificate {reason}")))
                }
            }
        }
        Ok(set)
    }

    fn skip(&mut self, index: usize, kid: String, skip: Skip) {
        let (reason, weak) = match skip {
            Skip::Invalid(r) => (r, false),
            Skip::Weak(r) => (r, true),
        };
        self.skipped.push(SkippedKey { index, kid, reason, weak });
    }

    /// Number of usable keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The document's keys this set does not use, in document order.
    pub fn skipped(&self) -> &[SkippedKey] {
        &self.skipped
    }

    /// How many keys were skipped as weak (jwt_authn would use them).
    pub fn weak_keys(&self) -> usize {
        self.skipped.iter().filter(|s| s.weak).count()
    }

    /// Whether some key has this `kid` (to decide on a key-rotation refetch).
    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| !k.kid.is_empty() && k.kid == kid)
    }

    /// Verify `signature` (already base64url-decoded) over `signing_input` (the token's
    /// `header.payload` ASCII bytes) with the keys selected by `kid` and `alg`, in JWKS order,
    /// as jwt_authn: a key is skipped when both it and the token have a non-empty `kid` and
    /// they differ, or when it has an `alg` other than the token's. Every other key counts as
    /// matched and is tried (slow P-384/P-521 ones within [`MAX_LOOSE_SLOW_KEYS`] unless their
    /// `kid` is the token's); a key of the wrong type or curve for `alg` never verifies (no
    /// RS/HS key confusion).
    pub fn verify(
        &self,
        alg: Alg,
        kid: Option<&str>,
        signing_input: &[u8],
        signature: &[u8],
    ) -> Result<(), VerifyError> {
        if self.keys.is_empty() {
            return Err(VerifyError::NoKeys);
        }
        let kid = kid.unwrap_or("");
        let mut matched = false;
        let mut loose_slow = 0;
        for key in &self.keys {
            if !kid.is_empty() && !key.kid.is_empty() && key.kid != kid {
                continue;
            }
            if !key.alg.is_empty() && key.alg != alg.name() {
                continue;
            }
            matched = true;
            // jwt_authn tries an OKP key for any alg and stops at a wrong-length signature;
            // mirrored for the same answer (a wrong key type never verifies here).
            if matches!(key.material, Material::Ed25519(_)) && signature.len() != 64 {
                return Err(VerifyError::Ed25519SignatureWrongLength);
            }
            if key.material.is_slow_for(alg) && (kid.is_empty() || key.kid.is_empty()) {
                if loose_slow == MAX_LOOSE_SLOW_KEYS {
                    continue;
                }
                loose_slow += 1;
            }
            if key.material.verify(alg, signing_input, signature) {
                return Ok(());
            }
        }
        Err(if matched { VerifyError::BadSignature } else { VerifyError::NoMatchingKey })
    }
}

#[cfg(test)]
mod tests;
