//! Incremental checkpoints and native savepoints of the LSM backend.
//!
//! The synchronous phase ([`Tree::checkpoint_tables`](super::tree::Tree::checkpoint_tables))
//! freezes the memtable and holds the current version and the frozen memtables. The
//! asynchronous phase ([`NativeJob`]) waits for (or runs) the flushes of those memtables, then
//! for every table of the checkpoint:
//!
//! - a table an earlier checkpoint of this backend published (or a restore linked from
//!   `shared/`) is referenced again, after the checkpoint storage confirmed that the shared
//!   file is still there ([`CheckpointStorage::reserve_shared_file`]);
//! - a new table is published under `shared/<backend id>-<table id>.sst`: a hard link where
//!   the checkpoint storage shares the local file system with the working directory, a copy
//!   otherwise.
//!
//! Then it writes the native snapshot file (formats.md section 8) as the task's state file and
//! returns a handle of kind [`LsmNative`](flowstate_formats::checkpoint::KeyedHandleKind)
//! listing it and the shared files. A native savepoint copies every table beside its snapshot
//! file instead, so it references nothing under `shared/`.
//!
//! [`SharedTables`] is the backend's side of the shared-file registry: which local tables are
//! published under which name, by which checkpoint, and whether that checkpoint completed
//! (spec/checkpoint-protocol.md section 8).

use crate::random::random_u64;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use flowstate_formats::checkpoint::{NativeSnapshotRecord, NativeTableRecord, TableLocation};
use flowstate_formats::snapshot::SnapshotMeta;
use parking_lot::Mutex;

use super::tree::{CheckpointTables, TableHandle};
use crate::checkpoint::{
    CheckpointId, CheckpointStorage, KeyedStateHandle, NativeSnapshot, SnapshotKind,
    SnapshotResult, SnapshotStats, SnapshotTarget, StateFile, StateFileWriter,
};
use crate::error::{Error, Result};
use crate::key_group::KeyGroupRange;
use crate::parallel::map_bounded;
use crate::storage::{stream_crc32c, Storage};

/// A local table published as a shared file.
#[derive(Debug, Clone)]
struct PublishedTable {
    file: StateFile,
    crc32c: u32,
    /// The checkpoint that published it (0 for a table linked at restore).
    by: CheckpointId,
    /// Whether that checkpoint is known to have completed.
    confirmed: bool,
}

/// The backend's side of the shared-file registry: which of its tables are published in
/// `shared/`, under which name.
#[derive(Debug)]
pub(crate) struct SharedTables {
    /// 128 random bits in hex, unique to this backend instance: the prefix of the names of
    /// the shared files it publishes.
    uid: String,
    tables: HashMap<u64, PublishedTable>,
}

impl SharedTables {
    pub(crate) fn new() -> Self {
        SharedTables {
            uid: format!("{:016x}{:016x}", random_u64(), random_u64()),
            tables: HashMap::new(),
        }
    }

    /// The backend instance's id in shared file names.
    pub(crate) fn uid(&self) -> &str {
        &self.uid
    }

    /// Records that local table `id` is the shared file `file` (a restore linked it from
    /// there): checkpoints reference it rather than publish it again.
    pub(crate) fn adopt(&mut self, id: u64, file: StateFile, crc32c: u32) {
        self.tables.insert(
            id,
            PublishedTable {
                file,
                crc32c,
                by: CheckpointId(0),
                confirmed: true,
            },
        );
    }

    /// Checkpoint `id` completed: what it and earlier checkpoints published is confirmed, and
    /// records of tables the tree no longer has (`live` holds the ids it has) are dropped,
    /// unless a later checkpoint in flight may still use them.
    pub(crate) fn complete(&mut self, id: CheckpointId, live: &HashSet<u64>) {
        self.tables.retain(|table, p| {
            if p.by <= id {
                p.confirmed = true;
            }
            live.contains(table) || p.by > id
        });
    }

    /// Checkpoint `id` was aborted: the tables it published are not assumed published (the
    /// storage deletes what no other checkpoint reserved).
    pub(crate) fn abort(&mut self, id: CheckpointId) {
        self.tables.retain(|_, p| p.confirmed || p.by != id);
    }

