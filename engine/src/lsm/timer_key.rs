//! The timer layout of LSM keys: how the LSM backend keys the entries of a timer state, so that
//! each key group's timers of one domain are one run of keys **in the order they fire**
//! (spec/lsm-key-layout.md section 9).
//!
//! A state uses it when it is a value state whose namespace codec is `timer<…>` (a
//! [`TimerSlot`](crate::timer::TimerSlot): domain, timestamp, namespace); every other state uses
//! the [keyed layout](super::key). A timer service then reads the earliest timers of a key
//! group a few at a time instead of keeping every pending timer in memory.
//!
//! ```text
//! state id   u32 big-endian     4 bytes ┐ the header of every LSM key (key.rs)
//! key group  u16 big-endian     2 bytes ┘
//! domain     u8                 1 byte  ┐ the TimerSlot's first 9 bytes: its domain and its
//! timestamp  8 bytes            8 bytes ┘ timestamp (big-endian, sign bit flipped)
//! key length u32 big-endian     4 bytes
//! key        bytes
//! namespace  bytes, to the end          (the TimerSlot's namespace encoding)
//! ```
//!
//! Byte order is then (state, key group, domain, timestamp, key length, key bytes, namespace
//! bytes): the firing order of R74 within a key group and domain.

use std::borrow::Cow;

use super::key::{self, HEADER_LEN};
use crate::codec::CodecError;
use crate::key_group::UPPER_BOUND_MAX_PARALLELISM;
use crate::state::{StateId, StateKind, StateMeta};

/// The bytes of a `TimerSlot` encoding before its namespace: domain (1) and timestamp (8).
pub const SLOT_HEADER_LEN: usize = 9;

/// Bytes of a timer key before the key's bytes: header, slot header, key length.
const FIXED_LEN: usize = HEADER_LEN + SLOT_HEADER_LEN + 4;

/// How the tree keys of one state are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `state | key group | key | namespace [| user key]` ([`key`]).
    Keyed,
    /// `state | key group | domain | timestamp | key length | key | namespace` (this module).
    Timer,
}

impl Layout {
    /// The layout of a state: [`Layout::Timer`] for a value state whose namespace codec is
    /// `timer<…>`, [`Layout::Keyed`] for every other.
    pub fn of(meta: &StateMeta) -> Layout {
        if meta.kind == StateKind::Value && meta.namespace.name.starts_with("timer<") {
            Layout::Timer
        } else {
            Layout::Keyed
        }
    }

    /// Appends the tree key of `(key, ns)` of state `state` in `key_group` to `buf`. For the
    /// timer layout `ns` must be a `TimerSlot` encoding (at least 9 bytes).
    pub fn encode(
        self,
        buf: &mut Vec<u8>,
        state: StateId,
        key_group: u16,
        key_bytes: &[u8],
        ns: &[u8],
    ) -> Result<(), CodecError> {
        match self {
            Layout::Keyed => {
                key::encode_state_key(buf, state, key_group, key_bytes, ns);
                Ok(())
            }
            Layout::Timer => encode(buf, state, key_group, key_bytes, ns),
        }
    }

    /// Splits a tree key of this layout into its key and namespace encodings, handing them to
    /// `with` (a map entry's user key is not part of them: see [`key::decode`]).
    pub fn split<T>(
        self,
        tree_key: &[u8],
        with: impl FnOnce(&[u8], &[u8]) -> T,
    ) -> Result<T, CodecError> {
        match self {
            Layout::Keyed => {
                let d = key::decode(tree_key)?;
                Ok(with(d.key, d.namespace))
            }
            Layout::Timer => {
                let d = decode(tree_key)?;
                let mut ns = Vec::with_capacity(SLOT_HEADER_LEN + d.namespace.len());
                d.slot_namespace(&mut ns);
                Ok(with(d.key, &ns))
            }
        }
    }
}

