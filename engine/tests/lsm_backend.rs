//! The LSM backend end to end: checkpoints that move between the heap and the LSM backend at
//! other parallelisms, memory within the configured bounds under back-pressure, the block
//! cache, background errors, and the working directory's life cycle. The state semantics are
//! checked by the conformance suite and the model test, which run on the LSM backend too.

use std::sync::Arc;

use flowstate::lsm::{LsmBackground, TreeOptions};
use flowstate::snapshot::CanonicalEntries;
use flowstate::*;

const MAXP: u32 = 128;
const KEYS: u64 = 3_000;

struct States {
    value: ValueState<u64>,
    list: ListState<String>,
    map: MapState<u32, String, TimeWindow>,
    reducing: ReducingState<u64>,
}

fn register<B: KeyedStateBackend<u64>>(b: &mut B) -> Result<States> {
    Ok(States {
        value: b.register(ValueStateDescriptor::<u64>::new("value"))?,
        list: b.register(ListStateDescriptor::<String>::new("list"))?,
        map: b.register(
            MapStateDescriptor::<u32, String>::new("map").with_namespace::<TimeWindow>(),
        )?,
        reducing: b.register(ReducingStateDescriptor::<u64>::new("reducing", |a, b| {
            a + b
        }))?,
    })
}

fn window(k: u64) -> TimeWindow {
    TimeWindow::new(k as i64 % 5, k as i64 % 5 + 1)
}

fn owned<B: KeyedStateBackend<u64>>(b: &B) -> bool {
    b.current_key_group()
        .is_some_and(|kg| b.key_group_range().contains(kg))
}

fn fill<B: KeyedStateBackend<u64>>(b: &mut B, s: &States, salt: u64) -> Result<()> {
    for k in 0..KEYS {
        b.set_current_key(&k);
        if !owned(b) {
            continue;
        }
        b.value(&s.value).update(k + salt)?;
        if k % 4 != 0 {
            b.list(&s.list).add(format!("{k}"))?;
            b.list(&s.list).add(format!("{salt}"))?;
        }
        b.map(&s.map)
            .namespace(&window(k))
            .put((k % 7) as u32, format!("v{k}-{salt}"))?;
        b.reducing(&s.reducing).add(k)?;
        b.reducing(&s.reducing).add(salt)?;
    }
    Ok(())
}

fn check<B: KeyedStateBackend<u64>>(b: &mut B, s: &States, salt: u64) -> Result<u64> {
    let mut n = 0;
    for k in 0..KEYS {
        b.set_current_key(&k);
        if !owned(b) {
            continue;
        }
        n += 1;
        assert_eq!(b.value(&s.value).get()?, Some(k + salt), "value of {k}");
        let want: Vec<String> = if k % 4 != 0 {
            vec![format!("{k}"), format!("{salt}")]
        } else {
            vec![]
        };
        assert_eq!(b.list(&s.list).get()?, want, "list of {k}");
        assert_eq!(
            b.map(&s.map).namespace(&window(k)).entries()?,
            vec![((k % 7) as u32, format!("v{k}-{salt}"))]
        );
        assert_eq!(b.reducing(&s.reducing).get()?, Some(k + salt));
    }
    Ok(n)
}

/// A small LSM configuration that flushes and compacts often, with a background thread.
fn lsm_config(dir: &std::path::Path, p: u32, i: u32) -> Result<BackendConfig> {
    let tree = TreeOptions {
        memtable_bytes: 256 << 10,
        l0_compaction_trigger: 2,
        target_table_bytes: 64 << 10,
        level1_max_bytes: 256 << 10,
        ..TreeOptions::default()
    };
    Ok(BackendConfig::lsm(dir.join(format!("lsm-{p}-{i}")))
        .lsm_tree_options(tree)
        .lsm_block_cache_bytes(1 << 20)
        .max_parallelism(MAXP)
        .key_group_range(KeyGroupRange::for_operator(MAXP, p, i)?))
}

