//! The demo job, small: it checkpoints, fails twice, recovers (once at another parallelism),
//! and its exactly-once check passes; bad arguments are errors, not panics.

use std::process::Command;

fn flowstate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_flowstate"))
}

#[test]
fn demo_recovers_exactly_once_from_checkpoints() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let out = flowstate()
        .args(["demo", "--quiet", "--events", "60000", "--keys", "2000"])
        .args([
            "--checkpoint-every",
            "7000",
            "--parallelism",
            "2",
            "--rescale-to",
            "3",
        ])
        .arg("--dir")
        .arg(dir.path().join("checkpoints"))
        .output()
        .expect("the demo runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("OK: exactly-once"), "{stdout}");
    assert!(stdout.contains("failure 2"), "{stdout}");
    assert!(stdout.contains("restoring at parallelism 3"), "{stdout}");
    // The checkpoint directory holds the retained checkpoints' metadata.
    let chk = std::fs::read_dir(dir.path().join("checkpoints"))
        .expect("the checkpoint directory exists")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("chk-"))
        .count();
    assert!(chk >= 1);
}

#[test]
fn demo_on_the_lsm_backend_recovers_exactly_once() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let out = flowstate()
        .args(["demo", "--quiet", "--backend", "lsm", "--events", "60000"])
        .args(["--keys", "2000", "--checkpoint-every", "7000"])
        .arg("--dir")
        .arg(dir.path().join("checkpoints"))
        .output()
        .expect("the demo runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("lsm backend"), "{stdout}");
    assert!(stdout.contains("OK: exactly-once"), "{stdout}");
    assert!(stdout.contains("failure 2"), "{stdout}");
}

#[test]
fn demo_rejects_bad_arguments() {
    let out = flowstate()
        .args(["demo", "--quiet", "--keys", "0"])
        .output()
        .expect("the demo runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 1"));
    let out = flowstate()
        .args([
            "demo",
            "--quiet",
            "--compression",
            "brotli",
            "--events",
            "10",
        ])
        .output()
        .expect("the demo runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown compression"));
}
