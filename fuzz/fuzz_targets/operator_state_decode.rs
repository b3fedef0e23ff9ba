#![no_main]
//! The operator-state file reader, on arbitrary bytes (optionally with every checksum
//! recomputed): an error naming the file, or states that re-encode to exactly the input.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    flowstate_formats::fuzzing::check_operator_state_decode(data);
});
