//! The offline tools: inspect, verify and dump checkpoints and savepoints, read-only.

use std::path::PathBuf;

use flowstate::checkpoint::read_operator_state;
use flowstate::*;
use flowstate_formats::snapshot::{DecodedValue, SnapshotReader};

type ToolResult<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Which snapshot of a checkpoint directory a tool reads.
#[derive(clap::Args, Debug)]
pub struct Which {
    /// The checkpoint directory (the root given to the job, holding `chk-<id>/`).
    dir: PathBuf,
    /// The checkpoint to read (default: the latest completed one).
    #[arg(long, conflicts_with = "savepoint")]
    checkpoint: Option<u64>,
    /// A savepoint directory under DIR to read instead of a checkpoint.
    #[arg(long)]
    savepoint: Option<String>,
}

fn load(which: &Which) -> ToolResult<(FsCheckpointStorage, CompletedCheckpoint)> {
    let storage = FsCheckpointStorage::open_read_only(&which.dir)?;
    let done = match (&which.savepoint, which.checkpoint) {
        (Some(dir), _) => storage.load_savepoint(dir)?,
        (None, Some(id)) => storage.load_checkpoint(CheckpointId(id))?,
        (None, None) => storage
            .latest_completed()?
            .ok_or_else(|| format!("no completed checkpoint in {}", which.dir.display()))?,
    };
    Ok((storage, done))
}

fn open_snapshot(
    storage: &FsCheckpointStorage,
    file: &StateFile,
) -> ToolResult<SnapshotReader<Box<dyn flowstate::storage::ReadableFile>>> {
    let source = storage.open_state_file(file)?;
    Ok(SnapshotReader::open(source, file.path())?)
}

/// `flowstate inspect`: what a checkpoint holds.
pub fn inspect(which: &Which) -> ToolResult<()> {
    let (storage, done) = load(which)?;
    let ids: Vec<String> = storage
        .completed()?
        .iter()
        .map(|id| id.0.to_string())
        .collect();
    println!("completed checkpoints: {}", ids.join(", "));
    println!(
        "{:?} {} at {} ms, {} task(s), metadata {}",
        done.kind(),
        done.id().0,
        done.timestamp_millis(),
        done.tasks().len(),
        done.metadata_path()
    );
    for task in done.tasks() {
        println!(
            "  task {}[{}/{}] max parallelism {}",
            task.operator_id, task.subtask_index, task.parallelism, task.max_parallelism
        );
        for handle in &task.keyed {
            println!("    keyed state, key groups {}", handle.key_group_range());
            for file in handle.files() {
                let reader = open_snapshot(&storage, file)?;
                let meta = reader.meta();
                println!(
                    "      {} ({} bytes): {} entries in {} key groups with data, key codec {}@{}",
                    file.path(),
                    file.size(),
                    reader.entry_count(),
                    reader.locations().count(),
                    meta.key_codec.name,
                    meta.key_codec.version
                );
                for s in &meta.states {
                    let uk = s
                        .user_key
                        .as_ref()
                        .map(|c| format!(" by {}@{}", c.name, c.version))
                        .unwrap_or_default();
                    println!(
                        "        state '{}': {:?} of {}@{}{uk} in namespace {}@{}",
                        s.name,
                        s.kind,
                        s.value.name,
                        s.value.version,
                        s.namespace.name,
                        s.namespace.version
                    );
                }
            }
        }
        for handle in &task.operator {
            let snapshot = read_operator_state(&storage, handle)?;
            println!(
                "    operator state {} ({} bytes)",
                handle.file().path(),
                handle.file().size()
            );
            for (meta, data) in &snapshot.states {
                let n = match data {
                    flowstate::operator::OperatorStateData::List(l) => l.len(),
                    flowstate::operator::OperatorStateData::Map(m) => m.len(),
                };
                println!(
                    "        state '{}': {} with {n} element(s)",
                    meta.name, meta
                );
            }
        }
    }
    Ok(())
}

/// `flowstate verify`: reads every byte of every file of a checkpoint and checks it.
pub fn verify(which: &Which) -> ToolResult<()> {
    let (storage, done) = load(which)?;
    let mut entries = 0u64;
    let mut files = 0u64;
    for task in done.tasks() {
        for handle in &task.keyed {
            for file in handle.files() {
                let reader = open_snapshot(&storage, file)?;
                let max_parallelism = reader.meta().max_parallelism;
                let mut misplaced = 0u64;
                for kg in reader.key_group_range() {
                    entries +=
                        reader.read_key_group::<flowstate_formats::FormatError>(kg, |e| {
                            if key_group_for(e.key, max_parallelism) != kg {
                                misplaced += 1;
                            }
                            Ok(())
                        })?;
                }
                if misplaced > 0 {
                    return Err(format!(
                        "{}: {misplaced} entries are filed under a key group their key does not hash to",
                        file.path()
                    )
                    .into());
                }
                files += 1;
            }
        }
        for handle in &task.operator {
            read_operator_state(&storage, handle)?;
            files += 1;
        }
    }
    println!(
        "OK: {:?} {}: {files} file(s), {entries} keyed entries, every checksum and structure verified",
        done.kind(),
        done.id().0
    );
    Ok(())
}

/// Options of `flowstate dump`.
#[derive(clap::Args, Debug)]
pub struct DumpArgs {
    #[command(flatten)]
    which: Which,
    /// Only this state.
    #[arg(long)]
    state: Option<String>,
    /// Print at most this many entries.
    #[arg(long, default_value_t = 100)]
    limit: u64,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `flowstate dump`: the entries of a checkpoint's keyed state, as hex.
pub fn dump(args: &DumpArgs) -> ToolResult<()> {
    let (storage, done) = load(&args.which)?;
    let mut printed = 0u64;
    'files: for task in done.tasks() {
        for handle in &task.keyed {
            for file in handle.files() {
                let reader = open_snapshot(&storage, file)?;
                let names: Vec<String> = reader
                    .meta()
                    .states
                    .iter()
                    .map(|s| s.name.clone())
                    .collect();
                for kg in reader.key_group_range() {
                    let mut lines = Vec::new();
                    reader.read_key_group::<flowstate_formats::FormatError>(kg, |e| {
                        let name = names
                            .get(e.state_index as usize)
                            .map_or("?", String::as_str);
                        if args.state.as_deref().is_some_and(|s| s != name) {
                            return Ok(());
                        }
                        let value = match &e.value {
                            DecodedValue::Value(v) => hex(v),
                            DecodedValue::List(items) => {
                                let items: Vec<String> = (*items).map(hex).collect();
                                format!("[{}]", items.join(", "))
                            }
                            DecodedValue::Map(pairs) => {
                                let pairs: Vec<String> = (*pairs)
                                    .map(|(k, v)| format!("{}: {}", hex(k), hex(v)))
                                    .collect();
                                format!("{{{}}}", pairs.join(", "))
                            }
                        };
                        lines.push(format!(
                            "kg {kg:>5} {name} key {} ns {} = {value}",
                            hex(e.key),
                            hex(e.namespace)
                        ));
                        Ok(())
                    })?;
                    for line in lines {
                        if printed == args.limit {
                            break 'files;
                        }
                        println!("{line}");
                        printed += 1;
                    }
                }
            }
        }
    }
    Ok(())
}
