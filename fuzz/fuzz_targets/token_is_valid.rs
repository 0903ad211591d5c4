//! `scs_core::token::is_valid` against an independent statement of the token shape, and
//! the store key of every valid token.

#![no_main]

use libfuzzer_sys::fuzz_target;
use scs_core::token;

fuzz_target!(|data: &[u8]| {
    // Lossy, so that replacement characters (multi-byte UTF-8) are tried too.
    let s = String::from_utf8_lossy(data);
    let valid = token::is_valid(&s);
    assert_eq!(valid, scs_fuzz::is_token(s.as_bytes()), "{s:?}");
    if valid {
        let hashed = token::store_key(&s, true);
        assert!(token::is_valid(&hashed));
        assert_ne!(hashed, s);
        assert_eq!(token::store_key(&s, false), s);
    }
});
