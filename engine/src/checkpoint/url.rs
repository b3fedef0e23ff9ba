//! Checkpoint storage named by a URL: the checkpoint protocol of [`FsCheckpointStorage`] over
//! an [`ObjectStorage`] (S3 and compatible servers, Google Cloud Storage, Azure Blob Storage,
//! local files, memory).
//!
//! ```
//! use flowstate::checkpoint::*;
//! use flowstate::storage::ObjectStorageOptions;
//! use flowstate::KeyGroupRange;
//!
//! let url = "memory://url-doc/checkpoints";
//! let storage = FsCheckpointStorage::open_url(url, FsCheckpointOptions::default(), ObjectStorageOptions::default())?;
//! let range = KeyGroupRange::for_operator(128, 1, 0)?;
//! let handle = storage.write_keyed_state_bytes(&CheckpointId(1).into(), "op-0-keyed", range, b"state")?;
//! storage.complete_checkpoint(CheckpointId(1), vec![SubtaskState::new("op", 0, 1, 128).with_keyed(handle)])?;
//!
//! // Another process (here: another instance) reads it back through the same URL.
//! let reader = FsCheckpointStorage::open_url_read_only(url)?;
//! assert_eq!(reader.completed()?, [CheckpointId(1)]);
//! # Ok::<(), flowstate::Error>(())
//! ```

use std::sync::Arc;

use super::fs::{FsCheckpointOptions, FsCheckpointStorage};
use crate::error::Result;
use crate::storage::{ObjectStorage, ObjectStorageOptions};

impl FsCheckpointStorage {
    /// Opens checkpoint storage at `url` (see [`ObjectStorage::from_url`] for the schemes and
    /// the environment variables that configure each cloud) as the owner of the root: the
    /// start-up cleanup and retention of [`open`](Self::open) run against the store.
    pub fn open_url(
        url: &str,
        options: FsCheckpointOptions,
        object: ObjectStorageOptions,
    ) -> Result<Self> {
        Self::open(Arc::new(ObjectStorage::from_url(url, object)?), options)
    }

    /// Opens the checkpoints at `url` for inspection only (the offline tools); see
    /// [`open_read_only`](Self::open_read_only).
    pub fn open_url_read_only(url: &str) -> Result<Self> {
        let storage = ObjectStorage::from_url(url, ObjectStorageOptions::default())?;
        Ok(Self::open_storage_read_only(Arc::new(storage)))
    }

    /// Opens the checkpoints at `url` for the tasks of a process other than the owner's; see
    /// [`open_for_tasks`](Self::open_for_tasks).
    pub fn open_url_for_tasks(url: &str, object: ObjectStorageOptions) -> Result<Self> {
        let storage = ObjectStorage::from_url(url, object)?;
        Ok(Self::open_storage_for_tasks(Arc::new(storage)))
    }
}
