//! Restore from native LSM snapshots (incremental checkpoints and native savepoints).
//!
//! [`NativeRestoreSource`] reads a native snapshot's tables in place, through the checkpoint
//! storage, as a [`RestoreSource`]: any backend restores from it at any parallelism, reading
//! only its key groups (the heap backend, or the LSM backend when it cannot link).
//!
//! [`LsmBackend::restore_from`] links instead: the tables of a native snapshot whose states
//! line up with the backend's are put into the working directory by hard link (a copy where
//! the checkpoint storage is elsewhere), checked against the size and checksum the snapshot
//! records, and installed in their levels, without a rewrite or a sort. With another
//! key-group range (a rescale), a table wholly inside the owned key groups is linked, one
//! wholly outside is skipped, and one that straddles the boundary is rewritten without the
//! foreign keys ([`Tree::rewrite_within`](super::tree::Tree::rewrite_within)). What cannot be
//! linked (canonical files, a snapshot whose states are numbered otherwise, tables that would
//! overlap another snapshot's in a level, clashing table ids) goes through the restore walker
//! and is ingested as sorted tables, as [`LsmBackend::restore`] does.

use std::collections::HashMap;
use std::sync::Arc;

use flowstate_formats::checkpoint::native_snapshot::MAX_NATIVE_SNAPSHOT_LEN;
use flowstate_formats::checkpoint::{
    KeyedHandleKind, NativeSnapshotRecord, NativeTableRecord, TableLocation,
};

use super::backend::{group_entries, LsmBackend};
use super::key::{self, KeyRange};
use super::timer_key::Layout;
use super::tree::{TableHandle, TreeSnapshot, Version, MAX_LEVELS};
use crate::checkpoint::{
    state_metas, ChainRestoreSource, CheckpointStorage, FileRestoreSource, KeyedStateHandle,
    StateFile,
};
use crate::config::BackendConfig;
use crate::error::{Error, Result};
use crate::key_group::KeyGroupRange;
use crate::parallel::map_bounded;
use crate::snapshot::{EncodedEntry, RestoreSource};
use crate::state::{CodecInfo, Key, StateId, StateMeta};
use crate::storage::{stream_crc32c, Storage, TEMP_SUFFIX};

/// A native snapshot handle, opened: its snapshot file decoded and every table's file found
/// in the handle.
#[derive(Debug)]
pub(crate) struct NativeHandle {
    pub(crate) record: NativeSnapshotRecord,
    /// The file of each table of `record`, in order.
    pub(crate) files: Vec<StateFile>,
    pub(crate) metas: Vec<StateMeta>,
    pub(crate) key_codec: CodecInfo,
    pub(crate) range: KeyGroupRange,
}

