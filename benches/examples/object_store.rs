//! Upload and restore throughput of checkpoints on an object store, as a ratio to the local
//! file system in the same run, with 1, 4 and 16 uploads in parallel.
//!
//! ```text
//! source .ci/s3-server.sh    # a local S3 API server (moto); or set FLOWSTATE_S3_URL and AWS_*
//! cargo run --release -p flowstate-benches --features object-store --example object_store -- [MiB]
//! ```
//!
//! Two shapes of one checkpoint of `MiB` MiB (64 by default): 16 files written by P threads at
//! once ("files"), and one file whose multipart upload keeps P parts in flight ("parts", 5 MiB
//! parts, the S3 minimum). The restore reads every file back through `open_state_file` (size
//! and CRC-32C checked) with P threads. Without `FLOWSTATE_S3_URL`, the object store is the
//! in-memory one (`memory://`), which measures this crate's overhead only.

use std::time::Instant;

use flowstate::checkpoint::{
    CheckpointId, CheckpointStorage, FsCheckpointOptions, FsCheckpointStorage, SnapshotTarget,
    StateFile,
};
use flowstate::storage::ObjectStorageOptions;

const PART: usize = 5 << 20;

fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Writes `files` files of `size` bytes as checkpoint `id`, `parallel` at a time; seconds.
fn upload(
    storage: &dyn CheckpointStorage,
    id: u64,
    files: usize,
    size: usize,
    parallel: usize,
) -> (f64, Vec<StateFile>) {
    let data = bytes(size, id);
    let target = SnapshotTarget::checkpoint(CheckpointId(id));
    let start = Instant::now();
    let mut written = Vec::new();
    for batch in (0..files).collect::<Vec<_>>().chunks(parallel) {
        let done: Vec<StateFile> = std::thread::scope(|scope| {
            let handles: Vec<_> = batch
                .iter()
                .map(|&i| {
                    let (target, data) = (&target, &data);
                    scope.spawn(move || {
                        let mut w = storage
                            .create_state_file(target, &format!("file-{i}"))
                            .expect("the file opens");
                        for chunk in data.chunks(1 << 20) {
                            w.write_all(chunk).expect("the write succeeds");
                        }
                        w.finish().expect("the file is published")
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("the writer does not panic"))
                .collect()
        });
        written.extend(done);
    }
    (start.elapsed().as_secs_f64(), written)
}

/// Reads every file back, `parallel` at a time; seconds.
fn restore(storage: &dyn CheckpointStorage, files: &[StateFile], parallel: usize) -> f64 {
    let start = Instant::now();
    for batch in files.chunks(parallel) {
        std::thread::scope(|scope| {
            for file in batch {
                scope.spawn(move || {
                    let r = storage.open_state_file(file).expect("the file opens");
                    let mut buf = vec![0; 1 << 20];
                    let mut at = 0;
                    while at < r.len() {
                        let n = (r.len() - at).min(buf.len() as u64) as usize;
                        r.read_at(at, &mut buf[..n]).expect("the read succeeds");
                        at += n as u64;
                    }
                });
            }
        });
    }
    start.elapsed().as_secs_f64()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mib: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(64);
    let total = mib << 20;
    let url = std::env::var("FLOWSTATE_S3_URL").unwrap_or_else(|_| "memory://bench".into());
    let run = std::process::id();
    println!(
        "object store: {url}; checkpoint of {mib} MiB; MB/s, ratio = object store / local disk"
    );
    println!(
        "{:<7} {:>3} {:>10} {:>10} {:>7} {:>11} {:>11} {:>7}",
        "shape", "P", "disk up", "store up", "ratio", "disk read", "store read", "ratio"
    );
    for (shape, files) in [("files", 16usize), ("parts", 1)] {
        for parallel in [1usize, 4, 16] {
            let options = ObjectStorageOptions::default()
                .with_part_size(PART)
                .with_parts_in_flight(if files == 1 { parallel } else { 1 });
            let store = FsCheckpointStorage::open_url(
                &format!("{url}/bench-{run}-{shape}-{parallel}"),
                FsCheckpointOptions::default(),
                options,
            )?;
            let dir = tempfile::tempdir()?;
            let disk = FsCheckpointStorage::open_local(dir.path(), FsCheckpointOptions::default())?;
            let size = total / files;
            let (disk_up, disk_files) = upload(&disk, 1, files, size, parallel);
            let (store_up, store_files) = upload(&store, 1, files, size, parallel);
            let disk_read = restore(&disk, &disk_files, parallel);
            let store_read = restore(&store, &store_files, parallel);
            let mbs = |secs: f64| total as f64 / 1e6 / secs;
            println!(
                "{:<7} {:>3} {:>10.0} {:>10.0} {:>7.2} {:>11.0} {:>11.0} {:>7.2}",
                shape,
                parallel,
                mbs(disk_up),
                mbs(store_up),
                disk_up / store_up,
                mbs(disk_read),
                mbs(store_read),
                disk_read / store_read
            );
            store.abort(&SnapshotTarget::checkpoint(CheckpointId(1)))?;
        }
    }
    Ok(())
}
