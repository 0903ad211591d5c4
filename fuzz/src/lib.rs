//! Checks shared by the fuzz targets.

use scs_core::time::OffsetDateTime;
use scs_core::{Codec, ErrorKind, Value};

/// The base64url alphabet, in value order.
const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// An independent statement of what a valid token is: 43 base64url characters whose last
/// one carries no bits past the 256 of the token (its value is a multiple of 4).
pub fn is_token(s: &[u8]) -> bool {
    s.len() == scs_core::token::TOKEN_LEN
        && s.iter().all(|c| ALPHABET.contains(c))
        && ALPHABET
            .iter()
            .position(|&c| c == s[42])
            .is_some_and(|v| v % 4 == 0)
}

/// Decodes `data` with `codec`: garbage must be a codec error (never a panic), and what
/// decodes must encode, decode again, and encode to the same bytes. Typed reads of every
/// decoded value never panic.
pub fn check_codec(codec: &dyn Codec, data: &[u8]) {
    let first = match codec.decode(data) {
        Ok(d) => d,
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::Codec, "{e}");
            return;
        }
    };
    for v in first.values.values() {
        read_every_way(v);
    }
    let bytes = codec
        .encode(&first)
        .unwrap_or_else(|e| panic!("{} decoded what it cannot encode: {e}", codec.name()));
    let second = codec
        .decode(&bytes)
        .unwrap_or_else(|e| panic!("{} cannot decode its own encoding: {e}", codec.name()));
    assert_eq!(second.deadline, first.deadline);
    assert_eq!(second.values.len(), first.values.len());
    // Bytes rather than values: a NaN is not equal to itself.
    let again = codec
        .encode(&second)
        .expect("encoding the re-decoded session");
    assert_eq!(again, bytes, "{}: re-encoding drifted", codec.name());
}

fn read_every_way(v: &Value) {
    let _ = v.kind();
    let _ = v.to::<String>();
    let _ = v.to::<i64>();
    let _ = v.to::<u64>();
    let _ = v.to::<f64>();
    let _ = v.to::<bool>();
    let _ = v.to::<serde_bytes::ByteBuf>();
    let _ = v.to::<Vec<u8>>();
    let _ = v.to::<Vec<String>>();
    let _ = v.to::<OffsetDateTime>();
    let _ = v.to::<std::collections::BTreeMap<String, Value>>();
    let _ = format!("{v:?}");
}
