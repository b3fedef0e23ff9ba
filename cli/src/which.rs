//! How the tools open a checkpoint root ([`open_root`], the one place a root is opened) and
//! which snapshot of it they read ([`Which`], [`load`]), with the errors that say what to give
//! instead.

use std::path::Path;

use flowstate::checkpoint::METADATA_FILE;
use flowstate::{
    CheckpointId, CheckpointStorage, CompletedCheckpoint, FsCheckpointOptions, FsCheckpointStorage,
};

pub use crate::exit::ToolError;

/// The result of a tool: an error carries its exit code and is printed by `main`.
pub type ToolResult<T> = std::result::Result<T, ToolError>;

/// What a tool does with a checkpoint root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Reads only: nothing is cleaned up, written or deleted. The root must exist.
    ReadOnly,
    /// Owns the root (`FsCheckpointStorage::open_local`: start-up cleanup, completion). Only
    /// for a root the tool made itself (convert's output), never for one a job uses.
    Owner,
}

/// Opens the checkpoint root `root` for `access`: a local directory, or (feature
/// `object-store`, on by default) a URL such as `s3://bucket/prefix`. Every tool opens its
/// roots here.
pub fn open_root(root: &str, access: Access) -> ToolResult<FsCheckpointStorage> {
    if is_url(root) {
        return open_url(root, access);
    }
    let dir = Path::new(root);
    match access {
        Access::ReadOnly => {
            // A checkpoint's own directory given instead of the root: say which to give.
            if let Some(name) = dir.file_name().and_then(|n| n.to_str()) {
                if CheckpointId::from_dir_name(name).is_some() && dir.join(METADATA_FILE).is_file()
                {
                    let parent = dir
                        .parent()
                        .map_or_else(|| ".".into(), |p| p.display().to_string());
                    return Err(ToolError::Usage(format!(
                        "{root} is one checkpoint's directory: give the checkpoint root \
                         {parent} (with --checkpoint {} for this one)",
                        &name[4..]
                    )));
                }
            }
            if !dir.is_dir() {
                return Err(ToolError::Usage(format!(
                    "{root} is not a directory of checkpoints"
                )));
            }
            Ok(FsCheckpointStorage::open_read_only(dir)?)
        }
        Access::Owner => Ok(FsCheckpointStorage::open_local(
            dir,
            FsCheckpointOptions::default(),
        )?),
    }
}

/// Which snapshot of a checkpoint root a tool reads.
#[derive(clap::Args, Debug)]
pub struct Which {
    /// The checkpoint root (the directory given to the job, holding `chk-<id>/`).
    #[arg(value_name = "ROOT")]
    pub root: String,
    /// The checkpoint to read (default: the latest completed one).
    #[arg(long, conflicts_with = "savepoint")]
    pub checkpoint: Option<u64>,
    /// A savepoint directory under ROOT to read instead of a checkpoint.
    #[arg(long, value_name = "DIR")]
    pub savepoint: Option<String>,
}

/// Opens the root read-only and loads the snapshot `which` names.
pub fn load(which: &Which) -> ToolResult<(FsCheckpointStorage, CompletedCheckpoint)> {
    let storage = open_root(&which.root, Access::ReadOnly)?;
    let done = load_from(&storage, which)?;
    Ok((storage, done))
}

/// Loads the snapshot `which` names from `storage` (opened on `which.root`).
pub fn load_from(storage: &FsCheckpointStorage, which: &Which) -> ToolResult<CompletedCheckpoint> {
    Ok(match (&which.savepoint, which.checkpoint) {
        (Some(dir), _) => {
            if !Path::new(&which.root)
                .join(dir)
                .join(METADATA_FILE)
                .is_file()
            {
                let found: Vec<String> = storage
                    .savepoints()
                    .map(|s| s.into_iter().map(|(_, d)| d).collect())
                    .unwrap_or_default();
                return Err(ToolError::Usage(format!(
                    "no savepoint in {dir} under {} (no {METADATA_FILE}); savepoints there: {}",
                    which.root,
                    if found.is_empty() {
                        "none".into()
                    } else {
                        found.join(", ")
                    }
                )));
            }
            storage.load_savepoint(dir)?
        }
        (None, Some(id)) => {
            let completed = storage.completed()?;
            if !completed.contains(&CheckpointId(id)) {
                let ids: Vec<String> = completed.iter().map(|c| c.0.to_string()).collect();
                return Err(ToolError::Usage(format!(
                    "no completed checkpoint {id} in {}; completed: {}",
                    which.root,
                    if ids.is_empty() {
                        "none".into()
                    } else {
                        ids.join(", ")
                    }
                )));
            }
            storage.load_checkpoint(CheckpointId(id))?
        }
        (None, None) => storage.latest_completed()?.ok_or_else(|| {
            ToolError::Usage(format!("no completed checkpoint in {}", which.root))
        })?,
    })
}