impl NativeHandle {
    /// Reads the native snapshot file of `handle` (of kind LSM native) and finds every table
    /// it records among the handle's files: a shared table in its shared files, a private one
    /// beside the snapshot file, with the recorded size.
    pub(crate) fn open(storage: &dyn CheckpointStorage, handle: &KeyedStateHandle) -> Result<Self> {
        if handle.kind() != KeyedHandleKind::LsmNative {
            return Err(Error::InvalidArgument(
                "a native restore needs a handle of a native LSM snapshot".into(),
            ));
        }
        let snapshot = &handle.files()[0];
        if snapshot.size() > MAX_NATIVE_SNAPSHOT_LEN {
            return Err(Error::FileTooLarge {
                path: snapshot.path().into(),
                len: snapshot.size(),
                limit: MAX_NATIVE_SNAPSHOT_LEN,
            });
        }
        let file = storage.open_state_file(snapshot)?;
        let mut bytes = vec![0; snapshot.size() as usize];
        file.read_at(0, &mut bytes)?;
        let record = NativeSnapshotRecord::decode(&bytes, snapshot.path())?;
        snapshot.check_origin(record.origin.as_ref())?;
        let range = KeyGroupRange::new(record.meta.key_group_start, record.meta.key_group_end)?;
        if range != handle.key_group_range() {
            return Err(Error::IncompatibleSnapshot(format!(
                "{} covers key groups {range}, its handle {}",
                snapshot.path(),
                handle.key_group_range()
            )));
        }
        let dir = snapshot.path().rsplit_once('/').map_or("", |(d, _)| d);
        let shared: HashMap<&str, &StateFile> = handle
            .shared_files()
            .iter()
            .map(|f| (f.path(), f))
            .collect();
        let private: HashMap<&str, &StateFile> =
            handle.files()[1..].iter().map(|f| (f.path(), f)).collect();
        let mut files = Vec::with_capacity(record.tables.len());
        for t in &record.tables {
            let (path, listed) = match t.location {
                TableLocation::Shared => {
                    let path = format!("{}/{}", crate::checkpoint::SHARED_DIR, t.name);
                    let listed = shared.get(path.as_str()).copied();
                    (path, listed)
                }
                TableLocation::Private => {
                    let path = if dir.is_empty() {
                        t.name.clone()
                    } else {
                        format!("{dir}/{}", t.name)
                    };
                    let listed = private.get(path.as_str()).copied();
                    (path, listed)
                }
            };
            let Some(file) = listed else {
                return Err(Error::SharedFile {
                    path,
                    checkpoint: record.checkpoint_id,
                    reason: format!("{} lists it, its handle does not", snapshot.path()),
                });
            };
            if file.size() != t.size {
                return Err(Error::SharedFile {
                    path,
                    checkpoint: record.checkpoint_id,
                    reason: format!(
                        "the handle records {} bytes, the snapshot {}",
                        file.size(),
                        t.size
                    ),
                });
            }
            files.push(file.clone());
        }
        let (metas, key_codec) = state_metas(&record.meta);
        Ok(NativeHandle {
            record,
            files,
            metas,
            key_codec,
            range,
        })
    }

    /// How the snapshot's tables lay out the keys of state `meta`: timer states in the timer
    /// layout from format version 3, every state in the keyed layout before.
    pub(crate) fn layout(&self, meta: &StateMeta) -> Layout {
        if self.record.timer_layout {
            Layout::of(meta)
        } else {
            Layout::Keyed
        }
    }

    /// Whether every state's keys are laid out as this build lays them out (so the tables can
    /// be linked as they are).
    pub(crate) fn current_layout(&self) -> bool {
        self.metas.iter().all(|m| self.layout(m) == Layout::of(m))
    }

    /// The error for table `index`'s file.
    fn table_error(&self, index: usize, reason: impl std::fmt::Display) -> Error {
        Error::SharedFile {
            path: self.files[index].path().to_string(),
            checkpoint: self.record.checkpoint_id,
            reason: reason.to_string(),
        }
    }

    /// Fails, naming the file and its checkpoint, unless `crc` is the CRC-32C table `index`
    /// records.
    fn check_crc(&self, index: usize, crc: u32) -> Result<()> {
        let recorded = self.record.tables[index].crc32c;
        if crc == recorded {
            return Ok(());
        }
        Err(self.table_error(
            index,
            format!(
                "checksum {crc:08x} where the snapshot records {recorded:08x}: the file is \
                 damaged or another file"
            ),
        ))
    }

    /// Opens table `index` in place through `storage`, after checking the CRC-32C of the whole
    /// file against the snapshot's record (a damaged or substituted file is named with its
    /// checkpoint here, not found later by a block read).
    fn open_in_place(&self, storage: &dyn CheckpointStorage, index: usize) -> Result<TableHandle> {
        let t = &self.record.tables[index];
        let file = storage
            .open_state_file(&self.files[index])
            .map_err(|e| self.table_error(index, e))?;
        // The storage checked the content against the handle's checksum, when it has one.
        let crc = match self.files[index].checksum() {
            Some(c) => c,
            None => {
                stream_crc32c(&*file, &mut |_| Ok(())).map_err(|e| self.table_error(index, e))?
            }
        };
        self.check_crc(index, crc)?;
        TableHandle::open_in_place(
            Arc::from(file),
            self.files[index].path(),
            t.table_id,
            &t.smallest,
            &t.largest,
        )
        .map_err(|e| self.table_error(index, e))
    }
}

