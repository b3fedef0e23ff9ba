//! Converting a snapshot into canonical files, offline: the state of a checkpoint or savepoint
//! of any handle kind (canonical files, an LSM backend's native snapshot, a heap backend's
//! chain of a base and deltas) rewritten as canonical key-group snapshot files
//! (spec/formats.md section 3) of another snapshot target, a savepoint or a checkpoint, in the
//! same or another checkpoint storage (`flowstate convert`, spec/tools.md).
//!
//! No codec is needed: the canonical format stores the serialized bytes of keys, namespaces
//! and values, and every state's metadata (kind, codec names and versions, TTL) is carried
//! over from the source's meta block as it is. Operator state is read and written again with
//! its bytes and metadata unchanged (its file records the snapshot it belongs to, so the file
//! itself cannot be copied byte for byte into another snapshot).
//!
//! ```
//! use std::sync::Arc;
//! use flowstate::convert::{convert_tasks, ConvertOptions};
//! use flowstate::*;
//!
//! let storage = FsCheckpointStorage::open(Arc::new(MemStorage::new()), FsCheckpointOptions::default())?;
//! let shared: Arc<dyn CheckpointStorage> = Arc::new(storage);
//! let mut backend = Backend::<String>::open(BackendConfig::heap().max_parallelism(16))?;
//! let count = backend.register(ValueStateDescriptor::<u64>::new("count"))?;
//! backend.set_current_key(&"alice".to_string());
//! backend.value(&count).update(3)?;
//! let written = backend.snapshot(CheckpointId(1), &shared, "counter-0")?.run()?;
//! let task = SubtaskState::new("counter", 0, 1, 16).with_keyed(written.handle);
//! let done = shared.complete_checkpoint(CheckpointId(1), vec![task])?;
//!
//! // The checkpoint as a canonical savepoint in directory `sp-1`.
//! let target = SnapshotTarget::savepoint(CheckpointId(1), "sp-1");
//! let tasks = convert_tasks(&*shared, &done, &*shared, &target, &ConvertOptions::default(), &mut |_| {})?;
//! let savepoint = shared.complete(&target, tasks)?;
//! assert_eq!(savepoint.tasks()[0].keyed[0].files()[0].path(), "sp-1/counter-0-keyed");
//! # Ok::<(), flowstate::Error>(())
//! ```

use std::collections::BTreeSet;

use flowstate_formats::checkpoint::KeyedHandleKind;
use flowstate_formats::snapshot::{SnapshotMeta, SnapshotWriter, SnapshotWriterOptions};
use flowstate_formats::Compression;

use crate::checkpoint::{
    read_operator_state, write_operator_state, write_state_file, ChainRestoreSource,
    CheckpointStorage, CompletedCheckpoint, FileRestoreSource, KeyedStateHandle,
    OperatorStateHandle, SnapshotTarget, StateFile, SubtaskState,
};
use crate::error::{Error, Result};
use crate::lsm::native_restore::NativeRestoreSource;
use crate::snapshot::{EncodedRun, RestoreSource};

/// How [`convert_tasks`] writes the canonical files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConvertOptions {
    /// The block compression of the files written (default: none).
    pub compression: Compression,
}

/// The number of key groups [`convert_tasks`] reads for `snapshot`: the progress callback's
/// total. A handle of canonical files counts its range once per file.
pub fn key_groups_to_convert(snapshot: &CompletedCheckpoint) -> u64 {
    snapshot
        .tasks()
        .iter()
        .flat_map(|t| &t.keyed)
        .map(|h| {
            let files = match h.kind() {
                KeyedHandleKind::KeyGroupFiles => h.files().len() as u64,
                KeyedHandleKind::LsmNative | KeyedHandleKind::HeapChain => 1,
            };
            files * h.key_group_range().len() as u64
        })
        .sum()
}

