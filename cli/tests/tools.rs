//! The offline tools on a checkpoint directory the demo wrote: inspect, verify and dump read it
//! without changing it, and verify finds a flipped byte.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn flowstate(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flowstate"))
        .args(args)
        .arg(dir)
        .output()
        .expect("the flowstate binary runs")
}

/// Runs `flowstate <args> DIR`, which must succeed, and returns what it printed.
fn succeeds(args: &[&str], dir: &Path) -> String {
    let out = flowstate(args, dir);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs the demo with `args` into `dir` and returns what it printed.
fn demo(args: &[&str], dir: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_flowstate"))
        .args(["demo", "--quiet"])
        .args(args)
        .arg("--dir")
        .arg(dir)
        .output()
        .expect("the demo runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The small demo run the tools read: no failures, a checkpoint every 4,000 events.
const SMALL_DEMO: [&str; 8] = [
    "--events",
    "30000",
    "--keys",
    "1000",
    "--checkpoint-every",
    "4000",
    "--failures",
    "0",
];

fn demo_checkpoints(dir: &Path) {
    demo(&SMALL_DEMO, dir);
}

#[test]
fn inspect_verify_and_dump_read_a_checkpoint_without_changing_it() {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let dir = tmp.path().join("chk");
    demo_checkpoints(&dir);
    // An incomplete checkpoint left by a crash: a read-only tool must not clean it up.
    std::fs::create_dir_all(dir.join("chk-999")).expect("create a directory");

    let text = succeeds(&["inspect"], &dir);
    assert!(text.contains("state 'count': Value of u64@1"), "{text}");
    assert!(text.contains("source-offset"), "{text}");

    assert!(succeeds(&["verify"], &dir).starts_with("OK:"));

    let out = flowstate(&["dump", "--state", "total", "--limit", "5"], &dir);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert_eq!(text.lines().count(), 5, "{text}");
    assert!(text.lines().all(|l| l.contains(" total key ")), "{text}");

    assert!(
        dir.join("chk-999").exists(),
        "the read-only tools cleaned nothing up"
    );
}

#[test]
fn verify_reports_a_flipped_byte_naming_the_file() {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let dir = tmp.path().join("chk");
    demo_checkpoints(&dir);
    let latest = std::fs::read_dir(&dir)
        .expect("the directory lists")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with("chk-"))
        .max_by_key(|n| n[4..].parse::<u64>().unwrap_or(0))
        .expect("a checkpoint directory");
    let file = dir.join(&latest).join("user-activity-1-keyed");
    let mut bytes = std::fs::read(&file).expect("the state file reads");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&file, bytes).expect("the state file writes");
    let out = flowstate(&["verify"], &dir);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("user-activity-1"), "{err}");
}

#[test]
fn tools_refuse_a_missing_directory() {
    let out = flowstate(&["inspect"], Path::new("/nonexistent/flowstate"));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a directory of checkpoints"));
}

#[test]
fn tools_read_incremental_lsm_checkpoints_and_verify_checks_every_shared_file() {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let dir = tmp.path().join("chk");
    let out = Command::new(env!("CARGO_BIN_EXE_flowstate"))
        .args([
            "demo",
            "--quiet",
            "--backend",
            "lsm",
            "--events",
            "40000",
            "--keys",
            "2000",
        ])
        .args(["--checkpoint-every", "8000", "--failures", "1", "--dir"])
        .arg(&dir)
        .output()
        .expect("the demo runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("shared/ (KiB)"),
        "the summary shows shared files: {text}"
    );

    let text = succeeds(&["inspect"], &dir);
    assert!(text.contains("native LSM snapshot"), "{text}");
    assert!(text.contains("shared files:"), "{text}");
    assert!(text.contains(": checkpoints "), "{text}");

    succeeds(&["verify"], &dir);
    let dumped = succeeds(&["dump", "--state", "count", "--limit", "3"], &dir);
    assert_eq!(dumped.lines().count(), 3);

    // A byte flipped in the middle of a shared table the latest checkpoint references:
    // verify names the file.
    let latest = text
        .lines()
        .find_map(|l| l.strip_prefix("completed checkpoints: "))
        .and_then(|ids| ids.split(", ").last())
        .expect("the completed checkpoints are listed")
        .to_string();
    let victim = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("shared/"))
        .find(|l| {
            l.rsplit(": checkpoints ")
                .next()
                .is_some_and(|ids| ids.split(", ").any(|id| id == latest))
        })
        .and_then(|l| l.split(' ').next())
        .expect("a shared file of the latest checkpoint")
        .to_string();
    let path = dir.join("shared").join(&victim);
    let mut bytes = std::fs::read(&path).expect("read the table");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x04;
    std::fs::write(&path, &bytes).expect("write it back");
    let out = flowstate(&["verify"], &dir);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains(&victim), "{err}");
}

