#![no_main]
//! Random state operations, snapshots, restores and rescales against a simple model.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    flowstate::fuzzing::check_state_ops(data);
});
