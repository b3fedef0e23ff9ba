//! The `checkpoint_dir` property: checkpoint storage over a directory whose files and names
//! come from the input.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use crate::checkpoint::{
    CheckpointId, CheckpointStorage, FsCheckpointOptions, FsCheckpointStorage, SnapshotTarget,
    SubtaskState,
};
use crate::storage::{is_temp_name, MemStorage, Storage, ROOT};
use crate::{Backend, BackendConfig, KeyGroupRange, KeyedStateBackend, ValueStateDescriptor};

/// The key groups of the checkpointed job.
const MAXP: u32 = 8;
/// The keys of the checkpointed job, and the checkpoints of the baseline directory.
const KEYS: u32 = 6;
const CHECKPOINTS: u64 = 2;
/// The largest file the property reads whole.
const MAX_READ: u64 = 1 << 20;

/// The value of key `k` in checkpoint `id` of the baseline.
fn value_at(id: u64, k: u32) -> u64 {
    u64::from(k) * 10 + id
}

/// Names the edits compose paths of: the storage's own names, savepoint-like names and path
/// tricks. An edit names a path as up to three of these joined by `/` (or raw bytes).
const NAMES: [&str; 16] = [
    "chk-1",
    "chk-2",
    "chk-3",
    "chk-01",
    "shared",
    "taskowned",
    "sp-a",
    "_metadata",
    "..",
    ".",
    "task-0",
    "x.flowstate-tmp",
    "chk-2.flowstate-tmp",
    "_metadata.flowstate-tmp",
    "chk-18446744073709551615",
    "savepoint",
];

/// A file tree: every path with its content, or `None` for a directory.
type Tree = BTreeMap<String, Option<Vec<u8>>>;

/// Every file and directory below `dir` of `storage`.
fn walk(storage: &dyn Storage, dir: &str, out: &mut Tree) {
    let Ok(names) = storage.list_dir(dir) else {
        return;
    };
    for name in names {
        let path = if dir == ROOT {
            name
        } else {
            format!("{dir}/{name}")
        };
        if storage.list_dir(&path).is_ok() {
            out.insert(path.clone(), None);
            walk(storage, &path, out);
        } else {
            let bytes = storage
                .read_all(&path, MAX_READ)
                .expect("a file the property wrote reads");
            out.insert(path, Some(bytes));
        }
    }
}

/// The baseline directory, built once: checkpoints 1 and 2 of a heap backend holding
/// [`value_at`], and a savepoint in `sp-a/`, as [`FsCheckpointStorage`] writes them.
fn baseline() -> &'static Tree {
    static BASELINE: OnceLock<Tree> = OnceLock::new();
    BASELINE.get_or_init(|| {
        let mem = MemStorage::new();
        let storage: Arc<dyn CheckpointStorage> = Arc::new(
            FsCheckpointStorage::open(
                Arc::new(mem.clone()),
                FsCheckpointOptions::default().with_retained(2),
            )
            .expect("checkpoint storage opens on an empty MemStorage"),
        );
        let mut backend = Backend::<u64>::open(BackendConfig::heap().max_parallelism(MAXP))
            .expect("a valid configuration");
        let state = backend
            .register(ValueStateDescriptor::<u64>::new("value"))
            .expect("a fresh state registers");
        for id in 1..=CHECKPOINTS + 1 {
            for k in 0..KEYS {
                backend.set_current_key(&u64::from(k));
                backend
                    .value(&state)
                    .update(value_at(id, k))
                    .expect("the backend owns every key");
            }
            let target = if id <= CHECKPOINTS {
                SnapshotTarget::checkpoint(CheckpointId(id))
            } else {
                SnapshotTarget::savepoint(CheckpointId(id), "sp-a")
            };
            let written = backend
                .snapshot(target.clone(), &storage, "task-0")
                .and_then(|pending| pending.run())
                .expect("a snapshot in memory succeeds");
            let task = SubtaskState::new("op", 0, 1, MAXP).with_keyed(written.handle);
            storage
                .complete(&target, vec![task])
                .expect("the snapshot completes");
        }
        let mut tree = Tree::new();
        walk(&mem, ROOT, &mut tree);
        tree
    })
}

/// A fresh `MemStorage` holding `tree`, everything durable.
fn materialize(tree: &Tree) -> MemStorage {
    let mem = MemStorage::new();
    for (path, content) in tree {
        match content {
            None => mem
                .create_dir_all(path)
                .expect("a baseline directory is created"),
            Some(bytes) => {
                let mut file = mem.create(path).expect("a baseline file is created");
                file.write_all(bytes).expect("writes in memory succeed");
            }
        }
    }
    mem
}

