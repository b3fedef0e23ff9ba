//! The offline tools: inspect, verify and dump checkpoints and savepoints, read-only.

use std::path::PathBuf;

use std::collections::BTreeMap;

use flowstate::checkpoint::read_operator_state;
use flowstate::*;
use flowstate_formats::checkpoint::native_snapshot::MAX_NATIVE_SNAPSHOT_LEN;
use flowstate_formats::checkpoint::{KeyedHandleKind, NativeSnapshotRecord};
use flowstate_formats::snapshot::SnapshotReader;

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

/// Verifies a native snapshot: opening it checks every table (present, size, the CRC-32C of
/// its whole content against the handle and the snapshot's record), then every key group is
/// read (every block's CRC) and each entry checked to be in its key group. Returns the number
/// of entries and files.
fn verify_native(
    storage: &FsCheckpointStorage,
    handle: &KeyedStateHandle,
) -> ToolResult<(u64, u64)> {
    let source = NativeRestoreSource::open(storage, handle)?;
    let max_parallelism = source.max_parallelism();
    let mut entries = 0u64;
    let mut misplaced = 0u64;
    for kg in source.key_group_range().iter() {
        source.read_key_group(kg, &mut |_, e| {
            entries += 1;
            if key_group_for(&e.key, max_parallelism) != kg {
                misplaced += 1;
            }
        })?;
    }
    if misplaced > 0 {
        return Err(format!(
            "{}: {misplaced} entries are filed under a key group their key does not hash to",
            handle.files()[0].path()
        )
        .into());
    }
    Ok((
        entries,
        (handle.files().len() + handle.shared_files().len()) as u64,
    ))
}

/// Options of `flowstate verify`.
#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    #[command(flatten)]
    which: Which,
    /// Print the verdicts and every problem as one JSON document on standard output.
    #[arg(long)]
    json: bool,
}

/// What verifying one snapshot found.
struct Verdict {
    what: String,
    files: u64,
    entries: u64,
    problems: Vec<String>,
}

/// Verifies every file of `done`, collecting every problem (a file and what failed in it)
/// rather than stopping at the first.
fn verify_snapshot(storage: &FsCheckpointStorage, done: &CompletedCheckpoint) -> Verdict {
    let mut v = Verdict {
        what: format!("{:?} {}", done.kind(), done.id().0),
        files: 0,
        entries: 0,
        problems: Vec::new(),
    };
    for task in done.tasks() {
        for handle in &task.keyed {
            if handle.kind() == KeyedHandleKind::LsmNative {
                match verify_native(storage, handle) {
                    Ok((n, f)) => {
                        v.entries += n;
                        v.files += f;
                    }
                    Err(e) => v.problems.push(e.to_string()),
                }
                continue;
            }
            for file in handle.files() {
                match verify_canonical(storage, file) {
                    Ok(n) => {
                        v.entries += n;
                        v.files += 1;
                    }
                    Err(e) => v.problems.push(e.to_string()),
                }
            }
        }
        for handle in &task.operator {
            match read_operator_state(storage, handle) {
                Ok(_) => v.files += 1,
                Err(e) => v.problems.push(e.to_string()),
            }
        }
    }
    v
}