/// Runs `flowstate verify DIR` and waits at most 30 s for it (a FIFO must not hang it).
#[cfg(unix)]
fn verify_with_deadline(dir: &Path) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_flowstate"))
        .arg("verify")
        .arg(dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the flowstate binary runs");
    let started = std::time::Instant::now();
    while child.try_wait().expect("the child can be polled").is_none() {
        if started.elapsed() > std::time::Duration::from_secs(30) {
            let _ = child.kill();
            panic!("verify hangs on {}", dir.display());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().expect("the output is read")
}

#[cfg(unix)]
#[test]
fn verify_refuses_links_and_fifos_in_place_of_files_without_hanging() {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let dir = tmp.path().join("chk");
    demo_checkpoints(&dir);
    let latest = std::fs::read_dir(&dir)
        .expect("the directory reads")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter_map(|n| n.strip_prefix("chk-").and_then(|id| id.parse::<u64>().ok()))
        .max()
        .expect("a checkpoint");
    let victim = dir.join(format!("chk-{latest}")).join("source-0");
    let original = std::fs::read(&victim).expect("the source state file");
    // A symbolic link to an identical file outside the directory.
    let outside = tmp.path().join("outside");
    std::fs::write(&outside, &original).expect("write outside");
    std::fs::remove_file(&victim).expect("remove");
    std::os::unix::fs::symlink(&outside, &victim).expect("link");
    let out = verify_with_deadline(&dir);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("symbolic link"));
    // A FIFO.
    std::fs::remove_file(&victim).expect("remove");
    let made = Command::new("mkfifo").arg(&victim).status();
    if made.is_ok_and(|s| s.success()) {
        let out = verify_with_deadline(&dir);
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("not a regular file"));
    }
}

#[test]
fn tools_say_what_to_give_when_the_checkpoint_or_directory_is_wrong() {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let dir = tmp.path().join("chk");
    demo_checkpoints(&dir);
    let out = Command::new(env!("CARGO_BIN_EXE_flowstate"))
        .args(["verify", "--checkpoint", "9999"])
        .arg(&dir)
        .output()
        .expect("the flowstate binary runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("no completed checkpoint 9999") && err.contains("completed: "),
        "{err}"
    );
    let one = std::fs::read_dir(&dir)
        .expect("the directory reads")
        .filter_map(|e| e.ok())
        .find(|e| e.file_name().to_string_lossy().starts_with("chk-"))
        .expect("a checkpoint directory")
        .path();
    let out = flowstate(&["verify"], &one);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("give the checkpoint root"), "{err}");
}

#[test]
fn a_stale_file_of_the_same_size_from_an_older_checkpoint_is_detected() {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let dir = tmp.path().join("chk");
    demo_checkpoints(&dir);
    let mut ids: Vec<u64> = std::fs::read_dir(&dir)
        .expect("the directory reads")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_string_lossy()
                .strip_prefix("chk-")
                .and_then(|id| id.parse::<u64>().ok())
        })
        .collect();
    ids.sort_unstable();
    let (older, newer) = (ids[ids.len() - 2], ids[ids.len() - 1]);
    let stale = std::fs::read(dir.join(format!("chk-{older}/source-0"))).expect("older offsets");
    let current = dir.join(format!("chk-{newer}/source-0"));
    let fresh = std::fs::read(&current).expect("newer offsets");
    assert_eq!(stale.len(), fresh.len(), "the same size");
    assert_ne!(stale, fresh, "other offsets");
    std::fs::write(&current, &stale).expect("substitute the stale file");
    let out = flowstate(&["verify"], &dir);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a stale file must not verify");
    assert!(err.contains(&format!("chk-{newer}/source-0")), "{err}");
    assert!(err.contains("CRC-32"), "{err}");
}

