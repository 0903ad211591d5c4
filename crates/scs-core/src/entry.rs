//! The value layout shared by the embedded key-value stores (redb, sled, fjall, leveldb),
//! and the namespace-name check they share.
//!
//! A stored value is an 8-byte big-endian expiry in Unix milliseconds, an 8-byte
//! big-endian version, then the session data:
//!
//! ```text
//! expiry_ms (u64 BE) || version (u64 BE) || data
//! ```
//!
//! ```
//! use scs_core::entry;
//!
//! let value = entry::encode(1_700_000_000_000, 7, b"data");
//! assert_eq!(value.len(), entry::HEADER_LEN + 4);
//! let (header, data) = entry::decode(&value, "example")?;
//! assert_eq!((header.expiry_ms, header.version, data), (1_700_000_000_000, 7, &b"data"[..]));
//! assert!(header.is_live(1_699_999_999_999) && !header.is_live(1_700_000_000_000));
//! assert!(entry::decode(b"short", "example").is_err());
//! # Ok::<(), scs_core::Error>(())
//! ```

use time::OffsetDateTime;

use crate::{Error, ErrorKind, Record, Result};

const EXPIRY_LEN: usize = 8;
const VERSION_LEN: usize = 8;

/// Length of the header in front of the data: expiry then version, 8 bytes each.
pub const HEADER_LEN: usize = EXPIRY_LEN + VERSION_LEN;

/// The header of a stored value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// When the entry expires, in Unix milliseconds.
    pub expiry_ms: u64,
    /// The entry's version (see [`crate::new_version`]).
    pub version: u64,
}

impl Header {
    /// True when the entry is still live at `now_ms` (it expires strictly after it).
    pub fn is_live(&self, now_ms: u64) -> bool {
        self.expiry_ms > now_ms
    }

    /// The version when the entry is live at `now_ms`, `None` when it has expired.
    pub fn live_version(&self, now_ms: u64) -> Option<u64> {
        self.is_live(now_ms).then_some(self.version)
    }

    /// A [`Record`] of `data` with this header's expiry and version.
    ///
    /// # Errors
    /// [`ErrorKind::Codec`] (naming `backend`) when the expiry is out of
    /// [`OffsetDateTime`]'s range.
    pub fn record(&self, data: &[u8], backend: &'static str) -> Result<Record> {
        let nanos = i128::from(self.expiry_ms) * 1_000_000;
        let expiry = OffsetDateTime::from_unix_timestamp_nanos(nanos).map_err(|e| {
            Error::new(ErrorKind::Codec, "a stored session expiry is out of range")
                .with_backend(backend)
                .with_source(e)
        })?;
        Ok(Record::new(data.to_vec(), expiry, self.version))
    }
}

/// Encodes a stored value: `expiry_ms` and `version` (big-endian), then `data`.
pub fn encode(expiry_ms: u64, version: u64, data: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(HEADER_LEN + data.len());
    value.extend_from_slice(&expiry_ms.to_be_bytes());
    value.extend_from_slice(&version.to_be_bytes());
    value.extend_from_slice(data);
    value
}

/// Splits a stored value into its header and data.
///
/// # Errors
/// [`ErrorKind::Codec`] (naming `backend`) when the value is shorter than
/// [`HEADER_LEN`].
pub fn decode<'a>(value: &'a [u8], backend: &'static str) -> Result<(Header, &'a [u8])> {
    split(value).ok_or_else(|| {
        Error::new(
            ErrorKind::Codec,
            "a stored session is shorter than its 16-byte expiry and version header",
        )
        .with_backend(backend)
    })
}

fn split(value: &[u8]) -> Option<(Header, &[u8])> {
    let (expiry, rest) = value.split_first_chunk::<EXPIRY_LEN>()?;
    let (version, data) = rest.split_first_chunk::<VERSION_LEN>()?;
    let header = Header {
        expiry_ms: u64::from_be_bytes(*expiry),
        version: u64::from_be_bytes(*version),
    };
    Some((header, data))
}

/// For a cleanup, which reads only the expiry: true when the value has expired at
/// `now_ms`, or is too short for the header (it could never be read).
pub fn is_dead(value: &[u8], now_ms: u64) -> bool {
    split(value).is_none_or(|(header, _)| !header.is_live(now_ms))
}

