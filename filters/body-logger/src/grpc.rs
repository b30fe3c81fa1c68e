//! gRPC's length-prefixed framing, summarised without keeping the body.
//!
//! A gRPC body (HTTP/2, `application/grpc`) is a sequence of messages, each a 5-byte prefix —
//! a flag byte (`0` plain, `1` compressed with the stream's `grpc-encoding`) and a big-endian
//! `u32` length — then that many bytes of (protobuf) message. The messages are binary: the
//! text redaction scanners cannot see secrets in them, so they are never logged. What is
//! logged is the framing: how many messages, their bytes, how many compressed, the largest
//! length a prefix declared, and whether the stream ended inside a message.
//!
//! Bounded: the state is a few integers and the prefix bytes; a body chunk is read in windows
//! of at most [`WINDOW`] bytes (only where a prefix may start: a message's bytes are skipped
//! unread), and nothing is kept across chunks but the state. A prefix may be split across
//! chunks; a length of up to 4 GiB is only counted down, never allocated.

use serde::Serialize;
use shared::host::BodyKind as Buffer;
use shared::Host;

/// The most bytes read from the host at once.
pub const WINDOW: usize = 4096;

const PREFIX: usize = 5;

/// One direction's framing so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Frames {
    /// Complete messages.
    messages: u64,
    /// Their bytes (prefixes not included).
    message_bytes: u64,
    /// Complete messages with the compressed flag.
    compressed: u64,
    /// The largest length a prefix declared (also of a message that did not complete).
    max_message_bytes: u32,
    /// The prefix being read, and how many of its bytes have come.
    prefix: [u8; PREFIX],
    prefix_len: usize,
    /// Bytes of the current message still to come (after a complete prefix).
    remaining: u64,
    /// A flag byte other than 0 or 1: not gRPC framing; counting stopped there.
    invalid: bool,
}

/// The summary in the log line (`"grpc"` of a direction).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub messages: u64,
    pub message_bytes: u64,
    pub compressed: u64,
    pub max_message_bytes: u32,
    /// The body ended inside a prefix or a message (the stream was cut, or not yet done).
    pub partial: bool,
    /// A prefix had a flag byte other than 0 or 1: the rest of the body was not counted.
    pub invalid: bool,
}

impl Frames {
    /// Count the current body chunk of `size` bytes.
    pub fn chunk(&mut self, host: &dyn Host, buffer: Buffer, size: usize) {
        let mut pos = 0usize;
        while pos < size && !self.invalid {
            if self.remaining > 0 {
                // Inside a message: skip its bytes without reading them.
                let skip = self.remaining.min((size - pos) as u64);
                self.remaining -= skip;
                pos += skip as usize;
                if self.remaining == 0 {
                    self.message_done();
                }
                continue;
            }
            let want = (size - pos).min(WINDOW);
            let Some(bytes) = host.body(buffer, pos, want) else { return };
            let n = bytes.len().min(want);
            if n == 0 {
                return;
            }
            self.parse(bytes.get(..n).unwrap_or_default());
            pos += n;
        }
    }

    /// Parse `bytes`, which follow what was parsed before.
    pub fn parse(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() && !self.invalid {
            if self.remaining > 0 {
                let skip = usize::try_from(self.remaining).unwrap_or(usize::MAX).min(bytes.len());
                self.remaining -= skip as u64;
                bytes = bytes.get(skip..).unwrap_or_default();
                if self.remaining == 0 {
                    self.message_done();
                }
                continue;
            }
            let take = (PREFIX - self.prefix_len).min(bytes.len());
            let (head, rest) = bytes.split_at(take);
            if let Some(slot) = self.prefix.get_mut(self.prefix_len..self.prefix_len + take) {
                slot.copy_from_slice(head);
            }
            self.prefix_len += take;
            bytes = rest;
            if self.prefix_len < PREFIX {
                return;
            }
            let [flag, a, b, c, d] = self.prefix;
            if flag > 1 {
                self.invalid = true;
                return;
            }
            let length = u32::from_be_bytes([a, b, c, d]);
            self.max_message_bytes = self.max_message_bytes.max(length);
            self.remaining = u64::from(length);
            if length == 0 {
                self.message_done();
            }
        }
    }

    /// The current message is complete.
    fn message_done(&mut self) {
        let [flag, a, b, c, d] = self.prefix;
        self.messages = self.messages.saturating_add(1);
        self.message_bytes = self.message_bytes.saturating_add(u64::from(u32::from_be_bytes([a, b, c, d])));
        self.compressed = self.compressed.saturating_add(u64::from(flag == 1));
        self.prefix_len = 0;
    }

    pub fn summary(&self) -> Summary {
        Summary {
            messages: self.messages,
            message_bytes: self.message_bytes,
            compressed: self.compressed,
            max_message_bytes: self.max_message_bytes,
            partial: !self.invalid && (self.prefix_len > 0 || self.remaining > 0),
            invalid: self.invalid,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn frame(flag: u8, message: &[u8]) -> Vec<u8> {
        let mut out = vec![flag];
        out.extend_from_slice(&(message.len() as u32).to_be_bytes());
        out.extend_from_slice(message);
        out
    }

    fn summary_of(pieces: &[&[u8]]) -> Summary {
        let mut f = Frames::default();
        for p in pieces {
            f.parse(p);
        }
        f.summary()
    }

    #[test]
    fn whole_messages_at_any_split() {
        let body: Vec<u8> = [frame(0, b"hello"), frame(1, &[7; 300]), frame(0, b""), frame(0, b"x")].concat();
        let want = Summary {
            messages: 4,
            message_bytes: 306,
            compressed: 1,
            max_message_bytes: 300,
            partial: false,
            invalid: false,
        };
        for size in 1..=body.len() {
            let pieces: Vec<&[u8]> = body.chunks(size).collect();
            assert_eq!(summary_of(&pieces), want, "chunks of {size}");
        }
    }

    #[test]
    fn a_cut_prefix_or_message_is_partial() {
        let body = [frame(0, b"hello"), frame(0, b"world")].concat();
        for cut in [12, 17] {
            let s = summary_of(&[&body[..cut]]);
            assert_eq!((s.messages, s.partial), (1, true), "cut at {cut}");
        }
        assert!(!summary_of(&[&body]).partial);
        assert_eq!(summary_of(&[]), Summary { partial: false, ..summary_of(&[]) });
    }

    #[test]
    fn a_huge_declared_length_is_counted_down_not_kept() {
        let mut f = Frames::default();
        f.parse(&[0, 0xff, 0xff, 0xff, 0xff]);
        f.parse(&[1; 1000]);
        let s = f.summary();
        assert_eq!((s.messages, s.max_message_bytes, s.partial), (0, u32::MAX, true));
        assert_eq!(f.remaining, u64::from(u32::MAX) - 1000);
    }

    #[test]
    fn a_bad_flag_stops_counting() {
        let body = [frame(0, b"ok"), vec![0x80, 0, 0, 0, 1, b'x'], frame(0, b"never")].concat();
        let s = summary_of(&[&body]);
        assert_eq!((s.messages, s.invalid, s.partial), (1, true, false));
    }
}