fn heap_config(p: u32, i: u32) -> Result<BackendConfig> {
    Ok(BackendConfig::heap()
        .max_parallelism(MAXP)
        .key_group_range(KeyGroupRange::for_operator(MAXP, p, i)?))
}

/// Checkpoints `tasks` as checkpoint `id` (asynchronous phases on other threads).
fn checkpoint(
    storage: &Arc<dyn CheckpointStorage>,
    id: u64,
    tasks: &mut [Backend<u64>],
) -> Result<CompletedCheckpoint> {
    let p = tasks.len() as u32;
    let mut states = Vec::new();
    for (i, b) in tasks.iter_mut().enumerate() {
        let pending = b.snapshot(CheckpointId(id), storage, &format!("task-{i}"))?;
        let written = std::thread::spawn(move || pending.run())
            .join()
            .expect("the asynchronous phase does not panic")?;
        states.push(SubtaskState::new("op", i as u32, p, MAXP).with_keyed(written.handle));
    }
    storage.complete_checkpoint(CheckpointId(id), states)
}

fn restore_all(
    storage: &Arc<dyn CheckpointStorage>,
    done: &CompletedCheckpoint,
    p: u32,
    config: impl Fn(u32) -> Result<BackendConfig>,
) -> Result<Vec<Backend<u64>>> {
    let mut backends = Vec::new();
    for i in 0..p {
        let range = KeyGroupRange::for_operator(MAXP, p, i)?;
        let handles = done.handles_for(range);
        // Canonical files (heap checkpoints) and native snapshots (LSM incremental
        // checkpoints) alike.
        backends.push(Backend::<u64>::restore_from(
            config(i)?,
            &**storage,
            &handles,
        )?);
    }
    Ok(backends)
}

/// Everything of `tasks` in canonical form, per state, merged over the tasks.
fn canonical(tasks: &mut [Backend<u64>]) -> Result<Vec<CanonicalEntries>> {
    let mut out = vec![CanonicalEntries::new(); 4];
    for b in tasks {
        let snap = b.snapshot_state()?;
        for (i, name) in ["value", "list", "map", "reducing"].iter().enumerate() {
            out[i].extend(
                snap.canonical_entries(name)?
                    .expect("the state is snapshotted"),
            );
        }
    }
    Ok(out)
}

#[test]
fn checkpoints_move_between_heap_and_lsm_at_other_parallelisms() -> Result<()> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let storage: Arc<dyn CheckpointStorage> = Arc::new(FsCheckpointStorage::open_local(
        dir.path().join("checkpoints"),
        FsCheckpointOptions::default(),
    )?);
    // Heap, parallelism 2.
    let mut heap: Vec<Backend<u64>> = (0..2)
        .map(|i| Backend::open(heap_config(2, i)?))
        .collect::<Result<_>>()?;
    for b in &mut heap {
        let s = register(b)?;
        fill(b, &s, 1)?;
    }
    let expected = canonical(&mut heap)?;
    let done = checkpoint(&storage, 1, &mut heap)?;

    // LSM, parallelism 3, restored from the heap's checkpoint.
    let mut lsm = restore_all(&storage, &done, 3, |i| lsm_config(dir.path(), 3, i))?;
    let mut total = 0;
    for b in &mut lsm {
        assert_eq!(b.kind(), BackendKind::Lsm);
        let s = register(b)?;
        total += check(b, &s, 1)?;
    }
    assert_eq!(total, KEYS, "every key restored exactly once");
    assert_eq!(
        canonical(&mut lsm)?,
        expected,
        "the LSM backends hold what the heap did"
    );

    // Change the state on the LSM backends (enough to flush and compact), checkpoint them.
    for b in &mut lsm {
        let s = register(b)?;
        for k in 0..KEYS {
            b.set_current_key(&k);
            if owned(b) {
                b.list(&s.list).clear()?;
                b.reducing(&s.reducing).clear()?;
            }
        }
        fill(b, &s, 2)?;
        if let Backend::Lsm(l) = b {
            l.flush_and_compact()?;
            assert!(l.stats().tree.flushes > 0);
        }
    }
    let expected = canonical(&mut lsm)?;
    let done = checkpoint(&storage, 2, &mut lsm)?;

    // Heap, parallelism 1, restored from the LSM's checkpoint; and LSM at 4.
    let mut heap = restore_all(&storage, &done, 1, |i| heap_config(1, i))?;
    let s = register(&mut heap[0])?;
    assert_eq!(check(&mut heap[0], &s, 2)?, KEYS);
    assert_eq!(
        canonical(&mut heap)?,
        expected,
        "the heap holds what the LSM backends did"
    );
    let mut lsm4 = restore_all(&storage, &done, 4, |i| lsm_config(dir.path(), 4, i))?;
    assert_eq!(canonical(&mut lsm4)?, expected);
    Ok(())
}

