//! The messages of Envoy's rate-limit service protocol v3
//! (`envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`), as far as global rules use
//! them, written as prost structs with the tags of the `.proto` files
//! (`envoy/service/ratelimit/v3/rls.proto`, `envoy/extensions/common/ratelimit/v3/ratelimit.proto`,
//! `envoy/config/core/v3/base.proto`, `google/protobuf/{duration,wrappers}.proto`). Fields we do
//! not read are left out: prost skips unknown fields, as protobuf requires. Enums are plain
//! `int32` (same wire format), so an unknown value decodes instead of failing.

use prost::Message;

pub const SERVICE: &str = "envoy.service.ratelimit.v3.RateLimitService";
pub const METHOD: &str = "ShouldRateLimit";

/// `RateLimitResponse.Code`.
pub const CODE_UNKNOWN: i32 = 0;
pub const CODE_OK: i32 = 1;
pub const CODE_OVER_LIMIT: i32 = 2;

#[derive(Clone, PartialEq, Message)]
pub struct RateLimitRequest {
    #[prost(string, tag = "1")]
    pub domain: String,
    #[prost(message, repeated, tag = "2")]
    pub descriptors: Vec<RateLimitDescriptor>,
    /// 0 means 1.
    #[prost(uint32, tag = "3")]
    pub hits_addend: u32,
}

#[derive(Clone, PartialEq, Message)]
pub struct RateLimitDescriptor {
    #[prost(message, repeated, tag = "1")]
    pub entries: Vec<Entry>,
    #[prost(message, optional, tag = "3")]
    pub hits_addend: Option<UInt64Value>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Entry {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct UInt64Value {
    #[prost(uint64, tag = "1")]
    pub value: u64,
}

#[derive(Clone, PartialEq, Message)]
pub struct RateLimitResponse {
    #[prost(int32, tag = "1")]
    pub overall_code: i32,
    #[prost(message, repeated, tag = "2")]
    pub statuses: Vec<DescriptorStatus>,
    #[prost(message, repeated, tag = "3")]
    pub response_headers_to_add: Vec<HeaderValue>,
    #[prost(message, repeated, tag = "4")]
    pub request_headers_to_add: Vec<HeaderValue>,
    #[prost(bytes = "vec", tag = "5")]
    pub raw_body: Vec<u8>,
}

#[derive(Clone, PartialEq, Message)]
pub struct DescriptorStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(message, optional, tag = "2")]
    pub current_limit: Option<RateLimit>,
    #[prost(uint32, tag = "3")]
    pub limit_remaining: u32,
    #[prost(message, optional, tag = "4")]
    pub duration_until_reset: Option<ProtoDuration>,
}

#[derive(Clone, PartialEq, Message)]
pub struct RateLimit {
    #[prost(string, tag = "3")]
    pub name: String,
    #[prost(uint32, tag = "1")]
    pub requests_per_unit: u32,
    #[prost(int32, tag = "2")]
    pub unit: i32,
}

/// `envoy.config.core.v3.HeaderValue`: `raw_value` wins over `value` when set (Envoy).
#[derive(Clone, PartialEq, Message)]
pub struct HeaderValue {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub value: String,
    #[prost(bytes = "vec", tag = "3")]
    pub raw_value: Vec<u8>,
}

impl HeaderValue {
    pub fn value_bytes(&self) -> &[u8] {
        if self.raw_value.is_empty() {
            self.value.as_bytes()
        } else {
            &self.raw_value
        }
    }
}

#[derive(Clone, PartialEq, Message)]
pub struct ProtoDuration {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

impl ProtoDuration {
    /// Whole seconds as Envoy's ratelimit filter reports them (`duration_until_reset().seconds()`),
    /// negatives as 0.
    pub fn whole_seconds(&self) -> u64 {
        u64::try_from(self.seconds).unwrap_or(0)
    }

