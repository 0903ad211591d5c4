//! `JsonCodec::decode` on arbitrary bytes: an error or a session that round-trips.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| scs_fuzz::check_codec(&scs_core::JsonCodec, data));