/// A native snapshot read in place as a [`RestoreSource`]: its tables opened through the
/// checkpoint storage, each key group of each state read by a merging scan of the levels.
pub struct NativeRestoreSource {
    native: NativeHandle,
    view: TreeSnapshot,
}

impl std::fmt::Debug for NativeRestoreSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NativeRestoreSource")
            .field("checkpoint", &self.native.record.checkpoint_id)
            .field("range", &self.native.range)
            .field("tables", &self.native.files.len())
            .finish()
    }
}

impl NativeRestoreSource {
    /// The native snapshot's meta block (every state's metadata with its TTL), as written.
    pub fn snapshot_meta(&self) -> &flowstate_formats::snapshot::SnapshotMeta {
        &self.native.record.meta
    }

    /// Opens the native snapshot of `handle` (kind LSM native) and its tables. A table that
    /// is missing, of another size or not a table of the recorded id is an error naming it
    /// and the checkpoint ([`Error::SharedFile`]).
    pub fn open(storage: &dyn CheckpointStorage, handle: &KeyedStateHandle) -> Result<Self> {
        let native = NativeHandle::open(storage, handle)?;
        let mut levels: Vec<Vec<Arc<TableHandle>>> = vec![Vec::new(); MAX_LEVELS];
        for (index, t) in native.record.tables.iter().enumerate() {
            let level = usize::from(t.level);
            if level >= MAX_LEVELS {
                return Err(native.table_error(index, format!("level {level} is past the last")));
            }
            levels[level].push(Arc::new(native.open_in_place(storage, index)?));
        }
        let version = Version::from_levels(levels)?;
        Ok(NativeRestoreSource {
            native,
            view: TreeSnapshot::of_version(Arc::new(version)),
        })
    }
}

impl RestoreSource for NativeRestoreSource {
    fn max_parallelism(&self) -> u32 {
        self.native.record.meta.max_parallelism
    }
    fn key_group_range(&self) -> KeyGroupRange {
        self.native.range
    }
    fn key_codec(&self) -> &CodecInfo {
        &self.native.key_codec
    }
    fn state_metas(&self) -> Vec<StateMeta> {
        self.native.metas.clone()
    }
    fn read_key_group(
        &self,
        key_group: u16,
        visit: &mut dyn FnMut(usize, EncodedEntry),
    ) -> Result<()> {
        if !self.native.range.contains(key_group) {
            return Ok(());
        }
        for (index, meta) in self.native.metas.iter().enumerate() {
            let mut prefix = Vec::new();
            key::key_group_prefix(&mut prefix, StateId(index as u32), key_group);
            let entries = self.view.scan_prefix(&prefix)?;
            let layout = self.native.layout(meta);
            group_entries(meta.kind, layout, &meta.name, entries, &mut |e| {
                visit(index, e)
            })?;
        }
        Ok(())
    }
}

/// Opens a restore source for every handle of `handles`, whatever its kind: canonical files
/// as [`FileRestoreSource`]s, native snapshots as [`NativeRestoreSource`]s, heap chains as
/// [`ChainRestoreSource`]s.
pub fn open_restore_sources(
    storage: &dyn CheckpointStorage,
    handles: &[KeyedStateHandle],
) -> Result<Vec<Box<dyn RestoreSource>>> {
    let mut sources: Vec<Box<dyn RestoreSource>> = Vec::new();
    for handle in handles {
        match handle.kind() {
            KeyedHandleKind::KeyGroupFiles => {
                for file in handle.files() {
                    sources.push(Box::new(FileRestoreSource::open(storage, file)?));
                }
            }
            KeyedHandleKind::LsmNative => {
                sources.push(Box::new(NativeRestoreSource::open(storage, handle)?));
            }
            KeyedHandleKind::HeapChain => {
                sources.push(Box::new(ChainRestoreSource::open(storage, handle)?));
            }
        }
    }
    Ok(sources)
}

