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
        let cpu = process_cpu_ms();
        let t = Instant::now();
        let pending = backend
            .snapshot(CheckpointId(round), &storage, "task-0")?
            .with_compression(compression)
            .with_encode_threads(threads);
        let sync = t.elapsed();
        let result = pending.run()?;
        let cpu = process_cpu_ms().zip(cpu).map(|(b, a)| b - a);
        let secs = result.stats.duration.as_secs_f64();
        println!(
            "sync {:.1} µs; async {:.1} ms (CPU of all threads {} ms), {} bytes, {:.1} MB/s, {:.2} M entries/s",
            sync.as_secs_f64() * 1e6,
            secs * 1e3,
            cpu.map_or("?".to_owned(), |c| c.to_string()),
            result.stats.bytes,
            result.stats.bytes as f64 / secs / 1e6,
            result.stats.entries as f64 / secs / 1e6
        );
        storage.abort_checkpoint(CheckpointId(round))?;
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// User + system CPU time of the process (all threads) in milliseconds, from /proc (Linux;
/// `None` elsewhere). Clock-tick resolution (usually 10 ms): for comparing runs on a machine
/// whose other load makes wall-clock times noisy.
fn process_cpu_ms() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which ends with ')'): utime and stime are 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) * 10)
}
