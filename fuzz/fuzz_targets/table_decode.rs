#![no_main]
//! The LSM table reader, on arbitrary bytes (optionally with every checksum recomputed): an
//! error naming the file, or a table whose lookups and scans agree and that re-encodes to the
//! same content.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    flowstate_formats::fuzzing::check_table_decode(data);
});
