//! Clock and duration conversions to the integer units shared data and counters store.
//! Saturating, never panicking: a clock before 1970 reads 0, a duration past `u64` reads
//! `u64::MAX` (both far outside any configuration's range).

use std::time::{Duration, SystemTime};

/// Milliseconds since the Unix epoch (0 before it: a broken clock never panics).
pub fn millis(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, duration_ms)
}

/// Nanoseconds since the Unix epoch (0 before it; saturates in the year 2554).
pub fn nanos(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, duration_ns)
}

/// Whole milliseconds of `d`, saturating at `u64::MAX`.
pub fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Whole nanoseconds of `d`, saturating at `u64::MAX`.
pub fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_saturate() {
        assert_eq!(duration_ms(Duration::from_micros(1_999)), 1);
        assert_eq!(duration_ms(Duration::MAX), u64::MAX);
        assert_eq!(duration_ns(Duration::from_secs(2)), 2_000_000_000);
        assert_eq!(duration_ns(Duration::MAX), u64::MAX);
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(millis(t), 1_700_000_000_123);
        assert_eq!(nanos(t), 1_700_000_000_123_000_000);
        let before = SystemTime::UNIX_EPOCH - Duration::from_secs(1);
        assert_eq!((millis(before), nanos(before)), (0, 0));
    }
}
