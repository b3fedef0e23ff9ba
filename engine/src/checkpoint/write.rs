//! The asynchronous phase of a snapshot, and restore from state files.
//!
//! [`PendingSnapshot`] is what [`KeyedStateBackend::snapshot`](crate::KeyedStateBackend::snapshot)
//! returns after the synchronous phase: a frozen view plus where to write it. `run()` writes the
//! view as a canonical key-group snapshot file (spec/formats.md section 3) through a
//! [`CheckpointStorage`] and returns the [`KeyedStateHandle`] that lists it; it is `Send +
//! 'static`, so the embedder runs it on any thread while the task keeps processing records.
//!
//! [`FileRestoreSource`] reads such a file back, one key group at a time, as a
//! [`RestoreSource`]: a restore at any parallelism opens the files of the handles that
//! intersect its range and reads only its own key groups.

use std::io::{self, BufWriter, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowstate_formats::checkpoint::FileOrigin;
use flowstate_formats::operator::{
    OperatorStateData as DataRecord, OperatorStateMeta as MetaRecord,
    OperatorStateMode as ModeRecord, OperatorStateReader, OperatorStateWriter,
};
use flowstate_formats::snapshot::{
    DecodedValue, EntryValue, KeyGroupEncoder, SnapshotMeta, SnapshotReader, SnapshotWriter,
    StateKind as KindRecord, StateMetaRecord,
};
use flowstate_formats::{CodecRecord, Compression};

use super::parallel_encode::{default_encode_threads, write_key_groups};
use super::{CheckpointStorage, KeyedStateHandle, OperatorStateHandle, SnapshotTarget, StateFile};
use crate::error::{Error, Result};
use crate::key_group::KeyGroupRange;
use crate::operator::{
    OperatorStateData, OperatorStateMeta, OperatorStateMode, OperatorStateSnapshot,
};
use crate::snapshot::{
    EncodedEntry, EncodedRun, EncodedState, RestoreSource, RunStateRef, StateSnapshot,
};
use crate::state::{CodecInfo, StateKind, StateMeta};
use crate::storage::ReadableFile;

fn codec_record(c: &CodecInfo) -> CodecRecord {
    CodecRecord::new(c.name.clone(), c.version)
}

fn codec_info(c: &CodecRecord) -> CodecInfo {
    CodecInfo {
        name: c.name.clone(),
        version: c.version,
    }
}

fn kind_record(kind: StateKind) -> KindRecord {
    match kind {
        StateKind::Value => KindRecord::Value,
        StateKind::List => KindRecord::List,
        StateKind::Map => KindRecord::Map,
        StateKind::Reducing => KindRecord::Reducing,
        StateKind::Aggregating => KindRecord::Aggregating,
    }
}

fn kind_of(kind: KindRecord) -> StateKind {
    match kind {
        KindRecord::Value => StateKind::Value,
        KindRecord::List => StateKind::List,
        KindRecord::Map => StateKind::Map,
        KindRecord::Reducing => StateKind::Reducing,
        KindRecord::Aggregating => StateKind::Aggregating,
    }
}

/// The meta block of the canonical file for a frozen view.
pub fn snapshot_meta(view: &StateSnapshot) -> SnapshotMeta {
    let range = view.key_group_range();
    SnapshotMeta {
        max_parallelism: view.max_parallelism(),
        key_group_start: range.start(),
        key_group_end: range.end(),
        key_codec: codec_record(view.key_codec()),
        states: view
            .states()
            .iter()
            .map(|s| {
                let m = s.meta();
                StateMetaRecord {
                    name: m.name.clone(),
                    kind: kind_record(m.kind),
                    namespace: codec_record(&m.namespace),
                    value: codec_record(&m.value),
                    user_key: m.user_key.as_ref().map(codec_record),
                    ttl_millis: s.ttl_millis(),
                }
            })
            .collect(),
    }
}

/// The states (by index) and the key codec a snapshot's meta block records.
pub(crate) fn state_metas(meta: &SnapshotMeta) -> (Vec<StateMeta>, CodecInfo) {
    let metas = meta
        .states
        .iter()
        .map(|s| StateMeta {
            name: s.name.clone(),
            kind: kind_of(s.kind),
            namespace: codec_info(&s.namespace),
            value: codec_info(&s.value),
            user_key: s.user_key.as_ref().map(codec_info),
        })
        .collect();
    (metas, codec_info(&meta.key_codec))
}

/// What writing a snapshot file did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SnapshotStats {
    /// Bytes of the snapshot's own files (the canonical file; the native snapshot file and,
    /// for a native savepoint, its table files).
    pub bytes: u64,
    /// (key, namespace) entries written (0 for a native snapshot, which writes no entry).
    pub entries: u64,
    /// Key groups with at least one entry (0 for a native snapshot).
    pub key_groups: u64,
    /// How long writing took.
    pub duration: Duration,
    /// Shared files the snapshot references (an incremental checkpoint), new ones included.
    pub shared_files: u64,
    /// Their bytes.
    pub shared_bytes: u64,
    /// Shared files this snapshot published (the others were published by earlier ones).
    pub new_shared_files: u64,
    /// Their bytes: with [`bytes`](Self::bytes), what this snapshot added to the storage.
    pub new_shared_bytes: u64,
    /// Of the new shared files, those published by a hard link rather than a copy.
    pub linked_files: u64,
}

