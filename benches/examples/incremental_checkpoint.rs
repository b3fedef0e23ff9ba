//! Incremental checkpoints of the LSM backend beside full ones, in one run (benches/README.md,
//! "Incremental checkpoints").
//!
//! Usage: `cargo run --release -p flowstate-benches --example incremental_checkpoint -- [keys]
//! [rounds] [sync-entries]` (defaults: 2,000,000 `u64 -> u64` value keys; 20 rounds; synchronous
//! phase measured at 1,000,000 and 10,000,000 entries, `0` to skip the 10 M load).
//!
//! Prints, for the same state in the same run:
//!
//! 1. the synchronous phase of an incremental checkpoint at 1 M and 10 M entries (median of 50);
//! 2. after changing 0.1%, 1% and 10% of the keys: the new bytes (the native snapshot file plus
//!    the tables published to `shared/`) and the asynchronous time of an incremental checkpoint,
//!    beside a full canonical checkpoint of the same state and the total bytes the incremental
//!    checkpoint references;
//! 3. 20 rounds of changing 1% of the keys, each followed by an incremental checkpoint, with
//!    flushes and compactions running as they do (background thread): the mean new bytes per
//!    checkpoint as a share of a full checkpoint (the target is at most 3%);
//! 4. restore of the same state from the incremental checkpoint (tables linked) and from the
//!    canonical file (entries sorted into new tables), into the same range and rescaled 1 -> 2.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowstate::checkpoint::SnapshotStats;
use flowstate::lsm::{CheckpointAwareOptions, CompactionPolicy, TreeOptions};
use flowstate::*;
use flowstate_benches::{arg, change_values, load_values, SplitMix64};

const MAXP: u32 = 128;

fn open(dir: &Path, incremental: bool) -> Result<Backend<u64>> {
    Backend::open(
        BackendConfig::lsm(dir)
            .max_parallelism(MAXP)
            .lsm_incremental_checkpoints(incremental),
    )
}

/// Takes checkpoint `id`, completes it and notifies the backend; returns its figures.
fn checkpoint(
    b: &mut Backend<u64>,
    storage: &Arc<dyn CheckpointStorage>,
    id: u64,
) -> Result<(SnapshotStats, Duration, KeyedStateHandle)> {
    let pending = b.snapshot(CheckpointId(id), storage, "task-0")?;
    let t = Instant::now();
    let done = pending.run()?;
    let took = t.elapsed();
    let task = SubtaskState::new("op", 0, 1, MAXP).with_keyed(done.handle.clone());
    storage.complete_checkpoint(CheckpointId(id), vec![task])?;
    b.notify_checkpoint_complete(CheckpointId(id))?;
    Ok((done.stats, took, done.handle))
}

fn storage(dir: &Path) -> Result<Arc<dyn CheckpointStorage>> {
    Ok(Arc::new(FsCheckpointStorage::open_local(
        dir,
        FsCheckpointOptions::default().with_retained(1),
    )?))
}