#[test]
fn a_restored_state_registered_with_other_types_fails_on_lsm() -> Result<()> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut heap = HeapBackend::<u64>::open(heap_config(1, 0)?)?;
    let s = register(&mut heap)?;
    fill(&mut heap, &s, 0)?;
    let snap = heap.snapshot_state()?;
    let mut lsm = LsmBackend::<u64>::restore(lsm_config(dir.path(), 1, 0)?, &[&snap])?;
    assert_eq!(lsm.unregistered_states().len(), 4);
    let err = lsm
        .register(ValueStateDescriptor::<String>::new("value"))
        .unwrap_err();
    assert!(matches!(err, Error::IncompatibleState { .. }), "{err}");
    // Unregistered restored states are still in snapshots, unchanged.
    let again = lsm.snapshot_state()?;
    assert_eq!(
        again.canonical_entries("map")?,
        snap.canonical_entries("map")?
    );
    // A matching registration works and sees the restored state.
    let s = register(&mut lsm)?;
    assert_eq!(check(&mut lsm, &s, 0)?, KEYS);
    Ok(())
}

#[test]
fn memory_stays_within_the_configured_bounds_under_back_pressure() -> Result<()> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let memtable = 256 << 10;
    let max_imm = 1;
    let tree = TreeOptions {
        memtable_bytes: memtable,
        max_immutable_memtables: max_imm,
        l0_compaction_trigger: 2,
        l0_stop_trigger: 4,
        target_table_bytes: 256 << 10,
        level1_max_bytes: 1 << 20,
        ..TreeOptions::default()
    };
    let cache = 512 << 10;
    let mut b = LsmBackend::<u64>::open(
        BackendConfig::lsm(dir.path().join("lsm"))
            .lsm_tree_options(tree)
            .lsm_block_cache_bytes(cache)
            .lsm_background(LsmBackground::Threads(1)),
    )?;
    let v = b.register(ValueStateDescriptor::<Vec<u8>>::new("v"))?;
    let n = 60_000u64;
    let mut peak = 0;
    for k in 0..n {
        b.set_current_key(&k);
        b.value(&v).update(vec![(k % 251) as u8; 100])?;
        if k % 500 == 0 {
            let t = b.stats().tree;
            assert!(t.immutable_memtables <= max_imm, "{t:?}");
            let held = t.memtable_bytes + t.immutable_memtable_bytes;
            assert!(held <= (max_imm + 2) * memtable, "{held} bytes: {t:?}");
            peak = peak.max(held);
            assert!(t.levels[0].tables < 4 + max_imm, "L0 is bounded: {t:?}");
        }
    }
    assert!(peak > memtable / 2, "the bound was approached: {peak}");
    // Random reads through the cache stay within its capacity.
    b.flush_and_compact()?;
    for k in (0..n).step_by(7) {
        b.set_current_key(&k);
        assert_eq!(b.value(&v).get()?, Some(vec![(k % 251) as u8; 100]));
    }
    let stats = b.stats();
    let c = stats.cache.expect("a block cache");
    assert!(c.usage_bytes <= cache, "{c:?}");
    assert!(c.hits > 0 && c.misses > 0, "{c:?}");
    assert!(stats.tree.compactions > 0 && stats.write_amplification() >= 1.0);
    Ok(())
}

