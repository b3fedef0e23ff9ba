//! `flowstate lsm` on a tree directory written by `Tree`: levels, tables and range tombstones
//! are shown, `--verify` reads every table, a flipped byte is found, and a directory without a
//! manifest is a clear error.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use flowstate::lsm::tree::{Tree, TreeOptions};
use flowstate::storage::{LocalStorage, Storage};

fn flowstate(args: &[&str], path: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flowstate"))
        .arg("lsm")
        .arg(path)
        .args(args)
        .output()
        .expect("the flowstate binary runs")
}

fn write_tree(dir: &Path) {
    let storage: Arc<dyn Storage> = Arc::new(LocalStorage::new(dir).expect("a local storage"));
    let options = TreeOptions {
        block_size: 256,
        l0_compaction_trigger: 2,
        target_table_bytes: 4096,
        level1_max_bytes: 1 << 20,
        ..TreeOptions::default()
    };
    let tree = Tree::open(storage, "tree", options).expect("the tree opens");
    for i in 0..2000u32 {
        tree.put(format!("key{i:05}").as_bytes(), b"some value")
            .expect("a put");
    }
    tree.freeze();
    while tree.flush_one().expect("a flush") {}
    tree.delete_range(b"key00100", b"key00200")
        .expect("a range delete");
    tree.put(b"key00150", b"rewritten").expect("a put");
    tree.freeze();
    while tree.flush_one().expect("a flush") {}
    // Dropped without dispose: the manifest and tables stay.
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn lsm_shows_and_verifies_a_tree_and_finds_damage() {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    write_tree(tmp.path());
    let tree_dir = tmp.path().join("tree");

    let text = ok(&flowstate(&["--ranges", "3"], &tree_dir));
    assert!(text.contains("tables, next table id"), "{text}");
    assert!(text.contains("L0: 2 tables"), "{text}");
    assert!(text.contains("range [key00100, key00200)"), "{text}");
    assert!(text.contains("1 range tombstones"), "{text}");

    let text = ok(&flowstate(&["--verify"], &tree_dir));
    assert!(
        text.contains("OK: 2 tables, 2001 entries verified"),
        "{text}"
    );

    // One table file on its own.
    let table = std::fs::read_dir(&tree_dir)
        .expect("the tree directory")
        .map(|e| e.expect("an entry").path())
        .find(|p| p.extension().is_some_and(|e| e == "sst"))
        .expect("a table file");
    let text = ok(&flowstate(&["--verify"], &table));
    assert!(text.contains("verified"), "{text}");

    // A flipped byte in the middle of a data block is found.
    let mut bytes = std::fs::read(&table).expect("read the table");
    let mid = bytes.len() / 3;
    bytes[mid] ^= 0x40;
    std::fs::write(&table, &bytes).expect("write the table");
    let out = flowstate(&["--verify"], &tree_dir);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("flowstate:"), "{err}");

    // Not a tree.
    let out = flowstate(&[], tmp.path());
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not an LSM tree directory"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
