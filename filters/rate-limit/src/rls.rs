//! The messages of Envoy's rate-limit service protocol v3
//! (`envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`), as far as global rules use
//! them, with the tags of the `.proto` files (`envoy/service/ratelimit/v3/rls.proto`,
//! `envoy/extensions/common/ratelimit/v3/ratelimit.proto`, `envoy/config/core/v3/base.proto`,
//! `google/protobuf/{duration,wrappers}.proto`), encoded and decoded by hand: the request is
//! written straight from the filter's descriptors, the answer read in place (its strings and
//! bytes borrow from the answer's buffer). Every request pays for both; prost's derived code did
//! the same work with a message built first and every string copied. The decoder accepts and
//! refuses exactly what prost 0.14 does for these messages (unknown fields and groups skipped,
//! prost's nesting limit, a repeated message field merged, the last scalar winning, strings
//! UTF-8), which the differential tests check against prost on every input they generate; it
//! keeps only the first [`MAX_REPEATED`] entries of a repeated field, where prost keeps all.
//! Enums are plain `int32`, so an unknown value decodes instead of failing.

use std::borrow::Cow;
use std::fmt;

pub const SERVICE: &str = "envoy.service.ratelimit.v3.RateLimitService";
pub const METHOD: &str = "ShouldRateLimit";

/// `RateLimitResponse.Code`.
pub const CODE_UNKNOWN: i32 = 0;
pub const CODE_OK: i32 = 1;
pub const CODE_OVER_LIMIT: i32 = 2;

/// `RateLimitResponse`: the fields global rules read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RateLimitResponse<'a> {
    pub overall_code: i32,
    pub statuses: Vec<DescriptorStatus<'a>>,
    pub response_headers_to_add: Vec<HeaderValue<'a>>,
    pub request_headers_to_add: Vec<HeaderValue<'a>>,
    pub raw_body: &'a [u8],
}

/// `RateLimitResponse.DescriptorStatus`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DescriptorStatus<'a> {
    pub code: i32,
    pub current_limit: Option<RateLimit<'a>>,
    pub limit_remaining: u32,
    pub duration_until_reset: Option<ProtoDuration>,
}

/// `RateLimitResponse.RateLimit`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RateLimit<'a> {
    pub name: &'a str,
    pub requests_per_unit: u32,
    pub unit: i32,
}

/// `envoy.config.core.v3.HeaderValue`: `raw_value` wins over `value` when set (Envoy).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderValue<'a> {
    pub key: &'a str,
    pub value: &'a str,
    pub raw_value: &'a [u8],
}

impl HeaderValue<'_> {
    pub fn value_bytes(&self) -> &[u8] {
        if self.raw_value.is_empty() {
            self.value.as_bytes()
        } else {
            self.raw_value
        }
    }
}

/// `google.protobuf.Duration`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProtoDuration {
    pub seconds: i64,
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

/// Why an answer is not a `RateLimitResponse` (prost's wording where it has one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    InvalidVarint,
    InvalidKey,
    InvalidWireType,
    InvalidTag,
    WireTypeMismatch,
    BufferUnderflow,
    InvalidString,
    UnexpectedEndGroupTag,
    RecursionLimitReached,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DecodeError::InvalidVarint => "invalid varint",
            DecodeError::InvalidKey => "invalid key value",
            DecodeError::InvalidWireType => "invalid wire type value",
            DecodeError::InvalidTag => "invalid tag value: 0",
            DecodeError::WireTypeMismatch => "invalid wire type",
            DecodeError::BufferUnderflow => "buffer underflow",
            DecodeError::InvalidString => "invalid string value: data is not UTF-8 encoded",
            DecodeError::UnexpectedEndGroupTag => "unexpected end group tag",
            DecodeError::RecursionLimitReached => "recursion limit reached",
        })
    }
}

/// prost's nesting limit (`RECURSION_LIMIT`): the budget of the top-level message's fields; each
/// nested message or group takes one.
const RECURSION_LIMIT: u32 = 100;