#[test]
fn a_failed_background_flush_is_reported_and_loses_nothing_in_memory() -> Result<()> {
    let storage = MemStorage::new();
    let tree = TreeOptions {
        memtable_bytes: 256 << 10,
        max_immutable_memtables: 4,
        ..TreeOptions::default()
    };
    let mut b = LsmBackend::<u64>::open(
        BackendConfig::lsm_on(Arc::new(storage.clone()), "lsm")
            .lsm_tree_options(tree)
            .lsm_background(LsmBackground::Threads(1)),
    )?;
    let v = b.register(ValueStateDescriptor::<u64>::new("v"))?;
    storage.fail_after(1);
    let mut failed = None;
    for k in 0..200_000u64 {
        b.set_current_key(&k);
        if let Err(e) = b.value(&v).update(k) {
            failed = Some((k, e));
            break;
        }
    }
    let (last, err) = failed.expect("a write reports the failed flush");
    assert!(
        matches!(err, Error::BackgroundWork { .. } | Error::Io { .. }),
        "{err}"
    );
    assert_eq!(err.kind(), ErrorKind::Io);
    // What was written before is still readable from memory.
    storage.heal();
    for k in (0..last).step_by(97) {
        b.set_current_key(&k);
        assert_eq!(b.value(&v).get()?, Some(k));
    }
    Ok(())
}

#[test]
fn the_working_directory_is_cleared_at_open_and_removed_after_the_last_reader() -> Result<()> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let work = dir.path().join("work");
    // Files of an earlier backend in the directory: tree files go, others stay.
    std::fs::create_dir_all(&work).expect("create");
    std::fs::write(work.join("000042.sst"), b"stale").expect("write");
    std::fs::write(work.join("MANIFEST"), b"stale").expect("write");
    std::fs::write(work.join("notes.txt"), b"keep").expect("write");
    {
        let b = LsmBackend::<u64>::open(BackendConfig::lsm(&work))?;
        assert!(!work.join("000042.sst").exists() && !work.join("MANIFEST").exists());
        assert!(work.join("notes.txt").exists());
        drop(b);
        assert!(
            work.exists(),
            "a directory the backend did not create stays"
        );
    }

    let fresh = dir.path().join("fresh");
    let mut b =
        LsmBackend::<u64>::open(BackendConfig::lsm(&fresh).lsm_background(LsmBackground::Inline))?;
    let v = b.register(ValueStateDescriptor::<u64>::new("v"))?;
    for k in 0..1_000u64 {
        b.set_current_key(&k);
        b.value(&v).update(k)?;
    }
    b.flush_and_compact()?;
    let snap = b.snapshot_state()?;
    drop(b);
    // The snapshot still reads the tables of the dropped backend.
    let entries = snap.canonical_entries("v")?.expect("state v");
    assert_eq!(entries.len(), 1_000);
    assert!(fresh.exists());
    drop(entries);
    drop(snap);
    assert!(
        !fresh.exists(),
        "the created directory is removed with its files"
    );
    Ok(())
}

/// The bytes of the one keyed state file of checkpoint `done`.
fn keyed_file(dir: &std::path::Path, done: &CompletedCheckpoint) -> Vec<u8> {
    let file = done.files().next().expect("one keyed state file");
    std::fs::read(dir.join(file.path())).expect("the state file reads")
}