    /// Seconds rounded up (for `Retry-After` and the IETF `t`: never a shorter wait than the
    /// service's).
    pub fn ceil_seconds(&self) -> u64 {
        self.whole_seconds().saturating_add(u64::from(self.nanos > 0))
    }
}

/// Seconds of a `RateLimit.Unit`, as Envoy's `XRateLimitHeaderUtils::convertRateLimitUnit`
/// (0: unknown, and Envoy then leaves the unit out of `x-ratelimit-limit`).
pub fn unit_seconds(unit: i32) -> u64 {
    match unit {
        1 => 1,
        2 => 60,
        3 => 3600,
        4 => 86_400,
        _ => 0,
    }
}

/// A service answer, or why it is not one. Never panics, whatever the bytes.
pub fn decode_response(bytes: &[u8]) -> Result<RateLimitResponse, prost::DecodeError> {
    RateLimitResponse::decode(bytes)
}

pub fn encode_request(request: &RateLimitRequest) -> Vec<u8> {
    request.encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes written by hand from the .proto tags: the struct tags must produce exactly these.
    #[test]
    fn request_wire_format_matches_the_proto() {
        let r = RateLimitRequest {
            domain: "d".into(),
            descriptors: vec![RateLimitDescriptor {
                entries: vec![Entry { key: "k".into(), value: "v".into() }],
                hits_addend: Some(UInt64Value { value: 3 }),
            }],
            hits_addend: 2,
        };
        let want: &[u8] = &[
            0x0a, 1, b'd', // domain
            0x12, 12, // descriptors[0]
            0x0a, 6, 0x0a, 1, b'k', 0x12, 1, b'v', // entries[0] {key, value}
            0x1a, 2, 0x08, 3, // hits_addend {value: 3}
            0x18, 2, // hits_addend
        ];
        assert_eq!(encode_request(&r), want);
    }

    #[test]
    fn response_decodes_every_field_we_read_and_skips_the_rest() {
        let bytes: &[u8] = &[
            0x08, 2, // overall_code OVER_LIMIT
            0x12, 19, // statuses[0]
            0x08, 2, // code
            0x12, 7, 0x08, 10, 0x10, 2, 0x1a, 1, b'n', // current_limit {10, MINUTE, "n"}
            0x18, 0, // limit_remaining 0 (explicit zero)
            0x22, 4, 0x08, 42, 0x10, 1, // duration_until_reset {42 s, 1 ns}
            0x1a, 6, 0x0a, 1, b'h', 0x12, 1, b'v', // response_headers_to_add[0]
            0x22, 6, 0x0a, 1, b'q', 0x1a, 1, b'r', // request_headers_to_add[0] raw_value
            0x32, 2, 0x0a, 0, // dynamic_metadata (field 6): unknown, skipped
        ];
        let r = decode_response(bytes).unwrap();
        assert_eq!(r.overall_code, CODE_OVER_LIMIT);
        let s = &r.statuses[0];
        assert_eq!(s.code, CODE_OVER_LIMIT);
        let limit = s.current_limit.as_ref().unwrap();
        assert_eq!((limit.requests_per_unit, unit_seconds(limit.unit), limit.name.as_str()), (10, 60, "n"));
        let reset = s.duration_until_reset.as_ref().unwrap();
        assert_eq!((reset.whole_seconds(), reset.ceil_seconds()), (42, 43));
        assert_eq!(
            (r.response_headers_to_add[0].key.as_str(), r.response_headers_to_add[0].value_bytes()),
            ("h", &b"v"[..])
        );
        assert_eq!(r.request_headers_to_add[0].value_bytes(), b"r");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bytes in [&[0xff][..], &[0x12, 50, 1], &[0x1a, 3, 0x0a, 1, 0xff], &[0x0f]] {
            assert!(decode_response(bytes).is_err(), "{bytes:?}");
        }
        assert_eq!(decode_response(&[]).unwrap().overall_code, CODE_UNKNOWN);
    }
}
