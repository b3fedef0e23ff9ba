//! `ObjectStorage` (feature `object-store`): the storage interface on an in-memory object
//! store and on a real S3-compatible server (`FLOWSTATE_S3_URL`, started by `.ci/run`); faults
//! injected under it (503s, stalled requests, the server gone mid-checkpoint through a proxy
//! that is stopped and started again); incremental LSM checkpoints uploading only new tables.
#![cfg(feature = "object-store")]

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use flowstate::checkpoint::{
    CheckpointId, CheckpointStorage, FsCheckpointOptions, FsCheckpointStorage, SubtaskState,
};
use flowstate::lsm::LsmBackground;
use flowstate::storage::object_store::memory::InMemory;
use flowstate::storage::object_store::ObjectStore;
use flowstate::storage::{FaultyObjectStore, ObjectStorage, ObjectStorageOptions, Storage, ROOT};
use flowstate::*;

const MAXP: u32 = 128;

use common::object::{s3_url, unique};

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// The storage interface's behaviour on object stores, with parts of `part` bytes.
fn storage_behaviour(s: &ObjectStorage, part: usize) {
    // A small file: one PUT at sync; invisible before.
    let mut f = s.create("chk-1/small").unwrap();
    f.write_all(b"hello ").unwrap();
    f.write_all(b"object").unwrap();
    assert!(!s.exists("chk-1/small").unwrap(), "visible before sync");
    f.sync().unwrap();
    assert!(f.write_all(b"more").is_err(), "no append after publishing");
    assert_eq!(s.read_all("chk-1/small", 100).unwrap(), b"hello object");

    // A file of several parts, written in odd pieces: a multipart upload.
    let big = pattern(part * 2 + part / 3, 7);
    let mut f = s.create("chk-1/big").unwrap();
    for piece in big.chunks(part / 2 + 13) {
        f.write_all(piece).unwrap();
    }
    assert_eq!(f.len(), big.len() as u64);
    f.sync().unwrap();
    let r = s.open("chk-1/big").unwrap();
    assert_eq!(r.len(), big.len() as u64);
    // Reads inside, across and past windows.
    for (at, n) in [
        (0, 10),
        (part as u64 - 5, 10),
        (big.len() as u64 - 7, 7),
        (3, part + 5),
    ] {
        let mut buf = vec![0; n];
        r.read_at(at, &mut buf).unwrap();
        assert_eq!(
            buf,
            big[at as usize..at as usize + n],
            "read of {n} at {at}"
        );
    }
    let err = r.read_at(big.len() as u64 - 3, &mut [0; 4]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io, "{err}");

    // A writer dropped unpublished leaves nothing, whether or not its upload began.
    for len in [10, part + 1] {
        let mut f = s.create("chk-1/dropped").unwrap();
        f.write_all(&pattern(len, 1)).unwrap();
        drop(f);
        assert!(!s.exists("chk-1/dropped").unwrap());
    }

    // Directories exist while objects are under them; listings are sorted names.
    assert_eq!(s.list_dir("chk-1").unwrap(), ["big", "small"]);
    assert!(s.list_dir(ROOT).unwrap().contains(&"chk-1".to_string()));
    assert!(s.exists("chk-1").unwrap());
    assert!(
        s.list_dir("chk-1/small").is_err(),
        "an object is not a directory"
    );
    assert!(s.list_dir("nothing").unwrap().is_empty());

    // Conditional create: never over an existing object.
    s.write_new("chk-1/_metadata", b"first").unwrap();
    let err = s.write_new("chk-1/_metadata", b"second").unwrap_err();
    assert!(err.to_string().contains("exist"), "{err}");
    assert_eq!(s.read_all("chk-1/_metadata", 100).unwrap(), b"first");
    s.write_atomic("chk-1/_metadata", b"replaced").unwrap();
    assert_eq!(s.read_all("chk-1/_metadata", 100).unwrap(), b"replaced");

    // Removal: a missing object is no error; a directory goes whole.
    s.remove_file("chk-1/small").unwrap();
    s.remove_file("chk-1/small").unwrap();
    s.rename("chk-1/big", "chk-2/big").unwrap();
    assert!(!s.exists("chk-1/big").unwrap());
    s.remove_dir_all("chk-1").unwrap();
    assert!(!s.exists("chk-1").unwrap());
    assert_eq!(s.read_all("chk-2/big", 1 << 30).unwrap(), big);
    assert!(s.remove_dir_all(ROOT).is_err(), "the root is never removed");
    assert!(s.open("../escape").is_err(), "paths are checked");
}