/// Reads the input as a sequence of edits.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.0.len());
        let (taken, rest) = self.0.split_at(n);
        self.0 = rest;
        taken.to_vec()
    }

    /// A path: 1 to 3 components, each one of [`NAMES`] or (for a byte from `0xF0` on) up
    /// to 15 raw bytes read as UTF-8 (lossily).
    fn path(&mut self) -> Option<String> {
        let n = 1 + self.byte()? % 3;
        let mut parts = Vec::new();
        for _ in 0..n {
            let c = self.byte()?;
            if c >= 0xF0 {
                let raw = self.bytes(usize::from(c & 0x0F));
                parts.push(String::from_utf8_lossy(&raw).into_owned());
            } else {
                parts.push(NAMES[usize::from(c) % NAMES.len()].to_owned());
            }
        }
        Some(parts.join("/"))
    }

    /// One of the files of `tree`, by an index modulo their count.
    fn file(&mut self, tree: &Tree) -> Option<String> {
        let files: Vec<&String> = tree
            .iter()
            .filter(|(_, c)| c.is_some())
            .map(|(p, _)| p)
            .collect();
        let i = usize::from(self.byte()?) % files.len().max(1);
        files.get(i).map(|p| (*p).clone())
    }

    /// One of the files or directories of `tree`.
    fn entry(&mut self, tree: &Tree) -> Option<String> {
        let i = usize::from(self.byte()?) % tree.len().max(1);
        tree.keys().nth(i).cloned()
    }
}

/// Writes `bytes` at `path`, creating its parent; a path the storage refuses changes nothing.
fn put(mem: &MemStorage, path: &str, bytes: &[u8]) {
    if let Some((dir, _)) = path.rsplit_once('/') {
        if mem.create_dir_all(dir).is_err() {
            return;
        }
    }
    if let Ok(mut file) = mem.create(path) {
        file.write_all(bytes).expect("writes in memory succeed");
    }
}

/// Applies the edits of `input` to `mem`, which holds the baseline.
fn edit(mem: &MemStorage, input: &mut Input<'_>) {
    while let Some(op) = input.byte() {
        let mut tree = Tree::new();
        walk(mem, ROOT, &mut tree);
        let read = |path: &str| mem.read_all(path, MAX_READ).unwrap_or_default();
        match op % 8 {
            0 => {
                let Some(path) = input.path() else { return };
                let len = input.byte().unwrap_or(0);
                let bytes = input.bytes(usize::from(len));
                put(mem, &path, &bytes);
            }
            1 | 2 => {
                // Flip bits at an offset (1), or truncate (2); bit 7 of the offset's first
                // byte recomputes a CRC-32 trailer after it, so that damage behind a `_metadata`
                // checksum reaches the decoder.
                let Some(path) = input.file(&tree) else {
                    return;
                };
                let (Some(hi), Some(lo), Some(mask)) = (input.byte(), input.byte(), input.byte())
                else {
                    return;
                };
                let mut bytes = read(&path);
                let at = usize::from(u16::from_le_bytes([lo, hi & 0x7F]));
                if op % 8 == 1 {
                    let at = at % bytes.len().max(1);
                    if let Some(b) = bytes.get_mut(at) {
                        *b ^= mask.max(1);
                    }
                } else {
                    bytes.truncate(at % (bytes.len() + 1));
                }
                if hi & 0x80 != 0 {
                    flowstate_formats::fuzzing::repair_checkpoint_checksum(&mut bytes);
                }
                put(mem, &path, &bytes);
            }
            3 => {
                // Copy one file over another path: a stale or substituted file.
                let (Some(from), Some(to)) = (input.file(&tree), input.path()) else {
                    return;
                };
                put(mem, &to, &read(&from));
            }
            4 => {
                let Some(path) = input.entry(&tree) else {
                    return;
                };
                let _ = match tree.get(&path) {
                    Some(None) => mem.remove_dir_all(&path),
                    _ => mem.remove_file(&path),
                };
            }
            5 => {
                let Some(path) = input.path() else { return };
                let _ = mem.create_dir_all(&path);
            }
            6 => {
                let (Some(from), Some(to)) = (input.entry(&tree), input.path()) else {
                    return;
                };
                let _ = mem.rename(&from, &to);
            }
            _ => {
                let Some(path) = input.file(&tree) else {
                    return;
                };
                let len = input.byte().unwrap_or(0);
                let mut bytes = read(&path);
                bytes.extend(input.bytes(usize::from(len)));
                put(mem, &path, &bytes);
            }
        }
    }
}

/// Whether `path` (a path of the tree) is something the checkpoint storage owns and may
/// delete: a checkpoint directory `chk-<id>` (canonical name) and what is in it, `shared/`
/// and `taskowned/` and what is in them, and temporary files at the root.
fn owned(path: &str, tree: &Tree) -> bool {
    let first = path.split('/').next().unwrap_or(path);
    CheckpointId::from_dir_name(first).is_some()
        || first == crate::checkpoint::SHARED_DIR
        || first == crate::checkpoint::TASK_OWNED_DIR
        || (first == path && is_temp_name(path) && matches!(tree.get(path), Some(Some(_))))
}

