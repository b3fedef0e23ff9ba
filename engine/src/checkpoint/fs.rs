//! Checkpoint storage in a directory tree of a [`Storage`]: the file system, or any other
//! implementation of the storage interface.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use flowstate_formats::checkpoint::metadata::MAX_METADATA_LEN;
use flowstate_formats::checkpoint::{check_relative_path, CheckpointMetadataRecord};
use flowstate_formats::FormatError;

use super::completed::CompletedCheckpoint;
use super::handle::{StateFile, SubtaskState};
use super::storage::{CheckpointStorage, SnapshotTarget, StateFileWriter};
use super::{CheckpointId, SnapshotKind, METADATA_FILE, SHARED_DIR, TASK_OWNED_DIR};
use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Result};
use crate::storage::{
    is_temp_name, stream_crc32c, LocalStorage, ReadableFile, Storage, WritableFile, ROOT,
    TEMP_SUFFIX,
};

/// The number of completed checkpoints kept by default: 1, as Flink's
/// `state.checkpoints.num-retained`.
pub const DEFAULT_RETAINED: usize = 1;

/// Options of [`FsCheckpointStorage`] (and [`MemoryCheckpointStorage`](super::MemoryCheckpointStorage)).
#[derive(Debug, Clone)]
pub struct FsCheckpointOptions {
    retained: usize,
    clock: Arc<dyn Clock>,
}

impl Default for FsCheckpointOptions {
    /// Retain 1 completed checkpoint (as Flink); timestamps from the system clock.
    fn default() -> Self {
        FsCheckpointOptions {
            retained: DEFAULT_RETAINED,
            clock: Arc::new(SystemClock),
        }
    }
}

impl FsCheckpointOptions {
    /// Keeps the newest `retained` completed checkpoints (at least 1); completing one more
    /// deletes the oldest.
    pub fn with_retained(mut self, retained: usize) -> Self {
        self.retained = retained;
        self
    }

    /// Takes the completion timestamps written into `_metadata` from `clock`.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The number of completed checkpoints kept.
    pub fn retained(&self) -> usize {
        self.retained
    }
}

/// Checkpoint storage in a directory tree, all I/O through a [`Storage`].
///
/// ## Layout
///
/// ```text
/// <root>/chk-<id>/_metadata     written last, atomically: the checkpoint exists once it does
/// <root>/chk-<id>/<name>        the state files of checkpoint <id> (exclusive to it)
/// <root>/shared/                reserved for files shared by incremental checkpoints
/// <root>/taskowned/             reserved for files the tasks own
/// <root>/<savepoint dir>/...    a savepoint: its state files and its _metadata, with paths
///                               relative to the directory, so it can be moved
/// ```
///
/// The metadata of checkpoint `id` may list only files in `chk-<id>/`, so deleting a
/// subsumed checkpoint deletes its directory. [`open`](FsCheckpointStorage::open) removes
/// what a crash left behind: checkpoint directories without `_metadata`, temporary files and
/// files a completed checkpoint does not list; then it applies retention. Savepoint
/// directories are never touched. spec/checkpoint-protocol.md states the rules.
///
/// One `FsCheckpointStorage` owns a root: it must be opened before any checkpoint is taken
/// (it removes incomplete checkpoints), and two must not manage the same root at once.
pub struct FsCheckpointStorage {
    storage: Arc<dyn Storage>,
    retained: usize,
    clock: Arc<dyn Clock>,
    /// The most bytes one state file may hold ([`MemoryCheckpointStorage`]'s limit).
    ///
    /// [`MemoryCheckpointStorage`]: super::MemoryCheckpointStorage
    max_state_size: Option<u64>,
    /// Serializes completion, abort, garbage collection and directory creation.
    inner: Mutex<Inner>,
    /// What this instance may do with the root.
    access: Access,
}

/// What an [`FsCheckpointStorage`] instance may do with its root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// The one instance that manages the root: cleans up at start, completes, aborts, deletes.
    Owner,
    /// A task-side instance (in another process than the owner): writes the state files of
    /// checkpoints and savepoints and reads completed ones; never deletes.
    Tasks,
    /// Inspection only: nothing is cleaned up, written or deleted.
    ReadOnly,
}

#[derive(Debug, Default)]
struct Inner {
    /// Snapshot directories this instance created and made durable in their parents.
    durable_dirs: BTreeSet<String>,
    /// The shared-file registry's in-progress part: shared files (paths) that checkpoints in
    /// progress created or are about to reference, by checkpoint. The retained part is in the
    /// retained checkpoints' `_metadata`, read again at every collection.
    reserved: BTreeMap<CheckpointId, BTreeSet<String>>,
    /// The owner's knowledge of the newest complete checkpoint (`None`: not known yet), kept
    /// by its own scans and completions, so that opening a state file does not list the root
    /// again (a listing and a request per checkpoint on an object store). Only the owner
    /// completes checkpoints; a task-side instance always scans.
    newest_complete: Option<Option<CheckpointId>>,
}

