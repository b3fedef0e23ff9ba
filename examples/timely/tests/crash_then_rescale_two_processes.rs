//! Two processes on loopback, 2 workers each, crash after epoch 6; the rerun is two
//! processes of 1 worker (a rescale from 4 to 2), restored from the shared checkpoint
//! directory, and the committed output equals a failure-free run's, each line once.

mod common;

use std::path::Path;
use std::process::ExitStatus;

use common::*;

/// Runs a job of two processes with `workers` each; returns both exit statuses.
fn run_two(dir: &Path, out: &Path, workers: &str, extra: &[&str]) -> [ExitStatus; 2] {
    let addresses = format!("127.0.0.1:{},127.0.0.1:{}", free_port(), free_port());
    let children = [0, 1].map(|p| {
        let process = p.to_string();
        let mut args = vec![
            "--workers",
            workers,
            "--processes",
            "2",
            "--process",
            &process,
            "--addresses",
            &addresses,
        ];
        args.extend_from_slice(extra);
        start(dir, out, &args)
    });
    children.map(wait)
}

#[test]
fn two_processes_crash_and_restore_at_another_size_with_the_failure_free_output() {
    let root = tempfile::tempdir().expect("a temporary directory");
    let reference = failure_free_output(root.path());

    let (dir, out) = (root.path().join("chk"), root.path().join("out"));
    let crashed = run_two(&dir, &out, "2", &["--crash-at-epoch", "6"]);
    // The process that reaches the crash exits with 3; its peer may see the connection close
    // first and fail on that: either way, neither succeeds.
    assert!(crashed.iter().all(|s| !s.success()), "{crashed:?}");
    assert!(crashed.iter().any(|s| s.code() == Some(3)), "{crashed:?}");

    let restored = run_two(&dir, &out, "1", &[]);
    assert!(restored.iter().all(ExitStatus::success), "{restored:?}");
    assert_eq!(committed_lines(&out), reference);
    assert!(check(&out));
}