/// Restores checkpoint or savepoint `done` into one heap task and returns the values of the
/// keys, or the error.
fn restore_values(
    storage: &dyn CheckpointStorage,
    done: &crate::CompletedCheckpoint,
) -> crate::Result<Vec<Option<u64>>> {
    let range = KeyGroupRange::new(0, MAXP as u16 - 1)?;
    let config = BackendConfig::heap()
        .max_parallelism(MAXP)
        .key_group_range(range);
    let mut backend = Backend::<u64>::restore_from(config, storage, &done.handles_for(range))?;
    let state = backend.register(ValueStateDescriptor::<u64>::new("value"))?;
    (0..KEYS)
        .map(|k| {
            backend.set_current_key(&u64::from(k));
            backend.value(&state).get()
        })
        .collect()
}

/// The property of the `checkpoint_dir` fuzz target: [`FsCheckpointStorage`] over a
/// [`MemStorage`] directory that starts as two checkpoints and a savepoint written by a heap
/// backend and is then edited as the input says (files written at paths composed of the
/// storage's names and path tricks such as `..`, `.`, temporary names and non-canonical
/// checkpoint names; bit flips and truncations, with the `_metadata` CRC optionally repaired;
/// files copied over others; entries removed, renamed and created). Then:
///
/// - opening the storage (retaining 1 to 4 checkpoints, from the first byte), listing the
///   checkpoints, loading each, loading the savepoint directories, restoring each into a heap
///   backend, collecting garbage and completing a new checkpoint give values or errors, never
///   a panic (and, under the fuzzer, never a hang or an allocation beyond its limit);
/// - a checkpoint or savepoint whose files the edits left untouched and that is still listed
///   restores exactly the values it was taken with;
/// - nothing outside what the storage owns (checkpoint directories, `shared/`, `taskowned/`,
///   temporary files at the root) is deleted or changed.
pub fn check_checkpoint_dir(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let base = baseline();
    let mem = materialize(base);
    edit(&mem, &mut Input(rest));
    let mut before = Tree::new();
    walk(&mem, ROOT, &mut before);
    let untouched = |dir: &str| {
        let prefix = format!("{dir}/");
        let pick = |t: &Tree| -> Tree {
            t.iter()
                .filter(|(p, _)| p.as_str() == dir || p.starts_with(&prefix))
                .map(|(p, c)| (p.clone(), c.clone()))
                .collect()
        };
        pick(base) == pick(&before)
    };

    let options = FsCheckpointOptions::default().with_retained(1 + usize::from(mode % 4));
    if let Ok(storage) = FsCheckpointStorage::open(Arc::new(mem.clone()), options) {
        let completed = storage.completed().unwrap_or_default();
        let _ = storage.latest_completed();
        for &id in &completed {
            let Ok(done) = storage.load_checkpoint(id) else {
                continue;
            };
            let restored = restore_values(&storage, &done);
            if id.0 <= CHECKPOINTS && untouched(&id.dir_name()) {
                let want: Vec<Option<u64>> = (0..KEYS).map(|k| Some(value_at(id.0, k))).collect();
                assert_eq!(
                    restored.ok(),
                    Some(want),
                    "untouched checkpoint {id} restores"
                );
            }
        }
        for dir in before
            .iter()
            .filter(|(p, c)| !p.contains('/') && c.is_none())
        {
            let Ok(done) = storage.load_savepoint(dir.0) else {
                continue;
            };
            let restored = restore_values(&storage, &done);
            if dir.0 == "sp-a" && untouched("sp-a") {
                let want: Vec<Option<u64>> = (0..KEYS)
                    .map(|k| Some(value_at(CHECKPOINTS + 1, k)))
                    .collect();
                assert_eq!(
                    restored.ok(),
                    Some(want),
                    "the untouched savepoint restores"
                );
            }
        }
        let _ = storage.collect_garbage();
        let target = SnapshotTarget::checkpoint(CheckpointId(
            completed.last().map_or(1, |c| c.0.saturating_add(1)),
        ));
        let new = storage
            .write_keyed_state_bytes(
                &target,
                "task-0",
                KeyGroupRange::new(0, MAXP as u16 - 1).expect("a valid range"),
                b"not read",
            )
            .and_then(|handle| {
                storage.complete(
                    &target,
                    vec![SubtaskState::new("op", 0, 1, MAXP).with_keyed(handle)],
                )
            });
        drop(new);
    }

    let mut after = Tree::new();
    walk(&mem, ROOT, &mut after);
    for (path, content) in before.iter().filter(|(p, _)| !owned(p, &before)) {
        assert_eq!(
            after.get(path),
            Some(content),
            "{path}, which the checkpoint storage does not own, is unchanged"
        );
    }
}