/// What a restore did, for tests and figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RestoreStats {
    /// Tables put into the working directory by a hard link.
    pub linked_tables: u64,
    /// Tables copied into the working directory (the checkpoint storage is elsewhere).
    pub copied_tables: u64,
    /// Tables rewritten without the key groups the backend does not own.
    pub clipped_tables: u64,
    /// Tables skipped: none of their key groups is owned.
    pub skipped_tables: u64,
    /// Handles (or files) read entry by entry and ingested as new sorted tables.
    pub ingested_sources: u64,
}

/// How one table of a linkable snapshot is restored.
enum Placement {
    Link,
    Clip,
    Skip,
}

/// Where a table of a snapshot goes: its keys all lie in the snapshot's key groups, so it is
/// linked whole when its key range touches none of the snapshot's key groups the backend does
/// not own (`foreign`), skipped when it touches none it owns (`keep`), clipped otherwise.
fn placement(t: &NativeTableRecord, keep: &[KeyRange], foreign: &[KeyRange]) -> Placement {
    let touches = |r: &KeyRange| {
        t.largest.as_slice() >= r.start.as_slice()
            && r.end
                .as_deref()
                .is_none_or(|end| t.smallest.as_slice() < end)
    };
    if !foreign.iter().any(touches) {
        Placement::Link
    } else if keep.iter().any(touches) {
        Placement::Clip
    } else {
        Placement::Skip
    }
}

/// The key groups of `source` outside `own` (a sub-range of it): at most two ranges.
fn outside(source: KeyGroupRange, own: KeyGroupRange) -> Vec<KeyGroupRange> {
    let mut out = Vec::new();
    if own.is_empty() {
        out.push(source);
        return out;
    }
    if own.start() > source.start() {
        if let Ok(r) = KeyGroupRange::new(source.start(), own.start() - 1) {
            out.push(r);
        }
    }
    if own.end() < source.end() {
        if let Ok(r) = KeyGroupRange::new(own.end() + 1, source.end()) {
            out.push(r);
        }
    }
    out
}