#[test]
fn verify_reports_every_damaged_file_of_every_retained_checkpoint_and_json() {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let dir = tmp.path().join("chk");
    demo_checkpoints(&dir);
    let out = Command::new(env!("CARGO_BIN_EXE_flowstate"))
        .args(["verify", "--json"])
        .arg(&dir)
        .output()
        .expect("the flowstate binary runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.starts_with("{\"ok\":true,\"snapshots\":["), "{text}");
    // Damage one file in each of the two retained checkpoints.
    let mut damaged = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("the directory reads") {
        let name = entry
            .expect("an entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        if name.starts_with("chk-") {
            let path = dir.join(&name).join("source-0");
            let mut bytes = std::fs::read(&path).expect("the offsets");
            bytes[10] ^= 0x01;
            std::fs::write(&path, &bytes).expect("write it back");
            damaged.push(format!("{name}/source-0"));
        }
    }
    assert_eq!(damaged.len(), 2);
    let out = flowstate(&["verify"], &dir);
    let err = String::from_utf8_lossy(&out.stderr);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    for d in &damaged {
        assert!(err.contains(d.as_str()), "{d}: {err}");
    }
    assert_eq!(
        text.lines().filter(|l| l.starts_with("DAMAGED:")).count(),
        2,
        "{text}"
    );
    assert!(err.contains("2 of 2 snapshot(s) damaged"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_flowstate"))
        .args(["verify", "--json"])
        .arg(&dir)
        .output()
        .expect("the flowstate binary runs");
    let json = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(json.starts_with("{\"ok\":false,"), "{json}");
    for d in &damaged {
        assert!(json.contains(d.as_str()), "{d}: {json}");
    }
}

#[test]
fn dump_names_the_states_when_one_is_unknown_and_dumps_operator_state() {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let dir = tmp.path().join("chk");
    demo_checkpoints(&dir);
    let out = flowstate(&["dump", "--state", "no-such-state"], &dir);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("no state \"no-such-state\""), "{err}");
    assert!(
        err.contains("count") && err.contains("source-offset"),
        "{err}"
    );
    let out = flowstate(&["dump", "--state", "source-offset"], &dir);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.starts_with("operator source[0] source-offset = ["),
        "{text}"
    );
}

#[test]
fn verify_names_every_damaged_block_with_its_offset() {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let dir = tmp.path().join("chk");
    demo_checkpoints(&dir);
    let latest = std::fs::read_dir(&dir)
        .expect("list")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("chk-"))
        .max_by_key(|n| n[4..].parse::<u64>().unwrap_or(0))
        .expect("a checkpoint");
    let file = dir.join(&latest).join("user-activity-0-keyed");
    let mut bytes = std::fs::read(&file).expect("read");
    // Three flips far apart land in three different key-group blocks.
    let offsets = [bytes.len() / 8, bytes.len() / 3, bytes.len() / 2];
    for &o in &offsets {
        bytes[o] ^= 0x10;
    }
    std::fs::write(&file, &bytes).expect("write");
    let out = flowstate(&["verify", "--json"], &dir);
    assert!(!out.status.success());
    let json = String::from_utf8_lossy(&out.stdout);
    let blocks = json
        .matches("\"what\":\"checksum mismatch for the bytes at ")
        .count();
    // The whole-file CRC-32C against _metadata, then each damaged block.
    assert!(
        json.contains("(another file than the one its checkpoint lists"),
        "{json}"
    );
    assert_eq!(blocks, 3, "{json}");
    for &o in &offsets {
        // Each flip is inside a block that starts at or before it.
        assert!(
            json.match_indices("\"offset\":")
                .filter_map(|(i, _)| json[i + 9..]
                    .split(',')
                    .next()
                    .and_then(|n| n.parse::<usize>().ok()))
                .any(|start| start > 0 && start <= o && o - start < 20_000),
            "no damaged block near {o}: {json}"
        );
    }
}

