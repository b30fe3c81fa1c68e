//! rate-limit's plugin configuration, JSON → serde → compile. Properties: [`filters_fuzz::check_config`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    filters_fuzz::check_config(data, rate_limit::config::Config::compile);
});
