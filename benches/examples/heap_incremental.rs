//! Incremental checkpoints of the heap backend beside full ones, in one run (benches/README.md,
//! "Heap incremental checkpoints").
//!
//! Usage: `cargo run --release -p flowstate-benches --example heap_incremental -- [keys]
//! [updates] [runs]` (defaults: 2,000,000 `u64 -> u64` value keys; 2,000,000 updates for the
//! access-path rows; 3 runs, medians).
//!
//! Prints, for the same state in the same run:
//!
//! 1. after changing 0.1%, 1% and 10% of the keys: the bytes and the asynchronous time of the
//!    incremental checkpoint (a delta against the confirmed base) beside a full checkpoint of the
//!    same state (the target at 1%: at most 5% of the bytes);
//! 2. the access path with incremental checkpoints on and off: random value updates with a
//!    checkpoint every 10% of them (completed and confirmed), update time only (the target: at
//!    most 10% slower). With them on, the confirmed checkpoint's view shares the maps' buckets,
//!    so the first write to a bucket after each checkpoint copies it;
//! 3. restore time against chain length (a base and 0, 2, 4 and 8 deltas of 1% each), beside a
//!    restore of one full file of the same state.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowstate::checkpoint::SnapshotStats;
use flowstate::heap::HeapIncremental;
use flowstate::*;
use flowstate_benches::{arg, change_values, load_values, SplitMix64};

const MAXP: u32 = 128;

fn open(incremental: Option<HeapIncremental>) -> Result<(Backend<u64>, ValueState<u64>)> {
    let mut b = Backend::open(
        BackendConfig::heap()
            .max_parallelism(MAXP)
            .heap_incremental_checkpoints(incremental),
    )?;
    let state = b.register(ValueStateDescriptor::<u64>::new("value"))?;
    Ok((b, state))
}

fn storage(dir: &Path) -> Result<Arc<dyn CheckpointStorage>> {
    Ok(Arc::new(FsCheckpointStorage::open_local(
        dir,
        FsCheckpointOptions::default().with_retained(1),
    )?))
}

/// Takes checkpoint `id`, completes it and notifies the backend; returns its figures, its
/// asynchronous time and the completed checkpoint.
fn checkpoint(
    b: &mut Backend<u64>,
    storage: &Arc<dyn CheckpointStorage>,
    id: u64,
) -> Result<(SnapshotStats, Duration, CompletedCheckpoint)> {
    let pending = b.snapshot(CheckpointId(id), storage, "task-0")?;
    let t = Instant::now();
    let done = pending.run()?;
    let took = t.elapsed();
    let task = SubtaskState::new("op", 0, 1, MAXP).with_keyed(done.handle);
    let completed = storage.complete_checkpoint(CheckpointId(id), vec![task])?;
    b.notify_checkpoint_complete(CheckpointId(id))?;
    Ok((done.stats, took, completed))
}