/// `t` in Unix milliseconds (rounded down); 0 before the epoch.
pub fn unix_ms(t: OffsetDateTime) -> u64 {
    let ms = t.unix_timestamp_nanos().div_euclid(1_000_000);
    u64::try_from(ms.max(0)).unwrap_or(u64::MAX)
}

/// The current time in Unix milliseconds.
pub fn now_ms() -> u64 {
    u64::try_from(now_nanos().div_euclid(1_000_000).max(0)).unwrap_or(u64::MAX)
}

/// The current time in Unix nanoseconds, straight from the system clock: without the
/// calendar fields an `OffsetDateTime` computes (and a comparison throws away).
///
/// ```
/// let a = scs_core::entry::now_nanos();
/// let t = scs_core::time::OffsetDateTime::from_unix_timestamp_nanos(a).unwrap();
/// assert!(t.year() >= 2024);
/// ```
pub fn now_nanos() -> i128 {
    use std::time::{SystemTime, UNIX_EPOCH};
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(since) => i128::try_from(since.as_nanos()).unwrap_or(i128::MAX),
        Err(before) => i128::try_from(before.duration().as_nanos()).map_or(i128::MIN, |n| -n),
    }
}

/// Checks a namespace name (table, tree, keyspace, prefix):
/// `[A-Za-z_][A-Za-z0-9_]{0,62}`.
///
/// # Errors
/// [`ErrorKind::Config`] (naming `backend`) saying which `what` name is invalid.
pub fn check_name(name: &str, what: &str, backend: &'static str) -> Result<()> {
    let mut chars = name.chars();
    let valid = name.len() <= 63
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if valid {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::Config,
            format!(
                "invalid {what} name {name:?}: use 1 to 63 ASCII letters, digits or underscores, not starting with a digit"
            ),
        )
        .with_backend(backend))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn value_layout_round_trips_and_rejects_short_values() {
        let v = encode(0x0102_0304_0506_0708, 0x1112_1314_1516_1718, b"data");
        assert_eq!(&v[..8], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(&v[8..16], &[0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18]);
        let (header, data) = decode(&v, "test").unwrap();
        assert_eq!(
            header,
            Header {
                expiry_ms: 0x0102_0304_0506_0708,
                version: 0x1112_1314_1516_1718,
            }
        );
        assert_eq!(data, b"data");
        assert_eq!(
            header.live_version(0x0102_0304_0506_0707),
            Some(header.version)
        );
        assert_eq!(header.live_version(0x0102_0304_0506_0708), None);
        let empty = encode(5, 7, b"");
        let (header, data) = decode(&empty, "test").unwrap();
        assert_eq!((header.expiry_ms, header.version, data.len()), (5, 7, 0));
        for short in [&b""[..], b"1234567", b"12345678", &[0xff; 15]] {
            let err = decode(short, "test").unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Codec);
            assert_eq!(err.backend(), Some("test"));
            assert!(is_dead(short, 0), "{short:?} can never be read");
        }
        assert!(is_dead(&empty, 5) && !is_dead(&empty, 4));
    }

    #[test]
    fn times_and_records() {
        let before_epoch = OffsetDateTime::UNIX_EPOCH - Duration::from_secs(5);
        assert_eq!(unix_ms(before_epoch), 0);
        let t = OffsetDateTime::UNIX_EPOCH + Duration::from_micros(1_234_567);
        assert_eq!(unix_ms(t), 1234);
        assert!(now_ms() > 1_600_000_000_000);
        let (header, data) = decode(&encode(1234, 9, b"x"), "test")
            .map(|(h, d)| (h, d.to_vec()))
            .unwrap();
        let record = header.record(&data, "test").unwrap();
        assert_eq!(
            record,
            Record::new(b"x".to_vec(), t - Duration::from_micros(567), 9)
        );
        let far = Header {
            expiry_ms: u64::MAX,
            version: 9,
        };
        let err = far.record(b"x", "test").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Codec);
        assert_eq!(err.backend(), Some("test"));
    }

    #[test]
    fn names_are_checked() {
        for bad in ["", "1abc", "a-b", "a b", "sessions;", "é", &"a".repeat(64)] {
            let err = check_name(bad, "table", "test").unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{bad:?}");
            assert_eq!(err.backend(), Some("test"));
            assert!(err.to_string().contains("invalid table name"), "{err}");
        }
        for good in ["a", "_", "sessions", "scs_abc123", &"a".repeat(63)] {
            assert!(check_name(good, "tree", "test").is_ok(), "{good:?}");
        }
    }
}
