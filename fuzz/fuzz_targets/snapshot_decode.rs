#![no_main]
//! The canonical key-group snapshot reader, on arbitrary bytes (optionally with every checksum
//! recomputed): an error naming the file, or content that re-encodes and decodes the same.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    flowstate_formats::fuzzing::check_snapshot_decode(data);
});
