#![no_main]
//! State operations and checkpoints on checkpoint storage that fails and crashes at a step
//! the input picks; after recovery the latest checkpoint is the last acknowledged one (or a
//! complete unacknowledged one) and restores exactly.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    flowstate::fuzzing::check_crash_recovery(data);
});
