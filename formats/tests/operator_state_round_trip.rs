//! Operator-state files round-trip: arbitrary states of every mode read back unchanged, one at
//! a time or all together, and the bytes are a function of the content (re-encoding what was
//! read gives the same file).

use flowstate_formats::fuzzing;
use flowstate_formats::operator::{
    OperatorState, OperatorStateData, OperatorStateMeta, OperatorStateMode, OperatorStateReader,
};
use flowstate_formats::{CodecRecord, ReadLimits};
use proptest::prelude::*;

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..max)
}

fn states() -> impl Strategy<Value = Vec<OperatorState>> {
    prop::collection::vec(
        (
            0u8..3,
            prop::collection::vec(bytes(8), 0..6),
            prop::collection::btree_map(bytes(4), bytes(8), 0..6),
        ),
        0..5,
    )
    .prop_map(|raw| {
        raw.into_iter()
            .enumerate()
            .map(|(i, (mode, list, map))| {
                let mode = OperatorStateMode::from_code(mode).unwrap();
                OperatorState {
                    meta: OperatorStateMeta {
                        name: format!("state-{i}"),
                        mode,
                        value: CodecRecord::new("bytes", 1),
                        key: mode.is_map().then(|| CodecRecord::new("string", 1)),
                    },
                    data: if mode.is_map() {
                        OperatorStateData::Map(map.into_iter().collect())
                    } else {
                        OperatorStateData::List(list)
                    },
                }
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn what_is_written_reads_back(states in states()) {
        let bytes = fuzzing::encode_operator_state(&states).unwrap();
        let read = fuzzing::decode_operator_state(&bytes, ReadLimits::default()).unwrap();
        prop_assert_eq!(&read, &states);
        let r = OperatorStateReader::open(&bytes[..], "f").unwrap();
        prop_assert_eq!(r.state_count(), states.len());
        for (i, s) in states.iter().enumerate().rev() {
            prop_assert_eq!(&r.read_state(i).unwrap(), s);
        }
        prop_assert!(r.read_state(states.len()).is_err());
        let mut input = vec![0u8];
        input.extend_from_slice(&bytes);
        fuzzing::check_operator_state_decode(&input);
    }
}

#[test]
fn an_empty_file_holds_no_states() {
    let bytes = fuzzing::encode_operator_state(&[]).unwrap();
    // Header, an origin block of one byte (no origin), footer.
    assert_eq!(bytes.len(), 12 + 9 + 20);
    let r = OperatorStateReader::open(&bytes[..], "f").unwrap();
    assert_eq!(r.state_count(), 0);
    assert!(r.read_all().unwrap().is_empty());
}