#[test]
fn dump_decodes_values_through_their_codecs_and_prints_json_lines() {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let dir = tmp.path().join("chk");
    demo_checkpoints(&dir);
    let text = succeeds(&["dump", "--state", "count", "--limit", "3"], &dir);
    for line in text.lines() {
        // `kg <n> count key <u64> = <u64>`: decoded numbers, not hex.
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(words.len(), 7, "{line}");
        assert!(words[4].parse::<u64>().is_ok(), "{line}");
        assert!(words[6].parse::<u64>().is_ok(), "{line}");
    }
    let json = succeeds(&["dump", "--json", "--limit", "4"], &dir);
    let mut lines = json.lines();
    let first = lines.next().expect("the operator state first");
    assert!(
        first.starts_with(
            "{\"operator\":\"source\",\"subtask\":0,\"state\":\"source-offset\",\"value\":["
        ),
        "{first}"
    );
    // The keyed tasks' operator state (their sinks' transactions), then the keyed state.
    for line in lines.skip_while(|l| l.starts_with("{\"operator\":\"user-activity\"")) {
        assert!(line.starts_with("{\"key_group\":"), "{line}");
        assert!(line.contains(",\"key\":") && line.ends_with('}'), "{line}");
        assert!(!line.contains("\"hex\""), "{line}");
    }
}

// ---------------------------------------------------------------------------------------------
// Exit codes, --json, the listings and convert, on one demo run per backend kind (shared by the
// tests below; a test that damages or adds files works on a copy).

/// The checkpoint root of one demo run with `backend` (heap, lsm or heap-incremental), made
/// once per test process under the target directory's temporary directory.
fn fixture(backend: &'static str) -> &'static Path {
    use std::sync::OnceLock;
    static HEAP: OnceLock<PathBuf> = OnceLock::new();
    static LSM: OnceLock<PathBuf> = OnceLock::new();
    static HEAP_INCREMENTAL: OnceLock<PathBuf> = OnceLock::new();
    let cell = match backend {
        "heap" => &HEAP,
        "lsm" => &LSM,
        _ => &HEAP_INCREMENTAL,
    };
    cell.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("tools-{backend}"));
        let args: Vec<&str> = ["--backend", backend]
            .into_iter()
            .chain(SMALL_DEMO)
            .collect();
        demo(&args, &dir);
        dir
    })
}

/// A copy of `from` (a directory tree) at `to`.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create the copy");
    for entry in std::fs::read_dir(from).expect("list") {
        let entry = entry.expect("an entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("a type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy a file");
        }
    }
}

/// Runs `flowstate ARGS` (the root among them) and returns its output.
fn run(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flowstate"))
        .args(args)
        .output()
        .expect("the flowstate binary runs")
}

/// `run` with string arguments and paths mixed.
macro_rules! fs {
    ($($arg:expr),* $(,)?) => {
        run(&[$(std::ffi::OsStr::new($arg)),*])
    };
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("an exit code, not a signal")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The newest `chk-<id>` directory of `root`.
fn latest_checkpoint_dir(root: &Path) -> PathBuf {
    std::fs::read_dir(root)
        .expect("list")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|n| n.strip_prefix("chk-").and_then(|id| id.parse::<u64>().ok()))
        .max()
        .map(|id| root.join(format!("chk-{id}")))
        .expect("a checkpoint")
}

/// Flips a byte in the middle of `file`.
fn flip(file: &Path) {
    let mut bytes = std::fs::read(file).expect("read");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(file, bytes).expect("write");
}

/// Every entry of a snapshot as dump prints them in JSON lines, sorted.
fn sorted_dump(root: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<&std::ffi::OsStr> = vec!["dump".as_ref(), "--json".as_ref()];
    args.extend(["--limit", "100000000"].iter().map(std::ffi::OsStr::new));
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    args.push(root.as_os_str());
    let out = run(&args);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let mut lines: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
    lines.sort();
    lines
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[test]
fn help_lists_the_exit_codes() {
    let out = fs!("--help");
    assert_eq!(code(&out), 0);
    let text = stdout(&out);
    for line in [
        "Exit codes:",
        "0  success",
        "1  damage",
        "2  usage",
        "3  I/O",
    ] {
        assert!(text.contains(line), "{line}: {text}");
    }
}

#[test]
fn exit_codes_are_0_ok_1_damage_2_usage_3_io() {
    let root = fixture("heap");
    assert_eq!(code(&fs!("verify", root)), 0);
    assert_eq!(code(&fs!("checkpoints", root)), 0);
    // 2: clap's own errors, a missing root, an unknown checkpoint, a missing savepoint, a bad
    // or empty URL.
    assert_eq!(code(&fs!("inspect", "--no-such-flag", root)), 2);
    assert_eq!(code(&fs!("inspect", "/nonexistent/flowstate")), 2);
    assert_eq!(code(&fs!("savepoints", "/nonexistent/flowstate")), 2);
    let out = fs!("verify", "--checkpoint", "9999", root);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let out = fs!("dump", "--savepoint", "no/such/savepoint", root);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no savepoint in no/such/savepoint"),
        "{}",
        stderr(&out)
    );
    // A URL of an unknown scheme, and one under which nothing is stored.
    let out = fs!("checkpoints", "ftp://host/prefix");
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("unknown scheme"), "{}", stderr(&out));
    let out = fs!("inspect", "memory://nothing-here/prefix");
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("holds no checkpoints"),
        "{}",
        stderr(&out)
    );
    let out = fs!("dump", "--state", "no-such-state", root);
    assert_eq!(code(&out), 2);

    // 1: damage, found by verify or met by any other tool.
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let copy = tmp.path().join("chk");
    copy_dir(root, &copy);
    flip(&latest_checkpoint_dir(&copy).join("user-activity-0-keyed"));
    for args in [
        &["verify"][..],
        &["verify", "--json"],
        &["dump"],
        &["inspect", "--json"],
    ] {
        let mut all: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
        all.push(copy.as_os_str());
        let out = run(&all);
        assert_eq!(code(&out), 1, "{args:?}: {}", stderr(&out));
    }

    // 3: an I/O failure that is not damage: a new root below a regular file.
    let file = tmp.path().join("a-file");
    std::fs::write(&file, b"x").expect("write");
    let below = file.join("new-root");
    let out = fs!("convert", root, "--to-checkpoints", &below);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
}

