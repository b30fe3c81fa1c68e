//! jwt-auth's JOSE code: `jose::fuzz_targets::signed_by_fuzzed_keys` (its doc comment states the properties;
//! the same function runs on seeds in jose's unit tests).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| jose::fuzz_targets::signed_by_fuzzed_keys(data));
