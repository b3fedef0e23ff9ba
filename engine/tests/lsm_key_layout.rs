//! Properties of the LSM key layout (spec/lsm-key-layout.md): decoding inverts encoding and
//! never panics, byte order follows (state, key group, key, namespace, user key) as the spec
//! defines it, and every prefix is exact: the keys in a prefix's byte range are exactly the
//! entries that share those parts, even when keys and namespaces are byte prefixes of each
//! other.

use std::cmp::Ordering;
use std::collections::BTreeSet;

use flowstate::lsm::key::{self, DecodedKey, KeyRange};
use flowstate::{KeyGroupRange, StateId};
use proptest::prelude::*;

/// The parts of one entry key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Parts {
    state: u32,
    key_group: u16,
    key: Vec<u8>,
    ns: Vec<u8>,
    /// A map user key; empty for a value-like entry.
    user_key: Vec<u8>,
}

impl Parts {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        key::encode_map_key(
            &mut out,
            StateId(self.state),
            self.key_group,
            &self.key,
            &self.ns,
            &self.user_key,
        );
        out
    }
}

/// Bytes from a three-letter alphabet, short: many are byte prefixes of one another, and
/// lengths collide often.
fn tiny_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop_oneof![Just(0u8), Just(1), Just(0xff)], 0..4)
}

/// Mostly tiny bytes; sometimes long enough (128 to 300 bytes) for a two-byte length.
fn part_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => tiny_bytes(),
        1 => prop::collection::vec(any::<u8>(), 128..300),
    ]
}

fn parts() -> impl Strategy<Value = Parts> {
    (
        prop_oneof![Just(0u32), Just(1), Just(255), Just(256), Just(u32::MAX)],
        prop_oneof![Just(0u16), Just(1), Just(255), Just(256), Just(32767)],
        part_bytes(),
        part_bytes(),
        tiny_bytes(),
    )
        .prop_map(|(state, key_group, key, ns, user_key)| Parts {
            state,
            key_group,
            key,
            ns,
            user_key,
        })
}

/// The order the spec defines: state and key group numerically, then the key by its length
/// encoding and bytes, the namespace likewise, then the user key's bytes. For lengths below
/// 128 the length encoding is one byte, so that is (length, bytes).
fn spec_order(a: &Parts, b: &Parts) -> Ordering {
    fn len_bytes(part: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flowstate_formats::codec::varint::encode_u64(part.len() as u64, &mut out);
        out
    }
    a.state
        .cmp(&b.state)
        .then(a.key_group.cmp(&b.key_group))
        .then_with(|| len_bytes(&a.key).cmp(&len_bytes(&b.key)))
        .then_with(|| a.key.cmp(&b.key))
        .then_with(|| len_bytes(&a.ns).cmp(&len_bytes(&b.ns)))
        .then_with(|| a.ns.cmp(&b.ns))
        .then_with(|| a.user_key.cmp(&b.user_key))
}

