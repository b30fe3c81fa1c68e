//! crypto-probe: times JWS signature verification inside the proxy-wasm VM that loads it and
//! logs the figures (warn level). Loaded as a singleton bootstrap WasmService by run.sh, it runs
//! once in `on_vm_start`. Method (crates/jose/CRYPTO.md, "Measurements"): warm-up, then
//! the best of ROUNDS short rounds of N verifications (short, so that some land in quiet moments
//! of a shared machine), timed with `std::time::Instant` (WASI monotonic clock).

use shared::base64::decode_url;
use jose::jwks::{Alg, Jwks};
use proxy_wasm::traits::{Context, RootContext};
use proxy_wasm::types::LogLevel;
use std::time::Instant;

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Probe::default()) });
}}

/// One candidate: a name, calls per round, and the call (true = verified).
struct Case {
    name: String,
    n: usize,
    f: Box<dyn FnMut() -> bool>,
}

/// Each tick runs one round of the current case, so that every round is a fresh call from
/// the host and V8's tier-up (Liftoff → TurboFan, compiled in the background) takes effect:
/// a single long call would keep running the baseline code.
#[derive(Default)]
struct Probe {
    cases: Vec<Case>,
    current: usize,
    round: usize,
    times: Vec<f64>,
}

impl Context for Probe {}

impl RootContext for Probe {
    fn on_vm_start(&mut self, _: usize) -> bool {
        log(&format!("crypto-probe: start ({})", option_env!("PROBE_LABEL").unwrap_or("unlabelled")));
        self.cases = cases();
        self.set_tick_period(std::time::Duration::from_millis(5));
        true
    }

    fn on_tick(&mut self) {
        let Some(case) = self.cases.get_mut(self.current) else {
            return;
        };
        let n = case.n;
        let start = Instant::now();
        let mut ok = true;
        for _ in 0..n {
            ok &= std::hint::black_box((case.f)());
        }
        let us = start.elapsed().as_secs_f64() * 1e6 / n as f64;
        self.round += 1;
        if !ok {
            log(&format!("crypto-probe: {}: FAILED to verify", case.name));
        } else if self.round > WARMUP_ROUNDS {
            self.times.push(us);
        }
        if !ok || self.times.len() == ROUNDS {
            self.times.sort_by(|a, b| a.total_cmp(b));
            if ok {
                log(&format!(
                    "crypto-probe: {}: best {:.1} us, median {:.1} us ({ROUNDS} rounds of {n})",
                    case.name,
                    self.times[0],
                    self.times[ROUNDS / 2]
                ));
            }
            self.times.clear();
            self.round = 0;
            self.current += 1;
            if self.current == self.cases.len() {
                log("crypto-probe: done");
            }
        }
    }
}

const ROUNDS: usize = 21;
const WARMUP_ROUNDS: usize = 5;

fn log(msg: &str) {
    let _ = proxy_wasm::hostcalls::log(LogLevel::Warn, msg);
}

fn b64(s: &str) -> Vec<u8> {
    decode_url(s.as_bytes()).unwrap_or_default()
}

fn split(jws: &str) -> (Vec<u8>, Vec<u8>) {
    let dot = jws.rfind('.').unwrap_or(0);
    (jws.as_bytes()[..dot].to_vec(), b64(&jws[dot + 1..]))
}

// RFC 7515 A.2 / A.3, RFC 8037 A.4, RFC 7515 A.1; a PS256 signature made with OpenSSL.
const A2_N: &str = "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ";
const A2_JWS: &str = "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw";
const A3_JWK: &str = r#"{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}"#;
const A3_JWS: &str = "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q";
const ED_JWK: &str = r#"{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#;
const ED_JWS: &str = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc.hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg";
const A1_JWK: &str = r#"{"kty":"oct","k":"AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow"}"#;
const A1_JWS: &str = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const EC384_JWK: &str = r#"{"kty":"EC","crv":"P-384","x":"CBKlJvxVQ6rBWRDsjR4JR07L8WySDj_cfFOdibHUi7REWaF0jqxBC7Y3KPkSTvVE","y":"ohCr6Lmf6quUuZFAK4M2Mgk9UdZu7O2OyZJYCQRm7jh3XiNQmP9vqy5ghi0Pws67"}"#;
const ES384_JWS: &str = "eyJhbGciOiJFUzM4NCJ9.eyJpc3MiOiJmaXh0dXJlIiwic3ViIjoieCJ9.LtL4ET_R8m-E7GgWh4AKSbjAUx7rYu25hOPz5FnUr3wGY7MHbpQXEtIXd6qAKgZmhlQl5Eee1lZ6qXKmSikwScvkwNPlAYYusYuGpl9S_kf5s0lEC5YqNCTiTwKa5b-T";
// jwt_verify_lib's verify_jwk_ec_test.cc P-521 key and ES512 token, and test_common.h's
// X.509-form JWKS (Copyright Google LLC, Apache-2.0; crates/jose/src/jwks/testdata/NOTICE).
const P521_JWK: &str = r#"{"kty":"EC","crv":"P-521","alg":"ES512","kid":"es512","x":"Abijiex7rz7t-_Zj_E6Oo0OXe9C_-MCSD-OWio15ATQGjH9WpbWjN62ZqrrU_nwJiqqwx6ZsYKhUc_J3PRaMbdVC","y":"FxaljCIuoVEA7PJIaDPJ5ePXtZ0hkinT1B_bQ91mShCiR_43Whsn1P7Gz30WEnLuJs1SGVz1oT4lIRUYni2OfIk"}"#;
const ES512_JWS: &str = "eyJhbGciOiJFUzUxMiIsInR5cCI6IkpXVCIsImtpZCI6ImVzNTEyIn0.eyJpc3MiOiI2Mjg2NDU3NDE4ODEtbm9hYml1MjNmNWE4bThvdmQ4dWN2Njk4bGo3OHZ2MGxAZGV2ZWxvcGVyLmdzZXJ2aWNlYWNjb3VudC5jb20iLCJzdWIiOiI2Mjg2NDU3NDE4ODEtbm9hYml1MjNmNWE4bThvdmQ4dWN2Njk4bGo3OHZ2MGxAZGV2ZWxvcGVyLmdzZXJ2aWNlYWNjb3VudC5jb20iLCJhdWQiOiJodHRwOi8vbXlzZXJ2aWNlLmNvbS9teWFwaSJ9.ATSReP9zpba6PRJZmlIEA78Ft-FZS1m_SpFLqfiNQNexaDaTmmVrIqD9X-krPxk0c8KSBeMlU-QLOsbh37coamruAPKoAODYWA-QKUN2a_xem8WrudKVXWsmQlZDOJA0lQWI-YGMEPrDr17mljMhZwSGbVVST9l-nZiMXyMK0z8hR9Mn";
const GOOGLE_X509: &str = include_str!("../../../crates/jose/src/jwks/testdata/google_x509_real.json");

