//! One behaviour suite run against every checkpoint storage: `FsCheckpointStorage` on the
//! local file system, on `MemStorage` and (feature `object-store`) on object stores: an
//! in-memory one and, where `FLOWSTATE_S3_URL` names one, a real S3-compatible server; and
//! `MemoryCheckpointStorage`. The crash sweeps run on the two `MemStorage`-backed ones. spec/checkpoint-protocol.md states the invariants
//! these tests check (V1..V4 visibility, D1..D4 deletion).

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use flowstate::checkpoint::{
    CheckpointId, CheckpointStorage, CompletedCheckpoint, FsCheckpointOptions, FsCheckpointStorage,
    MemoryCheckpointStorage, SnapshotKind, SnapshotTarget, StateFile, SubtaskState,
    DEFAULT_MAX_STATE_SIZE,
};
use flowstate::storage::{is_temp_name, CrashMode, LocalStorage, MemStorage, Storage, ROOT};
use flowstate::{Error, ErrorKind, KeyGroupRange, ManualClock, Result};
use flowstate_formats::checkpoint::CheckpointMetadataRecord;

const MAX_PARALLELISM: u32 = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Impl {
    Fs,
    Memory,
}

/// A checkpoint storage implementation over one backing store, reopened at will.
struct Fixture {
    imp: Impl,
    mem: Option<MemStorage>,
    local: Option<tempfile::TempDir>,
    /// An object store (S3, or in memory) under a prefix of this fixture's own.
    object: Option<Arc<dyn Storage>>,
    clock: ManualClock,
    limit: u64,
}

impl Fixture {
    fn fs_local() -> Self {
        Fixture {
            imp: Impl::Fs,
            mem: None,
            local: Some(tempfile::tempdir().expect("a temporary directory")),
            object: None,
            clock: ManualClock::new(1_000),
            limit: DEFAULT_MAX_STATE_SIZE,
        }
    }

    fn fs_mem() -> Self {
        Fixture {
            imp: Impl::Fs,
            mem: Some(MemStorage::new()),
            local: None,
            object: None,
            clock: ManualClock::new(1_000),
            limit: DEFAULT_MAX_STATE_SIZE,
        }
    }

    fn memory() -> Self {
        Fixture {
            imp: Impl::Memory,
            ..Fixture::fs_mem()
        }
    }

    /// The same implementation on a fresh `MemStorage` seeded with `seed`.
    fn on_mem(&self, seed: u64) -> Self {
        Fixture {
            imp: self.imp,
            mem: Some(MemStorage::with_seed(seed)),
            local: None,
            object: None,
            clock: ManualClock::new(1_000),
            limit: self.limit,
        }
    }

    /// `FsCheckpointStorage` on an object store: the store `url` names, under a prefix no
    /// other fixture uses.
    #[cfg(feature = "object-store")]
    fn object(url: &str) -> Self {
        let storage = flowstate::storage::ObjectStorage::from_url(
            &common::object::unique(url),
            Default::default(),
        )
        .expect("the object store opens");
        Fixture {
            imp: Impl::Fs,
            mem: None,
            local: None,
            object: Some(Arc::new(storage)),
            clock: ManualClock::new(1_000),
            limit: DEFAULT_MAX_STATE_SIZE,
        }
    }

    fn mem(&self) -> &MemStorage {
        self.mem.as_ref().expect("a MemStorage-backed fixture")
    }

    /// The raw storage under the checkpoint storage, for inspection and damage.
    fn raw(&self) -> Arc<dyn Storage> {
        match (&self.mem, &self.local, &self.object) {
            (Some(mem), _, _) => Arc::new(mem.clone()),
            (None, Some(dir), _) => Arc::new(LocalStorage::new(dir.path()).expect("the root")),
            (None, None, Some(object)) => Arc::clone(object),
            (None, None, None) => unreachable!("a fixture has a backing store"),
        }
    }

    fn try_open(&self, retained: usize) -> Result<Box<dyn CheckpointStorage>> {
        let options = FsCheckpointOptions::default()
            .with_retained(retained)
            .with_clock(Arc::new(self.clock.clone()));
        Ok(match self.imp {
            Impl::Fs => Box::new(FsCheckpointStorage::open(self.raw(), options)?),
            Impl::Memory => Box::new(MemoryCheckpointStorage::open(
                self.mem().clone(),
                self.limit,
                options,
            )?),
        })
    }

    fn open(&self, retained: usize) -> Box<dyn CheckpointStorage> {
        self.try_open(retained).expect("checkpoint storage opens")
    }
}

/// The deterministic content of a state file.
fn content(id: u64, what: &str, index: u32) -> Vec<u8> {
    (0..1500u64)
        .map(|j| (id * 31 + u64::from(index) * 7 + j + what.len() as u64) as u8)
        .collect()
}