    /// The number of tables recorded as published.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.tables.len()
    }
}

/// A random table-id base for a new tree: a multiple of 2^24 (so 16 M tables fit before the
/// next base), never 0.
pub(crate) fn random_table_id_base() -> u64 {
    (random_u64() & !((1u64 << 24) - 1)).max(1 << 24) | 1
}

/// The asynchronous phase of an incremental checkpoint or a native savepoint.
pub(crate) struct NativeJob {
    pub(crate) tables: CheckpointTables,
    pub(crate) shared: Arc<Mutex<SharedTables>>,
    /// The tree's storage, where the table files are.
    pub(crate) tree_storage: Arc<dyn Storage>,
    pub(crate) meta: SnapshotMeta,
    pub(crate) range: KeyGroupRange,
}

/// What publishing one table gave.
struct Placed {
    record: NativeTableRecord,
    file: StateFile,
    new: bool,
    linked: bool,
}

impl NativeJob {
    /// Copies `table` into `writer`, returning the CRC-32C of its bytes.
    fn copy(
        &self,
        table: &TableHandle,
        mut writer: Box<dyn StateFileWriter>,
    ) -> Result<(StateFile, u32)> {
        let source = self.tree_storage.open(table.path())?;
        let crc = stream_crc32c(&*source, &mut |chunk| writer.write_all(chunk))?;
        Ok((writer.finish()?, crc))
    }

    /// The CRC-32C of a table's file.
    fn checksum(&self, table: &TableHandle) -> Result<u32> {
        let source = self.tree_storage.open(table.path())?;
        stream_crc32c(&*source, &mut |_| Ok(()))
    }

    fn record(
        table: &TableHandle,
        level: usize,
        location: TableLocation,
        name: String,
        size: u64,
        crc32c: u32,
    ) -> NativeTableRecord {
        NativeTableRecord {
            level: level as u8,
            location,
            table_id: table.id(),
            name,
            size,
            crc32c,
            smallest: table.smallest().to_vec(),
            largest: table.largest().to_vec(),
        }
    }

    /// References or publishes `table` as a shared file of `target`.
    fn place_shared(
        &self,
        table: &TableHandle,
        level: usize,
        target: &SnapshotTarget,
        storage: &Arc<dyn CheckpointStorage>,
    ) -> Result<Placed> {
        let known = self.shared.lock().tables.get(&table.id()).cloned();
        if let Some(p) = known {
            if storage.reserve_shared_file(target, &p.file)? {
                let name = file_name(&p.file);
                return Ok(Placed {
                    record: Self::record(
                        table,
                        level,
                        TableLocation::Shared,
                        name,
                        p.file.size(),
                        p.crc32c,
                    ),
                    file: p.file,
                    new: false,
                    linked: false,
                });
            }
        }
        let uid = self.shared.lock().uid().to_string();
        let name = format!("{uid}-{:016x}.sst", table.id());
        let linked = match self.tree_storage.local_path(table.path())? {
            Some(local) => storage.link_shared_file(target, &name, &local)?,
            None => None,
        };
        let (file, crc32c, was_linked) = match linked {
            Some(file) => {
                let crc = self.checksum(table)?;
                (
                    StateFile::with_checksum(file.path(), file.size(), crc)?,
                    crc,
                    true,
                )
            }
            None => {
                let writer = storage.create_shared_file(target, &name)?;
                let (file, crc) = self.copy(table, writer)?;
                (file, crc, false)
            }
        };
        if file.size() != table.size() {
            return Err(Error::StateFileSize {
                path: file.path().into(),
                expected: table.size(),
                actual: file.size(),
            });
        }
        self.shared.lock().tables.insert(
            table.id(),
            PublishedTable {
                file: file.clone(),
                crc32c,
                by: target.id(),
                confirmed: false,
            },
        );
        Ok(Placed {
            record: Self::record(
                table,
                level,
                TableLocation::Shared,
                name,
                file.size(),
                crc32c,
            ),
            file,
            new: true,
            linked: was_linked,
        })
    }
}