impl std::fmt::Debug for FsCheckpointStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FsCheckpointStorage")
            .field("storage", &self.storage)
            .field("retained", &self.retained)
            .field("max_state_size", &self.max_state_size)
            .finish_non_exhaustive()
    }
}

impl FsCheckpointStorage {
    /// Opens checkpoint storage at the root of `storage`: creates `shared/` and `taskowned/`,
    /// removes what a crash left behind (checkpoint directories without `_metadata`,
    /// temporary files, files no completed checkpoint lists in its directory) and applies
    /// retention.
    pub fn open(storage: Arc<dyn Storage>, options: FsCheckpointOptions) -> Result<Self> {
        Self::open_with_limit(storage, options, None)
    }

    /// Opens checkpoint storage in local directory `dir` (created if missing) with the
    /// default options: one retained checkpoint, the system clock.
    pub fn new(dir: impl AsRef<Path>) -> Result<Self> {
        Self::open_local(dir, FsCheckpointOptions::default())
    }

    /// Opens checkpoint storage in local directory `dir` (created if missing); see
    /// [`open`](FsCheckpointStorage::open).
    pub fn open_local(dir: impl AsRef<Path>, options: FsCheckpointOptions) -> Result<Self> {
        Self::open(Arc::new(LocalStorage::new(dir)?), options)
    }

    pub(crate) fn open_with_limit(
        storage: Arc<dyn Storage>,
        options: FsCheckpointOptions,
        max_state_size: Option<u64>,
    ) -> Result<Self> {
        if options.retained == 0 {
            return Err(Error::InvalidConfig(
                "checkpoint storage must retain at least one completed checkpoint".into(),
            ));
        }
        let this = FsCheckpointStorage {
            storage,
            retained: options.retained,
            clock: options.clock,
            max_state_size,
            inner: Mutex::new(Inner::default()),
            access: Access::Owner,
        };
        this.recover()?;
        Ok(this)
    }

    /// Opens the checkpoints of an existing local directory for inspection only (the offline
    /// tools): no start-up cleanup, and every method that would write or delete fails with
    /// [`Error::InvalidArgument`]. Reading checkpoints, savepoints and state files works.
    pub fn open_read_only(dir: impl AsRef<Path>) -> Result<Self> {
        Self::open_without_cleanup(dir.as_ref(), Access::ReadOnly)
    }

    /// Opens the checkpoints of local directory `dir`, which another instance owns (opened
    /// with [`open_local`](Self::open_local), in the process that completes checkpoints), for
    /// the tasks of another process: no start-up cleanup; state files of checkpoints and
    /// savepoints can be written, and completed checkpoints read; completing, aborting,
    /// garbage collection and shared files (incremental checkpoints) fail with
    /// [`Error::InvalidArgument`]. The owner must have been opened first (its start-up cleanup
    /// removes incomplete checkpoints).
    pub fn open_for_tasks(dir: impl AsRef<Path>) -> Result<Self> {
        Self::open_without_cleanup(dir.as_ref(), Access::Tasks)
    }