/// Appends the timer-layout key of `(key, slot)` to `buf`: see the module documentation.
/// `slot` is the `TimerSlot` encoding; one shorter than its 9-byte header is refused.
pub fn encode(
    buf: &mut Vec<u8>,
    state: StateId,
    key_group: u16,
    key_bytes: &[u8],
    slot: &[u8],
) -> Result<(), CodecError> {
    let Some((head, ns)) = slot.split_first_chunk::<SLOT_HEADER_LEN>() else {
        return Err(CodecError::Truncated {
            needed: SLOT_HEADER_LEN as u64,
            available: slot.len() as u64,
        });
    };
    let len = u32::try_from(key_bytes.len())
        .map_err(|_| CodecError::Invalid(Cow::Borrowed("a timer's key is 4 GiB or longer")))?;
    buf.reserve(FIXED_LEN + key_bytes.len() + ns.len());
    buf.extend_from_slice(&key::header(state, key_group));
    buf.extend_from_slice(head);
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(key_bytes);
    buf.extend_from_slice(ns);
    Ok(())
}

/// The first key of the timers of `domain` (its code: 0 event time, 1 processing time) of
/// `state` in `key_group`, and the first key after them.
pub fn domain_range(state: StateId, key_group: u16, domain: u8) -> (Vec<u8>, Vec<u8>) {
    let mut start = key::header(state, key_group).to_vec();
    start.push(domain);
    let end = key::prefix_successor(&start).expect(
        "the prefix starts with a key group below 2^15, a byte below 0xff, so it has a successor",
    );
    (start, end)
}

/// The parts of a timer-layout key, borrowed from it; what [`decode`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerKey<'a> {
    /// The state.
    pub state: StateId,
    /// The key group.
    pub key_group: u16,
    /// The slot's domain byte and timestamp bytes.
    pub slot_header: &'a [u8; SLOT_HEADER_LEN],
    /// The key's encoding.
    pub key: &'a [u8],
    /// The slot's namespace encoding (after its header).
    pub namespace: &'a [u8],
}

impl TimerKey<'_> {
    /// Appends the whole `TimerSlot` encoding (header and namespace) to `buf`.
    pub fn slot_namespace(&self, buf: &mut Vec<u8>) {
        buf.extend_from_slice(self.slot_header);
        buf.extend_from_slice(self.namespace);
    }
}

