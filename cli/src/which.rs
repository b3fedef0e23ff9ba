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

/// Opens the checkpoint root `root` for `access`. Every tool opens its roots here, so that
/// roots given as URLs (object stores) can be added in this one place; today a root is a
/// local directory, and a URL is a usage error saying so.
pub fn open_root(root: &str, access: Access) -> ToolResult<FsCheckpointStorage> {
    if let Some((scheme, _)) = root.split_once("://") {
        if !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '+')
        {
            return Err(ToolError::Usage(format!(
                "{root}: checkpoint roots given as URLs ({scheme}://) are not supported by this \
                 build; give a local directory"
            )));
        }
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
