//! The operator-state writer refuses what the reader would reject: duplicate names, a list
//! written as a map or the reverse, a key codec on a list or none on a map, unsorted or
//! duplicate map keys. A refused state writes nothing.

use flowstate_formats::fuzzing;
use flowstate_formats::operator::{OperatorStateMeta, OperatorStateMode, OperatorStateWriter};
use flowstate_formats::{CodecRecord, FormatError, ReadLimits};

fn meta(name: &str, mode: OperatorStateMode) -> OperatorStateMeta {
    OperatorStateMeta {
        name: name.into(),
        mode,
        value: CodecRecord::new("u64", 1),
        key: mode.is_map().then(|| CodecRecord::new("string", 1)),
    }
}

#[track_caller]
fn invalid(r: Result<(), FormatError>, needle: &str) {
    match r {
        Err(FormatError::InvalidInput { reason, file }) => {
            assert_eq!(file, "op");
            assert!(reason.contains(needle), "expected '{needle}': {reason}");
        }
        other => panic!("expected InvalidInput '{needle}', got {other:?}"),
    }
}

#[test]
fn refused_states_leave_no_trace() {
    let mut out = Vec::new();
    let mut w = OperatorStateWriter::new(&mut out, "op").unwrap();
    let list = meta("offsets", OperatorStateMode::SplitList);
    let map = meta("rules", OperatorStateMode::BroadcastMap);
    w.write_list_state(&list, [b"a", b"b"]).unwrap();
    invalid(w.write_list_state(&list, [b"c"]), "written twice");
    invalid(w.write_map_state(&list, [(b"k", b"v")]), "written as a map");
    invalid(w.write_list_state(&map, [b"c"]), "written as a list");
    invalid(
        w.write_map_state(&map, [(b"b", b"1"), (b"a", b"2")]),
        "not strictly ascending",
    );
    invalid(
        w.write_map_state(&map, [(b"a", b"1"), (b"a", b"2")]),
        "not strictly ascending",
    );
    let mut keyless = map.clone();
    keyless.key = None;
    invalid(
        w.write_map_state(&keyless, [(b"a", b"1")]),
        "lacks a key codec",
    );
    let mut keyed = meta("union", OperatorStateMode::UnionList);
    keyed.key = Some(CodecRecord::new("u8", 1));
    invalid(w.write_list_state(&keyed, [b"x"]), "has a key codec");
    let mut long = meta("n", OperatorStateMode::UnionList);
    long.name = "n".repeat(70_000);
    invalid(w.write_list_state(&long, [b"x"]), "longer than");
    w.write_map_state(&map, [(b"a", b"1"), (b"b", b"2")])
        .unwrap();
    let summary = w.finish().unwrap();
    assert_eq!(summary.state_count, 2);
    assert_eq!(summary.len, out.len() as u64);
    let states = fuzzing::decode_operator_state(&out, ReadLimits::default()).unwrap();
    assert_eq!(states.len(), 2);
}