#[test]
fn object_storage_behaves_as_a_storage_in_memory() {
    let options = ObjectStorageOptions::default()
        .with_part_size(1000)
        .with_read_window(4096);
    let s = ObjectStorage::from_url(&unique("memory://behaviour"), options).unwrap();
    storage_behaviour(&s, 1000);
}

#[test]
fn object_storage_behaves_as_a_storage_on_s3() {
    let Some(url) = s3_url() else { return };
    // S3 refuses parts under 5 MiB (but the last).
    let part = 5 << 20;
    let options = ObjectStorageOptions::default().with_part_size(part);
    let s = ObjectStorage::from_url(&unique(&url), options).unwrap();
    storage_behaviour(&s, part);
}

#[test]
fn urls_name_the_store_and_bad_ones_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().join("root").display());
    let s = ObjectStorage::from_url(&url, Default::default()).unwrap();
    s.write_atomic("chk-1/_metadata", b"on disk").unwrap();
    assert_eq!(
        std::fs::read(dir.path().join("root/chk-1/_metadata")).unwrap(),
        b"on disk"
    );
    // memory://name is shared by the process.
    let a = ObjectStorage::from_url("memory://shared-by-name/x", Default::default()).unwrap();
    a.write_atomic("f", b"1").unwrap();
    let b = ObjectStorage::from_url("memory://shared-by-name/x", Default::default()).unwrap();
    assert_eq!(b.read_all("f", 10).unwrap(), b"1");
    for bad in ["ftp://host/x", "not a url", "file://relative"] {
        let err = ObjectStorage::from_url(bad, Default::default()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Usage, "{bad}: {err}");
        assert!(err.to_string().contains(bad), "{err}");
    }
}

/// Writes checkpoint `id` of two tasks (a keyed file and a shared file each) and completes it.
fn checkpoint(storage: &dyn CheckpointStorage, id: u64, size: usize) -> Result<()> {
    let mut tasks = Vec::new();
    for index in 0..2u32 {
        let range = KeyGroupRange::for_operator(MAXP, 2, index)?;
        let bytes = pattern(size, (id * 2 + u64::from(index)) as u8);
        let handle = storage.write_keyed_state_bytes(
            &CheckpointId(id).into(),
            &format!("op-{index}-keyed"),
            range,
            &bytes,
        )?;
        tasks.push(SubtaskState::new("op", index, 2, MAXP).with_keyed(handle));
    }
    storage.complete_checkpoint(CheckpointId(id), tasks)?;
    Ok(())
}

fn assert_checkpoint(storage: &dyn CheckpointStorage, id: u64, size: usize) {
    let done = storage.load_checkpoint(CheckpointId(id)).unwrap();
    for task in done.tasks() {
        let file = &task.keyed[0].files()[0];
        let r = storage.open_state_file(file).unwrap();
        let mut buf = vec![0; r.len() as usize];
        r.read_at(0, &mut buf).unwrap();
        let expected = pattern(size, (id * 2 + u64::from(task.subtask_index)) as u8);
        assert_eq!(buf, expected, "checkpoint {id} task {}", task.subtask_index);
    }
}

fn faulty_storage(options: ObjectStorageOptions) -> (FaultyObjectStore, FsCheckpointStorage) {
    let faulty = FaultyObjectStore::new(Arc::new(InMemory::new()));
    let storage = ObjectStorage::new(Arc::new(faulty.clone()), "root", "faulty", options).unwrap();
    let checkpoints =
        FsCheckpointStorage::open(Arc::new(storage), FsCheckpointOptions::default()).unwrap();
    (faulty, checkpoints)
}