impl<K: Key> LsmBackend<K> {
    /// Opens an LSM backend as `config` says with the state of `handles` (of any kind) in the
    /// key groups it owns; handles that do not intersect its range are ignored.
    ///
    /// The tables of native snapshots are linked (or copied) into the working directory and
    /// installed in their levels; straddling tables are rewritten without the foreign key
    /// groups; canonical files, and native snapshots that cannot be linked, are read entry by
    /// entry and ingested as by [`restore`](Self::restore). A shared file that is missing,
    /// damaged (its checksum) or of the wrong size is an error naming it and the checkpoint
    /// ([`Error::SharedFile`]); nothing falls back to other data.
    pub fn restore_from(
        config: BackendConfig,
        storage: &dyn CheckpointStorage,
        handles: &[KeyedStateHandle],
    ) -> Result<(Self, RestoreStats)> {
        let mut backend = Self::open(config)?;
        let range = backend.range;
        let max_parallelism = backend.max_parallelism;
        let key_codec = CodecInfo::of::<K>();
        let handles: Vec<&KeyedStateHandle> =
            handles.iter().filter(|h| h.intersects(range)).collect();
        let mut stats = RestoreStats::default();
        let mut preset: Option<Vec<StateMeta>> = None;
        let mut levels: Vec<Vec<Arc<TableHandle>>> = vec![Vec::new(); MAX_LEVELS];
        let mut restored: Vec<KeyGroupRange> = Vec::new();
        let mut generic: Vec<Box<dyn RestoreSource>> = Vec::new();
        let tree = Arc::clone(backend.tree());
        for handle in handles {
            match handle.kind() {
                KeyedHandleKind::LsmNative => {}
                KeyedHandleKind::KeyGroupFiles => {
                    for file in handle.files() {
                        generic.push(Box::new(FileRestoreSource::open(storage, file)?));
                    }
                    continue;
                }
                KeyedHandleKind::HeapChain => {
                    generic.push(Box::new(ChainRestoreSource::open(storage, handle)?));
                    continue;
                }
            }
            let native = NativeHandle::open(storage, handle)?;
            if native.record.meta.max_parallelism != max_parallelism
                || native.key_codec != key_codec
            {
                // The walker reports the mismatch with the usual words.
                generic.push(Box::new(NativeRestoreSource::open(storage, handle)?));
                continue;
            }
            let states = preset.get_or_insert_with(|| native.metas.clone());
            // Tables in another layout (timers before format version 3) are read entry by
            // entry and written in this one.
            if *states != native.metas || !native.current_layout() {
                generic.push(Box::new(NativeRestoreSource::open(storage, handle)?));
                continue;
            }
            let own = native.range.intersection(&range);
            let keep: Vec<KeyRange> = (0..native.metas.len())
                .filter_map(|i| KeyRange::key_groups(StateId(i as u32), own))
                .collect();
            let foreign: Vec<KeyRange> = outside(native.range, own)
                .into_iter()
                .flat_map(|r| {
                    (0..native.metas.len())
                        .filter_map(move |i| KeyRange::key_groups(StateId(i as u32), r))
                })
                .collect();
            let placements: Vec<Placement> = native
                .record
                .tables
                .iter()
                .map(|t| placement(t, &keep, &foreign))
                .collect();
            // Linked tables keep their ids and levels: they must neither clash nor overlap
            // what other snapshots put in the same level.
            let linked_ids: Vec<u64> = native
                .record
                .tables
                .iter()
                .zip(&placements)
                .filter(|(_, p)| matches!(p, Placement::Link))
                .map(|(t, _)| t.table_id)
                .collect();
            if let Some(twice) = restored.iter().find(|r| !r.intersection(&own).is_empty()) {
                return Err(Error::IncompatibleSnapshot(format!(
                    "key groups {} are covered by two native snapshots ({twice} and {own})",
                    twice.intersection(&own),
                )));
            }
            let deep = native
                .record
                .tables
                .iter()
                .any(|t| usize::from(t.level) >= MAX_LEVELS);
            let overlaps = !deep
                && native.record.tables.iter().zip(&placements).any(|(t, p)| {
                    t.level > 0
                        && !matches!(p, Placement::Skip)
                        && levels[usize::from(t.level)].iter().any(|o| {
                            o.smallest() <= t.largest.as_slice()
                                && o.largest() >= t.smallest.as_slice()
                        })
                });
            if deep || overlaps || !tree.reserve_table_ids(&linked_ids) {
                generic.push(Box::new(NativeRestoreSource::open(storage, handle)?));
                continue;
            }
            // The tables to link or copy, fetched in parallel (downloads, on an object store).
            let to_fetch: Vec<usize> = placements
                .iter()
                .enumerate()
                .filter(|(_, p)| matches!(p, Placement::Link))
                .map(|(index, _)| index)
                .collect();
            let mut fetched = backend
                .fetch_tables(storage, &native, &to_fetch)?
                .into_iter();
            let mut mine: Vec<Vec<Arc<TableHandle>>> = vec![Vec::new(); MAX_LEVELS];
            for (index, (t, p)) in native.record.tables.iter().zip(&placements).enumerate() {
                let level = usize::from(t.level);
                match p {
                    Placement::Skip => stats.skipped_tables += 1,
                    Placement::Link => {
                        let linked = fetched.next().ok_or_else(|| {
                            native.table_error(index, "fetched tables out of step")
                        })?;
                        if linked {
                            stats.linked_tables += 1;
                        } else {
                            stats.copied_tables += 1;
                        }
                        let table = tree.adopt_table(t.table_id, &t.smallest, &t.largest)?;
                        if t.location == TableLocation::Shared {
                            backend.shared.lock().adopt(
                                t.table_id,
                                native.files[index].clone(),
                                t.crc32c,
                            );
                        }
                        mine[level].push(table);
                    }
                    Placement::Clip => {
                        let source = native.open_in_place(storage, index)?;
                        let rewritten = tree
                            .rewrite_within(&source, &keep)
                            .map_err(|e| native.table_error(index, e))?;
                        stats.clipped_tables += 1;
                        mine[level].extend(rewritten);
                    }
                }
            }
            for (level, tables) in mine.into_iter().enumerate() {
                levels[level].extend(tables);
            }
            restored.push(own);
        }
        if levels.iter().any(|l| !l.is_empty()) {
            tree.install_adopted(levels)?;
        }
        let preset = preset.unwrap_or_default();
        let sources: Vec<&dyn RestoreSource> = generic.iter().map(|s| &**s as _).collect();
        stats.ingested_sources = sources.len() as u64;
        backend.ingest_sources(&preset, &restored, &sources)?;
        Ok((backend, stats))
    }