/// Takes checkpoint `id` of a job with a keyed operator and a source, both at `parallelism`.
fn take_checkpoint(
    storage: &dyn CheckpointStorage,
    id: u64,
    parallelism: u32,
) -> Result<CompletedCheckpoint> {
    let target = SnapshotTarget::checkpoint(CheckpointId(id));
    let tasks = write_tasks(storage, &target, id, parallelism)?;
    storage.complete(&target, tasks)
}

fn write_tasks(
    storage: &dyn CheckpointStorage,
    target: &SnapshotTarget,
    id: u64,
    parallelism: u32,
) -> Result<Vec<SubtaskState>> {
    let mut tasks = Vec::new();
    for i in 0..parallelism {
        let range = KeyGroupRange::for_operator(MAX_PARALLELISM, parallelism, i)?;
        let keyed = storage.write_keyed_state_bytes(
            target,
            &format!("keyed-{i}"),
            range,
            &content(id, "keyed", i),
        )?;
        let source = storage.write_operator_state_bytes(
            target,
            &format!("source-{i}"),
            &content(id, "source", i),
        )?;
        tasks.push(SubtaskState::new("keyed", i, parallelism, MAX_PARALLELISM).with_keyed(keyed));
        tasks.push(
            SubtaskState::new("source", i, parallelism, MAX_PARALLELISM).with_operator(source),
        );
    }
    Ok(tasks)
}

fn read(storage: &dyn CheckpointStorage, file: &StateFile) -> Vec<u8> {
    let readable = storage
        .open_state_file(file)
        .unwrap_or_else(|e| panic!("{} opens: {e}", file.path()));
    let mut bytes = vec![0; readable.len() as usize];
    readable
        .read_at(0, &mut bytes)
        .expect("the whole file reads");
    bytes
}

/// Checks that `checkpoint` lists the state `take_checkpoint(id, parallelism)` wrote and that
/// every file reads back with its size and content.
fn assert_intact(
    storage: &dyn CheckpointStorage,
    checkpoint: &CompletedCheckpoint,
    parallelism: u32,
) {
    let id = checkpoint.id().0;
    assert_eq!(
        checkpoint.tasks().len(),
        2 * parallelism as usize,
        "checkpoint {id}"
    );
    for i in 0..parallelism {
        let keyed = &checkpoint.task("keyed", i).expect("the keyed task").keyed;
        assert_eq!(keyed.len(), 1);
        assert_eq!(
            keyed[0].key_group_range(),
            KeyGroupRange::for_operator(MAX_PARALLELISM, parallelism, i).unwrap()
        );
        assert_eq!(
            read(storage, &keyed[0].files()[0]),
            content(id, "keyed", i),
            "checkpoint {id}"
        );
        let source = checkpoint.operator_handles("source", i);
        assert_eq!(source.len(), 1);
        assert_eq!(
            read(storage, source[0].file()),
            content(id, "source", i),
            "checkpoint {id}"
        );
    }
}

/// The newest `retained` of the ids `1..=last`, ascending.
fn newest(last: u64, retained: usize) -> Vec<u64> {
    (last.saturating_sub(retained as u64) + 1..=last).collect()
}

