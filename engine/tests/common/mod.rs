//! Pieces the engine's integration tests share.
#![allow(dead_code)] // each test binary uses some of the shared pieces

pub mod all_kinds;
#[cfg(feature = "object-store")]
pub mod object;
pub mod rng;

use std::sync::Arc;

use flowstate::{
    AggregateFunction, CheckpointStorage, FsCheckpointOptions, FsCheckpointStorage, Key,
    KeyedStateBackend,
};

/// Checkpoint storage in local directory `dir` keeping `retained` checkpoints.
pub fn fs_storage(dir: &std::path::Path, retained: usize) -> Arc<dyn CheckpointStorage> {
    Arc::new(
        FsCheckpointStorage::open_local(
            dir,
            FsCheckpointOptions::default().with_retained(retained),
        )
        .expect("checkpoint storage opens in a temporary directory"),
    )
}

/// Whether `b` owns the key group of its current key.
pub fn owns_current<K: Key, B: KeyedStateBackend<K> + ?Sized>(b: &B) -> bool {
    b.current_key_group()
        .is_some_and(|kg| b.key_group_range().contains(kg))
}

/// Sum and count of `i64` inputs: an aggregating state's function whose accumulator, result
/// and input types differ from one another in shape.
pub struct Sum;

impl AggregateFunction for Sum {
    type In = i64;
    type Acc = (i64, u32);
    type Out = (i64, u32);
    fn create_accumulator(&self) -> (i64, u32) {
        (0, 0)
    }
    fn add(&self, acc: &mut (i64, u32), v: i64) {
        acc.0 += v;
        acc.1 += 1;
    }
    fn get_result(&self, acc: &(i64, u32)) -> (i64, u32) {
        *acc
    }
    fn merge(&self, acc: &mut (i64, u32), o: (i64, u32)) {
        acc.0 += o.0;
        acc.1 += o.1;
    }
}
