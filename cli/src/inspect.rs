//! `flowstate inspect`: what a checkpoint or savepoint holds, read-only.

use std::collections::BTreeMap;

use flowstate::checkpoint::read_operator_state;
use flowstate::*;
use flowstate_formats::checkpoint::native_snapshot::MAX_NATIVE_SNAPSHOT_LEN;
use flowstate_formats::checkpoint::{KeyedHandleKind, NativeSnapshotRecord};
use flowstate_formats::snapshot::{SnapshotMeta, SnapshotReader};

use flowstate::codec::dynamic::json_literal;

use crate::json::{self, Obj};
use crate::which::{load, ToolError, ToolResult, Which};

/// Options of `flowstate inspect`.
#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    #[command(flatten)]
    which: Which,
    /// Print one JSON document on standard output instead of text.
    #[arg(long)]
    json: bool,
}

fn open_snapshot(
    storage: &FsCheckpointStorage,
    file: &StateFile,
) -> ToolResult<SnapshotReader<Box<dyn flowstate::storage::ReadableFile>>> {
    let source = storage.open_state_file(file)?;
    Ok(SnapshotReader::open(source, file.path())?)
}

/// Reads the native snapshot file of a handle of kind LSM native.
fn native_record(
    storage: &FsCheckpointStorage,
    handle: &KeyedStateHandle,
) -> ToolResult<NativeSnapshotRecord> {
    let file = &handle.files()[0];
    if file.size() > MAX_NATIVE_SNAPSHOT_LEN {
        return Err(ToolError::Damage(format!(
            "{}: {} bytes, over the limit",
            file.path(),
            file.size()
        )));
    }
    let source = storage.open_state_file(file)?;
    let mut bytes = vec![0; file.size() as usize];
    source.read_at(0, &mut bytes)?;
    Ok(NativeSnapshotRecord::decode(&bytes, file.path())?)
}

/// Prints a native snapshot handle: its tables by level, shared and private bytes.
fn inspect_native(storage: &FsCheckpointStorage, handle: &KeyedStateHandle) -> ToolResult<()> {
    let record = native_record(storage, handle)?;
    let snapshot = &handle.files()[0];
    let shared: u64 = handle.shared_files().iter().map(StateFile::size).sum();
    let private: u64 = handle.files().iter().map(StateFile::size).sum();
    println!(
        "      native LSM snapshot {} ({} bytes): {} tables, {} bytes private, {} bytes in {} shared file(s)",
        snapshot.path(),
        snapshot.size(),
        record.tables.len(),
        private,
        shared,
        handle.shared_files().len()
    );
    let mut levels: BTreeMap<u8, (usize, u64)> = BTreeMap::new();
    for t in &record.tables {
        let e = levels.entry(t.level).or_default();
        e.0 += 1;
        e.1 += t.size;
    }
    for (level, (n, bytes)) in levels {
        println!("        L{level}: {n} table(s), {bytes} bytes");
    }
    for s in &record.meta.states {
        println!(
            "        state '{}': {:?} of {}@{}",
            s.name, s.kind, s.value.name, s.value.version
        );
    }
    Ok(())
}