impl SnapshotStats {
    /// Bytes this snapshot added to the checkpoint storage: its own files plus the shared
    /// files it published.
    pub fn new_bytes(&self) -> u64 {
        self.bytes + self.new_shared_bytes
    }
}

/// Writes `view` as a canonical key-group snapshot to `out` (pass `&mut writer` to keep it),
/// encoding its key groups on [`default_encode_threads`] threads.
///
/// Entries are sorted by (state, key bytes, namespace bytes) within each key group, so the
/// bytes depend only on the state's content and `origin` (what checkpoint or savepoint the file
/// belongs to, spec/formats.md section 4.9; `None` outside one): the same state written by
/// either backend for the same snapshot gives the same file.
pub fn write_canonical<W: Write>(
    view: &StateSnapshot,
    out: W,
    compression: Compression,
    file_name: &str,
    origin: Option<FileOrigin>,
) -> Result<SnapshotStats> {
    write_canonical_on(
        view,
        out,
        compression,
        file_name,
        origin,
        default_encode_threads(),
    )
}

/// [`write_canonical`] with the key groups encoded on `threads` threads while the calling
/// thread writes them in order (1 or 0: the calling thread alone). The bytes are the same
/// whatever the number of threads.
pub fn write_canonical_on<W: Write>(
    view: &StateSnapshot,
    out: W,
    compression: Compression,
    file_name: &str,
    origin: Option<FileOrigin>,
    threads: usize,
) -> Result<SnapshotStats> {
    write_canonical_releasing(view, out, compression, file_name, origin, threads, false)
}

/// [`write_canonical_on`], letting go of each key group's entries in `view` once written if
/// `release` (for a caller that holds the view alone and drops it after).
fn write_canonical_releasing<W: Write>(
    view: &StateSnapshot,
    out: W,
    compression: Compression,
    file_name: &str,
    origin: Option<FileOrigin>,
    threads: usize,
    release: bool,
) -> Result<SnapshotStats> {
    let started = Instant::now();
    let meta = snapshot_meta(view);
    let options = flowstate_formats::snapshot::SnapshotWriterOptions {
        compression,
        file_name: file_name.to_owned(),
        origin,
        ..Default::default()
    };
    let new_encoder = || Ok(KeyGroupEncoder::new(&meta, &options)?);
    let mut writer =
        flowstate_formats::snapshot::SnapshotWriter::with_options(out, &meta, options.clone())?;
    let key_groups = write_key_groups(view, &mut writer, threads, release, new_encoder)?;
    let summary = writer.finish()?;
    Ok(SnapshotStats {
        bytes: summary.len,
        entries: summary.entry_count,
        key_groups,
        duration: started.elapsed(),
        ..SnapshotStats::default()
    })
}

/// Adds every entry of `run` (sorted) to the open key group of `writer`, as state `index`.
pub(crate) fn add_run<W: Write>(
    writer: &mut SnapshotWriter<W>,
    index: u32,
    run: &EncodedRun,
) -> Result<()> {
    for e in run.iter() {
        let value = match e.state {
            RunStateRef::Value(v) => EntryValue::Value(v),
            RunStateRef::List(l) => EntryValue::List(l),
            RunStateRef::Map(m) => EntryValue::Map(m),
        };
        writer.add_entry(index, e.key, e.namespace, value)?;
    }
    Ok(())
}