#[test]
fn every_read_only_command_prints_json_that_parses() {
    let root = fixture("lsm");
    let out = fs!("inspect", "--json", root);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let doc = json(&stdout(&out));
    assert_eq!(doc["kind"], "checkpoint");
    let tasks = doc["tasks"].as_array().expect("tasks");
    let keyed: Vec<&serde_json::Value> = tasks
        .iter()
        .flat_map(|t| t["keyed"].as_array().expect("keyed handles"))
        .collect();
    assert!(!keyed.is_empty());
    for h in &keyed {
        assert_eq!(h["kind"], "native", "{h}");
        assert!(h["states"]
            .as_array()
            .expect("states")
            .iter()
            .any(|s| s["name"] == "count" && s["value"] == "u64@1"));
        assert!(!h["shared_files"].as_array().expect("shared").is_empty());
    }

    let doc = json(&stdout(&fs!("verify", "--json", root)));
    assert_eq!(doc["ok"], true);

    let out = fs!("dump", "--json", "--limit", "50", root);
    assert_eq!(code(&out), 0);
    assert_eq!(stdout(&out).lines().count(), 50);
    for line in stdout(&out).lines() {
        json(line);
    }

    let doc = json(&stdout(&fs!("checkpoints", "--json", root)));
    let checkpoints = doc["checkpoints"].as_array().expect("checkpoints");
    assert_eq!(checkpoints.len(), 2, "{doc}");
    for c in checkpoints {
        let (p, s, t) = (
            c["private_bytes"].as_u64().expect("private"),
            c["shared_bytes"].as_u64().expect("shared"),
            c["total_bytes"].as_u64().expect("total"),
        );
        assert!(s > 0 && p + s == t, "{c}");
    }
    assert_eq!(doc["shared"]["unreferenced_files"], 0, "{doc}");

    let doc = json(&stdout(&fs!("savepoints", "--json", root)));
    assert_eq!(doc["savepoints"].as_array().map(Vec::len), Some(0), "{doc}");

    let table = std::fs::read_dir(root.join("shared"))
        .expect("shared/")
        .map(|e| e.expect("an entry").path())
        .find(|p| p.extension().is_some_and(|e| e == "sst"))
        .expect("a shared table");
    let doc = json(&stdout(&fs!("lsm", &table, "--verify", "--json")));
    assert!(doc["entries"].as_u64().expect("entries") > 0, "{doc}");
    assert_eq!(doc["entries"], doc["verified_entries"]);
}

