#![no_main]
//! The LSM manifest decoder, on arbitrary bytes (optionally with its length and CRC made
//! consistent): an error naming the file, or a manifest that obeys the rules and re-encodes to
//! exactly the input.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    flowstate_formats::fuzzing::check_manifest_decode(data);
});
