//! The offline tools on a checkpoint directory the demo wrote: inspect, verify and dump read it
//! without changing it, and verify finds a flipped byte.

use std::path::Path;
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

fn demo_checkpoints(dir: &Path) {
    demo(
        &[
            "--events",
            "30000",
            "--keys",
            "1000",
            "--checkpoint-every",
            "4000",
            "--failures",
            "0",
        ],
        dir,
    );
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