/// The names at the root that are not the reserved directories.
fn root_entries(raw: &dyn Storage) -> Vec<String> {
    raw.list_dir(ROOT)
        .unwrap()
        .into_iter()
        .filter(|n| n != "shared" && n != "taskowned")
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The suite
// ---------------------------------------------------------------------------------------------

fn complete_then_latest_survives_reopen(f: Fixture) {
    let storage = f.open(1);
    assert!(storage.latest_completed().unwrap().is_none());
    assert!(storage.completed().unwrap().is_empty());
    f.clock.set(1_700_000_000_000);
    let done = take_checkpoint(&*storage, 1, 3).unwrap();
    assert_eq!(done.id(), CheckpointId(1));
    assert_eq!(done.kind(), SnapshotKind::Checkpoint);
    assert_eq!(done.location(), "chk-1");
    assert_eq!(done.timestamp_millis(), 1_700_000_000_000);
    assert_intact(&*storage, &done, 3);

    let latest = storage.latest_completed().unwrap().expect("checkpoint 1");
    assert_eq!(latest, done);
    assert_eq!(storage.completed().unwrap(), vec![CheckpointId(1)]);
    drop(storage);

    let reopened = f.open(1);
    assert_eq!(reopened.latest_completed().unwrap(), Some(done.clone()));
    assert_eq!(reopened.load_checkpoint(CheckpointId(1)).unwrap(), done);
    let raw = f.raw();
    let mut dirs = raw.list_dir(ROOT).unwrap();
    dirs.sort();
    if f.object.is_some() {
        // An object store has no empty directories: the reserved ones exist while used.
        assert_eq!(dirs, vec!["chk-1"]);
    } else {
        assert_eq!(dirs, vec!["chk-1", "shared", "taskowned"]);
    }
    assert!(
        raw.list_dir("shared").unwrap().is_empty(),
        "shared/ is reserved"
    );
}

fn retention_keeps_the_last_n_and_deletes_older_files(f: Fixture) {
    for retained in [1, 2, 3] {
        let f = if f.mem.is_some() {
            f.on_mem(0)
        } else {
            Fixture {
                imp: f.imp,
                ..Fixture::fs_local()
            }
        };
        let storage = f.open(retained);
        let raw = f.raw();
        let mut all = Vec::new();
        for id in 1..=5 {
            all.push(take_checkpoint(&*storage, id, 2).unwrap());
            let kept = newest(id, retained);
            let ids: Vec<u64> = storage.completed().unwrap().iter().map(|c| c.0).collect();
            assert_eq!(ids, kept, "retained {retained}, after {id}");
            let dirs: Vec<String> = kept.iter().map(|i| format!("chk-{i}")).collect();
            assert_eq!(
                root_entries(&*raw),
                dirs,
                "retained {retained}: older directories are deleted"
            );
            for &i in &kept {
                assert_intact(&*storage, &all[i as usize - 1], 2);
            }
        }
        // The subsumed checkpoints' files are gone; opening them fails.
        let first = &all[0];
        for file in first.files() {
            assert!(!raw.exists(file.path()).unwrap(), "{}", file.path());
            assert!(storage.open_state_file(file).is_err());
        }
        // Reopening with a smaller retention applies it.
        drop(storage);
        let storage = f.open(1);
        assert_eq!(storage.completed().unwrap(), vec![CheckpointId(5)]);
        assert_eq!(root_entries(&*raw), vec!["chk-5"]);
    }
}

fn a_checkpoint_without_metadata_is_invisible_and_removed_at_reopen(f: Fixture) {
    let storage = f.open(1);
    take_checkpoint(&*storage, 1, 1).unwrap();
    // Checkpoint 2: all files written, never completed.
    let target2 = SnapshotTarget::checkpoint(CheckpointId(2));
    write_tasks(&*storage, &target2, 2, 2).unwrap();
    // Checkpoint 3: a writer dropped before it finished leaves a temporary file.
    let target3 = SnapshotTarget::checkpoint(CheckpointId(3));
    let mut unfinished = storage.create_state_file(&target3, "keyed-0").unwrap();
    unfinished.write_all(b"half a snapshot").unwrap();
    assert_eq!(unfinished.path(), "chk-3/keyed-0");
    drop(unfinished);
    assert_eq!(storage.completed().unwrap(), vec![CheckpointId(1)]);
    assert_eq!(
        storage.latest_completed().unwrap().unwrap().id(),
        CheckpointId(1)
    );
    assert!(storage.load_checkpoint(CheckpointId(2)).is_err());
    // A stray file in a completed checkpoint's directory (a failed task attempt).
    let raw = f.raw();
    let mut stray = raw.create("chk-1/keyed-0-attempt-2").unwrap();
    stray.write_all(b"stray").unwrap();
    stray.sync().unwrap();
    drop(stray);
    raw.sync_dir("chk-1").unwrap();
    drop(storage);

    let storage = f.open(1);
    assert_eq!(root_entries(&*raw), vec!["chk-1"]);
    let latest = storage.latest_completed().unwrap().unwrap();
    let listed: BTreeSet<String> = latest.files().map(|f| f.path().to_string()).collect();
    for name in raw.list_dir("chk-1").unwrap() {
        let path = format!("chk-1/{name}");
        assert!(
            name == "_metadata" || listed.contains(&path),
            "{path} survived the reopen"
        );
        assert!(!is_temp_name(&name));
    }
    assert_intact(&*storage, &latest, 1);
    // Checkpoint 2 can be taken again from scratch.
    assert_intact(&*storage, &take_checkpoint(&*storage, 2, 2).unwrap(), 2);
}

fn abort_deletes_the_files_of_an_incomplete_checkpoint(f: Fixture) {
    let storage = f.open(1);
    let raw = f.raw();
    take_checkpoint(&*storage, 1, 1).unwrap();
    let target = SnapshotTarget::checkpoint(CheckpointId(2));
    let tasks = write_tasks(&*storage, &target, 2, 2).unwrap();
    assert!(raw.exists("chk-2").unwrap());
    storage.abort_checkpoint(CheckpointId(2)).unwrap();
    assert!(!raw.exists("chk-2").unwrap());
    // Its handles cannot complete any more: the files are gone.
    assert!(storage.complete_checkpoint(CheckpointId(2), tasks).is_err());
    assert!(!raw.exists("chk-2/_metadata").unwrap());
    // Aborting what does not exist is fine; aborting a completed checkpoint is refused.
    storage.abort_checkpoint(CheckpointId(9)).unwrap();
    let err = storage.abort_checkpoint(CheckpointId(1)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Usage, "{err}");
    assert_intact(
        &*storage,
        &storage.load_checkpoint(CheckpointId(1)).unwrap(),
        1,
    );
    // A checkpoint id can be reused after an abort.
    assert_intact(&*storage, &take_checkpoint(&*storage, 2, 1).unwrap(), 1);
}

fn savepoints_are_relocatable_and_untouched_by_retention(f: Fixture) {
    let storage = f.open(1);
    let raw = f.raw();
    take_checkpoint(&*storage, 1, 1).unwrap();
    let target = SnapshotTarget::savepoint(CheckpointId(2), "savepoints/before-upgrade");
    assert_eq!(target.kind(), SnapshotKind::Savepoint);
    let tasks = write_tasks(&*storage, &target, 2, 2).unwrap();
    let savepoint = storage.complete(&target, tasks).unwrap();
    assert_eq!(savepoint.kind(), SnapshotKind::Savepoint);
    assert_eq!(savepoint.location(), "savepoints/before-upgrade");
    assert_intact(&*storage, &savepoint, 2);
    // Its _metadata stores paths relative to its directory.
    let bytes = raw
        .read_all("savepoints/before-upgrade/_metadata", 1 << 20)
        .unwrap();
    let record = CheckpointMetadataRecord::decode(&bytes, "sp").unwrap();
    assert_eq!(record.tasks[0].keyed[0].files[0].path, "keyed-0");

    // Savepoints are not checkpoints: not listed, not the latest, not subsumed.
    for id in 3..=6 {
        take_checkpoint(&*storage, id, 1).unwrap();
    }
    assert_eq!(storage.completed().unwrap(), vec![CheckpointId(6)]);
    assert_eq!(
        storage.latest_completed().unwrap().unwrap().id(),
        CheckpointId(6)
    );
    drop(storage);
    let storage = f.open(1);
    let loaded = storage.load_savepoint("savepoints/before-upgrade").unwrap();
    assert_eq!(loaded, savepoint);
    assert_intact(&*storage, &loaded, 2);
    // A savepoint is complete once: no more files, no second completion, no abort.
    assert!(storage.create_state_file(&target, "late").is_err());
    assert!(storage.complete(&target, vec![]).is_err());
    assert!(storage.abort(&target).is_err());
    // A checkpoint's metadata is not a savepoint and the other way round.
    assert!(storage.load_savepoint("chk-6").is_err());

    // Relocatable: a copy under another name loads, with paths in the new place.
    raw.create_dir_all("moved").unwrap();
    for name in raw.list_dir("savepoints/before-upgrade").unwrap() {
        let bytes = raw
            .read_all(&format!("savepoints/before-upgrade/{name}"), 1 << 20)
            .unwrap();
        raw.write_atomic(&format!("moved/{name}"), &bytes).unwrap();
    }
    let moved = storage.load_savepoint("moved").unwrap();
    assert_eq!(
        moved.handles_for(KeyGroupRange::all(128).unwrap())[0].files()[0].path(),
        "moved/keyed-0"
    );
    assert_intact(&*storage, &moved, 2);

    // Found by id, as checkpoints are (checkpoint directories are not searched); the copy
    // makes two savepoints numbered 2, which is ambiguous.
    assert_eq!(
        storage.savepoints().unwrap(),
        vec![
            (CheckpointId(2), "moved".to_owned()),
            (CheckpointId(2), "savepoints/before-upgrade".to_owned())
        ]
    );
    assert!(storage.load_savepoint_by_id(CheckpointId(2)).is_err());
    // A damaged _metadata is an error naming it, not skipped.
    let mut bytes = raw.read_all("moved/_metadata", 1 << 20).unwrap();
    bytes[10] ^= 1;
    raw.write_atomic("moved/_metadata", &bytes).unwrap();
    let err = storage.savepoints().unwrap_err().to_string();
    assert!(err.contains("moved/_metadata"), "{err}");
    raw.remove_dir_all("moved").unwrap();
    assert_eq!(
        storage.load_savepoint_by_id(CheckpointId(2)).unwrap(),
        savepoint
    );
    assert!(storage.load_savepoint_by_id(CheckpointId(3)).is_err());

    // Savepoint directories may not sit in the managed layout.
    for bad in [
        "chk-9",
        "chk-9/sp",
        "shared/sp",
        "taskowned",
        "../sp",
        "/sp",
        "sp/_metadata",
    ] {
        let target = SnapshotTarget::savepoint(CheckpointId(7), bad);
        assert!(storage.create_state_file(&target, "x").is_err(), "{bad}");
    }
}

fn the_memory_limit_fails_an_oversized_state_file(f: Fixture) {
    let storage = f.open(1);
    let target = SnapshotTarget::checkpoint(CheckpointId(1));
    let range = KeyGroupRange::all(MAX_PARALLELISM).unwrap();
    let at_limit = vec![7u8; DEFAULT_MAX_STATE_SIZE as usize];
    let fits = storage
        .write_keyed_state_bytes(&target, "fits", range, &at_limit)
        .unwrap();
    assert_eq!(fits.files()[0].size(), DEFAULT_MAX_STATE_SIZE);

    let mut writer = storage.create_state_file(&target, "too-big").unwrap();
    writer.write_all(&at_limit).unwrap();
    let over = writer.write_all(b"!");
    match f.imp {
        Impl::Memory => {
            let err = over.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Limit);
            assert!(
                matches!(&err, Error::StateSizeLimit { path, limit } if *limit == DEFAULT_MAX_STATE_SIZE && path.ends_with("chk-1/too-big")),
                "{err:?}"
            );
            let message = err.to_string();
            assert!(
                message.contains("5242880") && message.contains("chk-1/too-big"),
                "{message}"
            );
            // The writer is dead: the file cannot be published.
            assert!(writer.finish().is_err());
            assert!(!f.raw().exists("chk-1/too-big").unwrap());
        }
        Impl::Fs => {
            over.unwrap();
            assert_eq!(writer.finish().unwrap().size(), DEFAULT_MAX_STATE_SIZE + 1);
        }
    }
    // A smaller configured limit.
    if f.imp == Impl::Memory {
        let small =
            MemoryCheckpointStorage::with_limit(100, FsCheckpointOptions::default()).unwrap();
        assert_eq!(small.max_state_size(), 100);
        let err = small
            .write_operator_state_bytes(&target, "op", &[0; 101])
            .unwrap_err();
        assert!(
            matches!(err, Error::StateSizeLimit { limit: 100, .. }),
            "{err:?}"
        );
        small
            .write_operator_state_bytes(&target, "op", &[0; 100])
            .unwrap();
        let none = FsCheckpointOptions::default().with_retained(0);
        let err = MemoryCheckpointStorage::with_limit(100, none).unwrap_err();
        assert!(matches!(err, Error::InvalidConfig(_)), "{err:?}");
    }
}

