#![no_main]
//! Checkpoint storage over a directory whose files and names come from the input: values or
//! errors, never a panic; untouched checkpoints restore exactly; nothing the storage does not
//! own is deleted or changed.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    flowstate::fuzzing::check_checkpoint_dir(data);
});
