//! body-logger's plugin configuration, JSON → serde → compile. Properties: [`filters_fuzz::check_config`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    filters_fuzz::check_config(data, body_logger::config::Config::compile);
});