fn handles_for_restores_any_parallelism_from_a_completed_checkpoint(f: Fixture) {
    let storage = f.open(1);
    // 1 -> 3: each new task gets the one handle.
    take_checkpoint(&*storage, 1, 1).unwrap();
    let one = storage.latest_completed().unwrap().unwrap();
    for i in 0..3 {
        let range = KeyGroupRange::for_operator(MAX_PARALLELISM, 3, i).unwrap();
        let handles = one.keyed_handles_for("keyed", range);
        assert_eq!(handles.len(), 1);
        assert_eq!(
            read(&*storage, &handles[0].files()[0]),
            content(1, "keyed", 0)
        );
    }
    // 3 -> 2: [0..=42] [43..=85] [86..=127] onto [0..=63] [64..=127].
    take_checkpoint(&*storage, 2, 3).unwrap();
    let three = storage.latest_completed().unwrap().unwrap();
    let expected = [vec![0u32, 1], vec![1, 2]];
    for (i, wanted) in expected.iter().enumerate() {
        let range = KeyGroupRange::for_operator(MAX_PARALLELISM, 2, i as u32).unwrap();
        let handles = three.handles_for(range);
        let got: Vec<Vec<u8>> = handles
            .iter()
            .map(|h| read(&*storage, &h.files()[0]))
            .collect();
        let want: Vec<Vec<u8>> = wanted.iter().map(|&t| content(2, "keyed", t)).collect();
        assert_eq!(got, want, "new task {i}");
        assert!(handles.iter().all(|h| h.intersects(range)));
    }
    // Every key group is covered exactly once at the old parallelism.
    let all = three.handles_for(KeyGroupRange::all(MAX_PARALLELISM).unwrap());
    let covered: usize = all.iter().map(|h| h.key_group_range().len()).sum();
    assert_eq!(covered, MAX_PARALLELISM as usize);
}