/// `flowstate inspect`: what a checkpoint holds.
pub fn inspect(args: &InspectArgs) -> ToolResult<()> {
    let (storage, done) = load(&args.which)?;
    if args.json {
        println!("{}", inspect_json(&storage, &done)?);
        return Ok(());
    }
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
            if handle.kind() == KeyedHandleKind::LsmNative {
                inspect_native(&storage, handle)?;
                continue;
            }
            // A heap incremental checkpoint's files are its chain: a base, then deltas.
            let files = if handle.kind() == KeyedHandleKind::HeapChain {
                println!(
                    "      heap incremental checkpoint: a chain of {} shared file(s), {} bytes",
                    handle.shared_files().len(),
                    handle
                        .shared_files()
                        .iter()
                        .map(StateFile::size)
                        .sum::<u64>()
                );
                handle.shared_files()
            } else {
                handle.files()
            };
            for file in files {
                let reader = open_snapshot(&storage, file)?;
                let meta = reader.meta();
                let role = match reader.delta() {
                    Some(d) => format!(
                        " delta {} of the base of checkpoint {}:",
                        d.position, d.base_checkpoint
                    ),
                    None if handle.kind() == KeyedHandleKind::HeapChain => " base:".to_owned(),
                    None => String::new(),
                };
                println!(
                    "      {} ({} bytes):{role} {} entries in {} key groups with data, key codec {}@{}",
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
    let referenced = shared_references(&storage)?;
    if !referenced.is_empty() {
        let total: u64 = referenced.values().map(|(size, _)| size).sum();
        println!(
            "shared files: {} ({total} bytes), by the checkpoints that reference them:",
            referenced.len()
        );
        for (path, (size, ids)) in &referenced {
            let ids: Vec<String> = ids.iter().map(u64::to_string).collect();
            println!("  {path} ({size} bytes): checkpoints {}", ids.join(", "));
        }
    }
    Ok(())
}

/// Which completed checkpoints reference each shared file: path to (size, checkpoint ids).
fn shared_references(
    storage: &FsCheckpointStorage,
) -> ToolResult<BTreeMap<String, (u64, Vec<u64>)>> {
    let mut referenced: BTreeMap<String, (u64, Vec<u64>)> = BTreeMap::new();
    for id in storage.completed()? {
        let checkpoint = storage.load_checkpoint(id)?;
        for file in checkpoint.shared_files() {
            let entry = referenced
                .entry(file.path().to_string())
                .or_insert((file.size(), Vec::new()));
            if entry.1.last() != Some(&id.0) {
                entry.1.push(id.0);
            }
        }
    }
    Ok(referenced)
}

/// The name of a keyed handle's kind in the tools' output.
pub fn handle_kind_name(kind: KeyedHandleKind) -> &'static str {
    match kind {
        KeyedHandleKind::KeyGroupFiles => "canonical",
        KeyedHandleKind::LsmNative => "native",
        KeyedHandleKind::HeapChain => "heap-chain",
    }
}

/// The meta block that describes a keyed handle's states: its (first) canonical file's, its
/// native snapshot's, or its chain's last file's.
fn handle_meta(
    storage: &FsCheckpointStorage,
    handle: &KeyedStateHandle,
) -> ToolResult<SnapshotMeta> {
    Ok(match handle.kind() {
        KeyedHandleKind::LsmNative => native_record(storage, handle)?.meta,
        KeyedHandleKind::HeapChain => {
            let last = handle
                .shared_files()
                .last()
                .ok_or_else(|| ToolError::Damage("a heap chain handle lists no file".into()))?;
            open_snapshot(storage, last)?.meta().clone()
        }
        KeyedHandleKind::KeyGroupFiles => {
            open_snapshot(storage, &handle.files()[0])?.meta().clone()
        }
    })
}

fn file_json(file: &StateFile) -> String {
    Obj::new()
        .str("path", file.path())
        .raw("size", file.size())
        .end()
}

fn codec_json(c: &flowstate_formats::CodecRecord) -> String {
    json_literal(&format!("{}@{}", c.name, c.version))
}

/// `inspect --json`: one document with the snapshot, its tasks, their handles (kind, key
/// groups, files and sizes, states) and operator states, and the root's shared files.
fn inspect_json(storage: &FsCheckpointStorage, done: &CompletedCheckpoint) -> ToolResult<String> {
    let completed: Vec<String> = storage
        .completed()?
        .iter()
        .map(|id| id.0.to_string())
        .collect();
    let mut tasks = Vec::new();
    for task in done.tasks() {
        let mut keyed = Vec::new();
        for handle in &task.keyed {
            let meta = handle_meta(storage, handle)?;
            let states = meta.states.iter().map(|s| {
                Obj::new()
                    .str("name", &s.name)
                    .str("kind", &format!("{:?}", s.kind))
                    .raw("namespace", codec_json(&s.namespace))
                    .raw("value", codec_json(&s.value))
                    .raw(
                        "user_key",
                        s.user_key
                            .as_ref()
                            .map_or_else(|| "null".to_owned(), codec_json),
                    )
                    .raw(
                        "ttl_millis",
                        s.ttl_millis
                            .map_or_else(|| "null".to_owned(), |t| t.to_string()),
                    )
                    .end()
            });
            let range = handle.key_group_range();
            keyed.push(
                Obj::new()
                    .str("kind", handle_kind_name(handle.kind()))
                    .raw("key_groups", format!("[{},{}]", range.start(), range.end()))
                    .raw("max_parallelism", meta.max_parallelism)
                    .raw("key_codec", codec_json(&meta.key_codec))
                    .raw("files", json::array(handle.files().iter().map(file_json)))
                    .raw(
                        "shared_files",
                        json::array(handle.shared_files().iter().map(file_json)),
                    )
                    .raw(
                        "bytes",
                        handle
                            .files()
                            .iter()
                            .chain(handle.shared_files())
                            .map(StateFile::size)
                            .sum::<u64>(),
                    )
                    .raw("states", json::array(states))
                    .end(),
            );
        }
        let mut operator = Vec::new();
        for handle in &task.operator {
            let snapshot = read_operator_state(storage, handle)?;
            let states = snapshot.states.iter().map(|(meta, data)| {
                let n = match data {
                    flowstate::operator::OperatorStateData::List(l) => l.len(),
                    flowstate::operator::OperatorStateData::Map(m) => m.len(),
                };
                Obj::new()
                    .str("name", &meta.name)
                    .str("mode", meta.mode.name())
                    .str("value", &meta.value.to_string())
                    .opt_str("key", meta.key.as_ref().map(|k| k.to_string()).as_deref())
                    .raw("elements", n)
                    .end()
            });
            operator.push(
                Obj::new()
                    .raw("file", file_json(handle.file()))
                    .raw("states", json::array(states))
                    .end(),
            );
        }
        tasks.push(
            Obj::new()
                .str("operator", &task.operator_id)
                .raw("subtask", task.subtask_index)
                .raw("parallelism", task.parallelism)
                .raw("max_parallelism", task.max_parallelism)
                .raw("keyed", json::array(keyed))
                .raw("operator_state", json::array(operator))
                .end(),
        );
    }
    let shared = shared_references(storage)?
        .into_iter()
        .map(|(path, (size, ids))| {
            Obj::new()
                .str("path", &path)
                .raw("size", size)
                .raw("checkpoints", json::array(ids.iter().map(u64::to_string)))
                .end()
        });
    Ok(Obj::new()
        .raw("completed", json::array(completed))
        .raw("id", done.id().0)
        .str(
            "kind",
            match done.kind() {
                SnapshotKind::Checkpoint => "checkpoint",
                SnapshotKind::Savepoint => "savepoint",
            },
        )
        .raw("timestamp_millis", done.timestamp_millis())
        .str("metadata", &done.metadata_path())
        .raw("tasks", json::array(tasks))
        .raw("shared_files", json::array(shared))
        .end())
}
