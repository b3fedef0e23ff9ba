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

#[test]
fn the_demo_never_deletes_what_it_did_not_create_and_bad_numbers_are_errors() {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    // A directory of someone else's: refused, untouched.
    let theirs = tmp.path().join("theirs");
    std::fs::create_dir_all(theirs.join("sub")).expect("create a directory");
    std::fs::write(theirs.join("precious.txt"), b"keep me").expect("write a file");
    let out = flowstate()
        .args([
            "demo", "--quiet", "--events", "1000", "--keys", "10", "--dir",
        ])
        .arg(&theirs)
        .output()
        .expect("the demo runs");
    assert_eq!(out.status.code(), Some(1), "an error, not a panic");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not made by the demo"), "{err}");
    assert_eq!(
        std::fs::read(theirs.join("precious.txt")).unwrap(),
        b"keep me"
    );
    assert!(theirs.join("sub").is_dir());
    // A file given as --dir: refused, untouched.
    let file = tmp.path().join("a-file");
    std::fs::write(&file, b"data").expect("write a file");
    let out = flowstate()
        .args(["demo", "--quiet", "--dir"])
        .arg(&file)
        .output()
        .expect("the demo runs");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(std::fs::read(&file).unwrap(), b"data");
    // The demo's own directory is emptied and reused.
    let own = tmp.path().join("own");
    for _ in 0..2 {
        let out = flowstate()
            .args(["demo", "--quiet", "--events", "2000", "--keys", "50"])
            .args(["--checkpoint-every", "500", "--failures", "0", "--dir"])
            .arg(&own)
            .output()
            .expect("the demo runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Numbers out of range: a clear error each, no panic, nothing created.
    for (flag, value, words) in [
        ("--parallelism", "0", "--parallelism must be 1"),
        ("--rescale-to", "0", "--rescale-to must be 1"),
        ("--rescale-to", "200", "--rescale-to must be 1"),
        ("--max-parallelism", "0", "--max-parallelism must be 1"),
        ("--max-parallelism", "40000", "--max-parallelism must be 1"),
        ("--keys", "0", "must be at least 1"),
    ] {
        let dir = tmp.path().join(format!("bad{flag}{value}"));
        let out = flowstate()
            .args(["demo", "--quiet", flag, value, "--dir"])
            .arg(&dir)
            .output()
            .expect("the demo runs");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{flag} {value}: {err}");
        assert!(err.contains(words), "{flag} {value}: {err}");
        assert!(!dir.exists(), "{flag} {value}: nothing created");
    }
}