#[test]
fn checkpoints_counts_private_and_shared_bytes_and_unreferenced_shared_files() {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let root = tmp.path().join("chk");
    copy_dir(fixture("heap-incremental"), &root);
    std::fs::write(root.join("shared").join("left-behind.delta"), b"garbage").expect("write");
    let doc = json(&stdout(&fs!("checkpoints", "--json", &root)));
    assert_eq!(doc["shared"]["unreferenced_files"], 1, "{doc}");
    let latest = latest_checkpoint_dir(&root);
    let on_disk: u64 = std::fs::read_dir(&latest)
        .expect("list")
        .map(|e| e.expect("an entry").metadata().expect("metadata").len())
        .sum();
    let newest = doc["checkpoints"]
        .as_array()
        .and_then(|c| c.last())
        .expect("a checkpoint");
    assert_eq!(newest["private_bytes"].as_u64(), Some(on_disk), "{doc}");
    let text = stdout(&fs!("checkpoints", &root));
    assert!(
        text.contains("1 referenced by no completed checkpoint"),
        "{text}"
    );
}

/// Every (task, keyed state) of an `inspect --json` document, as JSON text.
fn state_metas(inspect: &str) -> Vec<String> {
    let doc = json(inspect);
    let mut states = Vec::new();
    for task in doc["tasks"].as_array().expect("tasks") {
        for handle in task["keyed"].as_array().expect("keyed") {
            for state in handle["states"].as_array().expect("states") {
                states.push(format!("{}[{}] {state}", task["operator"], task["subtask"]));
            }
        }
    }
    states.sort();
    states
}

/// Converts the latest checkpoint of `backend`'s demo run into a savepoint under another
/// root, and that savepoint into a new checkpoint root; each verifies and dumps the same
/// entries, and the checkpoint root restores into both backends.
fn round_trip(backend: &'static str) {
    let root = fixture(backend);
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let out_root = tmp.path().join("out");
    std::fs::create_dir(&out_root).expect("create");
    let source = sorted_dump(root, &[]);
    assert!(source.len() > 1000, "{}", source.len());

    let out = fs!(
        "convert",
        root,
        "--to-savepoint",
        "savepoints/sp-1",
        "--out",
        &out_root
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).is_empty(),
        "no progress bar off a terminal: {}",
        stderr(&out)
    );
    let out = fs!("verify", "--savepoint", "savepoints/sp-1", &out_root);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    assert_eq!(
        sorted_dump(&out_root, &["--savepoint", "savepoints/sp-1"]),
        source
    );
    // The states' metadata carries over: kinds, codecs and TTLs.
    let before = state_metas(&stdout(&fs!("inspect", "--json", root)));
    let after = state_metas(&stdout(&fs!(
        "inspect",
        "--json",
        "--savepoint",
        "savepoints/sp-1",
        &out_root
    )));
    assert_eq!(before, after);
    assert!(
        after.iter().any(|s| s.contains("\"ttl_millis\":200000")),
        "{after:?}"
    );
    let doc = json(&stdout(&fs!("savepoints", "--json", &out_root)));
    assert_eq!(doc["savepoints"][0]["kind"], "canonical", "{doc}");
    assert_eq!(doc["savepoints"][0]["dir"], "savepoints/sp-1", "{doc}");
    assert!(
        !out_root.join("savepoints/.sp-1.flowstate-tmp").exists(),
        "the staging root is gone"
    );

    let back = tmp.path().join("back");
    let out = fs!(
        "convert",
        &out_root,
        "--savepoint",
        "savepoints/sp-1",
        "--to-checkpoints",
        &back,
        "--max-parallelism",
        "128"
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(code(&fs!("verify", &back)), 0);
    assert_eq!(sorted_dump(&back, &[]), source);

    // Either backend restores the new root.
    use flowstate::{
        Backend, BackendConfig, CheckpointStorage, FsCheckpointStorage, KeyGroupRange,
        KeyedStateBackend, ValueStateDescriptor,
    };
    let storage = FsCheckpointStorage::open_read_only(&back).expect("the new root opens");
    let done = storage
        .latest_completed()
        .expect("readable")
        .expect("a checkpoint");
    let handles = done.handles_for(KeyGroupRange::new(0, 127).expect("a range"));
    let counts = source
        .iter()
        .filter(|l| l.contains("\"state\":\"count\""))
        .count();
    for config in [
        BackendConfig::heap().max_parallelism(128),
        BackendConfig::lsm(tmp.path().join("lsm-work")).max_parallelism(128),
    ] {
        let mut restored =
            Backend::<u64>::restore_from(config, &storage, &handles).expect("it restores");
        restored
            .register(ValueStateDescriptor::<u64>::new("count"))
            .expect("count registers");
        let view = restored.snapshot_state().expect("a view");
        let n = view
            .state("count")
            .expect("the count state")
            .entry_count()
            .expect("counted");
        assert_eq!(n, counts);
    }
}

