//! `flowstate checkpoints` and `flowstate savepoints`: what a checkpoint root holds, with sizes,
//! read-only.

use std::collections::{BTreeMap, BTreeSet};

use flowstate::checkpoint::{METADATA_FILE, SHARED_DIR};
use flowstate::{CheckpointStorage, CompletedCheckpoint, FsCheckpointStorage, StateFile};

use crate::inspect::handle_kind_name;
use crate::json::{self, Obj};
use crate::which::{open_root, Access, ToolResult};

/// Options of `flowstate checkpoints` and `flowstate savepoints`.
#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// The checkpoint root (the directory given to the job, holding `chk-<id>/`).
    #[arg(value_name = "ROOT")]
    root: String,
    /// Print one JSON document on standard output instead of a table.
    #[arg(long)]
    json: bool,
}

/// The length of the file at `path` under the root, if it can be opened.
fn length(storage: &FsCheckpointStorage, path: &str) -> Option<u64> {
    storage.storage().open(path).ok().map(|f| f.len())
}

/// The bytes of a snapshot's own files (those its handles list, not the shared ones) and of
/// its `_metadata`.
fn own_bytes(storage: &FsCheckpointStorage, done: &CompletedCheckpoint) -> u64 {
    let files: u64 = done.files().map(StateFile::size).sum();
    let metadata = length(storage, &done.metadata_path()).unwrap_or(0);
    files + metadata
}

/// One completed checkpoint's row.
struct Row {
    id: u64,
    timestamp: u64,
    tasks: usize,
    files: usize,
    private: u64,
    shared: u64,
}

/// `flowstate checkpoints ROOT`: every completed checkpoint with its completion time, tasks,
/// files, private bytes (`chk-<id>/`, `_metadata` included) and the bytes of the shared files
/// it references; then the root's `shared/` on disk and the shared files no checkpoint
/// references.
pub fn checkpoints(args: &ListArgs) -> ToolResult<()> {
    let storage = open_root(&args.root, Access::ReadOnly)?;
    let mut rows = Vec::new();
    let mut referenced: BTreeSet<String> = BTreeSet::new();
    for id in storage.completed()? {
        let done = storage.load_checkpoint(id)?;
        let shared: BTreeMap<&str, u64> =
            done.shared_files().map(|f| (f.path(), f.size())).collect();
        referenced.extend(shared.keys().map(|p| p.to_string()));
        rows.push(Row {
            id: id.0,
            timestamp: done.timestamp_millis(),
            tasks: done.tasks().len(),
            files: done.files().count() + shared.len() + 1,
            private: own_bytes(&storage, &done),
            shared: shared.values().sum(),
        });
    }
    let mut on_disk = 0u64;
    let mut unreferenced = 0usize;
    let mut shared_files = 0usize;
    if storage.storage().exists(SHARED_DIR)? {
        for name in storage.storage().list_dir(SHARED_DIR)? {
            let path = format!("{SHARED_DIR}/{name}");
            shared_files += 1;
            on_disk += length(&storage, &path).unwrap_or(0);
            if !referenced.contains(&path) {
                unreferenced += 1;
            }
        }
    }
    if args.json {
        let items = rows.iter().map(|r| {
            Obj::new()
                .raw("id", r.id)
                .raw("timestamp_millis", r.timestamp)
                .raw("tasks", r.tasks)
                .raw("files", r.files)
                .raw("private_bytes", r.private)
                .raw("shared_bytes", r.shared)
                .raw("total_bytes", r.private + r.shared)
                .end()
        });
        println!(
            "{}",
            Obj::new()
                .str("root", &args.root)
                .raw("checkpoints", json::array(items))
                .raw(
                    "shared",
                    Obj::new()
                        .raw("files", shared_files)
                        .raw("bytes", on_disk)
                        .raw("unreferenced_files", unreferenced)
                        .end()
                )
                .end()
        );
        return Ok(());
    }
    println!(
        "{:>8}  {:>15}  {:>5}  {:>6}  {:>14}  {:>14}  {:>14}",
        "id", "completed (ms)", "tasks", "files", "private bytes", "shared bytes", "total bytes"
    );
    for r in &rows {
        println!(
            "{:>8}  {:>15}  {:>5}  {:>6}  {:>14}  {:>14}  {:>14}",
            r.id,
            r.timestamp,
            r.tasks,
            r.files,
            r.private,
            r.shared,
            r.private + r.shared
        );
    }
    println!(
        "{} completed checkpoint(s); shared/: {shared_files} file(s), {on_disk} bytes on disk, \
         {unreferenced} referenced by no completed checkpoint",
        rows.len()
    );
    Ok(())
}

/// `flowstate savepoints ROOT`: every savepoint under the root (as
/// `CheckpointStorage::savepoints` finds them) with its id, directory, kind of handles
/// (canonical, native) and bytes.
pub fn savepoints(args: &ListArgs) -> ToolResult<()> {
    let storage = open_root(&args.root, Access::ReadOnly)?;
    let mut rows = Vec::new();
    for (id, dir) in storage.savepoints()? {
        let done = storage.load_savepoint(&dir)?;
        let kinds: BTreeSet<&str> = done
            .tasks()
            .iter()
            .flat_map(|t| &t.keyed)
            .map(|h| handle_kind_name(h.kind()))
            .collect();
        let kinds: Vec<&str> = kinds.into_iter().collect();
        rows.push((
            id.0,
            dir.clone(),
            kinds.join("+"),
            done.tasks().len(),
            own_bytes(&storage, &done),
            done.timestamp_millis(),
        ));
    }
    if args.json {
        let items = rows.iter().map(|(id, dir, kind, tasks, bytes, ts)| {
            Obj::new()
                .raw("id", id)
                .str("dir", dir)
                .str("kind", kind)
                .raw("tasks", tasks)
                .raw("bytes", bytes)
                .raw("timestamp_millis", ts)
                .end()
        });
        println!(
            "{}",
            Obj::new()
                .str("root", &args.root)
                .raw("savepoints", json::array(items))
                .end()
        );
        return Ok(());
    }
    println!(
        "{:>8}  {:<10}  {:>5}  {:>14}  directory",
        "id", "kind", "tasks", "bytes"
    );
    for (id, dir, kind, tasks, bytes, _) in &rows {
        println!("{id:>8}  {kind:<10}  {tasks:>5}  {bytes:>14}  {dir}");
    }
    println!(
        "{} savepoint(s) ({METADATA_FILE} found up to {} directories deep)",
        rows.len(),
        flowstate::checkpoint::MAX_SAVEPOINT_DEPTH
    );
    Ok(())
}
