//! The asynchronous phase of an LSM backend's checkpoint, outside criterion: a target for
//! `perf record` when working on the snapshot scan.
//!
//! Usage: `cargo run --release -p flowstate-benches --example lsm_snapshot_probe -- [entries] [rounds]`
//! (defaults: 1,000,000 `u64 -> u64` value entries, flushed and compacted into tables; 10
//! checkpoints). Prints the time of each asynchronous phase.

use std::sync::Arc;
use std::time::Instant;

use flowstate::*;
use flowstate_benches::arg;

fn main() -> Result<()> {
    let entries = arg(1, 1_000_000);
    let rounds = arg(2, 10);
    let dir = tempfile::tempdir().map_err(|e| Error::InvalidConfig(e.to_string()))?;
    let storage: Arc<dyn CheckpointStorage> = Arc::new(FsCheckpointStorage::open_local(
        dir.path().join("chk"),
        FsCheckpointOptions::default().with_retained(1),
    )?);
    let mut lsm = Backend::<u64>::open(
        BackendConfig::lsm(dir.path().join("lsm"))
            .max_parallelism(128)
            .lsm_incremental_checkpoints(false),
    )?;
    let state = lsm.register(ValueStateDescriptor::<u64>::new("value"))?;
    for k in 0..entries {
        lsm.set_current_key(&k);
        lsm.value(&state).update(k)?;
    }
    if let Backend::Lsm(l) = &mut lsm {
        l.flush_and_compact()?;
    }
    run(
        &mut lsm,
        &storage,
        entries,
        rounds,
        0,
        "as loaded (flushed, due compactions run)",
    )?;
    if let Backend::Lsm(l) = &mut lsm {
        l.compact_all()?;
        let levels: Vec<usize> = l.stats().tree.levels.iter().map(|l| l.tables).collect();
        println!("tables per level after compacting everything: {levels:?}");
    }
    run(&mut lsm, &storage, entries, rounds, 1000, "compacted")
}

fn run(
    lsm: &mut Backend<u64>,
    storage: &Arc<dyn CheckpointStorage>,
    entries: u64,
    rounds: u64,
    first: u64,
    what: &str,
) -> Result<()> {
    if let Backend::Lsm(l) = lsm {
        let levels: Vec<usize> = l.stats().tree.levels.iter().map(|l| l.tables).collect();
        println!("{what}: tables per level {levels:?}");
    }
    for id in first + 1..=first + rounds {
        let pending = lsm.snapshot(CheckpointId(id), storage, "task")?;
        let t = Instant::now();
        let done = pending.run()?;
        let took = t.elapsed();
        println!(
            "checkpoint {id}: {} bytes in {:.1} ms ({:.0} ns per entry)",
            done.stats.bytes,
            took.as_secs_f64() * 1e3,
            took.as_nanos() as f64 / entries as f64
        );
        storage.abort_checkpoint(CheckpointId(id))?;
    }
    Ok(())
}