#[test]
fn transient_errors_and_stalled_requests_are_retried_through() {
    // Files below the part size: single PUTs, which this layer retries. (The parts of a
    // multipart upload are retried by the cloud client underneath, below this wrapper; a
    // part that still fails fails its file: the sweep below covers that.)
    let options = ObjectStorageOptions::default()
        .with_part_size(1 << 20)
        .with_retries(6, Duration::from_millis(1), Duration::from_millis(10))
        .with_request_timeout(Duration::from_millis(100));
    let (faulty, storage) = faulty_storage(options);
    // Every third request answers 503; every seventh stalls past the timeout.
    faulty.fail_every(3);
    faulty.hang_every(7, Duration::from_millis(400));
    for id in 1..=4 {
        checkpoint(&storage, id, 10_000).unwrap();
    }
    assert!(faulty.injected() > 20, "{} faults", faulty.injected());
    faulty.heal();
    assert_eq!(storage.completed().unwrap(), [CheckpointId(4)]);
    assert_checkpoint(&storage, 4, 10_000);
}

#[test]
fn a_failure_at_every_request_of_a_checkpoint_keeps_the_previous_one() {
    let size = 3000;
    let mut n = 0;
    let mut outcomes = BTreeSet::new();
    loop {
        let options = ObjectStorageOptions::default()
            .with_part_size(1024)
            .with_retries(1, Duration::ZERO, Duration::ZERO);
        let (faulty, storage) = faulty_storage(options.clone());
        checkpoint(&storage, 1, size).unwrap();
        let start = faulty.requests();
        faulty.fail_after(n);
        let acknowledged = checkpoint(&storage, 2, size).is_ok();
        let reached = faulty.requests() - start > n;
        // The process dies; the store comes back; the owner starts again.
        drop(storage);
        faulty.heal();
        let object =
            ObjectStorage::new(Arc::new(faulty.clone()), "root", "faulty", options).unwrap();
        let object: Arc<dyn Storage> = Arc::new(object);
        let storage =
            FsCheckpointStorage::open(Arc::clone(&object), FsCheckpointOptions::default()).unwrap();
        let latest = storage.latest_completed().unwrap().unwrap().id().0;
        if acknowledged {
            assert_eq!(latest, 2, "n = {n}: an acknowledged checkpoint is kept");
        }
        assert_checkpoint(&storage, latest, size);
        // Garbage is collected: only the latest checkpoint's objects remain.
        let mut root = object.list_dir(ROOT).unwrap();
        root.retain(|name| name != "shared" && name != "taskowned");
        assert_eq!(root, [format!("chk-{latest}")], "n = {n}");
        assert_eq!(
            object.list_dir(&format!("chk-{latest}")).unwrap(),
            ["_metadata", "op-0-keyed", "op-1-keyed"],
            "n = {n}"
        );
        outcomes.insert(latest);
        if !reached {
            break;
        }
        n += 1;
    }
    assert_eq!(outcomes, BTreeSet::from([1, 2]));
    assert!(n > 10, "the sweep covered the uploads: {n}");
}

/// A TCP proxy on loopback in front of the S3 server that can be stopped (connections
/// refused, open ones cut) and started again on the same port: the server gone and back.
struct Proxy {
    port: u16,
    up: Arc<AtomicBool>,
}

impl Proxy {
    fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let flag = Arc::clone(&up);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if !flag.load(Ordering::SeqCst) {
                    drop(client); // refused: closed at once
                    continue;
                }
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let flag = Arc::clone(&flag);
                pipe(client, server, flag);
            }
        });
        Proxy { port, up }
    }

    fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
    }
}

