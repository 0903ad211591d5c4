//! Session tokens: generation, validation of what clients send, and the store key.
//!
//! A token is 32 bytes from the operating system's CSPRNG, encoded as base64url without
//! padding: exactly [`TOKEN_LEN`] characters of `[A-Za-z0-9_-]`.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use crate::{Error, ErrorKind, Result};

/// Length of an encoded token: 32 random bytes in unpadded base64url.
pub const TOKEN_LEN: usize = 43;

/// Makes a new random token.
///
/// # Errors
/// Fails with [`ErrorKind::Backend`] only when the operating system's random source fails.
pub fn try_generate() -> Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| {
        Error::new(ErrorKind::Backend, "reading the OS random source").with_source(RandError(e))
    })?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// Makes a new random token.
///
/// The OS random source does not fail on any supported platform once it is seeded; if it
/// ever did, this aborts the process rather than hand out a predictable token.
/// Library code that wants the error uses [`try_generate`].
///
/// ```
/// let a = scs_core::token::generate();
/// let b = scs_core::token::generate();
/// assert_ne!(a, b);
/// assert!(scs_core::token::is_valid(&a));
/// ```
pub fn generate() -> String {
    match try_generate() {
        Ok(t) => t,
        // A token from a broken RNG is a security hole; refusing to continue is the only
        // safe answer. Not a panic (which could be caught and the request retried).
        Err(_) => std::process::abort(),
    }
}

/// True when `token` has the exact shape of a token this library makes: 43 characters of
/// base64url whose last character carries no stray bits. Anything else is treated as "no
/// session" and never reaches a store.
///
/// ```
/// use scs_core::token::is_valid;
/// assert!(!is_valid(""));
/// assert!(!is_valid("../../etc/passwd"));
/// assert!(!is_valid(&"a".repeat(44)));
/// assert!(!is_valid(&"+".repeat(43)));
/// ```
pub fn is_valid(token: &str) -> bool {
    let b = token.as_bytes();
    let Some((&last, body)) = b.split_last() else {
        return false;
    };
    // 43 characters carry 258 bits for 256 bits of data: the last character's low two
    // bits must be zero, or it is not the canonical encoding of 32 bytes. Checked on the
    // alphabet directly (this runs on every request), no decoding.
    b.len() == TOKEN_LEN
        && body.iter().all(|&c| base64url_value(c).is_some())
        && base64url_value(last).is_some_and(|v| v & 0b11 == 0)
}

/// The 6-bit value of a base64url character.
const fn base64url_value(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'-' => Some(62),
        b'_' => Some(63),
        _ => None,
    }
}

/// The key a session is stored under.
///
/// With `hash` (the default of the manager) this is `base64url(SHA-256(token))`, so a leaked
/// database does not hand out live tokens. Without it, the raw token.
///
/// ```
/// use scs_core::token::{generate, store_key};
/// let t = generate();
/// assert_eq!(store_key(&t, false), t);
/// assert_ne!(store_key(&t, true), t);
/// assert_eq!(store_key(&t, true).len(), 43);
/// ```
pub fn store_key(token: &str, hash: bool) -> String {
    if hash {
        URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes()))
    } else {
        token.to_owned()
    }
}

#[derive(Debug)]
struct RandError(getrandom::Error);

impl std::fmt::Display for RandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for RandError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_valid_and_distinct() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            let t = generate();
            assert_eq!(t.len(), TOKEN_LEN);
            assert!(is_valid(&t), "{t}");
            assert!(seen.insert(t));
        }
    }

    #[test]
    fn rejects_non_canonical_and_wrong_alphabet() {
        let t = generate();
        // Standard base64 characters are not base64url.
        let plus = format!("+{}", &t[1..]);
        assert!(!is_valid(&plus));
        let slash = format!("/{}", &t[1..]);
        assert!(!is_valid(&slash));
        // A last character with low bits set is not canonical.
        let bad_tail = format!("{}B", &t[..42]);
        assert!(!is_valid(&bad_tail));
        assert!(!is_valid(&t[..42]));
        assert!(!is_valid(&format!("{t}A")));
        assert!(!is_valid(&format!("{}é", &t[..41])));
    }

    #[test]
    fn alphabet_check_agrees_with_decoding() {
        // Every possible last character: valid exactly when it decodes canonically.
        let t = generate();
        for c in 0u8..=255 {
            let candidate = format!("{}{}", &t[..42], c as char);
            let mut out = [0u8; 33];
            let decodes = candidate.len() == TOKEN_LEN
                && matches!(
                    URL_SAFE_NO_PAD.decode_slice(candidate.as_bytes(), &mut out),
                    Ok(32)
                );
            assert_eq!(is_valid(&candidate), decodes, "last char {c}");
        }
    }

    #[test]
    fn hashed_key_is_stable_and_differs_from_token() {
        let t = generate();
        assert_eq!(store_key(&t, true), store_key(&t, true));
        assert_ne!(store_key(&t, true), t);
        assert!(is_valid(&store_key(&t, true)));
    }
}