/// Adapts a [`StateFileWriter`](super::StateFileWriter) to `std::io::Write`.
pub(crate) struct FileSink(Box<dyn super::StateFileWriter>);

impl Write for FileSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .write_all(buf)
            .map(|()| buf.len())
            .map_err(|e| io::Error::other(e.to_string()))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The asynchronous phase of a keyed snapshot: a frozen view and where to write it.
///
/// Created by [`KeyedStateBackend::snapshot`](crate::KeyedStateBackend::snapshot) in the
/// synchronous phase; [`run`](Self::run) writes the file on whatever thread calls it.
pub struct PendingSnapshot {
    view: StateSnapshot,
    target: SnapshotTarget,
    storage: Arc<dyn CheckpointStorage>,
    name: String,
    compression: Compression,
    /// Threads that encode key groups while the calling thread writes; `None`: the default,
    /// looked up in the asynchronous phase (the first look-up reads the cgroup's CPU quota,
    /// which the synchronous phase must not wait for).
    encode_threads: Option<usize>,
    /// The backend's own asynchronous phase, if it writes a native snapshot.
    native: Option<Box<dyn NativeSnapshot>>,
}

/// A backend's asynchronous phase that writes a native snapshot instead of the canonical
/// file (the LSM backend's incremental checkpoints and native savepoints).
pub(crate) trait NativeSnapshot: Send {
    /// Writes the snapshot as state file `name` of `target` (and the shared files it needs)
    /// and returns its handle; `compression` is the block compression asked of the pending
    /// snapshot, for the files in the canonical format it writes.
    fn run(
        self: Box<Self>,
        target: &SnapshotTarget,
        storage: &Arc<dyn CheckpointStorage>,
        name: &str,
        compression: Compression,
    ) -> Result<SnapshotResult>;
}

impl std::fmt::Debug for PendingSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingSnapshot")
            .field("target", &self.target)
            .field("name", &self.name)
            .field("view", &self.view)
            .finish()
    }
}

/// What a finished asynchronous phase returns: the handle to report, and figures.
#[derive(Debug, Clone)]
pub struct SnapshotResult {
    /// The handle listing the written file; the embedder passes it to
    /// [`CheckpointStorage::complete`].
    pub handle: KeyedStateHandle,
    /// What writing did.
    pub stats: SnapshotStats,
}

impl PendingSnapshot {
    /// A pending snapshot of `view`, to be written as state file `name` of `target`.
    pub fn new(
        view: StateSnapshot,
        target: SnapshotTarget,
        storage: Arc<dyn CheckpointStorage>,
        name: impl Into<String>,
    ) -> Self {
        PendingSnapshot {
            view,
            target,
            storage,
            name: name.into(),
            compression: Compression::None,
            encode_threads: None,
            native: None,
        }
    }

    /// A pending snapshot written by a backend's own asynchronous phase; `view` is the frozen
    /// view of the same instant (for [`view`](Self::view)).
    pub(crate) fn native(
        view: StateSnapshot,
        target: SnapshotTarget,
        storage: Arc<dyn CheckpointStorage>,
        name: impl Into<String>,
        native: Box<dyn NativeSnapshot>,
    ) -> Self {
        PendingSnapshot {
            native: Some(native),
            ..PendingSnapshot::new(view, target, storage, name)
        }
    }

    /// Whether the asynchronous phase writes a native snapshot (an LSM backend's incremental
    /// checkpoint or native savepoint) rather than the canonical file.
    pub fn is_native(&self) -> bool {
        self.native.is_some()
    }

    /// Compresses the file's blocks with `compression` (default: none).
    pub fn with_compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    /// Encodes the canonical file's key groups on `threads` threads while the thread that
    /// calls [`run`](Self::run) writes them in order; 1 (or 0) encodes on that thread alone.
    /// Default: [`default_encode_threads`] (the machine's available parallelism, at most 2).
    /// The file is the same whatever the number; memory grows by about two key groups' worth
    /// of encoded entries per thread. A native snapshot ignores it.
    pub fn with_encode_threads(mut self, threads: usize) -> Self {
        self.encode_threads = Some(threads);
        self
    }

    /// The frozen view being written.
    pub fn view(&self) -> &StateSnapshot {
        &self.view
    }