/// Copies bytes both ways until either side closes or the proxy is stopped.
fn pipe(client: TcpStream, server: TcpStream, up: Arc<AtomicBool>) {
    for (mut from, mut to) in [
        (client.try_clone().unwrap(), server.try_clone().unwrap()),
        (server, client),
    ] {
        let up = Arc::clone(&up);
        std::thread::spawn(move || {
            from.set_read_timeout(Some(Duration::from_millis(50))).ok();
            let mut buf = [0u8; 64 << 10];
            loop {
                if !up.load(Ordering::SeqCst) {
                    let _ = to.shutdown(std::net::Shutdown::Both);
                    let _ = from.shutdown(std::net::Shutdown::Both);
                    return;
                }
                match from.read(&mut buf) {
                    Ok(0) => {
                        let _ = to.shutdown(std::net::Shutdown::Write);
                        return;
                    }
                    Ok(n) => {
                        if to.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => return,
                }
            }
        });
    }
}

#[test]
fn the_s3_server_gone_mid_checkpoint_and_back_loses_nothing() {
    let Some(url) = s3_url() else { return };
    let endpoint = std::env::var("AWS_ENDPOINT_URL").expect("the server's endpoint");
    let upstream = endpoint.trim_start_matches("http://").to_string();
    let proxy = Proxy::start(upstream);
    let bucket = url
        .trim_start_matches("s3://")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let prefix = unique("outage").trim_start_matches('/').to_string();
    let open = |attempts: usize| {
        let s3 = flowstate::storage::object_store::aws::AmazonS3Builder::from_env()
            .with_bucket_name(&bucket)
            .with_endpoint(format!("http://127.0.0.1:{}", proxy.port))
            .with_allow_http(true)
            .with_retry(flowstate::storage::object_store::RetryConfig {
                max_retries: 1,
                retry_timeout: Duration::from_secs(2),
                ..Default::default()
            })
            .build()
            .unwrap();
        let s3: Arc<dyn ObjectStore> = Arc::new(s3);
        let options = ObjectStorageOptions::default()
            .with_retries(
                attempts,
                Duration::from_millis(100),
                Duration::from_millis(800),
            )
            .with_request_timeout(Duration::from_secs(2));
        let storage = ObjectStorage::new(s3, &prefix, "s3-through-proxy", options).unwrap();
        FsCheckpointStorage::open(Arc::new(storage), FsCheckpointOptions::default())
    };
    let size = 200_000;
    let storage = open(8).unwrap();
    checkpoint(&storage, 1, size).unwrap();

    // A short outage in the middle of checkpoint 2's uploads: the retries ride through it.
    std::thread::scope(|scope| {
        scope.spawn(|| {
            std::thread::sleep(Duration::from_millis(20));
            proxy.set_up(false);
            std::thread::sleep(Duration::from_millis(600));
            proxy.set_up(true);
        });
        checkpoint(&storage, 2, size).unwrap();
    });
    assert_checkpoint(&storage, 2, size);
    drop(storage);

    // A long outage: checkpoint 3 fails (unacknowledged); the process dies.
    let storage = open(2).unwrap();
    proxy.set_up(false);
    assert!(checkpoint(&storage, 3, size).is_err());
    drop(storage);
    assert!(
        open(1).is_err(),
        "the owner cannot start while the server is gone"
    );

    // The server is back: checkpoint 2 is the latest and intact, garbage is collected.
    proxy.set_up(true);
    let storage = open(8).unwrap();
    assert_eq!(storage.completed().unwrap(), [CheckpointId(2)]);
    assert_checkpoint(&storage, 2, size);
    checkpoint(&storage, 4, size).unwrap();
    assert_checkpoint(&storage, 4, size);
}

#[test]
fn incremental_lsm_checkpoints_upload_only_tables_the_store_lacks() {
    let faulty = FaultyObjectStore::new(Arc::new(InMemory::new()));
    let object =
        ObjectStorage::new(Arc::new(faulty.clone()), "", "memory", Default::default()).unwrap();
    let storage: Arc<dyn CheckpointStorage> = Arc::new(
        FsCheckpointStorage::open(
            Arc::new(object),
            FsCheckpointOptions::default().with_retained(2),
        )
        .unwrap(),
    );
    let work = tempfile::tempdir().unwrap();
    let config = BackendConfig::lsm(work.path())
        .max_parallelism(MAXP)
        .lsm_memtable_bytes(256 << 10)
        .lsm_background(LsmBackground::Inline);
    let mut backend = Backend::<u64>::open(config).unwrap();
    let h = common::all_kinds::register(&mut backend);
    let mut model = common::all_kinds::Model::default();
    let keys = 20_000;
    for k in 0..keys {
        common::all_kinds::touch(&mut backend, &h, &mut model, k, 0);
    }
    let mut uploaded = Vec::new();
    let mut held: BTreeSet<String> = BTreeSet::new();
    for id in 1..=3u64 {
        if id > 1 {
            for k in (0..keys).step_by(100) {
                common::all_kinds::touch(&mut backend, &h, &mut model, k, id);
            }
        }
        let before = faulty.bytes_put();
        let done = backend
            .snapshot(CheckpointId(id), &storage, "op-0")
            .and_then(|p| p.run())
            .unwrap();
        storage
            .complete_checkpoint(
                CheckpointId(id),
                vec![SubtaskState::new("op", 0, 1, MAXP).with_keyed(done.handle.clone())],
            )
            .unwrap();
        let sent = faulty.bytes_put() - before;
        // What the store lacked: the shared files it did not hold yet, the private files and
        // the `_metadata`; the tables it held already are referenced, not sent again.
        let new_shared: u64 = done
            .handle
            .shared_files()
            .iter()
            .filter(|f| !held.contains(f.path()))
            .map(|f| f.size())
            .sum();
        let private: u64 = done.handle.files().iter().map(|f| f.size()).sum();
        assert!(
            sent >= new_shared + private && sent <= new_shared + private + (64 << 10),
            "checkpoint {id}: {sent} bytes sent, {new_shared} new shared, {private} private"
        );
        held.extend(
            done.handle
                .shared_files()
                .iter()
                .map(|f| f.path().to_string()),
        );
        uploaded.push(sent);
    }
    // 1% of the keys changed: once the compaction that the first change set off is behind,
    // a small fraction of the first upload goes up again.
    assert!(
        uploaded[2] * 5 < uploaded[0],
        "bytes uploaded per checkpoint: {uploaded:?}"
    );
    // And the chain restores, from the store, into a fresh backend, downloading each table
    // once (the checksum is taken as the bytes stream into the working directory).
    let latest = storage.latest_completed().unwrap().unwrap();
    let table_bytes: u64 = latest
        .tasks()
        .iter()
        .flat_map(|t| &t.keyed)
        .flat_map(|h| h.shared_files().iter().chain(h.files()))
        .map(|f| f.size())
        .sum();
    let got_before = faulty.bytes_got();
    let restore_dir = tempfile::tempdir().unwrap();
    let mut restored = Backend::<u64>::restore_from(
        BackendConfig::lsm(restore_dir.path())
            .max_parallelism(MAXP)
            .lsm_background(LsmBackground::Inline),
        &*storage,
        &latest.handles_for(KeyGroupRange::new(0, 127).unwrap()),
    )
    .unwrap();
    let got = faulty.bytes_got() - got_before;
    assert!(
        got >= table_bytes && got <= table_bytes + table_bytes / 10,
        "{got} bytes downloaded for {table_bytes} bytes of files"
    );
    let h = common::all_kinds::register(&mut restored);
    assert_eq!(
        common::all_kinds::check(&mut restored, &h, &model, keys),
        keys
    );
}

/// Names with characters `object_store::path` percent-encodes in keys (`~`, `%`, `#`, `[`, …)
/// are listed as they were written, so that what `list_dir` returns opens, removes and
/// matches the paths `_metadata` records.
#[test]
fn names_the_store_encodes_are_listed_as_written() {
    let s = ObjectStorage::from_url(&unique("memory://names"), Default::default()).unwrap();
    let names = ["50%", "a b", "a~b", "x#y", "z[1]"];
    for name in names {
        s.write_atomic(&format!("d/{name}"), name.as_bytes())
            .unwrap();
        s.write_atomic(&format!("{name}/f"), b"in a directory")
            .unwrap();
    }
    assert_eq!(s.list_dir("d").unwrap(), names);
    for name in s.list_dir("d").unwrap() {
        assert_eq!(
            s.read_all(&format!("d/{name}"), 100).unwrap(),
            name.as_bytes()
        );
        assert!(
            s.list_dir(&format!("d/{name}")).is_err(),
            "{name} is an object"
        );
    }
    let mut root = s.list_dir(ROOT).unwrap();
    root.retain(|n| n != "d");
    assert_eq!(root, names);
    for name in root {
        assert_eq!(s.list_dir(&name).unwrap(), ["f"], "{name} is a directory");
    }
}

/// The checkpoint protocol over such names: a savepoint directory is found, and a shared file
/// of an aborted checkpoint is collected.
#[test]
fn savepoints_and_shared_files_with_encoded_names_are_found_and_collected() {
    let object = ObjectStorage::from_url(&unique("memory://encoded"), Default::default()).unwrap();
    let object: Arc<dyn Storage> = Arc::new(object);
    let storage =
        FsCheckpointStorage::open(Arc::clone(&object), FsCheckpointOptions::default()).unwrap();
    let range = KeyGroupRange::for_operator(MAXP, 1, 0).unwrap();
    let dir = "savepoints/sp~1";
    let target = flowstate::checkpoint::SnapshotTarget::savepoint(CheckpointId(3), dir);
    let handle = storage
        .write_keyed_state_bytes(&target, "op#0-keyed", range, b"state")
        .unwrap();
    storage
        .complete_savepoint(
            CheckpointId(3),
            dir,
            vec![SubtaskState::new("op", 0, 1, MAXP).with_keyed(handle)],
        )
        .unwrap();
    assert_eq!(
        storage.savepoints().unwrap(),
        [(CheckpointId(3), dir.to_string())]
    );

    let target = CheckpointId(1).into();
    let mut writer = storage.create_shared_file(&target, "t~1.sst").unwrap();
    writer.write_all(b"table").unwrap();
    writer.finish().unwrap();
    assert_eq!(
        storage
            .shared_file_references()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["shared/t~1.sst"]
    );
    storage.abort(&target).unwrap();
    assert_eq!(
        object.list_dir("shared").unwrap(),
        Vec::<String>::new(),
        "the aborted checkpoint's shared file is collected"
    );
}

/// On a `file://` root, removing a directory that is (or holds) a symbolic link removes the
/// link, never the files behind it: the owner's retention, `demo --checkpoints file://…`
/// emptying its root, must not delete what lies outside the root.
#[cfg(unix)]
#[test]
fn removing_a_directory_on_a_file_root_does_not_follow_symbolic_links() {
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(outside.join("nested")).unwrap();
    std::fs::write(outside.join("precious"), b"not the storage's").unwrap();
    std::fs::write(outside.join("nested/precious"), b"not the storage's").unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("chk-2")).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("chk-1")).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("chk-2/link")).unwrap();
    let s =
        ObjectStorage::from_url(&format!("file://{}", root.display()), Default::default()).unwrap();
    s.write_atomic("chk-2/own", b"the storage's").unwrap();
    s.remove_dir_all("chk-1").unwrap();
    s.remove_dir_all("chk-2").unwrap();
    assert!(
        outside.join("precious").exists(),
        "a file behind a link was deleted"
    );
    assert!(
        outside.join("nested/precious").exists(),
        "a file behind a link was deleted"
    );
    assert!(!s.exists("chk-1").unwrap() && !s.exists("chk-2").unwrap());
    assert_eq!(s.list_dir(ROOT).unwrap(), Vec::<String>::new());
}