/// Opens the checkpoint root at `url` for `access`.
#[cfg(feature = "object-store")]
fn open_url(url: &str, access: Access) -> ToolResult<FsCheckpointStorage> {
    match access {
        Access::ReadOnly => {
            let storage = FsCheckpointStorage::open_url_read_only(url)?;
            // An object store has no directories: an empty root is one nothing was written to.
            if storage
                .storage()
                .list_dir(flowstate::storage::ROOT)?
                .is_empty()
            {
                return Err(ToolError::Usage(format!(
                    "{url} holds no checkpoints (nothing is stored under it)"
                )));
            }
            Ok(storage)
        }
        Access::Owner => Ok(open_url_owner(url, FsCheckpointOptions::default())?),
    }
}

/// Without the `object-store` feature a URL is a usage error that says so.
#[cfg(not(feature = "object-store"))]
fn open_url(url: &str, _access: Access) -> ToolResult<FsCheckpointStorage> {
    Err(ToolError::Usage(format!(
        "{url}: checkpoint roots given as URLs need the `object-store` feature of the flowstate \
         command (on by default); give a local directory"
    )))
}

/// Opens the checkpoint root at `url` as its owner (start-up cleanup and retention run).
#[cfg(feature = "object-store")]
pub fn open_url_owner(
    url: &str,
    options: FsCheckpointOptions,
) -> flowstate::Result<FsCheckpointStorage> {
    FsCheckpointStorage::open_url(url, options, Default::default())
}

/// Without the `object-store` feature a URL is refused.
#[cfg(not(feature = "object-store"))]
pub fn open_url_owner(
    url: &str,
    _options: FsCheckpointOptions,
) -> flowstate::Result<FsCheckpointStorage> {
    Err(flowstate::Error::InvalidConfig(format!(
        "{url}: checkpoint roots given as URLs need the `object-store` feature"
    )))
}

/// The object the demo leaves at the root of a URL it keeps checkpoints at.
#[cfg(feature = "object-store")]
const DEMO_ROOT_MARKER: &str = "flowstate-demo-root";

/// Makes the root at `url` ready for a demo run: an empty root is marked as the demo's; a
/// root the demo marked before is emptied; anything else is refused and nothing is deleted.
#[cfg(feature = "object-store")]
pub fn prepare_demo_root(url: &str) -> flowstate::Result<()> {
    use flowstate::storage::{ObjectStorage, Storage, ROOT};
    let storage = ObjectStorage::from_url(url, Default::default())?;
    let names = storage.list_dir(ROOT)?;
    if !names.is_empty() {
        if !names.iter().any(|n| n == DEMO_ROOT_MARKER) {
            return Err(flowstate::Error::InvalidArgument(format!(
                "{url} holds objects an earlier demo did not make ({}): give --checkpoints an \
                 empty root; nothing was deleted",
                names.join(", ")
            )));
        }
        for name in names.iter().filter(|n| *n != DEMO_ROOT_MARKER) {
            storage.remove_dir_all(name)?;
            storage.remove_file(name)?;
        }
    }
    storage.write_atomic(
        DEMO_ROOT_MARKER,
        b"made by `flowstate demo`: emptied by the next demo run with these --checkpoints\n",
    )
}

/// Without the `object-store` feature a URL is refused.
#[cfg(not(feature = "object-store"))]
pub fn prepare_demo_root(url: &str) -> flowstate::Result<()> {
    open_url_owner(url, FsCheckpointOptions::default()).map(|_| ())
}

/// Whether `root` is a URL (`scheme://…`) rather than a local path.
pub fn is_url(root: &str) -> bool {
    root.split_once("://").is_some_and(|(scheme, _)| {
        !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '+')
    })
}

/// Whether nothing is stored under the URL `url`.
#[cfg(feature = "object-store")]
pub fn url_is_empty(url: &str) -> ToolResult<bool> {
    use flowstate::storage::{ObjectStorage, Storage, ROOT};
    let storage = ObjectStorage::from_url(url, Default::default())?;
    Ok(storage.list_dir(ROOT)?.is_empty())
}

/// Without the `object-store` feature a URL is refused.
#[cfg(not(feature = "object-store"))]
pub fn url_is_empty(url: &str) -> ToolResult<bool> {
    open_url(url, Access::ReadOnly).map(|_| true)
}