/// An LSM checkpoint's keyed state file equals the heap's byte for byte: with the state in
/// memtables and several levels (the merging scan) and after a full compaction (value-like
/// states read straight out of the bottom level's tables).
#[test]
fn lsm_checkpoint_files_equal_the_heap_files_in_every_tree_shape() -> Result<()> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    // Each checkpoint goes to a storage of its own as checkpoint 1: a file records the
    // checkpoint it belongs to (its origin), so only files of one checkpoint id compare equal.
    let storage_at = |name: &str| -> Result<(std::path::PathBuf, Arc<dyn CheckpointStorage>)> {
        let root = dir.path().join(name);
        let storage: Arc<dyn CheckpointStorage> = Arc::new(FsCheckpointStorage::open_local(
            &root,
            FsCheckpointOptions::default(),
        )?);
        Ok((root, storage))
    };
    let (root, storage) = storage_at("heap")?;
    let mut heap = vec![Backend::<u64>::open(heap_config(1, 0)?)?];
    let s = register(&mut heap[0])?;
    fill(&mut heap[0], &s, 5)?;
    let want = keyed_file(&root, &checkpoint(&storage, 1, &mut heap)?);

    let mut lsm = vec![Backend::<u64>::open(
        lsm_config(dir.path(), 1, 0)?.lsm_incremental_checkpoints(false),
    )?];
    let s = register(&mut lsm[0])?;
    fill(&mut lsm[0], &s, 5)?;
    let (root, storage) = storage_at("spread")?;
    let spread = keyed_file(&root, &checkpoint(&storage, 1, &mut lsm)?);
    assert!(spread == want, "state spread over memtables and levels");

    if let Backend::Lsm(b) = &mut lsm[0] {
        b.compact_all()?;
        let levels = b.stats().tree.levels;
        let used: Vec<usize> = (0..levels.len())
            .filter(|&l| levels[l].tables > 0)
            .collect();
        assert_eq!(
            used,
            vec![levels.len() - 1],
            "the bottom level holds every table"
        );
    }
    let (root, storage) = storage_at("compacted")?;
    let compacted = keyed_file(&root, &checkpoint(&storage, 1, &mut lsm)?);
    assert!(compacted == want, "state in one level");
    Ok(())
}

/// The open tables' indexes and filters are charged to the block cache: cached blocks and
/// table memory together stay within the cache's capacity, the charge follows the tables
/// through flushes and compactions, and a backend's tables take it back when it closes.
#[test]
fn table_indexes_and_filters_are_charged_to_the_block_cache() -> Result<()> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let capacity = 1 << 20;
    let cache = Arc::new(flowstate::lsm::ShardedBlockCache::new(capacity));
    let config = BackendConfig::lsm(dir.path().join("lsm"))
        .max_parallelism(MAXP)
        .lsm_memtable_bytes(256 << 10)
        .lsm_shared_cache(Arc::clone(&cache));
    let mut b = Backend::<u64>::open(config)?;
    let v = b.register(ValueStateDescriptor::<u64>::new("v"))?;
    let within = |b: &Backend<u64>| {
        let stats = b.lsm_stats().expect("an LSM backend");
        let c = stats.cache.expect("a block cache");
        assert_eq!(
            c.reserved_bytes, stats.tree.table_memory_bytes,
            "every open table is charged, and only open tables"
        );
        assert!(
            c.usage_bytes + c.reserved_bytes <= c.capacity_bytes,
            "blocks and table memory within the capacity: {c:?}"
        );
        c
    };
    for round in 0..4u64 {
        for k in 0..20_000u64 {
            b.set_current_key(&(k * 7 + round));
            b.value(&v).update(k)?;
        }
        b.flush()?;
        b.wait_idle()?;
        for k in (0..20_000u64).step_by(13) {
            b.set_current_key(&(k * 7 + round));
            assert_eq!(b.value(&v).get()?, Some(k));
        }
        let c = within(&b);
        assert!(c.reserved_bytes > 0 && c.entries > 0, "{c:?}");
    }
    b.compact_all()?;
    b.wait_idle()?;
    within(&b);
    drop(b);
    assert_eq!(
        cache.reserved(),
        0,
        "closing the backend releases its tables' charge"
    );
    Ok(())
}