/// On a `file://` root, a removed directory is gone from listings (no empty directory left
/// behind that `scan` would take for an incomplete checkpoint forever).
#[test]
fn a_removed_directory_on_a_file_root_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let s = ObjectStorage::from_url(
        &format!("file://{}", dir.path().display()),
        Default::default(),
    )
    .unwrap();
    s.write_atomic("chk-1/sub/f", b"x").unwrap();
    s.write_atomic("chk-1/g", b"x").unwrap();
    s.remove_dir_all("chk-1").unwrap();
    assert!(!s.exists("chk-1").unwrap());
    assert_eq!(s.list_dir(ROOT).unwrap(), Vec::<String>::new());
    s.write_atomic("chk-2/f", b"x").unwrap();
    s.remove_file("chk-2/f").unwrap();
    assert!(
        !s.exists("chk-2").unwrap(),
        "a directory exists while objects are under it"
    );
}

/// A write that took effect but whose answer was lost is retried: `write_new` (a conditional
/// create, not idempotent) finds its own object and succeeds; `remove_file`, `rename` and a
/// checkpoint's completion get through too. Without retries the lost answer is an error, and
/// `write_new` never overwrites what another wrote.
#[test]
fn writes_whose_answers_are_lost_are_retried_without_harm() {
    let faulty = FaultyObjectStore::new(Arc::new(InMemory::new()));
    let options = ObjectStorageOptions::default().with_retries(
        3,
        Duration::from_millis(1),
        Duration::from_millis(2),
    );
    let s = ObjectStorage::new(Arc::new(faulty.clone()), "root", "lost", options).unwrap();
    faulty.lose_answer_after(0);
    s.write_new("a/_metadata", b"mine").unwrap();
    assert_eq!(s.read_all("a/_metadata", 100).unwrap(), b"mine");
    let err = s.write_new("a/_metadata", b"other").unwrap_err();
    assert!(err.to_string().contains("exist"), "{err}");
    assert_eq!(s.read_all("a/_metadata", 100).unwrap(), b"mine");
    for n in 0..2 {
        // The copy's answer lost, then the deletion's.
        let (from, to) = if n == 0 { ("a", "b") } else { ("b", "a") };
        faulty.lose_answer_after(n);
        s.rename(&format!("{from}/_metadata"), &format!("{to}/_metadata"))
            .unwrap();
        assert_eq!(s.list_dir(ROOT).unwrap(), [to]);
    }
    faulty.lose_answer_after(0);
    s.remove_file("a/_metadata").unwrap();
    assert!(!s.exists("a").unwrap());

    let once = ObjectStorageOptions::default().with_retries(1, Duration::ZERO, Duration::ZERO);
    let s = ObjectStorage::new(Arc::new(faulty.clone()), "once", "lost", once).unwrap();
    faulty.lose_answer_after(0);
    assert!(
        s.write_new("c", b"x").is_err(),
        "a lost answer not retried is an error"
    );
    assert_eq!(s.read_all("c", 10).unwrap(), b"x");

    // Single PUTs (this layer retries them; the completion of a multipart upload is the
    // cloud client's to retry, O4) and the conditional `_metadata`: each write of a
    // checkpoint in turn loses its answer.
    let options = ObjectStorageOptions::default().with_retries(
        3,
        Duration::from_millis(1),
        Duration::from_millis(2),
    );
    for n in 0..3 {
        let (faulty, storage) = faulty_storage(options.clone());
        faulty.lose_answer_after(n);
        checkpoint(&storage, 1, 3000).unwrap();
        assert!(faulty.injected() == 1, "n = {n}");
        assert_eq!(storage.completed().unwrap(), [CheckpointId(1)]);
        assert_checkpoint(&storage, 1, 3000);
    }
}