    /// Writes the file, publishes it (sync, atomic rename) and returns its handle. On an error
    /// nothing is published; the embedder aborts the checkpoint.
    pub fn run(self) -> Result<SnapshotResult> {
        if let Some(native) = self.native {
            return native.run(&self.target, &self.storage, &self.name, self.compression);
        }
        let writer = self.storage.create_state_file(&self.target, &self.name)?;
        let origin = Some(self.target.origin(&self.name));
        let threads = self.encode_threads.unwrap_or_else(default_encode_threads);
        let (view, compression) = (&self.view, self.compression);
        // Nothing else holds the state views (the embedder kept no clone of the view): each
        // key group's entries can go as soon as they are written, so that the task's writes
        // stop copying them for this view.
        let release = view.states().iter().all(|s| Arc::strong_count(s) == 1);
        let (file, stats) = write_state_file(writer, |sink, path| {
            write_canonical_releasing(view, sink, compression, path, origin, threads, release)
        })?;
        let handle = KeyedStateHandle::new(self.view.key_group_range(), vec![file])?;
        Ok(SnapshotResult { handle, stats })
    }
}

/// Writes a state file through `writer`, buffered, with `write` (given the output and the
/// file's path), then finishes it (sync, atomic publication) and returns it with `write`'s
/// result.
pub(crate) fn write_state_file<T>(
    writer: Box<dyn super::StateFileWriter>,
    write: impl FnOnce(&mut BufWriter<FileSink>, &str) -> Result<T>,
) -> Result<(StateFile, T)> {
    let path = writer.path().to_owned();
    let mut sink = BufWriter::with_capacity(1 << 20, FileSink(writer));
    let result = write(&mut sink, &path)?;
    let sink = sink
        .into_inner()
        .map_err(|e| Error::io(path.clone(), e.into_error()))?;
    let file: StateFile = sink.0.finish()?;
    Ok((file, result))
}

/// A canonical key-group snapshot file read back as a [`RestoreSource`].
pub struct FileRestoreSource {
    reader: SnapshotReader<Box<dyn ReadableFile>>,
    metas: Vec<StateMeta>,
    key_codec: CodecInfo,
    range: KeyGroupRange,
}

impl std::fmt::Debug for FileRestoreSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileRestoreSource")
            .field("file", &self.reader.file_name())
            .field("range", &self.range)
            .finish()
    }
}

impl FileRestoreSource {
    /// Opens the snapshot file `file` of `storage` (footer, index and meta block only).
    pub fn open(storage: &dyn CheckpointStorage, file: &StateFile) -> Result<Self> {
        let source = storage.open_state_file(file)?;
        let reader = SnapshotReader::open(source, file.path())?;
        file.check_origin(reader.origin())?;
        if let Some(delta) = reader.delta() {
            return Err(Error::IncompatibleSnapshot(format!(
                "{} is a delta file (change {} after the base of checkpoint {}): it restores \
                 only with its chain, through the handle that lists it",
                file.path(),
                delta.position,
                delta.base_checkpoint
            )));
        }
        let meta = reader.meta();
        let range = KeyGroupRange::new(meta.key_group_start, meta.key_group_end)?;
        let (metas, key_codec) = state_metas(meta);
        Ok(FileRestoreSource {
            reader,
            metas,
            key_codec,
            range,
        })
    }

    /// The file's meta block (max parallelism, key-group range, key codec, every state's
    /// metadata with its TTL), as written.
    pub fn snapshot_meta(&self) -> &SnapshotMeta {
        self.reader.meta()
    }

    /// Opens every file of `handles`, which must be handles of canonical files (an LSM
    /// backend's native snapshot is refused: [`open_restore_sources`](crate::open_restore_sources)
    /// opens handles of every kind).
    pub fn open_all(
        storage: &dyn CheckpointStorage,
        handles: &[KeyedStateHandle],
    ) -> Result<Vec<FileRestoreSource>> {
        let mut sources = Vec::new();
        for handle in handles {
            if handle.kind() != flowstate_formats::checkpoint::KeyedHandleKind::KeyGroupFiles {
                return Err(Error::InvalidArgument(format!(
                    "the handle of key groups {} is a {:?} handle, not canonical files: open \
                     it with open_restore_sources or restore with Backend::restore_from",
                    handle.key_group_range(),
                    handle.kind()
                )));
            }
            for file in handle.files() {
                sources.push(Self::open(storage, file)?);
            }
        }
        Ok(sources)
    }
}