/// Checkpoints are seconds apart in a job, time enough for the flushes and compactions that
/// are due: run them before each checkpoint, so that the tables they rewrite count.
fn settle(b: &Backend<u64>) -> Result<()> {
    if let Backend::Lsm(l) = b {
        l.flush_and_compact()?;
    }
    Ok(())
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

fn sync_phase(dir: &Path, entries: u64) -> Result<()> {
    let mut b = open(&dir.join(format!("sync-{entries}")), true)?;
    let state = b.register(ValueStateDescriptor::<u64>::new("value"))?;
    load_values(&mut b, state, entries)?;
    let storage = storage(&dir.join(format!("sync-chk-{entries}")))?;
    let mut times = Vec::new();
    for id in 1..=50 {
        b.set_current_key(&id);
        b.value(&state).update(id)?;
        let t = Instant::now();
        let pending = b.snapshot(CheckpointId(id), &storage, "task-0")?;
        times.push(t.elapsed());
        drop(pending);
        storage.abort_checkpoint(CheckpointId(id))?;
    }
    times.sort();
    println!(
        "sync phase at {entries} entries: median {:.1} us, max {:.1} us (50 checkpoints)",
        times[25].as_secs_f64() * 1e6,
        times[49].as_secs_f64() * 1e6
    );
    Ok(())
}

fn main() -> Result<()> {
    let keys = arg(1, 2_000_000);
    let rounds = arg(2, 20);
    let big = arg(3, 10_000_000);
    let steady = arg(4, 100);
    let dir = tempfile::tempdir().map_err(|e| Error::InvalidConfig(e.to_string()))?;
    let dir = dir.path();

    // 1. The synchronous phase.
    sync_phase(dir, 1_000_000)?;
    if big > 0 {
        sync_phase(dir, big)?;
    }
    let mut rows = Vec::new();
    for (name, policy) in [
        ("leveled (default)", CompactionPolicy::Leveled),
        (
            "checkpoint-aware",
            CompactionPolicy::CheckpointAware(CheckpointAwareOptions::default()),
        ),
    ] {
        println!("\n## {name}");
        rows.push((name, run_policy(dir, name, policy, keys, rounds, steady)?));
    }
    println!("\n| policy | {rounds} rounds: mean new / full | worst | {steady} more rounds: mean | space amplification, mean / max | point reads/s |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, r) in rows {
        println!(
            "| {name} | {:.2}% | {:.1}% | {:.2}% | {:.2} / {:.2} | {:.0} |",
            r.mean, r.worst, r.steady_mean, r.space_amp, r.space_max, r.reads_per_sec
        );
    }
    Ok(())
}

/// The figures of one policy.
struct PolicyFigures {
    mean: f64,
    worst: f64,
    steady_mean: f64,
    space_amp: f64,
    space_max: f64,
    reads_per_sec: f64,
}

fn run_policy(
    dir: &Path,
    name: &str,
    policy: CompactionPolicy,
    keys: u64,
    rounds: u64,
    steady: u64,
) -> Result<PolicyFigures> {
    let dir = dir.join(name.replace([' ', '(', ')'], "-"));
    let tree = TreeOptions {
        compaction: policy,
        ..TreeOptions::default()
    };
    let mut inc = Backend::open(
        BackendConfig::lsm(dir.join("inc"))
            .max_parallelism(MAXP)
            .lsm_tree_options(tree),
    )?;
    // 2. New bytes after changing 0.1%, 1% and 10%, beside a full checkpoint of the same state.
    let mut rng = SplitMix64::new(7);
    let state = inc.register(ValueStateDescriptor::<u64>::new("value"))?;
    load_values(&mut inc, state, keys)?;
    settle(&inc)?;
    let inc_storage = storage(&dir.join("inc-chk"))?;
    let full_storage = storage(&dir.join("full-chk"))?;
    let (first, took, _) = checkpoint(&mut inc, &inc_storage, 1)?;
    println!(
        "first incremental checkpoint of {keys} keys: {:.1} MB new in {} tables ({} linked), {:.0} ms",
        mb(first.new_bytes()),
        first.new_shared_files,
        first.linked_files,
        took.as_secs_f64() * 1e3
    );
    let mut id = 1;
    println!("| change | incremental: new bytes | async | full canonical: bytes | async | new / full | referenced |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for share in [0.001, 0.01, 0.1] {
        change_values(
            &mut inc,
            state,
            keys,
            (keys as f64 * share) as u64,
            &mut rng,
        )?;
        settle(&inc)?;
        id += 1;
        // The full checkpoint of the same state: the canonical file of the same view.
        let view = inc.snapshot_state()?;
        let full_pending = PendingSnapshot::new(
            view,
            CheckpointId(id).into(),
            full_storage.clone(),
            "task-0",
        );
        let t = Instant::now();
        let full = full_pending.run()?;
        let full_took = t.elapsed();
        full_storage.abort_checkpoint(CheckpointId(id))?;
        let (stats, took, _) = checkpoint(&mut inc, &inc_storage, id)?;
        println!(
            "| {:.1}% | {:.2} MB | {:.1} ms | {:.1} MB | {:.1} ms | {:.1}% | {:.1} MB |",
            share * 100.0,
            mb(stats.new_bytes()),
            took.as_secs_f64() * 1e3,
            mb(full.stats.bytes),
            full_took.as_secs_f64() * 1e3,
            100.0 * stats.new_bytes() as f64 / full.stats.bytes as f64,
            mb(stats.shared_bytes),
        );
    }

    // 3. Rounds of 1% changes, compactions included.
    let full_bytes = {
        let view = inc.snapshot_state()?;
        let pending =
            PendingSnapshot::new(view, CheckpointId(id + 1).into(), full_storage.clone(), "t");
        let bytes = pending.run()?.stats.bytes;
        full_storage.abort_checkpoint(CheckpointId(id + 1))?;
        bytes
    };
    let mut new_total = 0u64;
    let mut worst = 0u64;
    let mut compactions_before = match &inc {
        Backend::Lsm(l) => l.stats().tree.compactions,
        _ => 0,
    };
    for _ in 0..rounds {
        change_values(&mut inc, state, keys, (keys as f64 * 0.01) as u64, &mut rng)?;
        settle(&inc)?;
        id += 1;
        let (stats, _, _) = checkpoint(&mut inc, &inc_storage, id)?;
        new_total += stats.new_bytes();
        worst = worst.max(stats.new_bytes());
    }
    let (compactions, levels) = match &inc {
        Backend::Lsm(l) => {
            let stats = l.stats().tree;
            let levels: Vec<usize> = stats.levels.iter().map(|l| l.tables).collect();
            (stats.compactions - compactions_before, levels)
        }
        _ => (0, Vec::new()),
    };
    println!("tables per level after the rounds: {levels:?}");
    if let Backend::Lsm(l) = &inc {
        println!("background steps: {}", l.stats().background_steps);
    }
    compactions_before = 0;
    let _ = compactions_before;
    let mean = 100.0 * (new_total as f64 / rounds.max(1) as f64) / full_bytes as f64;
    let worst = 100.0 * worst as f64 / full_bytes as f64;
    println!(
        "{rounds} rounds of 1% changes: mean new bytes per checkpoint {:.2} MB = {mean:.2}% of a \
         full checkpoint ({:.1} MB); worst round {worst:.1}%; {compactions} compactions ran",
        mb(new_total / rounds.max(1)),
        mb(full_bytes),
    );
    // The same, longer: base merges of the checkpoint-aware policy come every
    // delta_ratio / 1% rounds.
    let mut steady_total = 0u64;
    let tree_bytes = |b: &Backend<u64>| match b {
        Backend::Lsm(l) => l.stats().tree.levels.iter().map(|l| l.bytes).sum::<u64>(),
        _ => 0,
    };
    let (mut bytes_sum, mut bytes_max) = (0u64, 0u64);
    for _ in 0..steady {
        change_values(&mut inc, state, keys, (keys as f64 * 0.01) as u64, &mut rng)?;
        settle(&inc)?;
        id += 1;
        let (stats, _, _) = checkpoint(&mut inc, &inc_storage, id)?;
        steady_total += stats.new_bytes();
        let bytes = tree_bytes(&inc);
        bytes_sum += bytes;
        bytes_max = bytes_max.max(bytes);
    }
    let steady_mean = 100.0 * (steady_total as f64 / steady.max(1) as f64) / full_bytes as f64;
    println!("{steady} more rounds: mean new bytes {steady_mean:.2}% of a full checkpoint");
    // Point reads of random keys, then space amplification: the tree's bytes against the
    // same data compacted into one level.
    let reads = 200_000u64;
    let t = Instant::now();
    let mut found = 0u64;
    for _ in 0..reads {
        inc.set_current_key(&rng.below(keys));
        found += u64::from(inc.value(&state).get()?.is_some());
    }
    let reads_per_sec = reads as f64 / t.elapsed().as_secs_f64();
    assert_eq!(found, reads, "every key has a value");
    let levels_now: Vec<usize> = match &inc {
        Backend::Lsm(l) => l.stats().tree.levels.iter().map(|l| l.tables).collect(),
        _ => Vec::new(),
    };
    if let Backend::Lsm(l) = &inc {
        l.compact_all()?;
    }
    let live = tree_bytes(&inc).max(1) as f64;
    let space_amp = bytes_sum as f64 / steady.max(1) as f64 / live;
    let space_max = bytes_max as f64 / live;
    println!(
        "point reads: {reads_per_sec:.0}/s (tables per level {levels_now:?}); space amplification \
         over the {steady} rounds: mean {space_amp:.2}, max {space_max:.2}"
    );

    // 4. Restore: linked tables vs the canonical file, same range and rescaled.
    let id = id + 1;
    let (_, _, handle) = checkpoint(&mut inc, &inc_storage, id + 1)?;
    let view = inc.snapshot_state()?;
    let canonical = PendingSnapshot::new(
        view,
        CheckpointId(id + 2).into(),
        full_storage.clone(),
        "task-0",
    )
    .run()?;
    full_storage.complete_checkpoint(
        CheckpointId(id + 2),
        vec![SubtaskState::new("op", 0, 1, MAXP).with_keyed(canonical.handle.clone())],
    )?;
    drop(inc);
    for (what, ranges) in [
        ("same range", vec![KeyGroupRange::new(0, 127)?]),
        (
            "rescaled 1 -> 2",
            vec![
                KeyGroupRange::for_operator(MAXP, 2, 0)?,
                KeyGroupRange::for_operator(MAXP, 2, 1)?,
            ],
        ),
    ] {
        let mut times = [Duration::ZERO; 2];
        for (i, (storage, handle)) in [(&inc_storage, &handle), (&full_storage, &canonical.handle)]
            .into_iter()
            .enumerate()
        {
            let t = Instant::now();
            for (j, range) in ranges.iter().enumerate() {
                let config = BackendConfig::lsm(dir.join(format!("restore-{what}-{i}-{j}")))
                    .max_parallelism(MAXP)
                    .key_group_range(*range);
                let b =
                    Backend::<u64>::restore_from(config, &**storage, std::slice::from_ref(handle))?;
                drop(b);
            }
            times[i] = t.elapsed();
        }
        println!(
            "restore {what}: from the incremental checkpoint {:.0} ms, from the canonical file {:.0} ms ({:.2}x)",
            times[0].as_secs_f64() * 1e3,
            times[1].as_secs_f64() * 1e3,
            times[1].as_secs_f64() / times[0].as_secs_f64()
        );
    }
    Ok(PolicyFigures {
        mean,
        worst,
        steady_mean,
        space_amp,
        space_max,
        reads_per_sec,
    })
}
