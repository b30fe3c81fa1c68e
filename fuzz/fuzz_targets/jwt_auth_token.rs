//! jwt-auth's token parser, `jwt_auth::token::parse` (what every request's token goes through
//! before any key is looked at). Properties:
//! - never panics, whatever the bytes;
//! - an accepted token has three non-empty base64url sections, each decoding to what the parse
//!   holds (`payload_b64` is the payload section, `signature` the third one decoded);
//! - canonical base64url: each section re-encoded from its bytes is a fixed point, and equals
//!   the section as sent but for padding and the last character's unused bits (which jwt_authn
//!   ignores too: README "Differences", J6);
//! - the canonical respelling of an accepted token parses to the same token.
#![no_main]

use jwt_auth::token::parse;
use shared::base64::{decode_url, encode_url};

const MAX_BYTES: usize = 8192;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(jwt) = parse(data, MAX_BYTES) else { return };
    assert!(data.len() <= MAX_BYTES);
    let sections: Vec<&[u8]> = data.split(|b| *b == b'.').filter(|s| !s.is_empty()).collect();
    assert_eq!(sections.len(), 3, "accepted with {} sections", sections.len());
    let mut canonical = Vec::new();
    for section in &sections {
        let bytes = decode_url(section).expect("an accepted section decodes");
        let again = encode_url(&bytes);
        assert_eq!(decode_url(again.as_bytes()).as_deref(), Some(&bytes[..]), "re-encoding is a fixed point");
        let sent: &[u8] = section.strip_suffix(b"==").or_else(|| section.strip_suffix(b"=")).unwrap_or(section);
        assert_eq!(sent.len(), again.len(), "{:?} vs canonical {again:?}", String::from_utf8_lossy(section));
        let last = sent.len().saturating_sub(1);
        assert_eq!(&sent[..last], &again.as_bytes()[..last], "only the last character may differ");
        canonical.push(again);
    }
    assert_eq!(jwt.payload_b64.as_bytes(), sections[1]);
    assert_eq!(Some(&jwt.signature[..]), decode_url(sections[2]).as_deref());
    let respelled = canonical.join(".");
    let same = parse(respelled.as_bytes(), MAX_BYTES).expect("the canonical spelling parses too");
    assert_eq!(
        (&same.alg, &same.kid, &same.iss, &same.audiences, same.exp, same.nbf, &same.payload, &same.signature),
        (&jwt.alg, &jwt.kid, &jwt.iss, &jwt.audiences, jwt.exp, jwt.nbf, &jwt.payload, &jwt.signature)
    );
});