/// An embedder calls the storage from a thread of its own tokio runtime (current-thread and
/// multi-thread), and drops it there: no panic ("cannot start a runtime from within a
/// runtime"), no deadlock.
#[test]
fn object_storage_works_from_inside_an_embedders_runtime() {
    let current = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()
        .unwrap();
    for runtime in [current, multi] {
        let url = unique("memory://in-runtime");
        let handle = runtime.handle().clone();
        let done = handle.block_on(async {
            let options = ObjectStorageOptions::default().with_part_size(1000);
            let s = ObjectStorage::from_url(&url, options).unwrap();
            let big = pattern(3500, 3);
            let mut f = s.create("chk-1/big").unwrap();
            f.write_all(&big).unwrap();
            f.sync().unwrap();
            let mut dropped = s.create("chk-1/dropped").unwrap();
            dropped.write_all(&big).unwrap();
            drop(dropped);
            assert_eq!(s.read_all("chk-1/big", 1 << 20).unwrap(), big);
            assert_eq!(s.list_dir("chk-1").unwrap(), ["big"]);
            drop(s);
            // And as checkpoint storage, opened and dropped inside a task.
            let storage =
                FsCheckpointStorage::open_url(&url, Default::default(), Default::default())
                    .unwrap();
            checkpoint(&storage, 2, 5000).unwrap();
            assert_checkpoint(&storage, 2, 5000);
            true
        });
        assert!(done);
        drop(runtime);
    }
}