/// Wire types.
const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const START_GROUP: u8 = 3;
const END_GROUP: u8 = 4;
const FIXED32: u8 = 5;

/// A cursor over one message's bytes (a nested message gets a reader over its own bytes).
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn has_more(&self) -> bool {
        !self.bytes.is_empty()
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8], DecodeError> {
        let n = usize::try_from(n).map_err(|_| DecodeError::BufferUnderflow)?;
        if n > self.bytes.len() {
            return Err(DecodeError::BufferUnderflow);
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    /// At most 10 bytes, the 10th at most 1 (no overflow of 64 bits), as prost.
    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut value = 0u64;
        for (i, &b) in self.bytes.iter().take(10).enumerate() {
            value |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                if i == 9 && b >= 2 {
                    return Err(DecodeError::InvalidVarint);
                }
                self.bytes = self.bytes.get(i + 1..).unwrap_or_default();
                return Ok(value);
            }
        }
        Err(DecodeError::InvalidVarint)
    }

    /// `(tag, wire type)`.
    fn key(&mut self) -> Result<(u32, u8), DecodeError> {
        let key = u32::try_from(self.varint()?).map_err(|_| DecodeError::InvalidKey)?;
        let wire_type = (key & 7) as u8;
        if wire_type > FIXED32 {
            return Err(DecodeError::InvalidWireType);
        }
        match key >> 3 {
            0 => Err(DecodeError::InvalidTag),
            tag => Ok((tag, wire_type)),
        }
    }

    fn scalar(&mut self, wire_type: u8) -> Result<u64, DecodeError> {
        if wire_type != VARINT {
            return Err(DecodeError::WireTypeMismatch);
        }
        self.varint()
    }

    fn bytes(&mut self, wire_type: u8) -> Result<&'a [u8], DecodeError> {
        if wire_type != LEN {
            return Err(DecodeError::WireTypeMismatch);
        }
        let len = self.varint()?;
        self.take(len)
    }

    fn text(&mut self, wire_type: u8) -> Result<&'a str, DecodeError> {
        std::str::from_utf8(self.bytes(wire_type)?).map_err(|_| DecodeError::InvalidString)
    }

    /// A nested message field: a reader over its bytes. `budget` is the field's own (prost's
    /// `limit_reached` before it enters the message).
    fn message(&mut self, wire_type: u8, budget: u32) -> Result<Reader<'a>, DecodeError> {
        if wire_type != LEN {
            return Err(DecodeError::WireTypeMismatch);
        }
        if budget == 0 {
            return Err(DecodeError::RecursionLimitReached);
        }
        let len = self.varint()?;
        Ok(Reader { bytes: self.take(len)? })
    }

    /// Skip an unknown field as prost's `skip_field` does, groups included, with a loop and a
    /// depth count instead of prost's recursion: each nested group takes one from `budget`.
    fn skip(&mut self, wire_type: u8, tag: u32, budget: u32) -> Result<(), DecodeError> {
        let mut groups: Vec<u32> = Vec::new();
        let (mut wire_type, mut tag) = (wire_type, tag);
        loop {
            let depth = u32::try_from(groups.len()).unwrap_or(u32::MAX);
            if budget <= depth {
                return Err(DecodeError::RecursionLimitReached);
            }
            match wire_type {
                VARINT => {
                    self.varint()?;
                }
                FIXED64 => {
                    self.take(8)?;
                }
                FIXED32 => {
                    self.take(4)?;
                }
                LEN => {
                    let len = self.varint()?;
                    self.take(len)?;
                }
                START_GROUP => groups.push(tag),
                _ => return Err(DecodeError::UnexpectedEndGroupTag),
            }
            // The next field of the innermost open group, closing the groups that end here.
            loop {
                let Some(&open) = groups.last() else { return Ok(()) };
                let (inner_tag, inner_wire_type) = self.key()?;
                if inner_wire_type != END_GROUP {
                    (wire_type, tag) = (inner_wire_type, inner_tag);
                    break;
                }
                if inner_tag != open {
                    return Err(DecodeError::UnexpectedEndGroupTag);
                }
                groups.pop();
            }
        }
    }
}

