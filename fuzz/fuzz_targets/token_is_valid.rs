//! `scs_core::token::is_valid` against an independent statement of the token shape, and
//! the store key of every valid token, in both the `String` and the inline `Token` form.

#![no_main]

use libfuzzer_sys::fuzz_target;
use scs_core::token;

fuzz_target!(|data: &[u8]| {
    // Lossy, so that replacement characters (multi-byte UTF-8) are tried too.
    let s = String::from_utf8_lossy(data);
    let valid = token::is_valid(&s);
    assert_eq!(valid, scs_fuzz::is_token(s.as_bytes()), "{s:?}");
    // The inline form takes exactly the valid tokens, and keys them the same way.
    let inline = token::Token::parse(&s);
    assert_eq!(inline.is_some(), valid, "{s:?}");
    if let Some(t) = inline {
        let hashed = token::store_key(&s, true);
        assert!(token::is_valid(&hashed));
        assert_ne!(hashed, s);
        assert_eq!(token::store_key(&s, false), s);
        assert_eq!(t.as_str(), s);
        assert_eq!(t.store_key(true).as_str(), hashed);
        assert_eq!(t.store_key(false), t);
    }
});