impl NativeSnapshot for NativeJob {
    /// Tables keep the compression of the tree's options (`compression` is for canonical
    /// files).
    fn run(
        self: Box<Self>,
        target: &SnapshotTarget,
        storage: &Arc<dyn CheckpointStorage>,
        name: &str,
        _compression: flowstate_formats::Compression,
    ) -> Result<SnapshotResult> {
        let started = Instant::now();
        let private = target.kind() == SnapshotKind::Savepoint;
        let levels = self.tables.tables()?;
        let mut stats = SnapshotStats::default();
        let mut records = Vec::new();
        let mut private_files = Vec::new();
        let mut shared_files: Vec<StateFile> = Vec::new();
        // The tables, uploaded (copied or linked) as many at once as the storage asks: on an
        // object store each upload waits on the network.
        let jobs: Vec<(usize, &TableHandle)> = levels
            .iter()
            .enumerate()
            .flat_map(|(level, tables)| tables.iter().map(move |t| (level, &**t)))
            .collect();
        if private {
            let copied = map_bounded(&jobs, storage.parallel_transfers(), |&(level, table)| {
                let writer = storage.create_state_file(target, table.name())?;
                let (file, crc) = self.copy(table, writer)?;
                let record = Self::record(
                    table,
                    level,
                    TableLocation::Private,
                    table.name().to_string(),
                    file.size(),
                    crc,
                );
                Ok((record, file))
            })?;
            for (record, file) in copied {
                stats.bytes += file.size();
                records.push(record);
                private_files.push(file);
            }
        } else {
            let placed = map_bounded(&jobs, storage.parallel_transfers(), |&(level, table)| {
                self.place_shared(table, level, target, storage)
            })?;
            for placed in placed {
                stats.shared_files += 1;
                stats.shared_bytes += placed.file.size();
                if placed.new {
                    stats.new_shared_files += 1;
                    stats.new_shared_bytes += placed.file.size();
                    stats.linked_files += u64::from(placed.linked);
                }
                records.push(placed.record);
                shared_files.push(placed.file);
            }
        }
        let record = NativeSnapshotRecord {
            checkpoint_id: target.id().0,
            origin: Some(target.origin(name)),
            meta: self.meta.clone(),
            tables: records,
            timer_layout: true,
        };
        let bytes = record.encode(name)?;
        let mut writer = storage.create_state_file(target, name)?;
        writer.write_all(&bytes)?;
        let snapshot_file = writer.finish()?;
        stats.bytes += snapshot_file.size();
        let mut files = vec![snapshot_file];
        files.extend(private_files);
        let handle = KeyedStateHandle::native(self.range, files, shared_files)?;
        stats.duration = started.elapsed();
        Ok(SnapshotResult { handle, stats })
    }
}

/// The last component of a file's path.
pub(crate) fn file_name(file: &StateFile) -> String {
    file.path()
        .rsplit('/')
        .next()
        .unwrap_or(file.path())
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn published(by: u64, confirmed: bool) -> PublishedTable {
        PublishedTable {
            file: StateFile::new(format!("shared/x-{by}.sst"), 1).unwrap(),
            crc32c: 0,
            by: CheckpointId(by),
            confirmed,
        }
    }

    #[test]
    fn completion_confirms_and_forgets_dead_tables_abort_forgets_unconfirmed() {
        let mut s = SharedTables::new();
        s.tables.insert(1, published(1, false));
        s.tables.insert(2, published(2, false));
        s.tables.insert(3, published(3, false));
        // Checkpoint 2 completes; table 1 is gone from the tree, table 3 is checkpoint 3's.
        s.complete(CheckpointId(2), &[2].into_iter().collect());
        assert!(!s.tables.contains_key(&1));
        assert!(s.tables[&2].confirmed);
        assert!(!s.tables[&3].confirmed);
        s.abort(CheckpointId(3));
        assert!(!s.tables.contains_key(&3));
        assert_eq!(s.len(), 1);
        // A confirmed table survives an abort of a later checkpoint.
        s.abort(CheckpointId(2));
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn backend_ids_and_table_bases_are_random() {
        assert_ne!(SharedTables::new().uid, SharedTables::new().uid);
        assert_eq!(SharedTables::new().uid.len(), 32);
        let a = random_table_id_base();
        let b = random_table_id_base();
        assert_ne!(a, b);
        assert_eq!(a & ((1 << 24) - 1), 1);
    }
}