/// Of each repeated field of an answer (`statuses`, `response_headers_to_add`,
/// `request_headers_to_add`) the first this many entries are kept; the rest are read (an error
/// in them is still an error, as in prost) but not stored. A status takes 2 bytes on the wire
/// and about 60 in memory: without a bound, an answer of a few MB (Envoy's gRPC client sets no
/// size limit) would grow the VM's memory thirtyfold, up to a trap. More than the filter can
/// use: a call has at most `config::MAX_RULES` (64) descriptors, so a kept list this long is
/// never one status per descriptor (the statuses are then ignored, as without the bound).
pub const MAX_REPEATED: usize = 128;
const _: () = assert!(MAX_REPEATED > crate::config::MAX_RULES);

/// A service answer, or why it is not one. Never panics, whatever the bytes; allocates only
/// for the repeated fields present (one status per descriptor), at most [`MAX_REPEATED`] each.
pub fn decode_response(bytes: &[u8]) -> Result<RateLimitResponse<'_>, DecodeError> {
    let mut r = Reader { bytes };
    let mut out = RateLimitResponse::default();
    let budget = RECURSION_LIMIT;
    while r.has_more() {
        let (tag, wt) = r.key()?;
        match tag {
            1 => out.overall_code = r.scalar(wt)? as i32,
            2 => {
                let mut m = r.message(wt, budget)?;
                let mut status = DescriptorStatus::default();
                merge_status(&mut m, &mut status, budget - 1)?;
                if out.statuses.len() < MAX_REPEATED {
                    out.statuses.push(status);
                }
            }
            3 | 4 => {
                let mut m = r.message(wt, budget)?;
                let mut header = HeaderValue::default();
                merge_header(&mut m, &mut header, budget - 1)?;
                let list = if tag == 3 { &mut out.response_headers_to_add } else { &mut out.request_headers_to_add };
                if list.len() < MAX_REPEATED {
                    list.push(header);
                }
            }
            5 => out.raw_body = r.bytes(wt)?,
            _ => r.skip(wt, tag, budget)?,
        }
    }
    Ok(out)
}

fn merge_status<'a>(r: &mut Reader<'a>, s: &mut DescriptorStatus<'a>, budget: u32) -> Result<(), DecodeError> {
    while r.has_more() {
        let (tag, wt) = r.key()?;
        match tag {
            1 => s.code = r.scalar(wt)? as i32,
            2 => {
                let mut m = r.message(wt, budget)?;
                // A message field seen twice merges (protobuf; prost).
                let limit = s.current_limit.get_or_insert_with(RateLimit::default);
                while m.has_more() {
                    let (tag, wt) = m.key()?;
                    match tag {
                        1 => limit.requests_per_unit = m.scalar(wt)? as u32,
                        2 => limit.unit = m.scalar(wt)? as i32,
                        3 => limit.name = m.text(wt)?,
                        _ => m.skip(wt, tag, budget - 1)?,
                    }
                }
            }
            3 => s.limit_remaining = r.scalar(wt)? as u32,
            4 => {
                let mut m = r.message(wt, budget)?;
                let d = s.duration_until_reset.get_or_insert_with(ProtoDuration::default);
                while m.has_more() {
                    let (tag, wt) = m.key()?;
                    match tag {
                        1 => d.seconds = m.scalar(wt)? as i64,
                        2 => d.nanos = m.scalar(wt)? as i32,
                        _ => m.skip(wt, tag, budget - 1)?,
                    }
                }
            }
            _ => r.skip(wt, tag, budget)?,
        }
    }
    Ok(())
}

fn merge_header<'a>(r: &mut Reader<'a>, h: &mut HeaderValue<'a>, budget: u32) -> Result<(), DecodeError> {
    while r.has_more() {
        let (tag, wt) = r.key()?;
        match tag {
            1 => h.key = r.text(wt)?,
            2 => h.value = r.text(wt)?,
            3 => h.raw_value = r.bytes(wt)?,
            _ => r.skip(wt, tag, budget)?,
        }
    }
    Ok(())
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

