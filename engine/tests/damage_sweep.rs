//! A sweep of damage over every file of a checkpoint like the demo's (an LSM task with an
//! incremental checkpoint, a heap task with a canonical file, operator state) plus a heap task
//! with incremental checkpoints (a base and a delta under `shared/`): seeded bit flips,
//! truncations, an appended byte, swapped blocks, and each file replaced by the file of the same
//! name from the older checkpoint. Every case must be a typed error from a restore and damage
//! reported by `verify`, never a panic and never a success.
//!
//! The default run flips a seeded sample of 200 offsets a file. The full sweep over every byte
//! of every file runs with
//! `FLOWSTATE_DAMAGE_SWEEP=every-byte cargo test --release -p flowstate --test damage_sweep -- --nocapture`
//! (119,264 bit flips, one at every byte, plus the other kinds: 11 minutes on 2 cores, all
//! detected on 2026-12-06); it prints the same counts.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use flowstate::checkpoint::{read_operator_state, write_operator_state};
use flowstate::lsm::LsmBackground;
use flowstate::operator::OperatorStateStore;
use flowstate::verify::verify_checkpoint;
use flowstate::*;

const MAXP: u32 = 128;

/// Writes two checkpoints (1 and 2) of two tasks into `root` and returns the storage.
fn build(root: &Path, work: &Path) -> Arc<dyn CheckpointStorage> {
    let storage: Arc<dyn CheckpointStorage> = Arc::new(
        FsCheckpointStorage::open_local(root, FsCheckpointOptions::default().with_retained(2))
            .unwrap(),
    );
    let ranges = [
        KeyGroupRange::for_operator(MAXP, 2, 0).unwrap(),
        KeyGroupRange::for_operator(MAXP, 2, 1).unwrap(),
    ];
    let mut tasks = vec![
        Backend::<u64>::open(
            BackendConfig::lsm(work)
                .max_parallelism(MAXP)
                .key_group_range(ranges[0])
                .lsm_memtable_bytes(192 << 10)
                .lsm_background(LsmBackground::Inline),
        )
        .unwrap(),
        Backend::<u64>::open(
            BackendConfig::heap()
                .max_parallelism(MAXP)
                .key_group_range(ranges[1]),
        )
        .unwrap(),
    ];
    // A second operator: one heap task with incremental checkpoints (a chain: a base at
    // checkpoint 1, a delta at checkpoint 2).
    let mut chained = Backend::<u64>::open(
        BackendConfig::heap()
            .max_parallelism(MAXP)
            .heap_incremental_checkpoints(flowstate::heap::HeapIncremental::default()),
    )
    .unwrap();
    let mut offsets = OperatorStateStore::new();
    let offset = offsets
        .list_state(&ListStateDescriptor::<u64>::new("offset"))
        .unwrap();
    for id in 1..=2u64 {
        for b in &mut tasks {
            let count = b
                .register(ValueStateDescriptor::<u64>::new("count"))
                .unwrap();
            let seen = b.register(ListStateDescriptor::<u32>::new("seen")).unwrap();
            for k in 0..3_000u64 {
                b.set_current_key(&k);
                if b.current_key_group()
                    .is_some_and(|kg| b.key_group_range().contains(kg))
                {
                    b.value(&count).update(k * id).unwrap();
                    b.list(&seen).add(id as u32).unwrap();
                }
            }
        }
        offsets.list(&offset).update(vec![id * 1_000 + 7]).unwrap();
        let total = chained
            .register(ValueStateDescriptor::<u64>::new("total"))
            .unwrap();
        for k in (0..2_000u64).step_by(if id == 1 { 1 } else { 9 }) {
            chained.set_current_key(&k);
            chained.value(&total).update(k + id).unwrap();
        }
        if id == 2 {
            for k in (0..2_000u64).step_by(31) {
                chained.set_current_key(&k);
                chained.value(&total).clear().unwrap();
            }
        }
        let mut states = Vec::new();
        for (i, b) in tasks.iter_mut().enumerate() {
            let done = b
                .snapshot(CheckpointId(id), &storage, &format!("op-{i}"))
                .unwrap()
                .run()
                .unwrap();
            states.push(SubtaskState::new("op", i as u32, 2, MAXP).with_keyed(done.handle));
        }
        let source = write_operator_state(
            &*storage,
            &SnapshotTarget::checkpoint(CheckpointId(id)),
            "source-0",
            &offsets.snapshot(),
        )
        .unwrap();
        states.push(SubtaskState::new("source", 0, 1, 1).with_operator(source));
        let done = chained
            .snapshot(CheckpointId(id), &storage, "chained-0")
            .unwrap()
            .run()
            .unwrap();
        states.push(SubtaskState::new("chained", 0, 1, MAXP).with_keyed(done.handle));
        storage
            .complete_checkpoint(CheckpointId(id), states)
            .unwrap();
        for b in tasks.iter_mut().chain([&mut chained]) {
            b.notify_checkpoint_complete(CheckpointId(id)).unwrap();
        }
    }
    storage
}