fn config() -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = 256;
    }
    config
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn decode_inverts_encode(p in parts()) {
        let bytes = p.encode();
        let d = key::decode(&bytes).unwrap();
        prop_assert_eq!(
            d,
            DecodedKey {
                state: StateId(p.state),
                key_group: p.key_group,
                key: &p.key,
                namespace: &p.ns,
                user_key: (!p.user_key.is_empty()).then_some(&p.user_key[..]),
            }
        );
        prop_assert_eq!(d.map_user_key(), &p.user_key[..]);
        // The value-like key is the map key without the user key.
        let mut value_key = Vec::new();
        key::encode_state_key(&mut value_key, StateId(p.state), p.key_group, &p.key, &p.ns);
        prop_assert_eq!(&bytes[..value_key.len()], &value_key[..]);
        prop_assert_eq!(key::namespace_prefix_len(&bytes), Some(value_key.len()));
    }

    /// Any bytes: `decode` returns, and what it accepts re-encodes to the same bytes.
    #[test]
    fn decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..40)) {
        if let Ok(d) = key::decode(&bytes) {
            let mut again = Vec::new();
            key::encode_map_key(
                &mut again, d.state, d.key_group, d.key, d.namespace, d.map_user_key(),
            );
            prop_assert_eq!(again, bytes);
        }
    }

    /// Damaged keys (truncated, or one byte changed): `decode` returns, and what it accepts
    /// re-encodes to the same bytes.
    #[test]
    fn decode_rejects_or_round_trips_damaged_keys(
        p in parts(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        truncate in any::<bool>(),
    ) {
        let mut bytes = p.encode();
        let i = at.index(bytes.len());
        if truncate {
            bytes.truncate(i);
        } else {
            bytes[i] = byte;
        }
        if let Ok(d) = key::decode(&bytes) {
            let mut again = Vec::new();
            key::encode_map_key(
                &mut again, d.state, d.key_group, d.key, d.namespace, d.map_user_key(),
            );
            prop_assert_eq!(again, bytes);
        }
    }

    /// Byte order equals the spec's order: first state, then key group, numerically.
    #[test]
    fn byte_order_is_the_spec_order(a in parts(), b in parts()) {
        prop_assert_eq!(a.encode().cmp(&b.encode()), spec_order(&a, &b));
        if a.state != b.state {
            prop_assert_eq!(a.encode().cmp(&b.encode()), a.state.cmp(&b.state));
        } else if a.key_group != b.key_group {
            prop_assert_eq!(a.encode().cmp(&b.encode()), a.key_group.cmp(&b.key_group));
        } else if a.key.len() == b.key.len() && a.key != b.key {
            prop_assert_eq!(a.encode().cmp(&b.encode()), a.key.cmp(&b.key));
        } else if a.key == b.key && a.ns == b.ns {
            // Map entries of one (key, namespace) sort by user-key bytes.
            prop_assert_eq!(a.encode().cmp(&b.encode()), a.user_key.cmp(&b.user_key));
        }
    }

    /// Every prefix's byte range holds exactly the entries that share its parts.
    #[test]
    fn prefixes_are_exact(
        entries in prop::collection::btree_set(parts(), 1..40),
        probe in parts(),
    ) {
        let mut all: Vec<&Parts> = entries.iter().collect();
        all.push(&probe);
        let state = StateId(probe.state);
        let kg = probe.key_group;
        let mut prefixes = Vec::new();
        let mut p = Vec::new();
        key::state_prefix(&mut p, state);
        prefixes.push((std::mem::take(&mut p), 1));
        key::key_group_prefix(&mut p, state, kg);
        prefixes.push((std::mem::take(&mut p), 2));
        key::key_prefix(&mut p, state, kg, &probe.key);
        prefixes.push((std::mem::take(&mut p), 3));
        key::namespace_prefix(&mut p, state, kg, &probe.key, &probe.ns);
        prefixes.push((std::mem::take(&mut p), 4));
        for (prefix, depth) in prefixes {
            let range = KeyRange::for_prefix(&prefix);
            for e in &all {
                let shares = match depth {
                    1 => e.state == probe.state,
                    2 => (e.state, e.key_group) == (probe.state, kg),
                    3 => (e.state, e.key_group, &e.key) == (probe.state, kg, &probe.key),
                    _ => (e.state, e.key_group, &e.key, &e.ns)
                        == (probe.state, kg, &probe.key, &probe.ns),
                };
                let bytes = e.encode();
                prop_assert_eq!(bytes.starts_with(&prefix), shares, "depth {} entry {:?}", depth, e);
                prop_assert_eq!(range.contains(&bytes), shares, "depth {} entry {:?}", depth, e);
            }
        }
    }

    /// The range of a state's key-group range holds exactly that state's entries in it.
    #[test]
    fn key_group_ranges_are_exact(
        entries in prop::collection::btree_set(parts(), 1..40),
        state in prop_oneof![Just(0u32), Just(1), Just(u32::MAX)],
        bounds in (0u16..32768, 0u16..32768),
    ) {
        let (start, end) = (bounds.0.min(bounds.1), bounds.0.max(bounds.1));
        let kgs = KeyGroupRange::new(start, end).unwrap();
        let range = KeyRange::key_groups(StateId(state), kgs).unwrap();
        for e in &entries {
            let inside = e.state == state && kgs.contains(e.key_group);
            prop_assert_eq!(range.contains(&e.encode()), inside, "entry {:?}", e);
        }
    }

    /// Sorting encoded keys groups them: each state, each (state, key group), each (key,
    /// namespace) is one run.
    #[test]
    fn sorted_keys_group_by_parts(entries in prop::collection::btree_set(parts(), 1..60)) {
        let mut encoded: Vec<(Vec<u8>, &Parts)> = entries.iter().map(|p| (p.encode(), p)).collect();
        encoded.sort();
        let mut closed: BTreeSet<(u32, u16, Vec<u8>, Vec<u8>)> = BTreeSet::new();
        let mut closed_groups: BTreeSet<(u32, u16)> = BTreeSet::new();
        let mut last: Option<&Parts> = None;
        for (_, p) in &encoded {
            if let Some(prev) = last {
                let prev_id = (prev.state, prev.key_group, prev.key.clone(), prev.ns.clone());
                let id = (p.state, p.key_group, p.key.clone(), p.ns.clone());
                if prev_id != id {
                    closed.insert(prev_id);
                    prop_assert!(!closed.contains(&id), "(key, namespace) {:?} split", id);
                }
                if (prev.state, prev.key_group) != (p.state, p.key_group) {
                    closed_groups.insert((prev.state, prev.key_group));
                    prop_assert!(!closed_groups.contains(&(p.state, p.key_group)));
                    prop_assert!((prev.state, prev.key_group) < (p.state, p.key_group));
                }
            }
            last = Some(p);
        }
    }
}

/// Keys that are byte prefixes of each other, and namespaces that make up the difference,
/// never share a prefix range: the case a plain concatenation gets wrong.
#[test]
fn prefix_keys_and_shifted_namespaces_are_apart() {
    // Without lengths, ("a", "bc") and ("ab", "c") would both be "abc".
    let a = Parts {
        state: 1,
        key_group: 2,
        key: b"a".to_vec(),
        ns: b"bc".to_vec(),
        user_key: Vec::new(),
    };
    let b = Parts {
        key: b"ab".to_vec(),
        ns: b"c".to_vec(),
        ..a.clone()
    };
    assert_ne!(a.encode(), b.encode());
    let mut p = Vec::new();
    key::namespace_prefix(&mut p, StateId(1), 2, b"a", b"bc");
    assert!(!b.encode().starts_with(&p));
    // A map entry of ("a", "") with user key "x" is not under the prefix of ("a", "x").
    let map_entry = Parts {
        key: b"a".to_vec(),
        ns: Vec::new(),
        user_key: b"x".to_vec(),
        ..a.clone()
    };
    p.clear();
    key::namespace_prefix(&mut p, StateId(1), 2, b"a", b"x");
    assert!(!map_entry.encode().starts_with(&p));
}