/// Reads through the read-ahead window at random offsets and lengths, sequential runs
/// among them, return the object's bytes (across window boundaries, up to the end).
#[test]
fn reads_through_the_window_return_the_objects_bytes() {
    let s = ObjectStorage::from_url(
        &unique("memory://window"),
        ObjectStorageOptions::default().with_read_window(4096),
    )
    .unwrap();
    let data = pattern(50_000, 9);
    s.write_atomic("f", &data).unwrap();
    let r = s.open("f").unwrap();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let mut at = 0u64;
    for _ in 0..2000 {
        let len = match next(4) {
            0 => next(16_384),
            _ => next(5000),
        }
        .min(data.len() as u64 - at);
        let mut buf = vec![0; len as usize];
        r.read_at(at, &mut buf).unwrap();
        assert_eq!(
            buf,
            &data[at as usize..(at + len) as usize],
            "{len} at {at}"
        );
        // Mostly sequential; sometimes anywhere.
        at = if next(3) == 0 || at + len >= data.len() as u64 {
            next(data.len() as u64)
        } else {
            at + len
        };
    }
    let mut last = [0; 1];
    r.read_at(data.len() as u64 - 1, &mut last).unwrap();
    assert_eq!(last[0], data[data.len() - 1]);
    assert!(r.read_at(data.len() as u64, &mut last).is_err());
}