#[test]
fn convert_round_trips_a_heap_checkpoint() {
    round_trip("heap");
}

#[test]
fn convert_round_trips_an_incremental_lsm_checkpoint() {
    round_trip("lsm");
}

#[test]
fn convert_round_trips_a_heap_incremental_chain() {
    round_trip("heap-incremental");
}

#[test]
fn convert_refuses_to_overwrite_and_to_change_max_parallelism() {
    let root = fixture("heap");
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let existing = tmp.path().join("sp");
    std::fs::create_dir(&existing).expect("create");
    std::fs::write(existing.join("mine"), b"keep me").expect("write");
    let out = fs!("convert", root, "--to-savepoint", "sp", "--out", tmp.path());
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("never overwrites"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::read(existing.join("mine")).expect("kept"),
        b"keep me"
    );

    let out = fs!("convert", root, "--to-checkpoints", tmp.path());
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("not an empty directory"),
        "{}",
        stderr(&out)
    );

    let new_root = tmp.path().join("new");
    let out = fs!(
        "convert",
        root,
        "--to-checkpoints",
        &new_root,
        "--max-parallelism",
        "256"
    );
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("max parallelism is 128") && err.contains("256"),
        "{err}"
    );
    assert!(!new_root.exists(), "nothing written");

    for dir in ["chk-3/x", "shared", "../up", "/abs", "a/_metadata"] {
        let out = fs!("convert", root, "--to-savepoint", dir, "--out", tmp.path());
        assert_eq!(code(&out), 2, "{dir}: {}", stderr(&out));
    }
    let listed: Vec<_> = std::fs::read_dir(tmp.path())
        .expect("list")
        .map(|e| e.expect("an entry").file_name())
        .collect();
    assert_eq!(
        listed,
        vec![std::ffi::OsString::from("sp")],
        "nothing else created"
    );
}

#[test]
fn convert_of_a_damaged_source_exits_1_and_leaves_nothing_complete() {
    for backend in ["heap", "lsm"] {
        let tmp = tempfile::tempdir().expect("a temporary directory");
        let root = tmp.path().join("chk");
        copy_dir(fixture(backend), &root);
        let victim = if backend == "heap" {
            latest_checkpoint_dir(&root).join("user-activity-1-keyed")
        } else {
            std::fs::read_dir(root.join("shared"))
                .expect("shared/")
                .map(|e| e.expect("an entry").path())
                .max_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
                .expect("a shared table")
        };
        flip(&victim);
        let out = fs!("convert", &root, "--to-savepoint", "sp/damaged");
        assert_eq!(code(&out), 1, "{backend}: {}", stderr(&out));
        assert!(
            !root.join("sp").exists(),
            "{backend}: convert removed what it created"
        );
        let doc = json(&stdout(&fs!("savepoints", "--json", &root)));
        assert_eq!(doc["savepoints"].as_array().map(Vec::len), Some(0), "{doc}");

        let new_root = tmp.path().join("new");
        let out = fs!("convert", &root, "--to-checkpoints", &new_root);
        assert_eq!(code(&out), 1, "{backend}: {}", stderr(&out));
        assert!(!new_root.exists(), "{backend}: the new root is removed");
        std::fs::create_dir(&new_root).expect("create");
        let out = fs!("convert", &root, "--to-checkpoints", &new_root);
        assert_eq!(code(&out), 1, "{backend}: {}", stderr(&out));
        assert_eq!(
            std::fs::read_dir(&new_root).expect("list").count(),
            0,
            "{backend}: the empty root given is empty again"
        );
    }
}