/// Reads every key group of a canonical snapshot file; returns its number of entries.
fn verify_canonical(storage: &FsCheckpointStorage, file: &StateFile) -> ToolResult<u64> {
    let reader = open_snapshot(storage, file)?;
    let max_parallelism = reader.meta().max_parallelism;
    let mut misplaced = 0u64;
    let mut entries = 0u64;
    for kg in reader.key_group_range() {
        entries += reader.read_key_group::<flowstate_formats::FormatError>(kg, |e| {
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
    Ok(entries)
}

/// A JSON string literal of `s`.
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `flowstate verify`: reads every byte of every file of the checkpoint or savepoint it is
/// given, or of every retained checkpoint, and reports every problem it finds (never only the
/// first), then a verdict per snapshot; fails unless nothing is damaged.
pub fn verify(args: &VerifyArgs) -> ToolResult<()> {
    let which = &args.which;
    let mut verdicts = Vec::new();
    if which.savepoint.is_some() || which.checkpoint.is_some() {
        let (storage, done) = load(which)?;
        verdicts.push(verify_snapshot(&storage, &done));
    } else {
        // Checks the directory (and names what to give) as for one checkpoint.
        let (storage, _) = load(which)?;
        for id in storage.completed()? {
            match storage.load_checkpoint(id) {
                Ok(done) => verdicts.push(verify_snapshot(&storage, &done)),
                Err(e) => verdicts.push(Verdict {
                    what: format!("Checkpoint {}", id.0),
                    files: 0,
                    entries: 0,
                    problems: vec![e.to_string()],
                }),
            }
        }
    }
    let damaged = verdicts.iter().filter(|v| !v.problems.is_empty()).count();
    if args.json {
        let items: Vec<String> = verdicts
            .iter()
            .map(|v| {
                let problems: Vec<String> = v.problems.iter().map(|p| json_string(p)).collect();
                format!(
                    "{{\"snapshot\":{},\"ok\":{},\"files\":{},\"keyed_entries\":{},\"problems\":[{}]}}",
                    json_string(&v.what),
                    v.problems.is_empty(),
                    v.files,
                    v.entries,
                    problems.join(",")
                )
            })
            .collect();
        println!(
            "{{\"ok\":{},\"snapshots\":[{}]}}",
            damaged == 0,
            items.join(",")
        );
    } else {
        for v in &verdicts {
            for p in &v.problems {
                eprintln!("DAMAGED {}: {p}", v.what);
            }
            if v.problems.is_empty() {
                println!(
                    "OK: {}: {} file(s), {} keyed entries, every checksum and structure verified",
                    v.what, v.files, v.entries
                );
            } else {
                println!("DAMAGED: {}: {} problem(s)", v.what, v.problems.len());
            }
        }
    }
    if damaged > 0 {
        return Err(format!("{damaged} of {} snapshot(s) damaged", verdicts.len()).into());
    }
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

/// `flowstate dump`: the entries of a checkpoint's keyed state, whatever the kind of its
/// handles (canonical files or native LSM snapshots), and its operator state, as hex; an
/// unknown `--state` is an error listing the states.
pub fn dump(args: &DumpArgs) -> ToolResult<()> {
    let (storage, done) = load(&args.which)?;
    // An unknown --state is an error that lists the states there are.
    if let Some(wanted) = &args.state {
        let mut names = std::collections::BTreeSet::new();
        for task in done.tasks() {
            for source in open_restore_sources(&storage, &task.keyed)? {
                names.extend(source.state_metas().into_iter().map(|m| m.name));
            }
            for handle in &task.operator {
                let snapshot = read_operator_state(&storage, handle)?;
                names.extend(snapshot.states.iter().map(|(m, _)| m.name.clone()));
            }
        }
        if !names.contains(wanted) {
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            return Err(format!(
                "no state {wanted:?} in {:?} {}; its states: {}",
                done.kind(),
                done.id().0,
                names.join(", ")
            )
            .into());
        }
    }
    let mut printed = 0u64;
    for task in done.tasks() {
        // Operator state: each state's elements (a list) or entries (a map), as hex.
        for handle in &task.operator {
            let snapshot = read_operator_state(&storage, handle)?;
            for (meta, data) in &snapshot.states {
                if args.state.as_deref().is_some_and(|s| s != meta.name) {
                    continue;
                }
                let value = match data {
                    flowstate::operator::OperatorStateData::List(items) => {
                        let items: Vec<String> = items.iter().map(|i| hex(i)).collect();
                        format!("[{}]", items.join(", "))
                    }
                    flowstate::operator::OperatorStateData::Map(pairs) => {
                        let pairs: Vec<String> = pairs
                            .iter()
                            .map(|(k, v)| format!("{}: {}", hex(k), hex(v)))
                            .collect();
                        format!("{{{}}}", pairs.join(", "))
                    }
                };
                if printed == args.limit {
                    return Ok(());
                }
                println!(
                    "operator {}[{}] {} = {value}",
                    task.operator_id, task.subtask_index, meta.name
                );
                printed += 1;
            }
        }
        for source in open_restore_sources(&storage, &task.keyed)? {
            let names: Vec<String> = source.state_metas().into_iter().map(|m| m.name).collect();
            for kg in source.key_group_range().iter() {
                let mut lines = Vec::new();
                source.read_key_group(kg, &mut |state, e| {
                    let name = names.get(state).map_or("?", String::as_str);
                    if args.state.as_deref().is_some_and(|s| s != name) {
                        return;
                    }
                    let value = match &e.state {
                        EncodedState::Value(v) => hex(v),
                        EncodedState::List(items) => {
                            let items: Vec<String> = items.iter().map(|i| hex(i)).collect();
                            format!("[{}]", items.join(", "))
                        }
                        EncodedState::Map(pairs) => {
                            let pairs: Vec<String> = pairs
                                .iter()
                                .map(|(k, v)| format!("{}: {}", hex(k), hex(v)))
                                .collect();
                            format!("{{{}}}", pairs.join(", "))
                        }
                    };
                    lines.push(format!(
                        "kg {kg:>5} {name} key {} ns {} = {value}",
                        hex(&e.key),
                        hex(&e.namespace)
                    ));
                })?;
                for line in lines {
                    if printed == args.limit {
                        return Ok(());
                    }
                    println!("{line}");
                    printed += 1;
                }
            }
        }
    }
    Ok(())
}
