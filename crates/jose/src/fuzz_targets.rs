//! Fuzz target bodies with their properties, as plain functions of the fuzzer's bytes: the
//! shared fuzz harness (`fuzz/`) calls them (feature `fuzzing`), and the tests below run them
//! on seeds and on a deterministic stream of mutations, so the properties are checked in
//! `cargo test -p jose` too. Every target must never panic on any input; the asserts are the
//! properties.

use crate::json;
use crate::jwks::{Alg, Jwks, VerifyError};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::{Sha256, Sha384, Sha512};
use shared::base64::{decode_url, encode_url};

/// A JWKS document: parse never panics, is deterministic, agrees with the JSON layer, and what
/// it returns is consistent; verifying with any set it accepts never panics nor passes junk.
pub fn jwks_document(data: &[u8]) {
    let parsed = Jwks::parse(data);
    if json::parse_object(data).is_err() {
        assert_eq!(parsed.as_ref().map(|_| ()).map_err(|e| e.0.as_str()), Err("Jwks is an invalid JSON"));
    }
    let again = Jwks::parse(data);
    assert_eq!(
        parsed.as_ref().map(|j| (j.len(), j.skipped().to_vec())),
        again.as_ref().map(|j| (j.len(), j.skipped().to_vec()))
    );
    if let Ok(set) = parsed {
        assert!(!set.is_empty());
        assert!(set.weak_keys() <= set.skipped().len());
        let junk = data.get(..data.len().min(132)).unwrap_or_default();
        for alg in ALL_ALGS {
            assert_ne!(set.verify(alg, None, b"e30.e30", junk), Ok(()), "junk verified with {alg:?}");
        }
    }
}

/// The X.509 form: `data` as the DER inside a PEM certificate, and as the PEM text itself;
/// never a panic, and a set that parses holds exactly one key under the one kid.
pub fn x509_document(data: &[u8]) {
    let pem_of_der = {
        let b64 = base64_std(data);
        let lines: Vec<&str> = b64.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap_or("")).collect();
        format!("-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n", lines.join("\n"))
    };
    let raw = format!("-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n", String::from_utf8_lossy(data));
    for pem in [pem_of_der, raw] {
        let doc = serde_json::json!({ "fuzz": pem }).to_string();
        if let Ok(set) = Jwks::parse(doc.as_bytes()) {
            assert_eq!(set.len(), 1);
            assert!(set.has_kid("fuzz"));
        }
    }
}

/// The JSON dialect: never a panic; whatever parses comes back the same from its strict-JSON
/// rendering (strict JSON is inside the dialect), which never holds more than 100 levels.
/// "The same" allows floats a few ULPs apart: serde_json without its `float_roundtrip`
/// feature (which would grow every module) parses floats to "best-effort precision", so a
/// value's rendering can read back one ULP off (found by this target:
/// `22222222222222216111111`), and two ULPs off when its first reading was already off by one
/// (found by CI's fuzz smoke: `1112222222222222222222222222222222222222`, read as
/// 1.1122222222222221e39, rendered, read back as 1.1122222222222218e39). Nothing the filters
/// decide on is such a float: times and sizes are integers, which compare exactly, as does
/// every other value.
pub fn json_document(data: &[u8]) {
    if let Ok(map) = json::parse_object(data) {
        let strict = serde_json::to_string(&map).unwrap_or_default();
        let back = json::parse_object(strict.as_bytes());
        let same = back.as_ref().is_ok_and(|b| same_value(&Value::Object(map.clone()), &Value::Object(b.clone())));
        assert!(same, "{strict} read back as {back:?}");
    }
}

/// How far apart two readings of one float may be ([`json_document`]).
const FLOAT_ULPS: u64 = 4;

/// Equal, floats within [`FLOAT_ULPS`] (recursion bounded by the parser's 100 levels; test code only).
fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() && y.is_f64() => {
            let (x, y) = (x.as_f64().unwrap_or(f64::NAN), y.as_f64().unwrap_or(f64::NAN));
            x == y || (x.signum() == y.signum() && x.to_bits().abs_diff(y.to_bits()) <= FLOAT_ULPS)
        }
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_value(x, y)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|((kx, vx), (ky, vy))| kx == ky && same_value(vx, vy))
        }
        _ => a == b,
    }
}

/// base64url segments: decoding never panics, and a decoded segment encodes back to its
/// canonical spelling (no padding, unused bits of the last character clear) — the only
/// freedom a segment has is those bits, which jwt_authn ignores too.
pub fn base64url_segment(data: &[u8]) {
    let Some(bytes) = decode_url(data) else { return };
    let canonical = encode_url(&bytes);
    assert_eq!(decode_url(canonical.as_bytes()).as_deref(), Some(&bytes[..]));
    let unpadded = data.strip_suffix(b"==").or_else(|| data.strip_suffix(b"=")).unwrap_or(data);
    assert_eq!(canonical.len(), unpadded.len());
    let differing: Vec<usize> = (0..canonical.len()).filter(|&i| canonical.as_bytes()[i] != unpadded[i]).collect();
    assert!(
        differing.is_empty() || differing == [canonical.len() - 1],
        "{canonical} vs {:?}",
        String::from_utf8_lossy(data)
    );
}