#[test]
fn a_multipart_upload_that_stops_progressing_fails_its_file_in_bounded_time() {
    let faulty = FaultyObjectStore::new(Arc::new(InMemory::new()));
    let options = ObjectStorageOptions::default()
        .with_part_size(1024)
        .with_parts_in_flight(1)
        .with_retries(2, Duration::from_millis(1), Duration::from_millis(1))
        .with_request_timeout(Duration::from_millis(100));
    let s = ObjectStorage::new(Arc::new(faulty.clone()), "", "stalling", options).unwrap();
    let mut f = s.create("big").unwrap();
    f.write_all(&pattern(1024, 1)).unwrap(); // starts the upload: one part in flight
                                             // From now on the server takes 10 s to answer anything.
    faulty.hang_after(0, Duration::from_secs(10));
    let started = std::time::Instant::now();
    let result = f.write_all(&pattern(4096, 2)).and_then(|()| f.sync());
    let err = result.expect_err("a stalled upload fails");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "failed after {:?}",
        started.elapsed()
    );
    assert!(err.to_string().contains("no progress"), "{err}");
    drop(f);
    faulty.heal();
    assert!(!s.exists("big").unwrap(), "nothing was published");
}

/// The owner opens state files without listing the root for the newest complete checkpoint
/// each time (it knows it from its own scans and completions): a few requests a file.
#[test]
fn opening_a_state_file_costs_a_few_requests_whatever_the_root_holds() {
    let (faulty, storage) = faulty_storage(ObjectStorageOptions::default());
    for id in 1..=3 {
        checkpoint(&storage, id, 100).unwrap();
    }
    let target = CheckpointId(4).into();
    let before = faulty.requests();
    for i in 0..10 {
        let mut w = storage
            .create_state_file(&target, &format!("f-{i}"))
            .unwrap();
        w.write_all(b"bytes").unwrap();
        w.finish().unwrap();
    }
    let per_file = (faulty.requests() - before) as f64 / 10.0;
    assert!(per_file <= 3.0, "{per_file} requests per state file");
    // A checkpoint older than the newest complete one is still refused.
    let err = storage
        .create_state_file(&CheckpointId(2).into(), "late")
        .unwrap_err();
    assert!(err.to_string().contains("not newer"), "{err}");
}