fn jwks(key: &str) -> Option<Jwks> {
    Jwks::parse(format!(r#"{{"keys":[{key}]}}"#).as_bytes()).ok()
}

fn verify_with(set: Option<Jwks>, alg: Alg, jws: &str) -> Box<dyn FnMut() -> bool> {
    let (input, sig) = split(jws);
    Box::new(move || set.as_ref().is_some_and(|s| s.verify(alg, None, &input, &sig).is_ok()))
}

fn case(name: &str, n: usize, f: Box<dyn FnMut() -> bool>) -> Case {
    Case { name: name.to_string(), n, f }
}

fn cases() -> Vec<Case> {
    let rsa_jwk = format!(r#"{{"kty":"RSA","n":"{A2_N}","e":"AQAB"}}"#);
    let mut cases = vec![
        case("jwt-auth RS256 (2048)", 50, verify_with(jwks(&rsa_jwk), Alg::RS256, A2_JWS)),
        case("jwt-auth ES256", 30, verify_with(jwks(A3_JWK), Alg::ES256, A3_JWS)),
        case("jwt-auth ES384", 5, verify_with(jwks(EC384_JWK), Alg::ES384, ES384_JWS)),
        case("jwt-auth ES512 (p521 as is)", 3, verify_with(jwks(P521_JWK), Alg::ES512, ES512_JWS)),
        case("jwt-auth EdDSA", 50, verify_with(jwks(ED_JWK), Alg::EdDSA, ED_JWS)),
        case("jwt-auth HS256", 200, verify_with(jwks(A1_JWK), Alg::HS256, A1_JWS)),
        // Parse cost (once per JWKS per worker): all precomputation is in here.
        case("Jwks::parse one RSA-2048 key", 10, Box::new(move || jwks(&rsa_jwk).is_some())),
        case("Jwks::parse one P-256 key", 3, Box::new(|| jwks(A3_JWK).is_some())),
        case("Jwks::parse one P-521 key", 10, Box::new(|| jwks(P521_JWK).is_some())),
        case("Jwks::parse X.509 form, 5 RSA-2048 certificates", 3, Box::new(|| Jwks::parse(GOOGLE_X509.as_bytes()).is_ok())),
    ];
    // Candidates that are not the filter's code.
    {
        use rsa::pkcs1v15::{Signature, VerifyingKey};
        use rsa::signature::Verifier;
        let (input, sig) = split(A2_JWS);
        let n = b64(A2_N);
        let key = rsa::BoxedUint::from_be_slice(&n, (n.len() * 8) as u32)
            .ok()
            .and_then(|n| rsa::RsaPublicKey::new(n, rsa::BoxedUint::from(65537u32)).ok());
        let vk = key.map(VerifyingKey::<sha2::Sha256>::new);
        let sig = Signature::try_from(&sig[..]).ok();
        cases.push(case(
            "rsa 0.10.0-rc.20 RS256 (key parsed once)",
            30,
            Box::new(move || match (&vk, &sig) {
                (Some(vk), Some(sig)) => vk.verify(&input, sig).is_ok(),
                _ => false,
            }),
        ));
    }
    {
        use p256::ecdsa::signature::Verifier;
        use p256::ecdsa::{Signature, VerifyingKey};
        let (input, sig) = split(A3_JWS);
        let x = b64("f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU");
        let y = b64("x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0");
        let sec1 = [&[4u8][..], &x, &y].concat();
        let vk = VerifyingKey::from_sec1_bytes(&sec1).ok();
        let sig = Signature::from_slice(&sig).ok();
        cases.push(case(
            "p256 0.14 ecdsa as is (key parsed once)",
            10,
            Box::new(move || match (&vk, &sig) {
                (Some(vk), Some(sig)) => vk.verify(&input, sig).is_ok(),
                _ => false,
            }),
        ));
    }
    cases
}