/// The bytes a checkpoint added to the storage.
fn new_bytes(s: &SnapshotStats) -> u64 {
    s.new_bytes()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() -> Result<()> {
    let keys = arg(1, 2_000_000);
    let updates = arg(2, 2_000_000);
    let runs = arg(3, 3).max(1);
    let dir = tempfile::tempdir().map_err(|e| Error::InvalidConfig(e.to_string()))?;
    let dir = dir.path();
    println!(
        "{keys} u64 -> u64 value keys, {runs} runs, medians; checkpoints on the local disk (fsync)"
    );

    // 1. Bytes and asynchronous time of a delta beside a full checkpoint of the same state.
    println!("\n| changed | delta bytes | full bytes | bytes delta / full | delta async (ms) | full async (ms) | time delta / full |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for share in [0.001, 0.01, 0.1] {
        let (mut delta_ms, mut full_ms) = (Vec::new(), Vec::new());
        let (mut delta_bytes, mut full_bytes) = (0, 0);
        for run in 0..runs {
            let (mut b, state) = open(Some(HeapIncremental::default()))?;
            load_values(&mut b, state, keys)?;
            let inc = storage(&dir.join(format!("d-{share}-{run}")))?;
            checkpoint(&mut b, &inc, 1)?;
            let mut rng = SplitMix64::new(run);
            change_values(&mut b, state, keys, (keys as f64 * share) as u64, &mut rng)?;
            let (stats, took, _) = checkpoint(&mut b, &inc, 2)?;
            delta_bytes = new_bytes(&stats);
            delta_ms.push(took);
            // The full checkpoint of the same state: the canonical file a heap backend without
            // incremental checkpoints writes.
            let full = storage(&dir.join(format!("f-{share}-{run}")))?;
            let view = b.snapshot_state()?;
            let pending =
                PendingSnapshot::new(view, CheckpointId(2).into(), full.clone(), "task-0");
            let t = Instant::now();
            let done = pending.run()?;
            full_ms.push(t.elapsed());
            full_bytes = done.stats.bytes;
        }
        let (d, f) = (median(delta_ms), median(full_ms));
        println!(
            "| {:.1}% | {delta_bytes} | {full_bytes} | {:.2}% | {:.0} | {:.0} | {:.2} |",
            share * 100.0,
            delta_bytes as f64 * 100.0 / full_bytes as f64,
            ms(d),
            ms(f),
            d.as_secs_f64() / f.as_secs_f64()
        );
    }

    // 2. The access path with tracking (incremental checkpoints) on and off.
    println!(
        "\n| incremental | {updates} updates (ms, checkpoints excluded) | Mupdates/s | on / off |"
    );
    println!("|---|---:|---:|---:|");
    let mut base = None;
    for incremental in [false, true] {
        let mut times = Vec::new();
        for run in 0..runs {
            let (mut b, state) = open(incremental.then(HeapIncremental::default))?;
            load_values(&mut b, state, keys)?;
            let chk = storage(&dir.join(format!("a-{incremental}-{run}")))?;
            checkpoint(&mut b, &chk, 1)?;
            let mut rng = SplitMix64::new(100 + run);
            let mut took = Duration::ZERO;
            for round in 0..10 {
                let t = Instant::now();
                change_values(&mut b, state, keys, updates / 10, &mut rng)?;
                took += t.elapsed();
                checkpoint(&mut b, &chk, round + 2)?;
            }
            times.push(took);
        }
        let t = median(times);
        let off = *base.get_or_insert(t);
        println!(
            "| {} | {:.0} | {:.2} | {:.2} |",
            if incremental { "on" } else { "off" },
            ms(t),
            updates as f64 / t.as_secs_f64() / 1e6,
            t.as_secs_f64() / off.as_secs_f64()
        );
    }

    // 3. Restore time against chain length, beside one full file.
    println!("\n| restore from | files | bytes | restore (ms) | / full |");
    println!("|---|---:|---:|---:|---:|");
    let limits = HeapIncremental {
        max_deltas: 8,
        max_delta_ratio: 100.0,
    };
    let all = KeyGroupRange::all(MAXP)?;
    let restore_time = |storage: &Arc<dyn CheckpointStorage>, done: &CompletedCheckpoint| {
        let mut times = Vec::new();
        for _ in 0..runs {
            let t = Instant::now();
            let b = Backend::<u64>::restore_from(
                BackendConfig::heap().max_parallelism(MAXP),
                &**storage,
                &done.handles_for(all),
            )?;
            times.push(t.elapsed());
            drop(b);
        }
        Ok::<_, Error>(median(times))
    };
    let (mut b, state) = open(Some(limits))?;
    load_values(&mut b, state, keys)?;
    let chk = storage(&dir.join("chain"))?;
    let mut rng = SplitMix64::new(9);
    let mut full_time = None;
    for deltas in 0..=8u64 {
        if deltas > 0 {
            change_values(&mut b, state, keys, keys / 100, &mut rng)?;
        }
        let (_, _, done) = checkpoint(&mut b, &chk, deltas + 1)?;
        if ![0, 2, 4, 8].contains(&deltas) {
            continue;
        }
        let bytes: u64 = done.shared_files().map(StateFile::size).sum();
        let t = restore_time(&chk, &done)?;
        if deltas == 0 {
            full_time = Some(t);
        }
        let full = full_time.unwrap_or(t);
        println!(
            "| base + {deltas} deltas | {} | {bytes} | {:.0} | {:.2} |",
            deltas + 1,
            ms(t),
            t.as_secs_f64() / full.as_secs_f64()
        );
    }
    Ok(())
}
