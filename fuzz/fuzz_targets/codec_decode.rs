#![no_main]
//! Every built-in codec decodes arbitrary bytes without panicking, and a successful decode
//! re-encodes to exactly the bytes it consumed (one encoding per value).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    flowstate::fuzzing::check_codec_decode(data);
});