fn completion_checks_what_it_is_given(f: Fixture) {
    let storage = f.open(1);
    let raw = f.raw();
    take_checkpoint(&*storage, 1, 1).unwrap();
    let t2 = SnapshotTarget::checkpoint(CheckpointId(2));
    let tasks = write_tasks(&*storage, &t2, 2, 1).unwrap();

    // A file of another checkpoint.
    let old = storage.load_checkpoint(CheckpointId(1)).unwrap();
    let mut borrowed = tasks.clone();
    borrowed[0].keyed = old.task("keyed", 0).unwrap().keyed.clone();
    let err = storage.complete(&t2, borrowed).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Usage, "{err}");
    // A size that does not match the file.
    let mut lying = tasks.clone();
    let h = &lying[0].keyed[0];
    let wrong = StateFile::new(h.files()[0].path(), h.files()[0].size() + 1).unwrap();
    lying[0].keyed[0] =
        flowstate::KeyedStateHandle::new(h.key_group_range(), vec![wrong.clone()]).unwrap();
    let err = storage.complete(&t2, lying).unwrap_err();
    assert!(matches!(err, Error::StateFileSize { .. }), "{err:?}");
    let err = storage.open_state_file(&wrong).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corruption, "{err}");
    // The same subtask twice, and a subtask beyond the parallelism.
    let mut twice = tasks.clone();
    twice.push(tasks[0].clone());
    assert!(storage.complete(&t2, twice).is_err());
    let mut beyond = tasks.clone();
    beyond[0].subtask_index = 5;
    assert!(storage.complete(&t2, beyond).is_err());
    // None of that completed anything.
    assert!(!raw.exists("chk-2/_metadata").unwrap());
    // Bad state file names.
    for bad in ["", "_metadata", "a/b", "x.flowstate-tmp", "..", "."] {
        assert!(storage.create_state_file(&t2, bad).is_err(), "{bad:?}");
    }
    // Done right, it completes; then it cannot complete again or take more files.
    storage.complete(&t2, tasks.clone()).unwrap();
    assert!(storage.complete(&t2, tasks).is_err());
    assert!(storage.create_state_file(&t2, "late").is_err());
    // An id not above the latest completed one is refused.
    assert!(storage
        .create_state_file(&CheckpointId(1).into(), "x")
        .is_err());
    assert!(storage
        .complete_checkpoint(CheckpointId(1), vec![])
        .is_err());
    // A checkpoint with no state at all completes.
    let empty = storage
        .complete_checkpoint(CheckpointId(3), vec![])
        .unwrap();
    assert!(empty.tasks().is_empty());
    assert_eq!(
        storage.latest_completed().unwrap().unwrap().id(),
        CheckpointId(3)
    );
}