#[test]
fn convert_takes_a_native_lsm_savepoint_to_a_checkpoint_root() {
    use std::sync::Arc;

    use flowstate::{
        Backend, BackendConfig, CheckpointId, CheckpointStorage, FsCheckpointOptions,
        FsCheckpointStorage, KeyedStateBackend, ListStateDescriptor, SnapshotTarget, SubtaskState,
        ValueStateDescriptor,
    };
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let root = tmp.path().join("root");
    let storage: Arc<dyn CheckpointStorage> = Arc::new(
        FsCheckpointStorage::open_local(&root, FsCheckpointOptions::default())
            .expect("the root opens"),
    );
    let config = BackendConfig::lsm(tmp.path().join("work")).max_parallelism(128);
    let mut backend = Backend::<u64>::open(config).expect("an LSM backend");
    let count = backend
        .register(ValueStateDescriptor::<u64>::new("count"))
        .expect("count");
    let pages = backend
        .register(ListStateDescriptor::<String>::new("pages"))
        .expect("pages");
    for key in 0..500u64 {
        backend.set_current_key(&key);
        backend.value(&count).update(key * 3).expect("update");
        backend.list(&pages).add(format!("/p{key}")).expect("add");
        backend.list(&pages).add("/".to_string()).expect("add");
    }
    let target = SnapshotTarget::native_savepoint(CheckpointId(5), "savepoints/native");
    let written = backend
        .snapshot(target.clone(), &storage, "op-0")
        .expect("a snapshot")
        .run()
        .expect("written");
    let task = SubtaskState::new("op", 0, 1, 128).with_keyed(written.handle);
    storage.complete(&target, vec![task]).expect("complete");
    drop(backend);

    let doc = json(&stdout(&fs!("savepoints", "--json", &root)));
    assert_eq!(doc["savepoints"][0]["kind"], "native", "{doc}");
    let source = sorted_dump(&root, &["--savepoint", "savepoints/native"]);
    assert_eq!(source.len(), 1000);
    let back = tmp.path().join("back");
    let out = fs!(
        "convert",
        &root,
        "--savepoint",
        "savepoints/native",
        "--to-checkpoints",
        &back
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(code(&fs!("verify", &back)), 0);
    assert_eq!(sorted_dump(&back, &[]), source);
    let doc = json(&stdout(&fs!("inspect", "--json", &back)));
    assert_eq!(doc["id"], 5, "{doc}");
    assert_eq!(doc["tasks"][0]["keyed"][0]["kind"], "canonical", "{doc}");
}

/// The tools on a golden checkpoint an earlier version wrote (engine/tests/data/native_v2_timers:
/// an incremental LSM checkpoint with its table under shared/, native snapshot format 2), and on
/// a copy with one byte of its table flipped.
#[test]
fn the_tools_read_a_golden_checkpoint_and_find_damage_in_a_copy() {
    let golden =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../engine/tests/data/native_v2_timers");
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let root = tmp.path().join("golden");
    copy_dir(&golden, &root);
    let root = root.to_str().expect("a UTF-8 path");
    assert_eq!(code(&fs!("verify", root)), 0);
    let inspect = fs!("inspect", "--json", root);
    assert_eq!(code(&inspect), 0, "{}", stderr(&inspect));
    let doc = json(&stdout(&inspect));
    assert!(stdout(&inspect).contains("native"), "{doc}");
    let listed = fs!("checkpoints", "--json", root);
    assert_eq!(code(&listed), 0, "{}", stderr(&listed));
    assert!(stdout(&listed).contains("\"id\":1"), "{}", stdout(&listed));
    let dump = fs!("dump", root);
    assert_eq!(code(&dump), 0, "{}", stderr(&dump));
    assert!(!stdout(&dump).is_empty());
    // Converted into a canonical checkpoint root: verified, and the same entries dumped.
    let converted = tmp.path().join("converted");
    let converted = converted.to_str().expect("a UTF-8 path");
    let out = fs!("convert", root, "--to-checkpoints", converted);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(code(&fs!("verify", converted)), 0);
    let mut before: Vec<String> = stdout(&fs!("dump", "--json", root))
        .lines()
        .map(str::to_owned)
        .collect();
    let mut after: Vec<String> = stdout(&fs!("dump", "--json", converted))
        .lines()
        .map(str::to_owned)
        .collect();
    before.sort();
    after.sort();
    assert_eq!(before, after);
    // One byte of the shared table flipped: verify and convert exit 1; convert leaves nothing.
    let shared = Path::new(root).join("shared");
    let table = std::fs::read_dir(&shared)
        .expect("shared/")
        .filter_map(Result::ok)
        .find(|e| e.file_name().to_string_lossy().ends_with(".sst"))
        .expect("the table")
        .path();
    let mut bytes = std::fs::read(&table).expect("the table's bytes");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&table, &bytes).expect("the damaged table");
    assert_eq!(code(&fs!("verify", root)), 1);
    let again = tmp.path().join("again");
    let out = fs!(
        "convert",
        root,
        "--to-checkpoints",
        again.to_str().expect("UTF-8")
    );
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(!again.exists(), "convert removed what it made");
}
