//! Scratch profile target: the asynchronous phase of a heap checkpoint of N value entries.
//! Usage: `cargo run --release -p flowstate-benches --example async_phase -- [entries] [lz4|none]
//! [rounds] [encode threads]` (threads default: `default_encode_threads()`).

use std::sync::Arc;
use std::time::Instant;

use flowstate::*;

fn main() -> Result<()> {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let compression = match std::env::args().nth(2).as_deref() {
        Some("lz4") => Compression::Lz4,
        _ => Compression::None,
    };
    let dir = std::env::temp_dir().join(format!("flowstate-async-{}", std::process::id()));
    let storage: Arc<dyn CheckpointStorage> = Arc::new(FsCheckpointStorage::new(&dir)?);
    let mut backend = Backend::<u64>::open(BackendConfig::heap())?;
    let state = backend.register(ValueStateDescriptor::<u64>::new("v"))?;
    for k in 0..n {
        backend.set_current_key(&k);
        backend.value(&state).update(k)?;
    }
    let rounds: u64 = std::env::args()
        .nth(3)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let threads: usize = std::env::args()
        .nth(4)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(flowstate::checkpoint::default_encode_threads);
    println!("{n} entries, {threads} encode threads");
    for round in 1..=rounds {
        let t = Instant::now();
        let pending = backend
            .snapshot(CheckpointId(round), &storage, "task-0")?
            .with_compression(compression)
            .with_encode_threads(threads);
        let sync = t.elapsed();
        let result = pending.run()?;
        let secs = result.stats.duration.as_secs_f64();
        println!(
            "sync {:.1} µs; async {:.1} ms, {} bytes, {:.1} MB/s, {:.2} M entries/s",
            sync.as_secs_f64() * 1e6,
            secs * 1e3,
            result.stats.bytes,
            result.stats.bytes as f64 / secs / 1e6,
            result.stats.entries as f64 / secs / 1e6
        );
        storage.abort_checkpoint(CheckpointId(round))?;
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
