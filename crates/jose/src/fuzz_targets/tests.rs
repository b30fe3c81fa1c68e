//! The fuzz targets on seeds and on a deterministic stream of mutations of them (a few
//! thousand inputs: a smoke run of each property, not a substitute for `make fuzz`).

use super::*;

const SEEDS: &[&str] = &[
    r#"{"keys":[{"kty":"oct","k":"a2trazk","kid":"h","alg":"HS256"}]}"#,
    r#"{keys:[{'kty':'EC','crv':'P-256','x':'f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU','y':'x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0',},],}"#,
    r#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},{"kty":"OKP","crv":"Ed25519","x":"AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}]}"#,
    r#"{"keys":[{"kty":"EC","crv":"P-521","alg":"ES512","kid":"es512","x":"Abijiex7rz7t-_Zj_E6Oo0OXe9C_-MCSD-OWio15ATQGjH9WpbWjN62ZqrrU_nwJiqqwx6ZsYKhUc_J3PRaMbdVC","y":"FxaljCIuoVEA7PJIaDPJ5ePXtZ0hkinT1B_bQ91mShCiR_43Whsn1P7Gz30WEnLuJs1SGVz1oT4lIRUYni2OfIk"}]}"#,
    include_str!("../jwks/testdata/google_x509_esp.json"),
    "{\"a\":[1,2.5e3,-0,true,false,null,\"\\ud83d\\ude00\\n\"],'b':{c:{}}}",
    "AQAB",
    "_-8=",
    "",
];

/// xorshift64*: deterministic mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn mutate(&mut self, seed: &[u8]) -> Vec<u8> {
        let mut doc = seed.to_vec();
        for _ in 0..1 + self.next() % 4 {
            let at = if doc.is_empty() { 0 } else { (self.next() % doc.len() as u64) as usize };
            let byte = b"{}[]\"',:\\-_0aAz="[(self.next() % 16) as usize];
            match self.next() % 4 {
                0 if !doc.is_empty() => doc[at] = self.next() as u8,
                1 if !doc.is_empty() => {
                    doc.remove(at);
                }
                2 => doc.insert(at, byte),
                _ => doc.truncate(at),
            }
        }
        doc
    }
}

fn inputs() -> Vec<Vec<u8>> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut out: Vec<Vec<u8>> = SEEDS.iter().map(|s| s.as_bytes().to_vec()).collect();
    for _ in 0..300 {
        for seed in SEEDS {
            out.push(rng.mutate(seed.as_bytes()));
        }
    }
    out
}

#[test]
fn jwks_and_json_targets_hold_on_seeds_and_mutations() {
    for data in inputs() {
        jwks_document(&data);
        json_document(&data);
    }
}

#[test]
fn base64url_target_holds_on_every_short_spelling() {
    for data in inputs() {
        base64url_segment(&data);
    }
    // Every string of up to 3 characters over an alphabet with the edge cases.
    let alphabet = b"AQgw_-=+/ ";
    let mut s = Vec::new();
    for a in alphabet {
        for b in alphabet {
            for c in alphabet {
                s.clear();
                s.extend([*a, *b, *c]);
                base64url_segment(&s);
                base64url_segment(&s[..2]);
            }
        }
    }
}

#[test]
fn x509_target_holds_on_real_certificates_and_mutations() {
    let doc: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(include_str!("../jwks/testdata/google_x509_real.json")).unwrap();
    let mut rng = Rng(7);
    for pem in doc.values().filter_map(|v| v.as_str()) {
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let std_to_url = body.replace('+', "-").replace('/', "_");
        let der = decode_url(std_to_url.trim_end_matches('=').as_bytes()).unwrap();
        x509_document(&der);
        // The property holds for a real certificate: one key.
        let one = serde_json::json!({ "fuzz": pem }).to_string();
        assert_eq!(Jwks::parse(one.as_bytes()).map(|s| s.len()), Ok(1));
        for _ in 0..200 {
            x509_document(&rng.mutate(&der));
        }
    }
}

#[test]
fn fuzzed_keys_verify_what_they_signed() {
    let mut rng = Rng(11);
    for n in [0usize, 1, 31, 32, 33, 64, 100] {
        for _ in 0..8 {
            let data: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            signed_by_fuzzed_keys(&data);
        }
    }
    // Edge secrets: zero (not a P-256 scalar), all ones (above the order).
    signed_by_fuzzed_keys(&[0u8; 40]);
    signed_by_fuzzed_keys(&[0xffu8; 40]);
}

#[test]
fn json_target_allows_serde_json_rounding_a_long_number_one_ulp_off() {
    // Found by `make fuzz-smoke`: the number reads as 2.2222222222222161e21, renders as such
    // and reads back one ULP away. The property failed on this input before it allowed that.
    json_document(b"{\"\":[\n2222222222222216111111,2222222222,222222]}");
    assert!(same_value(&serde_json::json!(1.0), &serde_json::json!(1.0000000000000002)));
    assert!(!same_value(&serde_json::json!(1.0), &serde_json::json!(1.000000000000002)), "9 ULPs");
    assert!(!same_value(&serde_json::json!(1), &serde_json::json!(2)));
}

#[test]
fn json_target_allows_two_readings_of_a_long_number_two_ulps_apart() {
    // Found by CI's fuzz smoke: the 40-digit integer reads as 1.1122222222222221e39, which
    // renders as such and reads back as 1.1122222222222218e39, two ULPs away. The property
    // failed on this input while it allowed one ULP.
    json_document(
        &std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/corpus/jose_json_document/two-ulps-apart"))
            .unwrap(),
    );
    assert!(same_value(&serde_json::json!(1.1122222222222221e39), &serde_json::json!(1.1122222222222218e39)));
}