/// Restores everything checkpoint 2 holds; an error if anything is wrong.
fn restore_all(root: &Path) -> Result<()> {
    let storage = FsCheckpointStorage::open_read_only(root)?;
    let done = storage.load_checkpoint(CheckpointId(2))?;
    let all = KeyGroupRange::new(0, MAXP as u16 - 1)?;
    let mut backend = Backend::<u64>::restore_from(
        BackendConfig::heap().max_parallelism(MAXP),
        &storage,
        &done.keyed_handles_for("op", all),
    )?;
    backend.register(ValueStateDescriptor::<u64>::new("count"))?;
    backend.register(ListStateDescriptor::<u32>::new("seen"))?;
    let mut chained = Backend::<u64>::restore_from(
        BackendConfig::heap().max_parallelism(MAXP),
        &storage,
        &done.keyed_handles_for("chained", all),
    )?;
    chained.register(ValueStateDescriptor::<u64>::new("total"))?;
    for handle in done.operator_handles("source", 0) {
        read_operator_state(&storage, handle)?;
    }
    Ok(())
}

/// Whether `verify` finds damage in checkpoint 2 (a `_metadata` that does not load is damage).
fn verify_finds_damage(root: &Path) -> bool {
    let Ok(storage) = FsCheckpointStorage::open_read_only(root) else {
        return true;
    };
    match storage.load_checkpoint(CheckpointId(2)) {
        Ok(done) => !verify_checkpoint(&storage, &done).is_ok(),
        Err(_) => true,
    }
}

/// Counts of one kind of damage.
#[derive(Debug, Default)]
struct Counts {
    trials: u64,
    /// Restores that returned an error.
    restore_errors: u64,
    /// Verifications that reported damage.
    verify_found: u64,
    /// Cases neither a restore error nor reported (a silent success of either).
    silent: u64,
    panics: u64,
}

struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

#[test]
fn every_damaged_truncated_swapped_or_substituted_file_fails_the_restore() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("checkpoints");
    let storage = build(&root, &dir.path().join("work"));
    restore_all(&root).expect("the undamaged checkpoint restores");
    // The files checkpoint 2 lists: its directory and the shared tables it references.
    let done = storage.load_checkpoint(CheckpointId(2)).unwrap();
    let mut files: Vec<String> = done.files().map(|f| f.path().to_string()).collect();
    files.extend(done.shared_files().map(|f| f.path().to_string()));
    files.push("chk-2/_metadata".into());
    files.sort();
    files.dedup();
    assert!(files.iter().any(|f| f.starts_with("shared/")), "{files:?}");
    drop(storage);

    let every_byte = std::env::var("FLOWSTATE_DAMAGE_SWEEP").is_ok_and(|v| v == "every-byte");
    let mut rng = Rng(0x5eed_5eed);
    let mut counts: BTreeMap<&str, Counts> = BTreeMap::new();
    let mut missed: Vec<String> = Vec::new();
    let mut trial = |kind: &'static str, path: &str, damaged: Vec<u8>| {
        let full = root.join(path);
        let original = std::fs::read(&full).unwrap();
        std::fs::write(&full, &damaged).unwrap();
        let outcome = std::panic::catch_unwind(|| (restore_all(&root), verify_finds_damage(&root)));
        std::fs::write(&full, &original).unwrap();
        let c = counts.entry(kind).or_default();
        c.trials += 1;
        match outcome {
            Ok((restored, found)) => {
                c.restore_errors += u64::from(restored.is_err());
                c.verify_found += u64::from(found);
                if restored.is_ok() || !found {
                    c.silent += 1;
                    missed.push(format!(
                        "{kind} of {path}: restore {}, verify {}",
                        if restored.is_ok() {
                            "succeeded"
                        } else {
                            "failed"
                        },
                        if found { "found damage" } else { "found none" }
                    ));
                }
            }
            Err(_) => {
                c.panics += 1;
                missed.push(format!("{kind} of {path} panicked"));
            }
        }
    };
    for path in &files {
        let bytes = std::fs::read(root.join(path)).unwrap();
        let len = bytes.len() as u64;
        let offsets: Vec<u64> = if every_byte {
            (0..len).collect()
        } else {
            (0..200).map(|_| rng.below(len)).collect()
        };
        for at in offsets {
            let mut d = bytes.clone();
            d[at as usize] ^= 1 << rng.below(8);
            trial("bit flip", path, d);
        }
        for cut in [0, 1, len / 2, len.saturating_sub(1)] {
            trial("truncation", path, bytes[..cut as usize].to_vec());
        }
        let mut longer = bytes.clone();
        longer.push(0);
        trial("appended byte", path, longer);
        if len >= 256 {
            for _ in 0..4 {
                let (a, b) = (rng.below(len / 64 - 1) * 64, rng.below(len / 64 - 1) * 64);
                if a == b
                    || bytes[a as usize..a as usize + 64] == bytes[b as usize..b as usize + 64]
                {
                    continue;
                }
                let mut d = bytes.clone();
                d.copy_within(a as usize..a as usize + 64, b as usize);
                d[a as usize..a as usize + 64].copy_from_slice(&bytes[b as usize..b as usize + 64]);
                trial("block swap", path, d);
            }
        }
        if let Some(name) = path.strip_prefix("chk-2/") {
            if let Ok(older) = std::fs::read(root.join("chk-1").join(name)) {
                if older != bytes {
                    trial("substitution from the older checkpoint", path, older);
                }
            }
        }
    }
    eprintln!("damage sweep per kind: {counts:#?}");
    let trials: u64 = counts.values().map(|c| c.trials).sum();
    assert!(trials > 1_000, "{counts:?}");
    assert!(
        counts.contains_key("substitution from the older checkpoint"),
        "{counts:?}"
    );
    assert!(
        missed.is_empty(),
        "{} of {trials} missed: {missed:#?}",
        missed.len()
    );
}