fn damaged_metadata_is_an_error_naming_the_file_never_skipped(f: Fixture) {
    let storage = f.open(2);
    let raw = f.raw();
    take_checkpoint(&*storage, 1, 1).unwrap();
    take_checkpoint(&*storage, 2, 1).unwrap();
    let mut bytes = raw.read_all("chk-2/_metadata", 1 << 20).unwrap();
    bytes[30] ^= 0x10;
    raw.write_atomic("chk-2/_metadata", &bytes).unwrap();
    let err = storage.latest_completed().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corruption);
    assert!(err.to_string().contains("chk-2/_metadata"), "{err}");
    // Reopening keeps the damaged checkpoint for inspection, and the older one.
    drop(storage);
    let storage = f.open(2);
    assert_eq!(
        storage.completed().unwrap(),
        vec![CheckpointId(1), CheckpointId(2)]
    );
    assert!(raw.exists("chk-2/keyed-0").unwrap());
    assert_intact(
        &*storage,
        &storage.load_checkpoint(CheckpointId(1)).unwrap(),
        1,
    );

    // Metadata copied under another checkpoint's name is refused.
    let good = raw.read_all("chk-1/_metadata", 1 << 20).unwrap();
    raw.create_dir_all("chk-7").unwrap();
    raw.write_atomic("chk-7/_metadata", &good).unwrap();
    let err = storage.load_checkpoint(CheckpointId(7)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corruption, "{err}");
    assert!(err.to_string().contains("chk-7/_metadata"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Crash sweeps (MemStorage-backed implementations)
// ---------------------------------------------------------------------------------------------

const SWEEP_PARALLELISM: u32 = 2;

/// Storage with checkpoints `1..=retained` complete.
fn sweep_setup(f: &Fixture, retained: usize, seed: u64) -> (Fixture, Box<dyn CheckpointStorage>) {
    let f = f.on_mem(seed);
    let storage = f.open(retained);
    for id in 1..=retained as u64 {
        take_checkpoint(&*storage, id, SWEEP_PARALLELISM).unwrap();
    }
    (f, storage)
}

/// After a crash: the storage reopens, the new checkpoint `new` is complete or absent (and
/// complete if `acknowledged`), the completed checkpoints are exactly the newest `retained`
/// of those that exist, each reads back in full, and nothing else is left.
/// Returns whether `new` is complete.
fn check_after_crash(
    f: &Fixture,
    retained: usize,
    new: u64,
    acknowledged: bool,
    what: &str,
) -> bool {
    let storage = f
        .try_open(retained)
        .unwrap_or_else(|e| panic!("{what}: reopening fails: {e}"));
    let completed: Vec<u64> = storage.completed().unwrap().iter().map(|c| c.0).collect();
    let new_is_complete = completed.contains(&new);
    if acknowledged {
        assert!(
            new_is_complete,
            "{what}: acknowledged checkpoint {new} is lost"
        );
    }
    let last = if new_is_complete { new } else { new - 1 };
    let expected = newest(last, retained);
    assert_eq!(completed, expected, "{what}");
    for &id in &completed {
        let checkpoint = storage.load_checkpoint(CheckpointId(id)).unwrap();
        assert_intact(&*storage, &checkpoint, SWEEP_PARALLELISM);
    }
    assert_eq!(
        storage.latest_completed().unwrap().map(|c| c.id().0),
        Some(last),
        "{what}"
    );
    let raw = f.raw();
    let dirs: Vec<String> = expected.iter().map(|i| format!("chk-{i}")).collect();
    assert_eq!(root_entries(&*raw), dirs, "{what}: leftovers at the root");
    for dir in &dirs {
        let names = raw.list_dir(dir).unwrap();
        assert_eq!(
            names.len(),
            1 + 2 * SWEEP_PARALLELISM as usize,
            "{what}: {dir} holds {names:?}"
        );
    }
    new_is_complete
}

/// For every failure point `n` of writing checkpoint `retained + 1` and completing it (with
/// the subsumption that follows): fail from operation `n` on, crash as `mode` says, reopen,
/// check. Returns the number of operations of the sequence.
fn crash_sweep(f: &Fixture, retained: usize, mode: CrashMode, short_writes: bool) -> u64 {
    let new = retained as u64 + 1;
    let (clean, storage) = sweep_setup(f, retained, 1);
    let before = clean.mem().op_count();
    take_checkpoint(&*storage, new, SWEEP_PARALLELISM).unwrap();
    let ops = clean.mem().op_count() - before;

    let mut outcomes = BTreeSet::new();
    for n in 1..=ops + 1 {
        let (f, storage) = sweep_setup(f, retained, n);
        let mem = f.mem().clone();
        mem.set_short_writes(short_writes);
        mem.fail_after(n);
        let result = take_checkpoint(&*storage, new, SWEEP_PARALLELISM);
        drop(storage);
        mem.crash_with(mode);
        mem.heal();
        mem.set_short_writes(false);
        let what = format!(
            "{:?}, retained {retained}, failure at operation {n} of {ops}, {mode:?}, short writes {short_writes}: {:?}",
            f.imp,
            result.as_ref().map(|c| c.id())
        );
        outcomes.insert(check_after_crash(&f, retained, new, result.is_ok(), &what));
        if n > ops {
            assert!(result.is_ok(), "{what}: no fault, yet it failed");
        }
    }
    if mode == CrashMode::DropUnsynced {
        // Early failures leave the new checkpoint absent, late ones complete.
        assert_eq!(outcomes, BTreeSet::from([false, true]), "{:?}", f.imp);
    }
    ops
}

fn crash_at_every_step_of_completion_keeps_the_previous_checkpoint(f: Fixture) {
    for retained in [1, 2] {
        let ops = crash_sweep(&f, retained, CrashMode::DropUnsynced, false);
        assert!(
            ops > 20,
            "the sweep covers file writes, completion and subsumption: {ops}"
        );
        crash_sweep(&f, retained, CrashMode::DropUnsynced, true);
    }
}

fn torn_crashes_at_every_step_of_completion_keep_the_previous_checkpoint(f: Fixture) {
    for retained in [1, 2] {
        for seed in 0..12 {
            crash_sweep(&f, retained, CrashMode::Torn { seed }, seed % 2 == 1);
        }
    }
}

/// A crash during the first crash's recovery (reopen) also recovers: compound failures.
fn a_crash_during_recovery_recovers_too(f: Fixture) {
    let retained = 1;
    let new = 2;
    // Find failure points where checkpoint 2 is half-way: files written, metadata not.
    let (clean, storage) = sweep_setup(&f, retained, 0);
    let before = clean.mem().op_count();
    take_checkpoint(&*storage, new, SWEEP_PARALLELISM).unwrap();
    let ops = clean.mem().op_count() - before;
    for n in (1..=ops).step_by(3) {
        let (f, storage) = sweep_setup(&f, retained, n);
        let mem = f.mem().clone();
        mem.fail_after(n);
        let first = take_checkpoint(&*storage, new, SWEEP_PARALLELISM).is_ok();
        drop(storage);
        mem.crash();
        mem.heal();
        // Count the operations of a recovery, then fail each of them and crash again.
        for m in 1..=12 {
            mem.fail_after(m);
            let reopened = f.try_open(retained);
            drop(reopened);
            mem.crash_with(CrashMode::Torn { seed: m });
            mem.heal();
        }
        let what = format!(
            "{:?}, failure at {n} of {ops}, then crashes during recovery",
            f.imp
        );
        check_after_crash(&f, retained, new, first, &what);
    }
}

macro_rules! suite {
    ($module:ident, $fixture:expr) => {
        mod $module {
            use super::*;

            #[test]
            fn complete_then_latest_survives_reopen() {
                super::complete_then_latest_survives_reopen($fixture);
            }
            #[test]
            fn retention_keeps_the_last_n_and_deletes_older_files() {
                super::retention_keeps_the_last_n_and_deletes_older_files($fixture);
            }
            #[test]
            fn a_checkpoint_without_metadata_is_invisible_and_removed_at_reopen() {
                super::a_checkpoint_without_metadata_is_invisible_and_removed_at_reopen($fixture);
            }
            #[test]
            fn abort_deletes_the_files_of_an_incomplete_checkpoint() {
                super::abort_deletes_the_files_of_an_incomplete_checkpoint($fixture);
            }
            #[test]
            fn savepoints_are_relocatable_and_untouched_by_retention() {
                super::savepoints_are_relocatable_and_untouched_by_retention($fixture);
            }
            #[test]
            fn the_memory_limit_fails_an_oversized_state_file() {
                super::the_memory_limit_fails_an_oversized_state_file($fixture);
            }
            #[test]
            fn handles_for_restores_any_parallelism_from_a_completed_checkpoint() {
                super::handles_for_restores_any_parallelism_from_a_completed_checkpoint($fixture);
            }
            #[test]
            fn completion_checks_what_it_is_given() {
                super::completion_checks_what_it_is_given($fixture);
            }
            #[test]
            fn damaged_metadata_is_an_error_naming_the_file_never_skipped() {
                super::damaged_metadata_is_an_error_naming_the_file_never_skipped($fixture);
            }
        }
    };
}

macro_rules! crash_suite {
    ($module:ident, $fixture:expr) => {
        mod $module {
            use super::*;

            #[test]
            fn crash_at_every_step_of_completion_keeps_the_previous_checkpoint() {
                super::crash_at_every_step_of_completion_keeps_the_previous_checkpoint($fixture);
            }
            #[test]
            fn torn_crashes_at_every_step_of_completion_keep_the_previous_checkpoint() {
                super::torn_crashes_at_every_step_of_completion_keep_the_previous_checkpoint(
                    $fixture,
                );
            }
            #[test]
            fn a_crash_during_recovery_recovers_too() {
                super::a_crash_during_recovery_recovers_too($fixture);
            }
        }
    };
}

suite!(fs_local, Fixture::fs_local());
#[cfg(feature = "object-store")]
suite!(object_memory, Fixture::object("memory://checkpoint-suite"));
#[cfg(feature = "object-store")]
macro_rules! s3_suite {
    ($($name:ident),* $(,)?) => {
        mod object_s3 {
            $(
                #[test]
                fn $name() {
                    if let Some(url) = super::common::object::s3_url() {
                        super::$name(super::Fixture::object(&url));
                    }
                }
            )*
        }
    };
}
#[cfg(feature = "object-store")]
s3_suite!(
    complete_then_latest_survives_reopen,
    retention_keeps_the_last_n_and_deletes_older_files,
    a_checkpoint_without_metadata_is_invisible_and_removed_at_reopen,
    abort_deletes_the_files_of_an_incomplete_checkpoint,
    savepoints_are_relocatable_and_untouched_by_retention,
    the_memory_limit_fails_an_oversized_state_file,
    handles_for_restores_any_parallelism_from_a_completed_checkpoint,
    completion_checks_what_it_is_given,
    damaged_metadata_is_an_error_naming_the_file_never_skipped,
);
suite!(fs_mem, Fixture::fs_mem());
suite!(memory, Fixture::memory());
crash_suite!(fs_mem_crash, Fixture::fs_mem());
crash_suite!(memory_crash, Fixture::memory());

#[test]
fn fs_checkpoint_storage_new_opens_a_local_directory_with_the_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("checkpoints");
    let storage = FsCheckpointStorage::new(&root).unwrap();
    assert_eq!(storage.retained(), 1);
    take_checkpoint(&storage, 1, 1).unwrap();
    take_checkpoint(&storage, 2, 1).unwrap();
    assert!(root.join("chk-2/_metadata").is_file());
    assert!(
        !root.join("chk-1").exists(),
        "one checkpoint is retained by default"
    );
    assert!(root.join("shared").is_dir() && root.join("taskowned").is_dir());
    let err =
        FsCheckpointStorage::open_local(&root, FsCheckpointOptions::default().with_retained(0))
            .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Usage);
}
