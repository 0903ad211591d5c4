//! Session tokens: generation, validation of what clients send, and the store key.
//!
//! A token is 32 bytes from the operating system's CSPRNG, encoded as base64url without
//! padding: exactly [`TOKEN_LEN`] characters of `[A-Za-z0-9_-]`.

use arrayvec::ArrayString;
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
    Token::try_generate().map(|t| t.as_str().to_owned())
}

/// A token, or the store key of one: exactly [`TOKEN_LEN`] base64url characters, held
/// inline. `Copy` and never allocated: the request path reads, hashes and hands these
/// around on every load and commit.
///
/// `Debug` never shows the characters (a token in a log is a session handed out).
///
/// ```
/// use scs_core::token::Token;
///
/// let token = Token::try_generate().unwrap();
/// assert_eq!(Token::parse(token.as_str()), Some(token));
/// assert_eq!(token.store_key(false), token);
/// assert_ne!(token.store_key(true), token);
/// assert_eq!(format!("{token:?}"), "Token(..)");
/// assert_eq!(Token::parse("../../etc/passwd"), None);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Token(ArrayString<TOKEN_LEN>);

impl Token {
    /// `text` when it has the exact shape of a token (see [`is_valid`]).
    pub fn parse(text: &str) -> Option<Self> {
        if !is_valid(text) {
            return None;
        }
        ArrayString::from(text).ok().map(Self)
    }

    /// A new random token: 32 bytes from the OS CSPRNG.
    ///
    /// # Errors
    /// Fails with [`ErrorKind::Backend`] only when the operating system's random source
    /// fails.
    pub fn try_generate() -> Result<Self> {
        let bytes = random_32().map_err(|e| {
            Error::new(ErrorKind::Backend, "reading the OS random source").with_source(RandError(e))
        })?;
        Ok(Self::encode(&bytes))
    }

    /// The key this token's session is stored under: `base64url(SHA-256(token))` with
    /// `hash`, else the token itself (see [`store_key`]).
    pub fn store_key(&self, hash: bool) -> Self {
        if hash {
            Self::encode(&Sha256::digest(self.0.as_bytes()).into())
        } else {
            *self
        }
    }

    /// The characters.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// Unpadded base64url of 32 bytes.
    fn encode(bytes: &[u8; 32]) -> Self {
        let mut out = [0u8; TOKEN_LEN];
        // 32 bytes are exactly 43 characters, all ASCII: neither step can fail, and the
        // fallbacks only keep this free of panics.
        let _ = URL_SAFE_NO_PAD.encode_slice(bytes, &mut out);
        Self(ArrayString::from_byte_string(&out).unwrap_or_default())
    }
}

impl std::ops::Deref for Token {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Token {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

/// Tokens' worth of OS random bytes fetched per system call.
const BATCH: usize = 16;

/// Per thread: OS random bytes not handed out yet, read [`BATCH`] tokens at a time. The
/// bytes are the operating system's CSPRNG output, each used once and zeroed as it is
/// taken; batching only saves system calls (one per 16 new sessions instead of one each,
/// about half a microsecond apiece). As with any user-space buffer of random bytes, a
/// process that forks must not make tokens in both parent and child from the same
/// buffer; Rust servers on an async runtime do not fork after start-up.
struct Pool {
    bytes: [u8; 32 * BATCH],
    /// Bytes before this index are used (and zeroed).
    used: usize,
}

thread_local! {
    static POOL: std::cell::RefCell<Pool> = const {
        std::cell::RefCell::new(Pool { bytes: [0; 32 * BATCH], used: 32 * BATCH })
    };
}

/// 32 bytes from the OS CSPRNG.
fn random_32() -> std::result::Result<[u8; 32], getrandom::Error> {
    let from_pool = POOL.try_with(|pool| {
        let mut pool = pool.try_borrow_mut().ok()?;
        let pool = &mut *pool;
        if pool.used == pool.bytes.len() {
            getrandom::fill(&mut pool.bytes).ok()?;
            pool.used = 0;
        }
        let chunk = pool.bytes.get_mut(pool.used..pool.used + 32)?;
        let mut out = [0u8; 32];
        out.copy_from_slice(chunk);
        chunk.fill(0);
        pool.used += 32;
        Some(out)
    });
    match from_pool {
        Ok(Some(out)) => Ok(out),
        // No thread-local storage (thread teardown), or the batch read failed: ask the OS
        // for exactly these bytes, and report its error if it has one.
        _ => {
            let mut out = [0u8; 32];
            getrandom::fill(&mut out)?;
            Ok(out)
        }
    }
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
        // Every character checked without early exit: the compiler turns this into a
        // few vector compares.
        && body.iter().fold(true, |ok, &c| {
            ok & (c.is_ascii_alphanumeric() | (c == b'-') | (c == b'_'))
        })
        && ALPHABET[usize::from(last)] & 0b1100_0011 == 0
}

/// Marks a byte outside the base64url alphabet in [`ALPHABET`].
const INVALID: u8 = 0xff;

/// The 6-bit value of each base64url character, [`INVALID`] for every other byte: one
/// table lookup per character on every request that sends a cookie.
const ALPHABET: [u8; 256] = {
    let mut table = [INVALID; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        table[c] = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => INVALID,
        };
        c += 1;
    }
    table
};

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
        Token::encode(&Sha256::digest(token.as_bytes()).into())
            .as_str()
            .to_owned()
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
    fn batched_bytes_are_never_handed_out_twice() {
        // Across several refills of the per-thread batch and across threads.
        let mut seen = std::collections::HashSet::new();
        for _ in 0..(BATCH * 5 + 3) {
            assert!(seen.insert(random_32().unwrap()));
        }
        let other: Vec<[u8; 32]> =
            std::thread::spawn(|| (0..BATCH * 2).map(|_| random_32().unwrap()).collect())
                .join()
                .unwrap();
        for bytes in other {
            assert!(seen.insert(bytes));
        }
        // Taken bytes are zeroed in the batch.
        POOL.with(|p| {
            let p = p.borrow();
            assert!(p.bytes[..p.used].iter().all(|&b| b == 0));
        });
    }

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
        // And every possible character everywhere else.
        for at in [0, 20, 41] {
            for c in 0u8..=127 {
                let mut candidate = t.clone().into_bytes();
                candidate[at] = c;
                let Ok(candidate) = String::from_utf8(candidate) else {
                    continue;
                };
                let mut out = [0u8; 33];
                let decodes = matches!(
                    URL_SAFE_NO_PAD.decode_slice(candidate.as_bytes(), &mut out),
                    Ok(32)
                );
                assert_eq!(is_valid(&candidate), decodes, "char {c} at {at}");
            }
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
