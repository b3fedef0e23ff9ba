//! `flowstate convert`: a checkpoint or savepoint of any handle kind rewritten as canonical
//! files, either as a savepoint (`--to-savepoint DIR`) or as a checkpoint in a new root
//! (`--to-checkpoints NEW_ROOT`) that either backend restores at any parallelism
//! (spec/tools.md section 3).
//!
//! The source root is only read. A savepoint is written into a staging root beside its final
//! place (`.<name>.flowstate-tmp`, which no savepoint listing sees), completed there and moved
//! into place by one rename, so the savepoint directory never exists incomplete; a checkpoint
//! root is written into a new or empty directory. On any failure convert removes what it
//! created, and nothing else.

use std::path::{Path, PathBuf};

use flowstate::convert::{convert_tasks, key_groups_to_convert, ConvertOptions};
use flowstate::{
    CheckpointId, CheckpointStorage, CompletedCheckpoint, Compression, FsCheckpointStorage,
    SnapshotTarget, SubtaskState,
};

use crate::progress;
use crate::which::{load, open_root, Access, ToolError, ToolResult, Which};

/// Options of `flowstate convert`.
#[derive(clap::Args, Debug)]
pub struct ConvertArgs {
    #[command(flatten)]
    which: Which,
    /// Write a canonical savepoint into directory DIR, relative to ROOT (or to --out); DIR must
    /// not exist.
    #[arg(
        long,
        value_name = "DIR",
        required_unless_present = "to_checkpoints",
        conflicts_with = "to_checkpoints"
    )]
    to_savepoint: Option<String>,
    /// The root to write the savepoint under, instead of ROOT.
    #[arg(long, value_name = "OUT_ROOT", requires = "to_savepoint")]
    out: Option<String>,
    /// Write a checkpoint root: NEW_ROOT/chk-<id>/ with canonical files and its _metadata.
    /// NEW_ROOT must not exist or be empty.
    #[arg(long, value_name = "NEW_ROOT")]
    to_checkpoints: Option<String>,
    /// Refuse unless the snapshot's max parallelism is this (it cannot be changed: it is the
    /// number of key groups the state is filed under).
    #[arg(long, value_name = "M")]
    max_parallelism: Option<u32>,
    /// Block compression of the files written: none, lz4 or zstd.
    #[arg(long, default_value = "lz4", value_parser = ["none", "lz4", "zstd"])]
    compression: String,
}

/// `flowstate convert`.
pub fn convert(args: &ConvertArgs) -> ToolResult<()> {
    let (source, done) = load(&args.which)?;
    check_max_parallelism(&done, args.max_parallelism)?;
    let options = ConvertOptions {
        compression: match args.compression.as_str() {
            "none" => Compression::None,
            "zstd" => Compression::Zstd { level: 3 },
            _ => Compression::Lz4,
        },
    };
    let written = match (&args.to_savepoint, &args.to_checkpoints) {
        (Some(dir), _) => {
            let out_root = args.out.as_deref().unwrap_or(&args.which.root);
            to_savepoint(&source, &done, out_root, dir, &options)?
        }
        (None, Some(new_root)) => to_checkpoints(&source, &done, new_root, &options)?,
        (None, None) => {
            return Err(ToolError::Usage(
                "give --to-savepoint DIR or --to-checkpoints NEW_ROOT".into(),
            ))
        }
    };
    let files: usize = written.tasks().iter().map(|t| t.files().count()).sum();
    let bytes: u64 = written.files().map(flowstate::StateFile::size).sum();
    println!(
        "converted {:?} {} into a canonical {:?} {} at {}: {} task(s), {files} file(s), {bytes} bytes",
        done.kind(),
        done.id().0,
        written.kind(),
        written.id().0,
        written.location(),
        written.tasks().len()
    );
    Ok(())
}

/// Refuses a snapshot whose max parallelism is not `wanted` (when given), naming both.
fn check_max_parallelism(done: &CompletedCheckpoint, wanted: Option<u32>) -> ToolResult<()> {
    let Some(wanted) = wanted else {
        return Ok(());
    };
    if wanted == 0 || wanted > flowstate::key_group::UPPER_BOUND_MAX_PARALLELISM {
        return Err(ToolError::Usage(format!(
            "--max-parallelism {wanted} is outside 1..={}",
            flowstate::key_group::UPPER_BOUND_MAX_PARALLELISM
        )));
    }
    for task in done.tasks() {
        if task.max_parallelism != wanted {
            return Err(ToolError::Usage(format!(
                "the snapshot's max parallelism is {} (task {}[{}]), --max-parallelism asks for \
                 {wanted}: the max parallelism cannot change (it is the number of key groups the \
                 state is filed under); convert with --max-parallelism {} or without it",
                task.max_parallelism, task.operator_id, task.subtask_index, task.max_parallelism
            )));
        }
    }
    Ok(())
}

