//! Properties checked by the fuzz targets under `fuzz/`, kept in the crate so that the targets
//! and the ordinary tests that replay their corpora (engine/tests/fuzz_corpus.rs) run the very
//! same code. One file per property; the decoders of the file formats (the LSM manifest among
//! them) have theirs in `flowstate_formats::fuzzing`.
//!
//! Each function panics when the property fails: that is how a fuzzer learns of a bug. Nothing
//! in the engine calls them.

mod checkpoint_dir;
mod codec_decode;
mod crash_recovery;
mod state_ops;

pub use checkpoint_dir::check_checkpoint_dir;
pub use codec_decode::check_codec_decode;
pub use crash_recovery::check_crash_recovery;
pub use state_ops::{check_state_ops, lsm_input};