/// One descriptor of a `ShouldRateLimit` call: its entries `(key, value)` and its own
/// `hits_addend` (`None`: the request's counts).
pub type DescriptorRef<'a> = (&'a [(Cow<'a, [u8]>, Cow<'a, [u8]>)], Option<u64>);

/// A `RateLimitRequest` in protobuf wire format, written straight from the filter's descriptors:
/// exactly the bytes prost writes for a `RateLimitRequest` with these fields (unit test
/// `the_encoder_writes_what_prost_writes`, fuzz target `rate_limit_rls_codec`), without building
/// that message first (its `String`s and `Vec`s were most of the call's allocations). protobuf
/// strings are UTF-8:
/// other bytes become U+FFFD, which can only merge keys (stricter), never split one.
/// `hits_addend` 0 is left out (the service reads 1). Every tag here is below 16: one byte.
pub fn encode_request<'a, I>(domain: &str, descriptors: I, hits_addend: u32) -> Vec<u8>
where
    I: Iterator<Item = DescriptorRef<'a>>,
{
    // Enough for the usual call (a few short entries) without growing.
    let mut out = Vec::with_capacity(domain.len() + 128);
    push_text_field(&mut out, 0x0a, domain.as_bytes());
    for d in descriptors {
        out.push(0x12);
        push_varint(&mut out, descriptor_len(d) as u64);
        let (entries, hits) = d;
        for (key, value) in entries {
            out.push(0x0a);
            push_varint(&mut out, entry_len(key, value) as u64);
            push_text_field(&mut out, 0x0a, key);
            push_text_field(&mut out, 0x12, value);
        }
        if let Some(h) = hits {
            out.push(0x1a);
            push_varint(&mut out, uint64_value_len(h) as u64);
            if h != 0 {
                out.push(0x08);
                push_varint(&mut out, h);
            }
        }
    }
    if hits_addend != 0 {
        out.push(0x18);
        push_varint(&mut out, u64::from(hits_addend));
    }
    out
}

