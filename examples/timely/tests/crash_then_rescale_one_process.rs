//! One process: 2 workers crash after epoch 4 (its checkpoint pre-committed, not completed);
//! a rerun at 3 workers restores from the latest completed checkpoint, replays from the
//! restored offsets, and the committed output equals a failure-free run's, each line once.

mod common;

use common::*;

#[test]
fn two_workers_crash_and_three_restore_with_the_failure_free_output() {
    let root = tempfile::tempdir().expect("a temporary directory");
    let reference = failure_free_output(root.path());

    let (dir, out) = (root.path().join("chk"), root.path().join("out"));
    let crashed = run(&dir, &out, &["--workers", "2", "--crash-at-epoch", "4"]);
    assert_eq!(crashed.code(), Some(3), "the run stops itself as a crash");
    let partial = committed_lines(&out);
    assert!(
        partial.len() < reference.len(),
        "the crash came before the end"
    );

    assert!(run(&dir, &out, &["--workers", "3"]).success());
    assert_eq!(committed_lines(&out), reference);
    assert!(check(&out));
}
