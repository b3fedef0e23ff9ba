//! flowstate: a pluggable state-backend storage engine for stream processors.
//!
//! A stream engine embeds flowstate to keep per-key operator state: value, list, map, reducing
//! and aggregating state, optionally per namespace (a window), behind one trait,
//! [`KeyedStateBackend`], so that operator code runs unchanged on every backend. Keys are
//! partitioned into key groups ([`key_group`]) so that state can be snapshotted per key group and
//! restored at another parallelism.
//!
//! ```
//! use flowstate::*;
//!
//! let config = BackendConfig::heap()
//!     .max_parallelism(128)
//!     .key_group_range(KeyGroupRange::for_operator(128, 1, 0)?);
//! let mut backend = Backend::<String>::open(config)?;
//!
//! let count = backend.register(ValueStateDescriptor::<u64>::new("count"))?;
//! let seen = backend.register(ListStateDescriptor::<String>::new("seen"))?;
//! let total = backend.register(ReducingStateDescriptor::<i64>::new("total", |a, b| a + b))?;
//!
//! for (user, page) in [("alice", "/"), ("bob", "/a"), ("alice", "/b")] {
//!     backend.set_current_key(&user.to_string());
//!     let n = backend.value(&count).get()?.unwrap_or(0);
//!     backend.value(&count).update(n + 1)?;
//!     backend.list(&seen).add(page.to_string())?;
//!     backend.reducing(&total).add(page.len() as i64)?;
//! }
//!
//! // A snapshot's synchronous phase: a frozen view, whatever the state size.
//! let frozen = backend.snapshot_state()?;
//! backend.set_current_key(&"alice".to_string());
//! backend.value(&count).clear()?;
//! assert_eq!(backend.value(&count).get()?, None);
//! assert_eq!(frozen.state("count").unwrap().entry_count()?, 2);
//! assert_eq!(backend.list(&seen).get()?, vec!["/".to_string(), "/b".to_string()]);
//! # Ok::<(), flowstate::Error>(())
//! ```

/// The README's code blocks, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

pub mod backend;
pub mod checkpoint;
pub mod clock;
pub mod codec;
pub mod config;
pub mod convert;
pub mod dispatch;
mod error;
pub mod file_sink;
#[doc(hidden)]
pub mod fuzzing;
pub mod heap;
pub mod key_group;
pub mod lsm;
mod mmap;
pub mod operator;
mod parallel;
mod random;
pub(crate) mod restore;
pub mod snapshot;
pub mod state;
pub mod storage;
pub mod task;
pub mod timer;
pub mod two_phase_commit;
pub mod verify;

pub use backend::KeyedStateBackend;
pub use checkpoint::{
    CheckpointId, CheckpointStorage, CompletedCheckpoint, FileRestoreSource, FsCheckpointOptions,
    FsCheckpointStorage, KeyedStateHandle, MemoryCheckpointStorage, OperatorStateHandle,
    PendingSnapshot, SnapshotKind, SnapshotResult, SnapshotStats, SnapshotTarget, StateFile,
    StateFileWriter, SubtaskState,
};
pub use clock::{Clock, ManualClock, SystemClock};
pub use codec::{Codec, CodecError};
pub use config::{BackendConfig, BackendKind};
pub use dispatch::Backend;
pub use error::{Error, ErrorKind, Result};
pub use flowstate_formats::Compression;
pub use heap::HeapBackend;
pub use key_group::{key_group_for, key_group_of, KeyGroupRange};
pub use lsm::native_restore::{open_restore_sources, NativeRestoreSource, RestoreStats};
pub use lsm::{LsmBackend, LsmPool};
pub use snapshot::{
    EncodedEntry, EncodedRun, EncodedState, RestoreSource, StateSnapshot, StateTableSnapshot,
};
pub use state::{
    AggregateFunction, AggregatingState, AggregatingStateDescriptor, CodecInfo, Key, ListState,
    ListStateDescriptor, MapState, MapStateDescriptor, MergingState, Namespace, ReducingState,
    ReducingStateDescriptor, StateDescriptor, StateHandle, StateId, StateKind, StateMeta,
    StateValue, TimeWindow, TtlConfig, TtlUpdate, TtlValue, TtlVisibility, ValueState,
    ValueStateDescriptor,
};
pub use storage::{CrashMode, LocalStorage, MemStorage, ReadableFile, Storage, WritableFile};