/// Splits a timer-layout key into its parts. Never panics: a key too short for its fixed parts
/// or its key length is [`CodecError::Truncated`], a key group of 32 768 or more
/// [`CodecError::Invalid`].
pub fn decode(tree_key: &[u8]) -> Result<TimerKey<'_>, CodecError> {
    let truncated = || CodecError::Truncated {
        needed: FIXED_LEN as u64,
        available: tree_key.len() as u64,
    };
    let (head, rest) = tree_key
        .split_first_chunk::<HEADER_LEN>()
        .ok_or_else(truncated)?;
    let (state, key_group) = key::split_header(*head);
    if u32::from(key_group) >= UPPER_BOUND_MAX_PARALLELISM {
        return Err(CodecError::Invalid(Cow::Owned(format!(
            "key group {key_group} is not below {UPPER_BOUND_MAX_PARALLELISM}"
        ))));
    }
    let (slot_header, rest) = rest
        .split_first_chunk::<SLOT_HEADER_LEN>()
        .ok_or_else(truncated)?;
    let (len, rest) = rest.split_first_chunk::<4>().ok_or_else(truncated)?;
    let len = u32::from_be_bytes(*len) as usize;
    if rest.len() < len {
        return Err(CodecError::Truncated {
            needed: len as u64,
            available: rest.len() as u64,
        });
    }
    let (key_bytes, namespace) = rest.split_at(len);
    Ok(TimerKey {
        state,
        key_group,
        slot_header,
        key: key_bytes,
        namespace,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{to_bytes, Codec};
    use crate::state::CodecInfo;
    use crate::timer::{TimeDomain, TimerSlot};

    fn slot(domain: TimeDomain, ts: i64, ns: &str) -> Vec<u8> {
        to_bytes(&TimerSlot {
            domain,
            timestamp: ts,
            namespace: ns.to_owned(),
        })
    }

    fn tkey(kg: u16, key_bytes: &[u8], slot: &[u8]) -> Vec<u8> {
        let mut k = Vec::new();
        encode(&mut k, StateId(4), kg, key_bytes, slot).unwrap();
        k
    }

    #[test]
    fn keys_round_trip_and_are_the_documented_bytes() {
        let s = slot(TimeDomain::ProcessingTime, 5, "w");
        let k = tkey(3, b"ab", &s);
        let mut expected = vec![0, 0, 0, 4, 0, 3];
        expected.extend_from_slice(&s[..SLOT_HEADER_LEN]);
        expected.extend_from_slice(&[0, 0, 0, 2]);
        expected.extend_from_slice(b"ab");
        expected.extend_from_slice(&s[SLOT_HEADER_LEN..]);
        assert_eq!(k, expected);
        let d = decode(&k).unwrap();
        assert_eq!((d.state, d.key_group, d.key), (StateId(4), 3, &b"ab"[..]));
        let mut back = Vec::new();
        d.slot_namespace(&mut back);
        assert_eq!(back, s);
        let (got_key, got_ns) = Layout::Timer
            .split(&k, |k, n| (k.to_vec(), n.to_vec()))
            .unwrap();
        assert_eq!((got_key, got_ns), (b"ab".to_vec(), s));
    }

    #[test]
    fn byte_order_is_domain_time_key_length_key_namespace() {
        use TimeDomain::*;
        // In firing order (R74), within each domain.
        let ordered = [
            tkey(1, b"zz", &slot(EventTime, -3, "a")),
            tkey(1, b"b", &slot(EventTime, 2, "z")),
            tkey(1, b"c", &slot(EventTime, 2, "a")),
            tkey(1, b"aa", &slot(EventTime, 2, "a")),
            tkey(1, b"aa", &slot(EventTime, 2, "b")),
            tkey(1, b"a", &slot(EventTime, i64::MAX, "")),
            tkey(1, b"a", &slot(ProcessingTime, i64::MIN, "")),
            tkey(2, b"a", &slot(EventTime, i64::MIN, "")),
        ];
        for pair in ordered.windows(2) {
            assert!(pair[0] < pair[1], "{:?} < {:?}", pair[0], pair[1]);
        }
        let (start, end) = domain_range(StateId(4), 1, 0);
        assert!(ordered[..6].iter().all(|k| start <= *k && *k < end));
        assert!(!(start..end).contains(&ordered[6]));
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let k = tkey(1, b"key", &slot(TimeDomain::EventTime, 1, "n"));
        for cut in 0..HEADER_LEN + SLOT_HEADER_LEN + 4 + 3 {
            assert!(decode(&k[..cut]).is_err(), "cut at {cut}");
        }
        let mut big_group = k.clone();
        big_group[4] = 0x80;
        assert!(decode(&big_group).is_err());
        let mut buf = Vec::new();
        assert!(encode(&mut buf, StateId(0), 0, b"k", &[0; 8]).is_err());
        assert!(buf.is_empty());
    }

    #[test]
    fn the_layout_follows_the_state_meta() {
        let meta = |kind, ns: &str| StateMeta {
            name: "s".into(),
            kind,
            namespace: CodecInfo {
                name: ns.into(),
                version: 1,
            },
            value: CodecInfo::of::<()>(),
            user_key: None,
        };
        let timer_ns = TimerSlot::<String>::codec_name();
        assert_eq!(
            Layout::of(&meta(StateKind::Value, &timer_ns)),
            Layout::Timer
        );
        assert_eq!(Layout::of(&meta(StateKind::List, &timer_ns)), Layout::Keyed);
        assert_eq!(Layout::of(&meta(StateKind::Value, "string")), Layout::Keyed);
    }
}