    fn open_without_cleanup(dir: &Path, access: Access) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::InvalidArgument(format!(
                "{} is not a directory of checkpoints",
                dir.display()
            )));
        }
        Ok(Self::without_cleanup(
            Arc::new(LocalStorage::new(dir)?),
            access,
        ))
    }

    /// Opens the checkpoints at the root of `storage` for inspection only, as
    /// [`open_read_only`](Self::open_read_only) does for a local directory.
    pub fn open_storage_read_only(storage: Arc<dyn Storage>) -> Self {
        Self::without_cleanup(storage, Access::ReadOnly)
    }

    /// Opens the checkpoints at the root of `storage` for the tasks of another process than
    /// the owner's, as [`open_for_tasks`](Self::open_for_tasks) does for a local directory.
    pub fn open_storage_for_tasks(storage: Arc<dyn Storage>) -> Self {
        Self::without_cleanup(storage, Access::Tasks)
    }

    fn without_cleanup(storage: Arc<dyn Storage>, access: Access) -> Self {
        FsCheckpointStorage {
            storage,
            retained: DEFAULT_RETAINED,
            clock: Arc::new(crate::clock::SystemClock),
            max_state_size: None,
            inner: Mutex::new(Inner::default()),
            access,
        }
    }

    /// Fails unless state files may be written (the owner or a task-side instance).
    fn writable(&self) -> Result<()> {
        if self.access == Access::ReadOnly {
            return Err(Error::InvalidArgument(
                "checkpoint storage opened read-only: nothing can be written or deleted".into(),
            ));
        }
        Ok(())
    }

    /// Fails unless this instance manages the root (completes, aborts, deletes, shares files).
    fn owner(&self, what: &str) -> Result<()> {
        self.writable()?;
        if self.access == Access::Tasks {
            return Err(Error::InvalidArgument(format!(
                "checkpoint storage opened for tasks: {what} is for the instance that owns the \
                 root (FsCheckpointStorage::open_local)"
            )));
        }
        Ok(())
    }

    /// The storage the checkpoints are in.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// The number of completed checkpoints kept.
    pub fn retained(&self) -> usize {
        self.retained
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // `Inner` is a cache that stays valid across a panic.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Start-up: reserved directories, then removal of crash leftovers, then retention.
    fn recover(&self) -> Result<()> {
        let mut inner = self.lock();
        let mut created = false;
        for dir in [SHARED_DIR, TASK_OWNED_DIR] {
            if !self.storage.exists(dir)? {
                self.storage.create_dir_all(dir)?;
                created = true;
            }
        }
        let mut removed_at_root = false;
        for name in self.storage.list_dir(ROOT)? {
            if is_temp_name(&name) && self.storage.list_dir(&name).is_err() {
                self.storage.remove_file(&name)?;
                removed_at_root = true;
            } else if let Some(id) = CheckpointId::from_dir_name(&name) {
                if self.storage.exists(&metadata_path(&name))? {
                    self.remove_unlisted_files(id)?;
                }
            }
        }
        if created || removed_at_root {
            self.storage.sync_dir(ROOT)?;
        }
        // Nothing is in progress at start-up: every incomplete checkpoint is garbage.
        self.collect_garbage_locked(&mut inner, true)
    }

    /// Removes the entries of completed checkpoint `id`'s directory that its `_metadata`
    /// does not list (temporary files, files of a failed task attempt). A `_metadata` that
    /// cannot be read leaves the directory as it is, for inspection.
    fn remove_unlisted_files(&self, id: CheckpointId) -> Result<()> {
        let Ok(checkpoint) = self.load_checkpoint(id) else {
            return Ok(());
        };
        let dir = id.dir_name();
        let listed: BTreeSet<&str> = checkpoint.files().map(StateFile::path).collect();
        let mut removed = false;
        for name in self.storage.list_dir(&dir)? {
            let path = format!("{dir}/{name}");
            if name == METADATA_FILE || listed.contains(path.as_str()) {
                continue;
            }
            if self.storage.list_dir(&path).is_ok() {
                // A directory: nothing of ours creates one here.
                self.storage.remove_dir_all(&path)?;
            } else {
                self.storage.remove_file(&path)?;
            }
            removed = true;
        }
        if removed {
            self.storage.sync_dir(&dir)?;
        }
        Ok(())
    }

    /// The completed (with `_metadata`) and incomplete checkpoint directories, ascending.
    fn scan(&self) -> Result<(Vec<CheckpointId>, Vec<CheckpointId>)> {
        let mut complete = Vec::new();
        let mut incomplete = Vec::new();
        for name in self.storage.list_dir(ROOT)? {
            if let Some(id) = CheckpointId::from_dir_name(&name) {
                if self.storage.exists(&metadata_path(&name))? {
                    complete.push(id);
                } else {
                    incomplete.push(id);
                }
            }
        }
        complete.sort_unstable();
        incomplete.sort_unstable();
        Ok((complete, incomplete))
    }

    /// Retention: deletes completed checkpoints beyond the newest `retained` (their
    /// `_metadata` first, so that a crash half-way leaves an incomplete directory, never a
    /// checkpoint with missing files) and incomplete checkpoints older than the newest
    /// completed one, or all of them `at_start`. A checkpoint directory a retained checkpoint
    /// lists a file of is kept.
    fn collect_garbage_locked(&self, inner: &mut Inner, at_start: bool) -> Result<()> {
        let (complete, incomplete) = self.scan()?;
        inner.newest_complete = Some(complete.last().copied());
        let split = complete.len().saturating_sub(self.retained);
        let (subsumed, retained) = complete.split_at(split);
        let newest = retained.last().copied();
        // Directories retained checkpoints list files in; `None` if one cannot be read.
        let mut referenced = Some(BTreeSet::new());
        for &id in retained {
            match (self.load_checkpoint(id), referenced.as_mut()) {
                (Ok(checkpoint), Some(dirs)) => dirs.extend(
                    checkpoint
                        .files()
                        .filter_map(|f| f.path().split_once('/').map(|(d, _)| d.to_string())),
                ),
                _ => referenced = None,
            }
        }
        let deletable = |id: CheckpointId| {
            referenced
                .as_ref()
                .is_some_and(|dirs| !dirs.contains(&id.dir_name()))
        };
        let mut removed = false;
        for &id in subsumed.iter().filter(|&&id| deletable(id)) {
            let dir = id.dir_name();
            self.storage.remove_file(&metadata_path(&dir))?;
            self.storage.sync_dir(&dir)?;
            self.storage.remove_dir_all(&dir)?;
            inner.durable_dirs.remove(&dir);
            removed = true;
        }
        for &id in incomplete
            .iter()
            .filter(|&&id| (at_start || newest.is_some_and(|n| id < n)) && deletable(id))
        {
            let dir = id.dir_name();
            self.storage.remove_dir_all(&dir)?;
            inner.durable_dirs.remove(&dir);
            removed = true;
        }
        if removed {
            self.storage.sync_dir(ROOT)?;
        }
        self.collect_shared_locked(inner, at_start)
    }

    /// The shared-file registry's collection: deletes every file of `shared/` that no
    /// complete checkpoint references and no checkpoint in progress reserved (temporary files
    /// of writers still running are kept, except `at_start`). Runs after retention, so the
    /// `_metadata` that stopped referencing a file is gone, durably, before the file is
    /// deleted. If a complete checkpoint's `_metadata` cannot be read, nothing is deleted.
    fn collect_shared_locked(&self, inner: &mut Inner, at_start: bool) -> Result<()> {
        let complete = self.scan()?.0;
        // A checkpoint not newer than the newest complete one can no longer complete.
        match (at_start, complete.last()) {
            (true, _) => inner.reserved.clear(),
            (false, Some(&newest)) => inner.reserved.retain(|&id, _| id > newest),
            (false, None) => {}
        }
        // The temporary file of a shared file being written is `<name>.<id>.flowstate-tmp`:
        // one of a checkpoint that can no longer complete is garbage.
        let dead = |name: &str| {
            let id = name
                .strip_suffix(TEMP_SUFFIX)
                .and_then(|rest| rest.rsplit_once('.'))
                .and_then(|(_, id)| id.parse::<u64>().ok())
                .map(CheckpointId);
            id.is_none_or(|id| complete.last().is_some_and(|&newest| id <= newest))
        };
        let mut live: BTreeSet<String> = inner.reserved.values().flatten().cloned().collect();
        for &id in &complete {
            match self.load_checkpoint(id) {
                Ok(checkpoint) => live.extend(checkpoint.shared_files().map(|f| f.path().into())),
                Err(_) => return Ok(()),
            }
        }
        let mut removed = false;
        for name in self.storage.list_dir(SHARED_DIR)? {
            let path = format!("{SHARED_DIR}/{name}");
            if live.contains(&path) || (is_temp_name(&name) && !at_start && !dead(&name)) {
                continue;
            }
            if self.storage.list_dir(&path).is_ok() {
                // A directory: nothing of ours creates one in shared/.
                continue;
            }
            self.storage.remove_file(&path)?;
            removed = true;
        }
        if removed {
            self.storage.sync_dir(SHARED_DIR)?;
        }
        Ok(())
    }

    /// Checks that `target` may take shared files (an open checkpoint) and that `name` may
    /// name one; returns its path.
    pub(super) fn shared_path(&self, target: &SnapshotTarget, name: &str) -> Result<String> {
        self.owner("a shared file")?;
        if target.kind() != SnapshotKind::Checkpoint {
            return Err(Error::InvalidArgument(format!(
                "{target} cannot have shared files: a savepoint is self-contained"
            )));
        }
        if !is_state_file_name(name) || name.contains('/') || check_relative_path(name).is_err() {
            return Err(Error::InvalidArgument(format!(
                "{name:?} is not a shared file name: one path component, not {METADATA_FILE} \
                 nor ending in {TEMP_SUFFIX}"
            )));
        }
        Ok(format!("{SHARED_DIR}/{name}"))
    }

    /// A writer of `path` (in `dir`) through the temporary file `temp`, or straight to `path`
    /// on a storage that publishes files whole when they are synced (an object store).
    fn writer(&self, path: String, temp: String, dir: String) -> Result<Box<dyn StateFileWriter>> {
        let temp = (!self.storage.publishes_on_sync()).then_some(temp);
        let file = self.storage.create(temp.as_deref().unwrap_or(&path))?;
        Ok(Box::new(FsStateFileWriter {
            storage: Arc::clone(&self.storage),
            file,
            path,
            temp,
            dir,
            max_size: self.max_state_size,
            failed: false,
            done: false,
            crc: flowstate_formats::codec::checksum::Crc32c::new(),
        }))
    }

    /// The directory of a snapshot target, checked.
    fn target_dir(&self, target: &SnapshotTarget) -> Result<String> {
        match target.savepoint_dir() {
            None => Ok(target.id().dir_name()),
            Some(dir) => {
                check_savepoint_dir(dir)?;
                Ok(dir.to_string())
            }
        }
    }

    /// Fails unless `target` may still receive files and complete.
    fn check_open_target(&self, inner: &Inner, target: &SnapshotTarget, dir: &str) -> Result<()> {
        if self.storage.exists(&metadata_path(dir))? {
            return Err(Error::InvalidArgument(format!(
                "{target} is already complete ({dir}/{METADATA_FILE} exists)"
            )));
        }
        if target.kind() == SnapshotKind::Checkpoint {
            let newest = match (self.access, inner.newest_complete) {
                (Access::Owner, Some(newest)) => newest,
                _ => self.scan()?.0.last().copied(),
            };
            if let Some(latest) = newest {
                if target.id() <= latest {
                    return Err(Error::InvalidArgument(format!(
                        "{target} is not newer than the latest completed checkpoint {latest}"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Creates `dir` and makes it durable in its parent directories, once per instance.
    fn ensure_dir(&self, inner: &mut Inner, dir: &str) -> Result<()> {
        if inner.durable_dirs.contains(dir) {
            return Ok(());
        }
        self.storage.create_dir_all(dir)?;
        let mut path = dir;
        while let Some((parent, _)) = path.rsplit_once('/') {
            self.storage.sync_dir(parent)?;
            path = parent;
        }
        self.storage.sync_dir(ROOT)?;
        inner.durable_dirs.insert(dir.to_string());
        Ok(())
    }

    /// Checks the tasks' states for completing the snapshot in `dir`: the format's rules,
    /// every file a finished state file of this snapshot with the recorded size.
    fn check_tasks(&self, dir: &str, tasks: &[SubtaskState]) -> Result<()> {
        let mut seen = BTreeSet::new();
        let mut sizes: BTreeMap<&str, u64> = BTreeMap::new();
        let mut shared: BTreeMap<&str, u64> = BTreeMap::new();
        for task in tasks {
            check_subtask(task)?;
            if !seen.insert((task.operator_id.as_str(), task.subtask_index)) {
                return Err(Error::InvalidArgument(format!(
                    "operator {:?} subtask {} is listed twice",
                    task.operator_id, task.subtask_index
                )));
            }
            for file in task.files() {
                note_file(&mut sizes, file, dir, "state file")?;
            }
            if task.shared_files().next().is_some() && CheckpointId::from_dir_name(dir).is_none() {
                return Err(Error::InvalidArgument(format!(
                    "the savepoint in {dir}/ references shared files: a savepoint is \
                     self-contained"
                )));
            }
            for file in task.shared_files() {
                note_file(&mut shared, file, SHARED_DIR, "shared file")?;
            }
        }
        for (path, size) in sizes.into_iter().chain(shared) {
            check_size(path, self.storage.open(path)?.len(), size)?;
        }
        Ok(())
    }

    fn read_metadata(&self, path: &str) -> Result<CheckpointMetadataRecord> {
        let bytes = self.storage.read_all(path, MAX_METADATA_LEN)?;
        Ok(CheckpointMetadataRecord::decode(&bytes, path)?)
    }
}

impl CheckpointStorage for FsCheckpointStorage {
    fn create_state_file(
        &self,
        target: &SnapshotTarget,
        name: &str,
    ) -> Result<Box<dyn StateFileWriter>> {
        self.writable()?;
        if !is_state_file_name(name) || name.contains('/') || check_relative_path(name).is_err() {
            return Err(Error::InvalidArgument(format!(
                "{name:?} is not a state file name: one path component, not {METADATA_FILE} \
                 nor ending in {TEMP_SUFFIX}"
            )));
        }
        let dir = self.target_dir(target)?;
        {
            let mut inner = self.lock();
            self.check_open_target(&inner, target, &dir)?;
            self.ensure_dir(&mut inner, &dir)?;
        }
        let path = format!("{dir}/{name}");
        let temp = format!("{path}{TEMP_SUFFIX}");
        self.writer(path, temp, dir)
    }

    fn create_shared_file(
        &self,
        target: &SnapshotTarget,
        name: &str,
    ) -> Result<Box<dyn StateFileWriter>> {
        let path = self.shared_path(target, name)?;
        // Checkpoints in flight may publish the same file: each writes its own temporary.
        let temp = format!("{path}.{}{TEMP_SUFFIX}", target.id());
        {
            let mut inner = self.lock();
            self.check_open_target(&inner, target, &target.id().dir_name())?;
            inner
                .reserved
                .entry(target.id())
                .or_default()
                .insert(path.clone());
        }
        self.writer(path, temp, SHARED_DIR.to_string())
    }

    fn link_shared_file(
        &self,
        target: &SnapshotTarget,
        name: &str,
        source: &Path,
    ) -> Result<Option<StateFile>> {
        let path = self.shared_path(target, name)?;
        let size = std::fs::metadata(source)
            .map_err(|e| Error::io(source, e))?
            .len();
        if self.max_state_size.is_some_and(|limit| size > limit) {
            return Ok(None);
        }
        let mut inner = self.lock();
        self.check_open_target(&inner, target, &target.id().dir_name())?;
        let file = StateFile::new(path.clone(), size)?;
        let exists = self.storage.exists(&path)?;
        if exists {
            check_size(&path, self.storage.open(&path)?.len(), size)?;
        } else if !self.storage.link_from(source, &path)? {
            return Ok(None);
        }
        inner
            .reserved
            .entry(target.id())
            .or_default()
            .insert(path.clone());
        if !exists {
            self.storage.sync_dir(SHARED_DIR)?;
        }
        Ok(Some(file))
    }

    fn reserve_shared_file(&self, target: &SnapshotTarget, file: &StateFile) -> Result<bool> {
        self.shared_path(target, file.path().rsplit('/').next().unwrap_or_default())?;
        let mut inner = self.lock();
        self.check_open_target(&inner, target, &target.id().dir_name())?;
        if !file.path().starts_with(&format!("{SHARED_DIR}/"))
            || !self.storage.exists(file.path())?
            || self.storage.open(file.path())?.len() != file.size()
        {
            return Ok(false);
        }
        inner
            .reserved
            .entry(target.id())
            .or_default()
            .insert(file.path().to_string());
        Ok(true)
    }

    fn shared_file_references(&self) -> Result<BTreeMap<String, usize>> {
        let mut refs: BTreeMap<String, usize> = BTreeMap::new();
        for name in self.storage.list_dir(SHARED_DIR)? {
            if !is_temp_name(&name) {
                refs.insert(format!("{SHARED_DIR}/{name}"), 0);
            }
        }
        for id in self.scan()?.0 {
            let checkpoint = self.load_checkpoint(id)?;
            let distinct: BTreeSet<&str> = checkpoint.shared_files().map(StateFile::path).collect();
            for path in distinct {
                *refs.entry(path.to_string()).or_default() += 1;
            }
        }
        Ok(refs)
    }

    fn local_path(&self, file: &StateFile) -> Result<Option<PathBuf>> {
        self.storage.local_path(file.path())
    }

    fn parallel_transfers(&self) -> usize {
        self.storage.parallel_transfers()
    }

    fn open_state_file(&self, file: &StateFile) -> Result<Box<dyn ReadableFile>> {
        let readable = self.storage.open(file.path())?;
        check_size(file.path(), readable.len(), file.size())?;
        if let Some(expected) = file.checksum() {
            check_checksum(file.path(), &*readable, expected)?;
        }
        Ok(readable)
    }

    fn open_state_file_unchecked(&self, file: &StateFile) -> Result<Box<dyn ReadableFile>> {
        self.storage.open(file.path())
    }

    fn complete(
        &self,
        target: &SnapshotTarget,
        tasks: Vec<SubtaskState>,
    ) -> Result<CompletedCheckpoint> {
        self.owner("completing a snapshot")?;
        let dir = self.target_dir(target)?;
        let mut inner = self.lock();
        self.check_open_target(&inner, target, &dir)?;
        self.check_tasks(&dir, &tasks)?;
        self.ensure_dir(&mut inner, &dir)?;
        if tasks.iter().any(|t| t.shared_files().next().is_some()) {
            // A shared file another checkpoint renamed into place moments ago may not have its
            // name synced yet: make every name in shared/ durable before _metadata (S2).
            self.storage.sync_dir(SHARED_DIR)?;
        }
        let checkpoint = CompletedCheckpoint::new(
            target.id(),
            target.kind(),
            self.clock.now_millis(),
            dir.clone(),
            tasks,
        );
        let prefix = format!("{dir}/");
        let record = match target.kind() {
            SnapshotKind::Checkpoint => checkpoint.to_record(&|p| Ok(p.to_string()))?,
            // Savepoint paths are stored relative to the savepoint directory.
            SnapshotKind::Savepoint => checkpoint.to_record(&|p| {
                p.strip_prefix(&prefix)
                    .map(str::to_string)
                    .ok_or_else(|| Error::InvalidArgument(format!("{p} is not in {dir}/")))
            })?,
        };
        let path = metadata_path(&dir);
        let bytes = record.encode(&path)?;
        // Never over another `_metadata` (a second owner, a savepoint directory reused).
        self.storage.write_new(&path, &bytes)?;
        // Its `_metadata` now holds what it references; reservations of tasks it does not
        // list are released. (A savepoint holds none, whatever its number.)
        if target.kind() == SnapshotKind::Checkpoint {
            inner.reserved.remove(&target.id());
            // Checked above: newer than every complete checkpoint.
            inner.newest_complete = Some(Some(target.id()));
        }
        if target.kind() == SnapshotKind::Checkpoint {
            // The checkpoint is complete and durable: a failed deletion only leaves garbage
            // for the next completion, `collect_garbage` or start-up.
            let _ = self.collect_garbage_locked(&mut inner, false);
        }
        Ok(checkpoint)
    }

    fn abort(&self, target: &SnapshotTarget) -> Result<()> {
        self.owner("aborting a snapshot")?;
        let dir = self.target_dir(target)?;
        let mut inner = self.lock();
        if target.kind() == SnapshotKind::Checkpoint
            && inner.reserved.remove(&target.id()).is_some()
            && !self.storage.exists(&metadata_path(&dir))?
        {
            // What only the aborted checkpoint held is garbage now; a failure leaves it for
            // the next collection.
            let _ = self.collect_shared_locked(&mut inner, false);
        }
        if !self.storage.exists(&dir)? {
            return Ok(());
        }
        if self.storage.exists(&metadata_path(&dir))? {
            return Err(Error::InvalidArgument(format!(
                "{target} is complete and cannot be aborted: completed checkpoints are deleted \
                 by retention, savepoints by their owner"
            )));
        }
        self.storage.remove_dir_all(&dir)?;
        inner.durable_dirs.remove(&dir);
        self.storage
            .sync_dir(dir.rsplit_once('/').map_or(ROOT, |(parent, _)| parent))
    }

    fn latest_completed(&self) -> Result<Option<CompletedCheckpoint>> {
        match self.scan()?.0.last() {
            Some(&id) => self.load_checkpoint(id).map(Some),
            None => Ok(None),
        }
    }

    fn completed(&self) -> Result<Vec<CheckpointId>> {
        Ok(self.scan()?.0)
    }

    fn load_checkpoint(&self, id: CheckpointId) -> Result<CompletedCheckpoint> {
        let dir = id.dir_name();
        let path = metadata_path(&dir);
        let record = self.read_metadata(&path)?;
        // Metadata found under another checkpoint's name (copied, misplaced) is refused.
        if record.checkpoint_id != id.0 {
            return Err(misplaced(
                &path,
                6,
                format!("checkpoint {}", record.checkpoint_id),
            ));
        }
        if SnapshotKind::from_record(record.kind) != SnapshotKind::Checkpoint {
            return Err(misplaced(&path, 14, "a savepoint".into()));
        }
        CompletedCheckpoint::from_record(record, dir, &|p| Ok(p.to_string()))
    }

    fn load_savepoint(&self, dir: &str) -> Result<CompletedCheckpoint> {
        check_savepoint_dir(dir)?;
        let path = metadata_path(dir);
        let record = self.read_metadata(&path)?;
        if SnapshotKind::from_record(record.kind) != SnapshotKind::Savepoint {
            return Err(misplaced(&path, 14, "a checkpoint".into()));
        }
        CompletedCheckpoint::from_record(record, dir.to_string(), &|p| Ok(format!("{dir}/{p}")))
    }

    fn savepoints(&self) -> Result<Vec<(CheckpointId, String)>> {
        let mut found = Vec::new();
        let mut dirs = vec![(ROOT.to_owned(), 0usize)];
        while let Some((dir, depth)) = dirs.pop() {
            for name in self.storage.list_dir(&dir)? {
                let top = depth == 0;
                let reserved = name == SHARED_DIR
                    || name == TASK_OWNED_DIR
                    || CheckpointId::from_dir_name(&name).is_some();
                if is_temp_name(&name) || (top && (reserved || name == METADATA_FILE)) {
                    continue;
                }
                let path = if top {
                    name.clone()
                } else {
                    format!("{dir}/{name}")
                };
                if name == METADATA_FILE {
                    let record = self.read_metadata(&path)?;
                    if SnapshotKind::from_record(record.kind) == SnapshotKind::Savepoint {
                        found.push((CheckpointId(record.checkpoint_id), dir.clone()));
                    }
                } else if depth + 1 < super::MAX_SAVEPOINT_DEPTH
                    && self.storage.list_dir(&path).is_ok()
                {
                    dirs.push((path, depth + 1));
                }
            }
        }
        found.sort();
        Ok(found)
    }

    fn collect_garbage(&self) -> Result<()> {
        self.owner("garbage collection")?;
        let mut inner = self.lock();
        self.collect_garbage_locked(&mut inner, false)
    }
}

/// Notes `file` (a `what`) in `sizes` after checking that it is a file directly in `dir` with a
/// state file name, listed with one size only.
fn note_file<'a>(
    sizes: &mut BTreeMap<&'a str, u64>,
    file: &'a StateFile,
    dir: &str,
    what: &str,
) -> Result<()> {
    let in_dir = file
        .path()
        .strip_prefix(dir)
        .and_then(|rest| rest.strip_prefix('/'))
        .is_some_and(|name| !name.contains('/') && is_state_file_name(name));
    if !in_dir {
        return Err(Error::InvalidArgument(format!(
            "{what} {} is not a {what} of {dir}/",
            file.path()
        )));
    }
    match sizes.insert(file.path(), file.size()) {
        Some(size) if size != file.size() => Err(Error::InvalidArgument(format!(
            "{what} {} is listed with sizes {size} and {}",
            file.path(),
            file.size()
        ))),
        _ => Ok(()),
    }
}

fn metadata_path(dir: &str) -> String {
    format!("{dir}/{METADATA_FILE}")
}

fn misplaced(path: &str, offset: u64, found: String) -> Error {
    Error::Format(FormatError::Corrupt {
        file: path.to_string(),
        offset,
        reason: format!("the file describes {found}, not what its location says"),
    })
}

/// Reads `file` whole and checks that its CRC-32C is `expected`: the file is the one its handle
/// lists, not another of the same size.
fn check_checksum(path: &str, file: &dyn ReadableFile, expected: u32) -> Result<()> {
    let found = stream_crc32c(file, &mut |_| Ok(()))?;
    if found == expected {
        Ok(())
    } else {
        Err(Error::Format(FormatError::ChecksumMismatch {
            file: format!(
                "{path} (another file than the one its checkpoint lists: the content's CRC-32C \
                 differs)"
            ),
            offset: 0,
            expected,
            found,
        }))
    }
}

fn check_size(path: &str, actual: u64, expected: u64) -> Result<()> {
    if actual == expected {
        Ok(())
    } else {
        Err(Error::StateFileSize {
            path: path.into(),
            expected,
            actual,
        })
    }
}

/// Whether `name` may name a state file in a snapshot directory (the caller checks it is a
/// single component).
fn is_state_file_name(name: &str) -> bool {
    name != METADATA_FILE && !is_temp_name(name)
}

/// Checks a savepoint directory: a valid relative path outside the directories the
/// checkpoint storage manages, with no temporary name in it.
fn check_savepoint_dir(dir: &str) -> Result<()> {
    let invalid = |reason| Error::InvalidPath {
        path: dir.into(),
        reason,
    };
    check_relative_path(dir).map_err(invalid)?;
    let first = dir.split('/').next().unwrap_or(dir);
    if first == SHARED_DIR
        || first == TASK_OWNED_DIR
        || CheckpointId::from_dir_name(first).is_some()
    {
        return Err(invalid(
            "a savepoint directory cannot be chk-<id>, shared or taskowned, nor inside them",
        ));
    }
    if dir
        .split('/')
        .any(|c| is_temp_name(c) || c == METADATA_FILE)
    {
        return Err(invalid(
            "a savepoint directory cannot have a temporary or _metadata name",
        ));
    }
    Ok(())
}

fn check_subtask(task: &SubtaskState) -> Result<()> {
    let bad = |what: String| {
        Err(Error::InvalidArgument(format!(
            "operator {:?} subtask {}: {what}",
            task.operator_id, task.subtask_index
        )))
    };
    if task.operator_id.is_empty() || task.operator_id.len() > usize::from(u16::MAX) {
        return bad("the operator id must be 1 to 65535 bytes long".into());
    }
    if task.max_parallelism == 0
        || task.max_parallelism > crate::key_group::UPPER_BOUND_MAX_PARALLELISM
    {
        return bad(format!(
            "max parallelism {} is out of range",
            task.max_parallelism
        ));
    }
    if task.parallelism == 0 || task.parallelism > task.max_parallelism {
        return bad(format!(
            "parallelism {} is not in 1..={}",
            task.parallelism, task.max_parallelism
        ));
    }
    if task.subtask_index >= task.parallelism {
        return bad(format!(
            "the index is not below the parallelism {}",
            task.parallelism
        ));
    }
    for handle in &task.keyed {
        if u32::from(handle.key_group_range().end()) >= task.max_parallelism {
            return bad(format!(
                "keyed handle range {} reaches past max parallelism {}",
                handle.key_group_range(),
                task.max_parallelism
            ));
        }
    }
    Ok(())
}

/// A state file written to a temporary name and published by `finish`.
#[derive(Debug)]
struct FsStateFileWriter {
    storage: Arc<dyn Storage>,
    file: Box<dyn WritableFile>,
    path: String,
    /// The temporary file; `None` where the storage publishes a file when it is synced.
    temp: Option<String>,
    dir: String,
    max_size: Option<u64>,
    failed: bool,
    /// Set once `finish` has run: the temporary file is then published or already removed.
    done: bool,
    /// The CRC-32C of the bytes written so far.
    crc: flowstate_formats::codec::checksum::Crc32c,
}

impl Drop for FsStateFileWriter {
    /// A writer dropped unfinished (an asynchronous phase that failed or was cancelled)
    /// removes its temporary file, so that failed attempts do not pile up; a file left by a
    /// crash is removed at the next start.
    ///
    /// Where the storage publishes on sync, there is no temporary file: dropping the file
    /// discards its upload.
    fn drop(&mut self) {
        if let (false, Some(temp)) = (self.done, &self.temp) {
            let _ = self.storage.remove_file(temp);
        }
    }
}

impl FsStateFileWriter {
    fn publish(&mut self) -> Result<()> {
        self.file.sync()?;
        if let Some(temp) = &self.temp {
            self.storage.rename(temp, &self.path)?;
            self.storage.sync_dir(&self.dir)?;
        }
        Ok(())
    }
}

impl StateFileWriter for FsStateFileWriter {
    fn path(&self) -> &str {
        &self.path
    }

    fn write_all(&mut self, buf: &[u8]) -> Result<()> {
        if self.failed {
            return Err(Error::InvalidArgument(format!(
                "state file {} failed earlier; write it again",
                self.path
            )));
        }
        if let Some(limit) = self.max_size {
            if self.file.len().saturating_add(buf.len() as u64) > limit {
                self.failed = true;
                return Err(Error::StateSizeLimit {
                    path: self.path.clone().into(),
                    limit,
                });
            }
        }
        let result = self.file.write_all(buf);
        self.failed = result.is_err();
        if result.is_ok() {
            self.crc.update(buf);
        }
        result
    }

    fn len(&self) -> u64 {
        self.file.len()
    }

    fn finish(mut self: Box<Self>) -> Result<StateFile> {
        if self.failed {
            // Dropping the writer removes the temporary file.
            return Err(Error::InvalidArgument(format!(
                "state file {} failed while being written and cannot be finished",
                self.path
            )));
        }
        let published = self.publish();
        self.done = true;
        if let Err(err) = published {
            // Best effort: whatever remains is removed by an abort or at start-up.
            if let Some(temp) = &self.temp {
                let _ = self.storage.remove_file(temp);
            }
            return Err(err);
        }
        StateFile::with_checksum(
            self.path.clone(),
            self.file.len(),
            self.crc.clone().finalize(),
        )
    }
}