/// Rewrites every task of `snapshot` (read from `source`) as state files of `target` in
/// `dest`: each keyed handle, whatever its kind, as canonical files (one per source file for
/// a handle of canonical files, one for a native snapshot or a heap chain) with the same
/// key-group range, states and entries; each operator state handle as an operator state file
/// with the same states. Returns the tasks to complete `target` with
/// ([`CheckpointStorage::complete`]); completing (or aborting) is the caller's.
///
/// Every byte read is checked as a restore checks it (sizes, CRC-32C against the handles,
/// block checksums, origins): damage is an error naming the file (kind `Corruption`), and a
/// file already written for `target` stays unlisted (abort `target` or remove its directory).
/// `progress` is called with the number of key groups read so far (up to
/// [`key_groups_to_convert`]).
pub fn convert_tasks(
    source: &dyn CheckpointStorage,
    snapshot: &CompletedCheckpoint,
    dest: &dyn CheckpointStorage,
    target: &SnapshotTarget,
    options: &ConvertOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<Vec<SubtaskState>> {
    let mut names = FileNames::default();
    let mut done = 0u64;
    let mut tasks = Vec::with_capacity(snapshot.tasks().len());
    for task in snapshot.tasks() {
        let mut out = SubtaskState::new(
            task.operator_id.clone(),
            task.subtask_index,
            task.parallelism,
            task.max_parallelism,
        );
        for handle in &task.keyed {
            let name = names.unique(task, "keyed");
            let mut files = Vec::new();
            match handle.kind() {
                KeyedHandleKind::KeyGroupFiles => {
                    for (i, file) in handle.files().iter().enumerate() {
                        let name = if i == 0 {
                            name.clone()
                        } else {
                            names.unique(task, &format!("keyed-{i}"))
                        };
                        files.push(copy_canonical(
                            source,
                            file,
                            dest,
                            target,
                            &name,
                            options,
                            &mut |n| progress(done + n),
                        )?);
                        done += handle.key_group_range().len() as u64;
                    }
                }
                KeyedHandleKind::LsmNative | KeyedHandleKind::HeapChain => {
                    files.push(copy_keyed(
                        source,
                        handle,
                        dest,
                        target,
                        &name,
                        options,
                        &mut |n| progress(done + n),
                    )?);
                    done += handle.key_group_range().len() as u64;
                }
            }
            out = out.with_keyed(KeyedStateHandle::new(handle.key_group_range(), files)?);
        }
        for handle in &task.operator {
            let name = names.unique(task, "operator");
            out = out.with_operator(copy_operator_state(source, handle, dest, target, &name)?);
        }
        tasks.push(out);
    }
    Ok(tasks)
}

/// Reads the operator state of `handle` from `source` and writes it, unchanged (every state's
/// name, mode, codecs and serialized elements), as state file `name` of `target` in `dest`.
pub fn copy_operator_state(
    source: &dyn CheckpointStorage,
    handle: &OperatorStateHandle,
    dest: &dyn CheckpointStorage,
    target: &SnapshotTarget,
    name: &str,
) -> Result<OperatorStateHandle> {
    let snapshot = read_operator_state(source, handle)?;
    write_operator_state(dest, target, name, &snapshot)
}

/// File names unique within one snapshot: `<operator>-<subtask>-<what>`, the operator id with
/// every character outside `[A-Za-z0-9._-]` replaced by `_`, and `-<n>` added on a clash.
#[derive(Default)]
struct FileNames {
    used: BTreeSet<String>,
}

impl FileNames {
    fn unique(&mut self, task: &SubtaskState, what: &str) -> String {
        let operator: String = task
            .operator_id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let base = format!("{operator}-{}-{what}", task.subtask_index);
        let mut name = base.clone();
        let mut n = 1;
        while self.used.contains(&name) {
            n += 1;
            name = format!("{base}-{n}");
        }
        self.used.insert(name.clone());
        name
    }
}

/// The writer options of file `name` of `target`.
fn writer_options(
    target: &SnapshotTarget,
    name: &str,
    path: &str,
    options: &ConvertOptions,
) -> SnapshotWriterOptions {
    SnapshotWriterOptions {
        compression: options.compression,
        file_name: path.to_owned(),
        origin: Some(target.origin(name)),
        ..SnapshotWriterOptions::default()
    }
}

/// Rewrites the canonical file `file` as canonical file `name` of `target`, with the same
/// meta block and a new origin (read as a restore reads it: size, CRC-32C, origin, no delta).
fn copy_canonical(
    source: &dyn CheckpointStorage,
    file: &StateFile,
    dest: &dyn CheckpointStorage,
    target: &SnapshotTarget,
    name: &str,
    options: &ConvertOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<StateFile> {
    let entries = FileRestoreSource::open(source, file)?;
    write_source(
        entries.snapshot_meta(),
        &entries,
        dest,
        target,
        name,
        options,
        progress,
    )
}

/// Writes the state of a native snapshot or heap chain handle, read through its restore
/// source, as canonical file `name` of `target`, with the source's meta block (TTLs included,
/// which a restore source's state metadata does not carry).
fn copy_keyed(
    source: &dyn CheckpointStorage,
    handle: &KeyedStateHandle,
    dest: &dyn CheckpointStorage,
    target: &SnapshotTarget,
    name: &str,
    options: &ConvertOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<StateFile> {
    match handle.kind() {
        KeyedHandleKind::LsmNative => {
            let entries = NativeRestoreSource::open(source, handle)?;
            write_source(
                entries.snapshot_meta(),
                &entries,
                dest,
                target,
                name,
                options,
                progress,
            )
        }
        KeyedHandleKind::HeapChain => {
            let entries = ChainRestoreSource::open(source, handle)?;
            write_source(
                entries.snapshot_meta(),
                &entries,
                dest,
                target,
                name,
                options,
                progress,
            )
        }
        KeyedHandleKind::KeyGroupFiles => Err(Error::InvalidArgument(
            "canonical files are copied file by file".into(),
        )),
    }
}

/// Writes every entry of `entries` (sorted into canonical order key group by key group) as
/// canonical file `name` of `target`, with `meta` as its meta block.
fn write_source(
    meta: &SnapshotMeta,
    entries: &dyn RestoreSource,
    dest: &dyn CheckpointStorage,
    target: &SnapshotTarget,
    name: &str,
    options: &ConvertOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<StateFile> {
    if meta.states.len() != entries.state_metas().len() {
        return Err(Error::IncompatibleSnapshot(format!(
            "{name}: the snapshot lists {} states, its entries {}",
            meta.states.len(),
            entries.state_metas().len()
        )));
    }
    let writer = dest.create_state_file(target, name)?;
    let (file, ()) = write_state_file(writer, |sink, path| {
        let mut out =
            SnapshotWriter::with_options(sink, meta, writer_options(target, name, path, options))?;
        let mut runs: Vec<EncodedRun> = meta.states.iter().map(|_| EncodedRun::default()).collect();
        for (i, kg) in entries.key_group_range().iter().enumerate() {
            runs.iter_mut().for_each(EncodedRun::clear);
            let mut foreign = None;
            entries.read_key_group(kg, &mut |index, e| match runs.get_mut(index) {
                Some(run) => run.push_entry(e),
                None => foreign = Some(index),
            })?;
            if let Some(index) = foreign {
                return Err(Error::IncompatibleSnapshot(format!(
                    "{name}: an entry of state {index} in key group {kg}, which the snapshot \
                     does not list"
                )));
            }
            if runs.iter().any(|r| !r.is_empty()) {
                out.begin_key_group(kg)?;
                for (index, run) in runs.iter_mut().enumerate() {
                    run.sort();
                    crate::checkpoint::add_run(&mut out, index as u32, run)?;
                }
                out.end_key_group()?;
            }
            progress(i as u64 + 1);
        }
        out.finish()?;
        Ok(())
    })?;
    Ok(file)
}
