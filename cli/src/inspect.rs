//! `flowstate inspect`: what a checkpoint or savepoint holds, read-only.

use std::collections::BTreeMap;

use flowstate::checkpoint::read_operator_state;
use flowstate::*;
use flowstate_formats::checkpoint::native_snapshot::MAX_NATIVE_SNAPSHOT_LEN;
use flowstate_formats::checkpoint::{KeyedHandleKind, NativeSnapshotRecord};
use flowstate_formats::snapshot::SnapshotReader;

use crate::which::{load, ToolResult, Which};

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
        return Err(format!("{}: {} bytes, over the limit", file.path(), file.size()).into());
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
    // Which checkpoints reference each shared file.
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
