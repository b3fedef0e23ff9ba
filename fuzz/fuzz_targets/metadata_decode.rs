#![no_main]
//! The checkpoint `_metadata` and state handle decoders return a value or an error naming the
//! file on arbitrary bytes (no panic, no allocation beyond the input), and a decoded value
//! re-encodes to exactly the bytes it came from.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    flowstate_formats::fuzzing::check_metadata_decode(data);
});