/// Keys this test can sign with, made from the fuzzer's bytes (HMAC secret, Ed25519 and P-256
/// private keys): the JWKS of the public key verifies what the private key signed, and not
/// the same signature with one bit changed. P-256 goes through this crate's own point
/// arithmetic and tables.
pub fn signed_by_fuzzed_keys(data: &[u8]) {
    let message = data.get(32..).unwrap_or_default();
    let input = format!("e30.{}", encode_url(message));
    let flip = |sig: &mut Vec<u8>| {
        let at = usize::from(data.first().copied().unwrap_or(0)) % sig.len().max(1);
        if let Some(b) = sig.get_mut(at) {
            *b ^= 1;
        }
    };
    if !data.is_empty() {
        let k = format!(r#"{{"keys":[{{"kty":"oct","k":"{}"}}]}}"#, encode_url(data));
        if let Ok(set) = Jwks::parse(k.as_bytes()) {
            for (alg, mut tag) in [
                (Alg::HS256, mac::<Hmac<Sha256>>(data, input.as_bytes())),
                (Alg::HS384, mac::<Hmac<Sha384>>(data, input.as_bytes())),
                (Alg::HS512, mac::<Hmac<Sha512>>(data, input.as_bytes())),
            ] {
                assert_eq!(set.verify(alg, None, input.as_bytes(), &tag), Ok(()), "{alg:?}");
                flip(&mut tag);
                assert_eq!(set.verify(alg, None, input.as_bytes(), &tag), Err(VerifyError::BadSignature), "{alg:?}");
            }
        }
    }
    let Some(secret) = data.get(..32).and_then(|s| <[u8; 32]>::try_from(s).ok()) else { return };
    {
        use ed25519_dalek::Signer;
        let key = ed25519_dalek::SigningKey::from_bytes(&secret);
        let x = encode_url(key.verifying_key().as_bytes());
        let set = Jwks::parse(format!(r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","x":"{x}"}}]}}"#).as_bytes());
        let set = set.as_ref().map_err(|e| e.0.as_str());
        let mut sig = key.sign(input.as_bytes()).to_bytes().to_vec();
        assert_eq!(set.map(|s| s.verify(Alg::EdDSA, None, input.as_bytes(), &sig)), Ok(Ok(())));
        flip(&mut sig);
        assert_eq!(set.map(|s| s.verify(Alg::EdDSA, None, input.as_bytes(), &sig)), Ok(Err(VerifyError::BadSignature)));
    }
    if let Ok(key) = p256::ecdsa::SigningKey::from_slice(&secret) {
        use p256::ecdsa::signature::Signer;
        // Uncompressed SEC1: 0x04 ‖ x ‖ y.
        let sec1 = key.verifying_key().to_sec1_bytes();
        let (Some(x), Some(y)) = (sec1.get(1..33), sec1.get(33..65)) else { return };
        let (x, y) = (encode_url(x), encode_url(y));
        let set = Jwks::parse(format!(r#"{{"keys":[{{"kty":"EC","crv":"P-256","x":"{x}","y":"{y}"}}]}}"#).as_bytes());
        let set = set.as_ref().map_err(|e| e.0.as_str());
        let sig: p256::ecdsa::Signature = key.sign(input.as_bytes());
        let mut sig = sig.to_bytes().to_vec();
        assert_eq!(set.map(|s| s.verify(Alg::ES256, None, input.as_bytes(), &sig)), Ok(Ok(())));
        flip(&mut sig);
        assert_eq!(set.map(|s| s.verify(Alg::ES256, None, input.as_bytes(), &sig)), Ok(Err(VerifyError::BadSignature)));
    }
}

const ALL_ALGS: [Alg; 13] = [
    Alg::RS256,
    Alg::RS384,
    Alg::RS512,
    Alg::PS256,
    Alg::PS384,
    Alg::PS512,
    Alg::ES256,
    Alg::ES384,
    Alg::ES512,
    Alg::EdDSA,
    Alg::HS256,
    Alg::HS384,
    Alg::HS512,
];

fn mac<M: Mac + KeyInit>(key: &[u8], input: &[u8]) -> Vec<u8> {
    match <M as KeyInit>::new_from_slice(key) {
        Ok(mut m) => {
            m.update(input);
            m.finalize().into_bytes().to_vec()
        }
        Err(_) => Vec::new(),
    }
}

/// Standard base64 with padding (PEM bodies).
fn base64_std(data: &[u8]) -> String {
    let padding = match data.len() % 3 {
        1 => "==",
        2 => "=",
        _ => "",
    };
    encode_url(data).replace('-', "+").replace('_', "/") + padding
}

#[cfg(test)]
mod tests;