/// Converts every task of `done` into state files of `target` in `dest`, with a progress bar.
fn convert_with_progress(
    source: &FsCheckpointStorage,
    done: &CompletedCheckpoint,
    dest: &FsCheckpointStorage,
    target: &SnapshotTarget,
    options: &ConvertOptions,
) -> ToolResult<Vec<SubtaskState>> {
    let bar = progress::bar(
        key_groups_to_convert(done),
        &format!("converting {:?} {}", done.kind(), done.id().0),
        "key groups",
    );
    let tasks = convert_tasks(source, done, dest, target, options, &mut |n| {
        bar.set_position(n)
    });
    bar.finish_and_clear();
    Ok(tasks?)
}

/// Whether `path` names anything (a file, a directory, a link, dangling or not).
fn exists(path: &Path) -> bool {
    path.symlink_metadata().is_ok()
}

/// Checks that `dir` is a savepoint directory name relative to a root: components that are not
/// empty, `.` or `..`, without `\`, `:` or NUL, not `_metadata` nor temporary names, and a
/// first component that is not `chk-<n>`, `shared` or `taskowned`.
fn check_savepoint_dir(dir: &str) -> ToolResult<()> {
    let bad = |why: &str| ToolError::Usage(format!("--to-savepoint {dir:?}: {why}"));
    if dir.is_empty() || dir.starts_with('/') {
        return Err(bad("give a directory relative to the root"));
    }
    for (i, c) in dir.split('/').enumerate() {
        if c.is_empty() || c == "." || c == ".." || c.contains(['\\', ':', '\0']) {
            return Err(bad("not a plain relative path"));
        }
        if c == flowstate::checkpoint::METADATA_FILE || c.ends_with(".flowstate-tmp") {
            return Err(bad("a component is a name the checkpoint storage uses"));
        }
        if i == 0
            && (c == flowstate::checkpoint::SHARED_DIR
                || c == flowstate::checkpoint::TASK_OWNED_DIR
                || CheckpointId::from_dir_name(c).is_some())
        {
            return Err(bad("it is inside a checkpoint's or a reserved directory"));
        }
    }
    Ok(())
}

/// Directories convert created, removed again (deepest first, each only if empty) unless
/// [`keep`](Created::keep) is called.
struct Created {
    /// Directories to remove if empty.
    dirs: Vec<PathBuf>,
    /// A directory to remove whole (the staging root, or a new checkpoint root).
    whole: Option<PathBuf>,
    /// A directory that was empty before: its entries are removed, the directory kept.
    emptied: Option<PathBuf>,
}

impl Created {
    fn new() -> Self {
        Created {
            dirs: Vec::new(),
            whole: None,
            emptied: None,
        }
    }

    /// Keeps everything: the conversion succeeded.
    fn keep(&mut self) {
        self.dirs.clear();
        self.whole = None;
        self.emptied = None;
    }
}

impl Drop for Created {
    fn drop(&mut self) {
        if let Some(whole) = self.whole.take() {
            let _ = std::fs::remove_dir_all(whole);
        }
        if let Some(dir) = self.emptied.take() {
            if let Ok(entries) = std::fs::read_dir(&dir) {
                for entry in entries.flatten() {
                    let path = entry.path();
                    let _ = if path.is_dir() && !path.is_symlink() {
                        std::fs::remove_dir_all(&path)
                    } else {
                        std::fs::remove_file(&path)
                    };
                }
            }
        }
        for dir in self.dirs.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Syncs directory `dir`, so that a rename into it is durable.
fn sync_dir(dir: &Path) -> ToolResult<()> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| ToolError::Io(format!("syncing {}: {e}", dir.display())))
}