impl RestoreSource for FileRestoreSource {
    fn max_parallelism(&self) -> u32 {
        self.reader.meta().max_parallelism
    }
    fn key_group_range(&self) -> KeyGroupRange {
        self.range
    }
    fn key_codec(&self) -> &CodecInfo {
        &self.key_codec
    }
    fn state_metas(&self) -> Vec<StateMeta> {
        self.metas.clone()
    }
    fn read_key_group(
        &self,
        key_group: u16,
        visit: &mut dyn FnMut(usize, EncodedEntry),
    ) -> Result<()> {
        self.reader.read_key_group::<Error>(key_group, |entry| {
            let Some(state) = encoded_state(&entry.value) else {
                return Err(Error::IncompatibleSnapshot(format!(
                    "{} holds a removal: it is a delta file",
                    self.reader.file_name()
                )));
            };
            visit(
                entry.state_index as usize,
                EncodedEntry {
                    key: entry.key.to_vec(),
                    namespace: entry.namespace.to_vec(),
                    state,
                },
            );
            Ok(())
        })?;
        Ok(())
    }
}

/// The state of a decoded entry as the engine holds it; `None` for a removal (delta files).
pub(crate) fn encoded_state(value: &DecodedValue<'_>) -> Option<EncodedState> {
    Some(match *value {
        DecodedValue::Value(v) => EncodedState::Value(v.to_vec()),
        DecodedValue::List(items) => EncodedState::List(items.map(<[u8]>::to_vec).collect()),
        DecodedValue::Map(pairs) => {
            EncodedState::Map(pairs.map(|(k, v)| (k.to_vec(), v.to_vec())).collect())
        }
        DecodedValue::Removed => return None,
    })
}

fn mode_record(mode: OperatorStateMode) -> ModeRecord {
    match mode {
        OperatorStateMode::Split => ModeRecord::SplitList,
        OperatorStateMode::Union => ModeRecord::UnionList,
        OperatorStateMode::Broadcast => ModeRecord::BroadcastMap,
    }
}

/// Writes a task's operator state as state file `name` of `target` and returns its handle.
pub fn write_operator_state(
    storage: &dyn CheckpointStorage,
    target: &SnapshotTarget,
    name: &str,
    snapshot: &OperatorStateSnapshot,
) -> Result<OperatorStateHandle> {
    let mut bytes = Vec::new();
    let origin = target.origin(name);
    let mut writer = OperatorStateWriter::with_origin(&mut bytes, name, Some(&origin))?;
    for (meta, data) in &snapshot.states {
        let record = MetaRecord {
            name: meta.name.clone(),
            mode: mode_record(meta.mode),
            value: codec_record(&meta.value),
            key: meta.key.as_ref().map(codec_record),
        };
        match data {
            OperatorStateData::List(elements) => writer.write_list_state(&record, elements)?,
            OperatorStateData::Map(map) => writer.write_map_state(&record, map.iter())?,
        }
    }
    writer.finish()?;
    storage.write_operator_state_bytes(target, name, &bytes)
}

/// Reads a task's operator state back from its handle.
pub fn read_operator_state(
    storage: &dyn CheckpointStorage,
    handle: &OperatorStateHandle,
) -> Result<OperatorStateSnapshot> {
    let source = storage.open_state_file(handle.file())?;
    let reader = OperatorStateReader::open(source, handle.file().path())?;
    handle.file().check_origin(reader.origin())?;
    let mut states = Vec::new();
    for state in reader.read_all()? {
        let mode = match state.meta.mode {
            ModeRecord::SplitList => OperatorStateMode::Split,
            ModeRecord::UnionList => OperatorStateMode::Union,
            ModeRecord::BroadcastMap => OperatorStateMode::Broadcast,
        };
        let meta = OperatorStateMeta {
            name: state.meta.name,
            mode,
            value: codec_info(&state.meta.value),
            key: state.meta.key.as_ref().map(codec_info),
        };
        let data = match state.data {
            DataRecord::List(elements) => OperatorStateData::List(elements),
            DataRecord::Map(pairs) => OperatorStateData::Map(pairs.into_iter().collect()),
        };
        states.push((meta, data));
    }
    Ok(OperatorStateSnapshot { states })
}
