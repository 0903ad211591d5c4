//! `AeadCodec::decode` (encryption at rest) on arbitrary bytes: forged, truncated or
//! foreign bytes are codec errors, never a panic; and any session MessagePack can hold
//! round-trips through encryption, under the newest key and after a rotation.

#![no_main]

use libfuzzer_sys::fuzz_target;
use scs::{AeadCodec, Codec, ErrorKind, MsgPackCodec};

fuzz_target!(|data: &[u8]| {
    let old = AeadCodec::new(1, [7; 32]);
    let rotated = AeadCodec::new(1, [7; 32]).with_key(2, [9; 32]);
    for codec in [&old, &rotated] {
        // 24 random nonce bytes and a 16-byte tag: the fuzzer cannot forge one.
        let err = codec.decode(data).expect_err("forged ciphertext accepted");
        assert_eq!(err.kind(), ErrorKind::Codec);
    }
    if let Ok(session) = MsgPackCodec.decode(data) {
        let sealed = old.encode(&session).unwrap();
        let back = rotated.decode(&sealed).expect("rotation lost an old key");
        assert_eq!(
            MsgPackCodec.encode(&back).unwrap(),
            MsgPackCodec.encode(&session).unwrap()
        );
        // Any flipped bit is caught.
        let mut tampered = sealed.clone();
        let i = data.len() % tampered.len();
        tampered[i] ^= 1;
        assert!(rotated.decode(&tampered).is_err());
    }
});