    /// Puts tables `indices` of `native` into the working directory ([`fetch_table`]), up to
    /// [`CheckpointStorage::parallel_transfers`] at once; returns, in the order of `indices`, whether each was
    /// linked.
    fn fetch_tables(
        &self,
        storage: &dyn CheckpointStorage,
        native: &NativeHandle,
        indices: &[usize],
    ) -> Result<Vec<bool>> {
        let jobs: Vec<(usize, String)> = indices
            .iter()
            .map(|&i| (i, self.tree().table_path(native.record.tables[i].table_id)))
            .collect();
        let tree_storage = &*self.storage;
        map_bounded(&jobs, storage.parallel_transfers(), |(index, path)| {
            fetch_table(tree_storage, path, storage, native, *index)
        })
    }
}

/// Puts table `index` of `native` into the working directory at `path`: a hard link where
/// both storages are on one local file system, else a copy (a download, from an object
/// store) checksummed as it streams; then checks its size and checksum. Returns whether it
/// was linked.
fn fetch_table(
    tree_storage: &dyn Storage,
    path: &str,
    storage: &dyn CheckpointStorage,
    native: &NativeHandle,
    index: usize,
) -> Result<bool> {
    let t = &native.record.tables[index];
    let file = &native.files[index];
    let source_path = storage.local_path(file)?;
    let linked = match &source_path {
        Some(local) if local.exists() => tree_storage.link_from(local, path)?,
        Some(_) => return Err(native.table_error(index, "the file does not exist")),
        None => false,
    };
    let crc = if linked {
        let size = tree_storage.open(path)?.len();
        if size != t.size {
            let _ = tree_storage.remove_file(path);
            return Err(native.table_error(
                index,
                format!("{size} bytes where the snapshot records {}", t.size),
            ));
        }
        stream_crc32c(&*tree_storage.open(path)?, &mut |_| Ok(()))?
    } else {
        // The size here, the checksum as the bytes stream by: one read of the file.
        let source = storage
            .open_state_file_unchecked(file)
            .map_err(|e| native.table_error(index, e))?;
        if source.len() != t.size {
            return Err(native.table_error(
                index,
                format!(
                    "{} bytes where the snapshot records {}",
                    source.len(),
                    t.size
                ),
            ));
        }
        let tmp = format!("{path}{TEMP_SUFFIX}");
        let mut out = tree_storage.create(&tmp)?;
        let copied = stream_crc32c(&*source, &mut |chunk| out.write_all(chunk))
            .and_then(|crc| out.sync().map(|()| crc));
        match copied {
            Ok(crc) => {
                drop(out);
                tree_storage.rename(&tmp, path)?;
                crc
            }
            Err(e) => {
                drop(out);
                let _ = tree_storage.remove_file(&tmp);
                return Err(e);
            }
        }
    };
    if let Err(e) = native.check_crc(index, crc) {
        let _ = tree_storage.remove_file(path);
        return Err(e);
    }
    Ok(linked)
}