/// The protobuf string for these bytes: themselves when UTF-8 (the usual case, checked without
/// copying), else with U+FFFD for each invalid sequence.
fn text(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

fn varint_len(n: u64) -> usize {
    // 1 byte per started 7 bits, at least 1.
    (64 - (n | 1).leading_zeros() as usize).div_ceil(7)
}

fn push_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// A length-delimited field of `len` bytes: tag, length, bytes.
fn message_field_len(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

/// A string field as written (proto3: left out when empty).
fn text_field_len(bytes: &[u8]) -> usize {
    match text(bytes).len() {
        0 => 0,
        len => message_field_len(len),
    }
}

fn push_text_field(out: &mut Vec<u8>, tag: u8, bytes: &[u8]) {
    let text = text(bytes);
    if !text.is_empty() {
        out.push(tag);
        push_varint(out, text.len() as u64);
        out.extend_from_slice(text.as_bytes());
    }
}

fn entry_len(key: &[u8], value: &[u8]) -> usize {
    text_field_len(key) + text_field_len(value)
}

/// `google.protobuf.UInt64Value { value }`.
fn uint64_value_len(value: u64) -> usize {
    if value == 0 {
        0
    } else {
        1 + varint_len(value)
    }
}

fn descriptor_len((entries, hits): DescriptorRef<'_>) -> usize {
    let mut len = 0usize;
    for (key, value) in entries {
        len = len.saturating_add(message_field_len(entry_len(key, value)));
    }
    if let Some(h) = hits {
        len = len.saturating_add(message_field_len(uint64_value_len(h)));
    }
    len
}

/// The same messages as prost structs (tags from the `.proto` files), for the tests: they
/// build the answers the filter decodes and read the requests it writes, and check the
/// hand-written codec against prost byte for byte (the differential tests below).
#[cfg(any(test, feature = "proto"))]
pub mod proto {
    use prost::Message;

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

    /// Our decoded answer as prost's message, to compare the two decoders (unit tests and the
    /// `rate_limit_rls_codec` fuzz target).
    pub fn from_answer(r: &super::RateLimitResponse<'_>) -> RateLimitResponse {
        let header = |h: &super::HeaderValue<'_>| HeaderValue {
            key: h.key.into(),
            value: h.value.into(),
            raw_value: h.raw_value.to_vec(),
        };
        RateLimitResponse {
            overall_code: r.overall_code,
            statuses: r
                .statuses
                .iter()
                .map(|s| DescriptorStatus {
                    code: s.code,
                    current_limit: s.current_limit.as_ref().map(|l| RateLimit {
                        name: l.name.into(),
                        requests_per_unit: l.requests_per_unit,
                        unit: l.unit,
                    }),
                    limit_remaining: s.limit_remaining,
                    duration_until_reset: s
                        .duration_until_reset
                        .map(|d| ProtoDuration { seconds: d.seconds, nanos: d.nanos }),
                })
                .collect(),
            response_headers_to_add: r.response_headers_to_add.iter().map(header).collect(),
            request_headers_to_add: r.request_headers_to_add.iter().map(header).collect(),
            raw_body: r.raw_body.to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::proto::{self, Entry, RateLimitDescriptor, RateLimitRequest, UInt64Value};
    use super::*;
    use prost::Message;

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
        assert_eq!(r.encode_to_vec(), want, "the prost struct's tags");
        let entries = [(Cow::Borrowed(&b"k"[..]), Cow::Borrowed(&b"v"[..]))];
        assert_eq!(encode_request("d", [(&entries[..], Some(3))].into_iter(), 2), want);
    }

    /// The hand-written encoder against prost on the message it replaces: empty and non-UTF-8
    /// fields, 0 and large addends, long (multi-byte length) values, several descriptors.
    #[test]
    fn the_encoder_writes_what_prost_writes() {
        let long = vec![b'x'; 200];
        let owned = |k: &[u8], v: &[u8]| (Cow::Owned(k.to_vec()), Cow::Owned(v.to_vec()));
        let entry_sets: Vec<Vec<crate::filter::Entry<'_>>> = vec![
            vec![],
            vec![owned(b"generic_key", b"bench")],
            vec![owned(b"", b""), owned(b"k", b"\xff\xfeok")],
            vec![owned(b"user", &long), owned(&long, b"\xc3")],
        ];
        for domain in ["", "edge", &"d".repeat(300)] {
            for hits_addend in [0u32, 1, 2, 300, u32::MAX] {
                for per in [None, Some(0u64), Some(1), Some(1 << 40), Some(u64::MAX)] {
                    for n in 0..=entry_sets.len() {
                        let set = &entry_sets[..n];
                        let ours = encode_request(domain, set.iter().map(|e| (e.as_slice(), per)), hits_addend);
                        let theirs = RateLimitRequest {
                            domain: domain.to_string(),
                            hits_addend,
                            descriptors: set
                                .iter()
                                .map(|e| RateLimitDescriptor {
                                    entries: e
                                        .iter()
                                        .map(|(k, v)| Entry {
                                            key: String::from_utf8_lossy(k).into_owned(),
                                            value: String::from_utf8_lossy(v).into_owned(),
                                        })
                                        .collect(),
                                    hits_addend: per.map(|value| UInt64Value { value }),
                                })
                                .collect(),
                        }
                        .encode_to_vec();
                        assert_eq!(ours, theirs, "{domain:?} {hits_addend} {per:?} {n}");
                    }
                }
            }
        }
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
        assert_eq!((limit.requests_per_unit, unit_seconds(limit.unit), limit.name), (10, 60, "n"));
        let reset = s.duration_until_reset.as_ref().unwrap();
        assert_eq!((reset.whole_seconds(), reset.ceil_seconds()), (42, 43));
        assert_eq!((r.response_headers_to_add[0].key, r.response_headers_to_add[0].value_bytes()), ("h", &b"v"[..]));
        assert_eq!(r.request_headers_to_add[0].value_bytes(), b"r");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bytes in [&[0xff][..], &[0x12, 50, 1], &[0x1a, 3, 0x0a, 1, 0xff], &[0x0f]] {
            assert!(decode_response(bytes).is_err(), "{bytes:?}");
        }
        assert_eq!(decode_response(&[]).unwrap().overall_code, CODE_UNKNOWN);
    }

    /// Both decoders on `bytes`: the same answer or both an error.
    fn same_as_prost(bytes: &[u8]) {
        let ours = decode_response(bytes);
        let theirs = proto::RateLimitResponse::decode(bytes);
        match (&ours, &theirs) {
            (Ok(o), Ok(t)) => {
                let mut t = t.clone();
                t.statuses.truncate(MAX_REPEATED);
                t.response_headers_to_add.truncate(MAX_REPEATED);
                t.request_headers_to_add.truncate(MAX_REPEATED);
                assert_eq!(proto::from_answer(o), t, "{bytes:02x?}")
            }
            (Err(_), Err(_)) => {}
            _ => panic!("ours {ours:?}, prost {theirs:?}, on {bytes:02x?}"),
        }
    }

    /// xorshift64: deterministic inputs, no dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n.max(1)
        }
    }

    fn random_answer(rng: &mut Rng) -> Vec<u8> {
        let text = |rng: &mut Rng| ["", "n", "per-user", "\u{e9}t\u{e9}", "x\r\ny"][rng.below(5) as usize].to_string();
        let header = |rng: &mut Rng| proto::HeaderValue {
            key: text(rng),
            value: text(rng),
            raw_value: if rng.below(2) == 0 { vec![] } else { vec![0xff, 0, b'a'] },
        };
        let big = |rng: &mut Rng| match rng.below(4) {
            0 => 0,
            1 => rng.below(300),
            2 => u64::MAX - rng.below(3),
            _ => rng.next(),
        };
        proto::RateLimitResponse {
            overall_code: big(rng) as i32,
            statuses: (0..rng.below(4))
                .map(|_| proto::DescriptorStatus {
                    code: big(rng) as i32,
                    current_limit: (rng.below(3) != 0).then(|| proto::RateLimit {
                        name: text(rng),
                        requests_per_unit: big(rng) as u32,
                        unit: big(rng) as i32,
                    }),
                    limit_remaining: big(rng) as u32,
                    duration_until_reset: (rng.below(3) != 0)
                        .then(|| proto::ProtoDuration { seconds: big(rng) as i64, nanos: big(rng) as i32 }),
                })
                .collect(),
            response_headers_to_add: (0..rng.below(3)).map(|_| header(rng)).collect(),
            request_headers_to_add: (0..rng.below(3)).map(|_| header(rng)).collect(),
            raw_body: if rng.below(2) == 0 { vec![] } else { b"slow down".to_vec() },
        }
        .encode_to_vec()
    }

    /// Pieces that exercise what prost treats specially: unknown fields of every wire type,
    /// groups (nested, mismatched, unterminated), over-long varints, a field repeated.
    const PIECES: &[&[u8]] = &[
        &[0x30, 0x05],                                                       // field 6 varint (unknown)
        &[0x39, 1, 2, 3, 4, 5, 6, 7, 8],                                     // field 7 fixed64
        &[0x45, 1, 2, 3, 4],                                                 // field 8 fixed32
        &[0x32, 0x02, 0x0a, 0x00],                                           // field 6 length-delimited
        &[0x3b, 0x08, 0x01, 0x3c],                                           // field 7 group { 1: 1 }
        &[0x3b, 0x3b, 0x3c, 0x3c],                                           // nested groups
        &[0x3b, 0x44],                                                       // group closed by another tag
        &[0x3c],                                                             // end group alone
        &[0x3b],                                                             // unterminated group
        &[0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01], // 10-byte varint
        &[0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02], // overflow
        &[0x08, 0x80, 0x80],                                                 // truncated varint
        &[0x00],                                                             // tag 0
        &[0x0e],                                                             // wire type 6
        &[0x80, 0x80, 0x80, 0x80, 0x10],                                     // key beyond u32
        &[0x12, 0x04, 0x12, 0x02, 0x08, 0x05],                               // statuses[] { current_limit { 1: 5 } }
        &[0x12, 0x04, 0x22, 0x02, 0x10, 0x07],                               // statuses[] { duration { nanos: 7 } }
        &[0x12, 0x03, 0x1a, 0x01, 0xff],                                     // a status whose field runs past it
        &[0x1a, 0x03, 0x0a, 0x01, 0xc3],                                     // header key not UTF-8
        &[0x2a, 0x00],                                                       // raw_body empty
        &[0x0a, 0x00],                                                       // overall_code as bytes: wrong wire type
    ];

    #[test]
    fn the_decoder_agrees_with_prost() {
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        for piece in PIECES {
            same_as_prost(piece);
        }
        for _ in 0..20_000 {
            let mut bytes = random_answer(&mut rng);
            // Splice in special pieces, flip, cut and insert bytes.
            for _ in 0..rng.below(4) {
                let at = rng.below(bytes.len() as u64 + 1) as usize;
                match rng.below(4) {
                    0 => {
                        let piece = PIECES[rng.below(PIECES.len() as u64) as usize];
                        bytes.splice(at..at, piece.iter().copied());
                    }
                    1 if at < bytes.len() => bytes[at] ^= 1 << rng.below(8),
                    2 => bytes.truncate(at),
                    _ => bytes.insert(at, rng.next() as u8),
                }
            }
            same_as_prost(&bytes);
        }
    }

    /// A service answer of 2-byte statuses and 5-byte headers: with no bound on what is kept, a
    /// few MB of them grew the VM's memory thirtyfold. The first `MAX_REPEATED` are kept, the
    /// rest still read (an error in one is an error, as prost).
    #[test]
    fn the_entries_kept_of_a_repeated_field_are_bounded() {
        let n = 10 * MAX_REPEATED;
        let mut bytes = vec![0x08, 2];
        for _ in 0..n {
            bytes.extend([0x12, 0x00, 0x1a, 0x03, 0x0a, 0x01, b'a', 0x22, 0x03, 0x0a, 0x01, b'b']);
        }
        let theirs = proto::RateLimitResponse::decode(bytes.as_slice()).unwrap();
        assert_eq!(theirs.statuses.len(), n, "prost keeps every one");
        let r = decode_response(&bytes).unwrap();
        assert_eq!(r.overall_code, CODE_OVER_LIMIT);
        assert_eq!(
            (r.statuses.len(), r.response_headers_to_add.len(), r.request_headers_to_add.len()),
            (MAX_REPEATED, MAX_REPEATED, MAX_REPEATED)
        );
        same_as_prost(&bytes);
        // An error past the bound is still an error.
        bytes.extend([0x12, 0x03, 0x1a, 0x01, 0xff]);
        assert!(decode_response(&bytes).is_err());
        same_as_prost(&bytes);
    }

    /// prost's nesting limit, at its edge: 100 nested groups in an unknown field decode, 101
    /// do not, and a status takes one level.
    #[test]
    fn the_nesting_limit_is_prosts() {
        let nested = |n: usize| {
            let mut b = vec![0x3b; n];
            b.extend(std::iter::repeat_n(0x3c, n));
            b
        };
        for n in [98, 99, 100, 101, 102] {
            same_as_prost(&nested(n));
            let mut in_status = nested(n);
            let len = in_status.len();
            let mut framed = vec![0x12];
            let mut l = len;
            while l >= 0x80 {
                framed.push((l as u8) | 0x80);
                l >>= 7;
            }
            framed.push(l as u8);
            framed.append(&mut in_status);
            same_as_prost(&framed);
        }
        assert!(decode_response(&nested(100)).is_ok());
        assert!(decode_response(&nested(101)).is_err());
    }
}
