//! Which snapshot of a checkpoint directory an offline tool (inspect, verify, dump) reads, and
//! the errors that say what to give instead.

use std::path::PathBuf;

use flowstate::{CheckpointId, CheckpointStorage, CompletedCheckpoint, FsCheckpointStorage};

/// The result of a tool: any error, printed by `main`.
pub type ToolResult<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Which snapshot of a checkpoint directory a tool reads.
#[derive(clap::Args, Debug)]
pub struct Which {
    /// The checkpoint directory (the root given to the job, holding `chk-<id>/`).
    pub dir: PathBuf,
    /// The checkpoint to read (default: the latest completed one).
    #[arg(long, conflicts_with = "savepoint")]
    pub checkpoint: Option<u64>,
    /// A savepoint directory under DIR to read instead of a checkpoint.
    #[arg(long)]
    pub savepoint: Option<String>,
}

/// Opens the checkpoint directory read-only and loads the snapshot `which` names.
pub fn load(which: &Which) -> ToolResult<(FsCheckpointStorage, CompletedCheckpoint)> {
    // A checkpoint's own directory given instead of the root: say which to give.
    if let Some(name) = which.dir.file_name().and_then(|n| n.to_str()) {
        if CheckpointId::from_dir_name(name).is_some() && which.dir.join("_metadata").is_file() {
            let parent = which
                .dir
                .parent()
                .map_or_else(|| ".".into(), |p| p.display().to_string());
            return Err(format!(
                "{} is one checkpoint's directory: give the checkpoint root {parent} (with \
                 --checkpoint {} for this one)",
                which.dir.display(),
                &name[4..]
            )
            .into());
        }
    }
    let storage = FsCheckpointStorage::open_read_only(&which.dir)?;
    let done = match (&which.savepoint, which.checkpoint) {
        (Some(dir), _) => storage.load_savepoint(dir)?,
        (None, Some(id)) => {
            let completed = storage.completed()?;
            if !completed.contains(&CheckpointId(id)) {
                let ids: Vec<String> = completed.iter().map(|c| c.0.to_string()).collect();
                return Err(format!(
                    "no completed checkpoint {id} in {}; completed: {}",
                    which.dir.display(),
                    if ids.is_empty() {
                        "none".into()
                    } else {
                        ids.join(", ")
                    }
                )
                .into());
            }
            storage.load_checkpoint(CheckpointId(id))?
        }
        (None, None) => storage
            .latest_completed()?
            .ok_or_else(|| format!("no completed checkpoint in {}", which.dir.display()))?,
    };
    Ok((storage, done))
}
