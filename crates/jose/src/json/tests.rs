//! What Envoy 1.40's jwt_authn was seen to accept and refuse as a `local_jwks` (one Envoy per
//! document, a 200 or a refused configuration), replayed against [`parse_object`].

use super::*;

const KEY: &str = r#"{"kty":"oct","k":"a2trazk"}"#;

fn doc(extra: &str) -> String {
    format!(r#"{{"keys":[{KEY}]{extra}}}"#)
}

fn nested(open: &str, close: &str, depth: usize) -> String {
    format!("{}{}", open.repeat(depth), close.repeat(depth))
}

/// (case, document, jwt_authn accepted it).
fn seen_in_envoy() -> Vec<(&'static str, String, bool)> {
    let k = r#""kty":"oct","k":"a2trazk""#;
    vec![
        ("plain", doc(""), true),
        ("trailing comma in a key object", format!(r#"{{"keys":[{{{k},}}]}}"#), true),
        ("trailing comma in the array", format!(r#"{{"keys":[{KEY},]}}"#), true),
        ("trailing comma at the top", format!(r#"{{"keys":[{KEY}],}}"#), true),
        ("trailing commas with whitespace", format!("{{\"keys\":[{KEY} , ] , }}"), true),
        ("trailing commas when nested", doc(r#","x":[1,[2,],{"a":3,},]"#), true),
        ("two trailing commas", format!(r#"{{"keys":[{{{k},,}}]}}"#), false),
        ("leading comma", format!(r#"{{"keys":[,{KEY}]}}"#), false),
        ("double comma", format!(r#"{{"keys":[{KEY},,{KEY}]}}"#), false),
        ("only a comma in an array", r#"{"keys":[,]}"#.into(), false),
        ("only a comma in an object", doc(r#","x":{,}"#), false),
        ("missing comma", r#"{"keys":[{"kty":"oct" "k":"a2trazk"}]}"#.into(), false),
        ("line comment", "{\"keys\":[{\"kty\":\"oct\", // c\n\"k\":\"a2trazk\"}]}".into(), false),
        ("block comment", r#"{"keys":[{"kty":"oct", /* c */ "k":"a2trazk"}]}"#.into(), false),
        ("hash comment", "{\"keys\":[{\"kty\":\"oct\", # c\n\"k\":\"a2trazk\"}]}".into(), false),
        ("single quotes", "{'keys':[{'kty':'oct','k':'a2trazk'}]}".into(), true),
        ("double quote inside single quotes", doc(r#","x":'a"b'"#), true),
        ("\\' inside single quotes", doc(r#","x":'a\'b'"#), true),
        ("\\' inside double quotes", doc(r#","x":"a\'b""#), true),
        ("mixed quotes", r#"{"keys':[]}"#.into(), false),
        ("bare keys", r#"{keys:[{kty:"oct",k:"a2trazk"}]}"#.into(), true),
        ("bare key with _ and digits", r#"{keys:[{kty:"oct",k_1:"x",k:"a2trazk"}]}"#.into(), true),
        ("bare key with -", r#"{keys:[{kty:"oct",k-1:"x",k:"a2trazk"}]}"#.into(), false),
        ("bare key starting with a digit", r#"{keys:[{kty:"oct",1k:"x",k:"a2trazk"}]}"#.into(), false),
        ("bare key null", r#"{keys:[{kty:"oct",null:"x",k:"a2trazk"}]}"#.into(), false),
        ("bare key with $", r#"{keys:[{kty:"oct",$x:"x",k:"a2trazk"}]}"#.into(), false),
        ("bare key not ASCII", r#"{keys:[{kty:"oct",é:"x",k:"a2trazk"}]}"#.into(), false),
        ("bare value", r#"{"keys":[{"kty":oct,"k":"a2trazk"}]}"#.into(), false),
        ("raw newline in a string", doc(",\"x\":\"a\nb\""), true),
        ("raw tab in a string", doc(",\"x\":\"a\tb\""), true),
        ("raw NUL in a string", doc(",\"x\":\"a\u{0}b\""), true),
        ("raw 0x01 in a string", doc(",\"x\":\"a\u{1}b\""), true),
        ("raw DEL in a string", doc(",\"x\":\"a\u{7f}b\""), true),
        ("escaped key name", r#"{"k\u0065ys":[{"kty":"oct","\u006b":"a2trazk"}]}"#.into(), true),
        ("\\U escape", doc(r#","x":"\U0041""#), true),
        ("upper-case hex digits", doc(r#","x":"\u00E9""#), true),
        ("surrogate pair", doc(r#","x":"\ud83d\ude00""#), true),
        ("space between surrogates", doc(r#","x":"\ud83d \ude00""#), true),
        ("newline between surrogates", doc(",\"x\":\"\\ud83d\n\\ude00\""), true),
        ("last code point", doc(r#","x":"\udbff\udfff""#), true),
        ("lone high surrogate", doc(r#","x":"\ud800""#), false),
        ("high surrogate then not a low one", doc(r#","x":"\ud83d\u0041""#), false),
        ("second surrogate escape as \\U", doc(r#","x":"\ud83d\Ude00""#), false),
        ("short \\u escape", doc(r#","x":"\u00""#), false),
        ("bad escape", doc(r#","x":"\q""#), false),
        ("NaN", doc(r#","x":NaN"#), false),
        ("Infinity", doc(r#","x":Infinity"#), false),
        ("leading zero", doc(r#","x":01"#), false),
        ("plus sign", doc(r#","x":+1"#), false),
        ("hex number", doc(r#","x":0x10"#), false),
        ("1.", doc(r#","x":1."#), false),
        (".5", doc(r#","x":.5"#), false),
        ("1e", doc(r#","x":1e"#), false),
        ("1e999", doc(r#","x":1e999"#), false),
        ("1E+2", doc(r#","x":1E+2"#), true),
        ("-0", doc(r#","x":-0"#), true),
        ("1e-400", doc(r#","x":1e-400"#), true),
        ("30-digit integer", doc(r#","x":123456789012345678901234567890"#), true),
        ("True", doc(r#","x":True"#), false),
        ("true then garbage", doc(r#","x":truex"#), false),
        ("empty key", doc(r#","":1"#), true),
        ("repeated key (bad, good)", r#"{"keys":[{"kty":"oct","k":"!!","k":"a2trazk"}]}"#.into(), false),
        ("repeated key (good, bad)", r#"{"keys":[{"kty":"oct","k":"a2trazk","k":"!!"}]}"#.into(), false),
        ("repeated keys field", format!(r#"{{"keys":[{KEY}],"keys":[{KEY}]}}"#), false),
        ("repeated key in an unrelated object", doc(r#","x":{"a":1,"a":2}"#), false),
        ("repeated unrelated key in a key object", format!(r#"{{"keys":[{{{k},"z":1,"z":2}}]}}"#), false),
        ("the same key object twice", format!(r#"{{"keys":[{KEY},{KEY}]}}"#), true),
        ("text after the document", doc(" x"), false),
        ("two documents", format!("{}{{}}", doc("")), false),
        ("byte-order mark", format!("\u{feff}{}", doc("")), false),
        ("form feed as whitespace", format!("{{\"keys\":\u{c}[{KEY}]}}"), false),
        ("vertical tab as whitespace", format!("{{\"keys\":\u{b}[{KEY}]}}"), false),
        ("CR as whitespace", format!("{{\"keys\":\r[{KEY}]}}"), true),
        ("whitespace around", format!(" \n{} \n\t\r ", doc("")), true),
        ("an array at the top", format!("[{KEY}]"), false),
        ("99 arrays under the top object", doc(&format!(",\"x\":{}", nested("[", "]", 99))), true),
        ("100 arrays under the top object", doc(&format!(",\"x\":{}", nested("[", "]", 100))), false),
        (
            "99 objects under the top object",
            doc(&format!(",\"x\":{}{{}}{}", "{\"a\":".repeat(98), "}".repeat(98))),
            true,
        ),
        (
            "100 objects under the top object",
            doc(&format!(",\"x\":{}{{}}{}", "{\"a\":".repeat(99), "}".repeat(99))),
            false,
        ),
    ]
}

#[test]
fn accepts_and_refuses_what_jwt_authn_does() {
    let mut wrong = Vec::new();
    for (case, text, accepted) in seen_in_envoy() {
        let got = parse_object(text.as_bytes());
        if got.is_ok() != accepted {
            wrong.push(format!("{case}: jwt_authn {}, here {got:?}", if accepted { "accepts" } else { "refuses" }));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn values_are_read_as_written() {
    let m = parse_object(
        br#"{keys:[{'kid':'a\'b"c', "x": "\ud83d \ude00\U0041\n", n: -1.5e2, t: true, f: false, z: null,},],}"#,
    )
    .unwrap();
    let key = &m["keys"][0];
    assert_eq!(key["kid"], "a'b\"c");
    assert_eq!(key["x"], "\u{1f600}A\n");
    assert_eq!(key["n"].as_f64(), Some(-150.0));
    assert_eq!(
        (key["t"].clone(), key["f"].clone(), key["z"].clone()),
        (Value::Bool(true), Value::Bool(false), Value::Null)
    );
}

#[test]
fn bytes_that_pass_protobufs_utf8_check_but_are_not_utf8_become_replacement_characters() {
    // Overlong '/', an encoded surrogate: protobuf only checks lead and continuation bytes.
    let m = parse_object(b"{\"a\":\"\xc0\xaf\",\"b\":\"\xed\xa0\x80\"}").unwrap();
    assert!(m["a"].as_str().unwrap().chars().all(|c| c == '\u{fffd}'));
    assert!(m["b"].as_str().unwrap().chars().all(|c| c == '\u{fffd}'));
    for bad in [
        &b"{\"a\":\"\xff\"}"[..],
        b"{\"a\":\"\x80\"}",
        b"{\"a\":\"\xc3\"}",
        b"{\"a\":\"\xc3x\"}",
        b"{\"a\":\"\xf8\x80\x80\x80\x80\"}",
    ] {
        assert!(parse_object(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn deep_nesting_is_refused_without_recursing_further() {
    for depth in [101, 10_000, 1_000_000] {
        let text = format!("{{\"x\":{}", "[".repeat(depth));
        assert_eq!(parse_object(text.as_bytes()).unwrap_err().reason, "nested too deeply");
    }
}

#[test]
fn truncated_documents_are_refused() {
    let full = r#"{'keys':[{kty:"oct","k":"a2trazk","x":[1.5e3,true,null,"\ud83d\ude00"]},],}"#;
    for end in 0..full.len() {
        assert!(parse_object(&full.as_bytes()[..end]).is_err(), "{}", &full[..end]);
    }
    assert!(parse_object(full.as_bytes()).is_ok());
}