/// (a): `done` as a canonical savepoint in `out_root/dir`, written and completed in a staging
/// root beside it and renamed into place.
fn to_savepoint(
    source: &FsCheckpointStorage,
    done: &CompletedCheckpoint,
    out_root: &str,
    dir: &str,
    options: &ConvertOptions,
) -> ToolResult<CompletedCheckpoint> {
    check_savepoint_dir(dir)?;
    if crate::which::is_url(out_root) {
        return Err(ToolError::Usage(format!(
            "{out_root}: convert writes savepoints into a local directory only (give --out a \
             directory); --to-checkpoints takes a URL"
        )));
    }
    let root = Path::new(out_root);
    if !root.is_dir() {
        return Err(ToolError::Usage(format!(
            "{out_root} is not a directory to write the savepoint under"
        )));
    }
    let dir = dir.trim_end_matches('/');
    let final_dir = root.join(dir);
    if exists(&final_dir) {
        return Err(ToolError::Usage(format!(
            "{} exists: convert never overwrites; give another --to-savepoint directory",
            final_dir.display()
        )));
    }
    let (parent_rel, leaf) = dir.rsplit_once('/').unwrap_or(("", dir));
    let parent = root.join(parent_rel);
    let staging = parent.join(format!(".{leaf}.flowstate-tmp"));
    if exists(&staging) {
        return Err(ToolError::Usage(format!(
            "{} exists: another convert is writing this savepoint, or one failed and left it \
             (remove it if none is running)",
            staging.display()
        )));
    }
    let mut created = Created::new();
    // The missing parents of the savepoint directory, outermost first.
    let mut missing = Vec::new();
    let mut at = parent.as_path();
    while !exists(at) {
        missing.push(at.to_path_buf());
        match at.parent() {
            Some(p) => at = p,
            None => break,
        }
    }
    for p in missing.into_iter().rev() {
        std::fs::create_dir(&p)
            .map_err(|e| ToolError::Io(format!("creating {}: {e}", p.display())))?;
        created.dirs.push(p);
    }
    created.whole = Some(staging.clone());
    let staging_root = staging
        .to_str()
        .ok_or_else(|| ToolError::Usage(format!("{}: not UTF-8", staging.display())))?;
    let dest = open_root(staging_root, Access::Owner)?;
    let target = SnapshotTarget::savepoint(done.id(), leaf);
    let tasks = convert_with_progress(source, done, &dest, &target, options)?;
    dest.complete(&target, tasks)?;
    std::fs::rename(staging.join(leaf), &final_dir).map_err(|e| {
        ToolError::Io(format!(
            "moving the savepoint into {}: {e}",
            final_dir.display()
        ))
    })?;
    // The savepoint is in place: from here on nothing of it is removed.
    created.keep();
    sync_dir(&parent)?;
    std::fs::remove_dir_all(&staging)
        .map_err(|e| ToolError::Io(format!("removing {}: {e}", staging.display())))?;
    let out = open_root(out_root, Access::ReadOnly)?;
    Ok(out.load_savepoint(dir)?)
}

/// (b): `done` as checkpoint `<id>` of a new checkpoint root `new_root` (created, or empty).
fn to_checkpoints(
    source: &FsCheckpointStorage,
    done: &CompletedCheckpoint,
    new_root: &str,
    options: &ConvertOptions,
) -> ToolResult<CompletedCheckpoint> {
    if crate::which::is_url(new_root) {
        return to_checkpoints_at_url(source, done, new_root, options);
    }
    let path = Path::new(new_root);
    let mut created = Created::new();
    if exists(path) {
        let empty = path.is_dir()
            && std::fs::read_dir(path)
                .map(|mut d| d.next().is_none())
                .unwrap_or(false);
        if !empty {
            return Err(ToolError::Usage(format!(
                "{new_root} exists and is not an empty directory: convert writes checkpoints \
                 only into a new or empty root"
            )));
        }
        created.emptied = Some(path.to_path_buf());
    } else {
        created.whole = Some(path.to_path_buf());
    }
    let dest = open_root(new_root, Access::Owner)?;
    let target = SnapshotTarget::checkpoint(done.id());
    let tasks = convert_with_progress(source, done, &dest, &target, options)?;
    let written = dest.complete(&target, tasks)?;
    created.keep();
    Ok(written)
}

/// (b) into an object store: the root at `url` must hold nothing (opening it as the owner
/// would apply its retention to whatever is there); on a failure the checkpoint convert began
/// is aborted, which removes what it wrote.
fn to_checkpoints_at_url(
    source: &FsCheckpointStorage,
    done: &CompletedCheckpoint,
    url: &str,
    options: &ConvertOptions,
) -> ToolResult<CompletedCheckpoint> {
    if !crate::which::url_is_empty(url)? {
        return Err(ToolError::Usage(format!(
            "{url} is not empty: convert writes checkpoints only into a new or empty root"
        )));
    }
    let dest = open_root(url, Access::Owner)?;
    let target = SnapshotTarget::checkpoint(done.id());
    let written = convert_with_progress(source, done, &dest, &target, options)
        .and_then(|tasks| Ok(dest.complete(&target, tasks)?));
    if written.is_err() {
        let _ = dest.abort(&target);
    }
    written
}
