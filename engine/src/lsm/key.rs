//! The key layout of the LSM tree: one byte string per (state, key group, key, namespace
//! [, map user key]).
//!
//! ## Format
//!
//! ```text
//! state id   u32 big-endian    4 bytes  ┐ the header: fixed width, big-endian,
//! key group  u16 big-endian    2 bytes  ┘ so byte order = (state, key group) order
//! key        varint length + bytes      ┐ length-prefixed: no (key, namespace) pair
//! namespace  varint length + bytes      ┘ can be a byte prefix of another
//! user key   bytes, to the end          (map entries only; never length-prefixed)
//! ```
//!
//! The varint is the unsigned LEB128 of spec/formats.md 1.1. spec/lsm-key-layout.md states the
//! layout, the order it gives, and why every prefix below is exact.
//!
//! - [`state_prefix`]: every entry of a state;
//! - [`key_group_prefix`]: every entry of a state in one key group;
//! - [`key_prefix`]: every namespace of one key of a state;
//! - [`namespace_prefix`]: the entry of one (key, namespace), and for map state its user keys
//!   (byte-identical to the value-state key [`encode_state_key`] writes).
//!
//! [`namespace_prefix_len`] finds the last of them in a key (for a table's prefix filter),
//! [`KeyRange::for_prefix`] turns a prefix into a byte range, [`KeyRange::key_groups`] a
//! [`KeyGroupRange`] of one state into one (for range deletion after a rescale), and [`decode`]
//! splits a key back into its parts without panicking on any input. [`KeyBuilder`] writes the
//! keys of the current key without re-encoding the key for every access.

use std::borrow::Cow;
use std::fmt;

use flowstate_formats::codec::varint;

use crate::codec::CodecError;
use crate::key_group::{KeyGroupRange, UPPER_BOUND_MAX_PARALLELISM};
use crate::state::StateId;

/// Bytes of the fixed header, state id (4) and key group (2), that starts every key.
pub const HEADER_LEN: usize = 6;

/// The header of a key: state id and key group, **big-endian**.
///
/// This is the one place flowstate writes integers big-endian (everything else on disk is
/// little-endian, spec/formats.md): in big-endian, the byte order of the header equals the
/// numeric order of (state id, key group). That makes the tree sort by state, then key group,
/// and makes a state, a key group or a contiguous range of key groups one byte range, which a
/// prefix scan or a range deletion after a rescale needs. [`split_header`] is its inverse.
#[inline]
pub fn header(state: StateId, key_group: u16) -> [u8; HEADER_LEN] {
    let s = state.0.to_be_bytes();
    let g = key_group.to_be_bytes();
    [s[0], s[1], s[2], s[3], g[0], g[1]]
}

/// The state id and key group of a [`header`] (big-endian, see there for why).
#[inline]
pub fn split_header(header: [u8; HEADER_LEN]) -> (StateId, u16) {
    let [s0, s1, s2, s3, g0, g1] = header;
    (
        StateId(u32::from_be_bytes([s0, s1, s2, s3])),
        u16::from_be_bytes([g0, g1]),
    )
}

#[inline]
fn put_part(buf: &mut Vec<u8>, part: &[u8]) {
    varint::encode_u64(part.len() as u64, buf);
    buf.extend_from_slice(part);
}

/// Appends the key of a value-like entry (value, list, reducing, aggregating state) to `buf`:
/// `header(state, key_group) | varint(len key) | key | varint(len ns) | ns`.
///
/// `key` and `ns` are codec encodings; `key_group` must be below 32 768 (the largest max
/// parallelism), or [`decode`] rejects the key.
#[inline]
pub fn encode_state_key(buf: &mut Vec<u8>, state: StateId, key_group: u16, key: &[u8], ns: &[u8]) {
    buf.extend_from_slice(&header(state, key_group));
    put_part(buf, key);
    put_part(buf, ns);
}

/// Appends the key of one map entry to `buf`: the [`encode_state_key`] bytes of (key, ns),
/// then the user key's bytes as they are (no length: it is the last part).
///
/// The map entries of one (key, namespace) are exactly the keys that start with
/// [`namespace_prefix`], and they sort by user-key bytes.
#[inline]
pub fn encode_map_key(
    buf: &mut Vec<u8>,
    state: StateId,
    key_group: u16,
    key: &[u8],
    ns: &[u8],
    user_key: &[u8],
) {
    encode_state_key(buf, state, key_group, key, ns);
    buf.extend_from_slice(user_key);
}

/// Appends the prefix of every entry of `state` to `buf`: its 4-byte big-endian id.
#[inline]
pub fn state_prefix(buf: &mut Vec<u8>, state: StateId) {
    buf.extend_from_slice(&header(state, 0)[..4]);
}

/// Appends the prefix of every entry of `state` in `key_group` to `buf`: the 6-byte header.
#[inline]
pub fn key_group_prefix(buf: &mut Vec<u8>, state: StateId, key_group: u16) {
    buf.extend_from_slice(&header(state, key_group));
}

/// Appends the prefix of every entry of `key` in `state`, in any namespace, to `buf`.
#[inline]
pub fn key_prefix(buf: &mut Vec<u8>, state: StateId, key_group: u16, key: &[u8]) {
    key_group_prefix(buf, state, key_group);
    put_part(buf, key);
}

/// Appends the prefix of the entries of (`key`, `ns`) in `state` to `buf`: the one entry of a
/// value-like state, or every user key of a map state. The bytes equal [`encode_state_key`]'s.
#[inline]
pub fn namespace_prefix(buf: &mut Vec<u8>, state: StateId, key_group: u16, key: &[u8], ns: &[u8]) {
    encode_state_key(buf, state, key_group, key, ns);
}

/// The length of an entry key's [`namespace_prefix`]: the whole key but a map user key.
/// `None` if the key does not [`decode`].
///
/// This is the prefix a table's prefix bloom filter extracts, so that a scan of one map
/// (key, namespace) skips the tables that hold none of its entries.
pub fn namespace_prefix_len(key: &[u8]) -> Option<usize> {
    let decoded = decode(key).ok()?;
    Some(key.len() - decoded.map_user_key().len())
}

/// The least byte string greater than every string that starts with `prefix`, or `None` if
/// there is none (`prefix` is empty or all `0xff`).
///
/// It is `prefix` with its trailing `0xff` bytes removed and its last byte incremented.
pub fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let last = prefix.iter().rposition(|&b| b != 0xff)?;
    let mut end = prefix[..=last].to_vec();
    end[last] += 1; // below 0xff: rposition found it so
    Some(end)
}

/// A range of keys, `start..end` (end exclusive; `None` means no upper bound).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct KeyRange {
    /// The least key in the range.
    pub start: Vec<u8>,
    /// The first key after the range, or `None` if the range has no end.
    pub end: Option<Vec<u8>>,
}

impl KeyRange {
    /// The keys that start with `prefix`: `prefix..prefix_successor(prefix)`.
    pub fn for_prefix(prefix: &[u8]) -> KeyRange {
        KeyRange {
            start: prefix.to_vec(),
            end: prefix_successor(prefix),
        }
    }

    /// Every entry of `state`.
    pub fn state(state: StateId) -> KeyRange {
        let mut prefix = Vec::with_capacity(4);
        state_prefix(&mut prefix, state);
        KeyRange::for_prefix(&prefix)
    }

    /// Every entry of `state` in the key groups of `range`, `None` if `range` is empty: from
    /// the header of the first key group to the header of the key group after the last one.
    ///
    /// A rescaled restore deletes the key groups it does not own with the ranges of
    /// `0..start` and `end + 1..max parallelism`, for each state.
    pub fn key_groups(state: StateId, range: KeyGroupRange) -> Option<KeyRange> {
        if range.is_empty() {
            return None;
        }
        let start = header(state, range.start()).to_vec();
        // The key group after the last one is at most 32 768, which a u16 holds.
        let after = u32::from(range.end()) + 1;
        debug_assert!(after <= UPPER_BOUND_MAX_PARALLELISM);
        let end = header(state, after as u16).to_vec();
        Some(KeyRange {
            start,
            end: Some(end),
        })
    }

    /// Whether `key` is in the range.
    pub fn contains(&self, key: &[u8]) -> bool {
        key >= self.start.as_slice() && self.end.as_deref().is_none_or(|end| key < end)
    }
}

impl fmt::Debug for KeyRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..", Hex(&self.start))?;
        match &self.end {
            Some(end) => write!(f, "{}", Hex(end)),
            None => Ok(()),
        }
    }
}

/// Bytes shown as lowercase hex, for error messages and `Debug`.
pub(crate) struct Hex<'a>(pub(crate) &'a [u8]);

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// The parts of a key, borrowed from it; what [`decode`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodedKey<'a> {
    /// The state.
    pub state: StateId,
    /// The key group.
    pub key_group: u16,
    /// The key's encoding.
    pub key: &'a [u8],
    /// The namespace's encoding.
    pub namespace: &'a [u8],
    /// The bytes after the namespace: the user key of a map entry, `None` if there are none.
    ///
    /// A map user key that encodes to no bytes (a `()` user key) decodes as `None`, like a
    /// value-like entry: the state's kind, not the key, says whether an entry is a map entry.
    pub user_key: Option<&'a [u8]>,
}

impl<'a> DecodedKey<'a> {
    /// The user key of a map entry: the bytes after the namespace, possibly empty.
    pub fn map_user_key(&self) -> &'a [u8] {
        self.user_key.unwrap_or(&[])
    }
}

fn take_part<'a>(input: &mut &'a [u8]) -> Result<&'a [u8], CodecError> {
    let declared = varint::decode_u64(input)?;
    let available = input.len();
    let len = usize::try_from(declared)
        .ok()
        .filter(|&len| len <= available)
        .ok_or(CodecError::Truncated {
            needed: declared,
            available: available as u64,
        })?;
    let (part, rest) = input.split_at(len);
    *input = rest;
    Ok(part)
}

/// Splits an LSM key into its parts. Never panics: a key too short for its header or for a
/// declared length is [`CodecError::Truncated`], a malformed length or a key group of 32 768
/// or more is [`CodecError::Invalid`].
///
/// `decode` accepts exactly what the encoders write (lengths in shortest form), so
/// re-encoding the parts gives the same bytes.
pub fn decode(key: &[u8]) -> Result<DecodedKey<'_>, CodecError> {
    let Some((head, mut rest)) = key.split_first_chunk::<HEADER_LEN>() else {
        return Err(CodecError::Truncated {
            needed: HEADER_LEN as u64,
            available: key.len() as u64,
        });
    };
    let (state, key_group) = split_header(*head);
    if u32::from(key_group) >= UPPER_BOUND_MAX_PARALLELISM {
        return Err(CodecError::Invalid(Cow::Owned(format!(
            "key group {key_group} is not below {UPPER_BOUND_MAX_PARALLELISM}"
        ))));
    }
    let key_part = take_part(&mut rest)?;
    let namespace = take_part(&mut rest)?;
    Ok(DecodedKey {
        state,
        key_group,
        key: key_part,
        namespace,
        user_key: (!rest.is_empty()).then_some(rest),
    })
}

/// Writes the keys of one current key, re-encoding only what changes between accesses.
///
/// [`set_key`](KeyBuilder::set_key) writes the header and the key once (what
/// `set_current_key` does); each access then rewrites the 4-byte state id in place and the
/// namespace and user key after the key. It is the counterpart of Flink's
/// `SerializedCompositeKeyBuilder`.
///
/// ```
/// use flowstate::lsm::key::{self, KeyBuilder};
/// use flowstate::StateId;
///
/// let mut b = KeyBuilder::new();
/// b.set_key(17, b"\x05alice");
/// let mut expected = Vec::new();
/// key::encode_map_key(&mut expected, StateId(2), 17, b"\x05alice", b"ns", b"uk");
/// assert_eq!(b.map_key(StateId(2), b"ns", b"uk"), &expected[..]);
/// ```
#[derive(Debug, Clone, Default)]
pub struct KeyBuilder {
    buf: Vec<u8>,
    /// Where the key's bytes end (0 until a key is set).
    key_end: usize,
}

impl KeyBuilder {
    /// A builder with no key set.
    pub fn new() -> Self {
        KeyBuilder::default()
    }

    /// Sets the current key and its key group; the state id is written per access.
    pub fn set_key(&mut self, key_group: u16, key: &[u8]) {
        self.buf.clear();
        self.buf.extend_from_slice(&header(StateId(0), key_group));
        put_part(&mut self.buf, key);
        self.key_end = self.buf.len();
    }

    /// Whether a key was set.
    pub fn has_key(&self) -> bool {
        self.key_end != 0
    }

    fn with_state(&mut self, state: StateId) {
        if self.key_end == 0 {
            // No key set: behave as for the empty key in key group 0.
            self.set_key(0, &[]);
        }
        self.buf[..4].copy_from_slice(&header(state, 0)[..4]);
        self.buf.truncate(self.key_end);
    }

    /// The prefix of every namespace of the current key in `state` ([`key_prefix`]).
    pub fn key_prefix(&mut self, state: StateId) -> &[u8] {
        self.with_state(state);
        &self.buf
    }

    /// The key of the current key's entry in `state` and namespace `ns`
    /// ([`encode_state_key`]); for map state, the prefix of its user keys.
    pub fn state_key(&mut self, state: StateId, ns: &[u8]) -> &[u8] {
        self.with_state(state);
        put_part(&mut self.buf, ns);
        &self.buf
    }

    /// The key of the current key's map entry `user_key` in `state` and namespace `ns`
    /// ([`encode_map_key`]).
    pub fn map_key(&mut self, state: StateId, ns: &[u8], user_key: &[u8]) -> &[u8] {
        self.with_state(state);
        put_part(&mut self.buf, ns);
        self.buf.extend_from_slice(user_key);
        &self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state_key(state: u32, kg: u16, key: &[u8], ns: &[u8]) -> Vec<u8> {
        let mut buf = Vec::new();
        encode_state_key(&mut buf, StateId(state), kg, key, ns);
        buf
    }

    fn map_key(state: u32, kg: u16, key: &[u8], ns: &[u8], uk: &[u8]) -> Vec<u8> {
        let mut buf = Vec::new();
        encode_map_key(&mut buf, StateId(state), kg, key, ns, uk);
        buf
    }

    /// The example of spec/lsm-key-layout.md, section "Examples".
    #[test]
    fn keys_are_the_documented_bytes() {
        // State 3, key group 0x0102, key "alice" as a String codec (05 'alice'), namespace ().
        assert_eq!(
            state_key(3, 0x0102, b"\x05alice", b""),
            [0, 0, 0, 3, 1, 2, 6, 5, b'a', b'l', b'i', b'c', b'e', 0]
        );
        // Map entry of state 0x01000000, key group 127, key 7u32 LE, namespace 0u8, user key "k".
        assert_eq!(
            map_key(0x0100_0000, 127, &[7, 0, 0, 0], &[0], b"k"),
            [1, 0, 0, 0, 0, 0x7f, 4, 7, 0, 0, 0, 1, 0, b'k']
        );
        // A 200-byte key takes a two-byte length, c8 01.
        let long = vec![0xaa; 200];
        let k = state_key(0, 0, &long, b"");
        assert_eq!(&k[6..8], [0xc8, 0x01]);
        assert_eq!(k.len(), 6 + 2 + 200 + 1);
    }

    #[test]
    fn header_is_big_endian_and_round_trips() {
        assert_eq!(header(StateId(0x0102_0304), 0x0506), [1, 2, 3, 4, 5, 6]);
        assert_eq!(
            split_header([1, 2, 3, 4, 5, 6]),
            (StateId(0x0102_0304), 0x0506)
        );
    }

    #[test]
    fn decode_round_trips() {
        let k = map_key(9, 32767, b"key", b"", b"user");
        let d = decode(&k).unwrap();
        assert_eq!(
            d,
            DecodedKey {
                state: StateId(9),
                key_group: 32767,
                key: b"key",
                namespace: b"",
                user_key: Some(b"user"),
            }
        );
        let k = state_key(9, 1, b"", b"ns");
        let d = decode(&k).unwrap();
        assert_eq!(
            (d.key, d.namespace, d.user_key),
            (&b""[..], &b"ns"[..], None)
        );
        assert_eq!(d.map_user_key(), b"");
    }

    #[test]
    fn decode_rejects_bad_input_without_panicking() {
        // Too short for the header.
        for n in 0..HEADER_LEN {
            assert!(matches!(
                decode(&[0; 6][..n]),
                Err(CodecError::Truncated { needed: 6, .. })
            ));
        }
        // Header only: the key length is missing.
        assert!(matches!(decode(&[0; 6]), Err(CodecError::Truncated { .. })));
        // Key group 32768.
        assert!(matches!(
            decode(&[0, 0, 0, 0, 0x80, 0, 0, 0]),
            Err(CodecError::Invalid(_))
        ));
        // A key length past the end.
        assert!(matches!(
            decode(&[0, 0, 0, 0, 0, 0, 5, 1, 2]),
            Err(CodecError::Truncated {
                needed: 5,
                available: 2
            })
        ));
        // A namespace length past the end.
        assert!(matches!(
            decode(&[0, 0, 0, 0, 0, 0, 0, 3]),
            Err(CodecError::Truncated { needed: 3, .. })
        ));
        // A non-shortest length (80 00 for 0) and an overlong one.
        assert!(matches!(
            decode(&[0, 0, 0, 0, 0, 0, 0x80, 0, 0]),
            Err(CodecError::Invalid(_))
        ));
        let mut huge = vec![0u8; 6];
        huge.extend_from_slice(&[0xff; 9]);
        huge.push(0x01);
        assert!(matches!(decode(&huge), Err(CodecError::Truncated { .. })));
        // Every truncation of a valid key is an error (the namespace length is never optional).
        let k = map_key(1, 2, b"abc", b"de", b"");
        for n in 0..k.len() {
            assert!(decode(&k[..n]).is_err(), "prefix of {n} bytes");
        }
    }

    #[test]
    fn prefixes_nest() {
        let state = StateId(5);
        let full = map_key(5, 7, b"k", b"n", b"u");
        let mut p = Vec::new();
        state_prefix(&mut p, state);
        assert!(full.starts_with(&p));
        p.clear();
        key_group_prefix(&mut p, state, 7);
        assert!(full.starts_with(&p));
        p.clear();
        key_prefix(&mut p, state, 7, b"k");
        assert!(full.starts_with(&p));
        p.clear();
        namespace_prefix(&mut p, state, 7, b"k", b"n");
        assert!(full.starts_with(&p));
        assert_eq!(p, state_key(5, 7, b"k", b"n"));
        // A key that is a byte prefix of another is not a key prefix of it.
        let mut kp = Vec::new();
        key_prefix(&mut kp, state, 7, b"k");
        assert!(!state_key(5, 7, b"kk", b"").starts_with(&kp));
    }

    #[test]
    fn namespace_prefix_length() {
        let value_key = state_key(1, 2, b"key", b"ns");
        assert_eq!(namespace_prefix_len(&value_key), Some(value_key.len()));
        let map = map_key(1, 2, b"key", b"ns", b"user");
        assert_eq!(namespace_prefix_len(&map), Some(value_key.len()));
        assert_eq!(namespace_prefix_len(&map[..5]), None);
    }

    #[test]
    fn prefix_successor_cases() {
        assert_eq!(prefix_successor(b""), None);
        assert_eq!(prefix_successor(&[0xff, 0xff]), None);
        assert_eq!(prefix_successor(&[1, 2]), Some(vec![1, 3]));
        assert_eq!(prefix_successor(&[1, 0xff]), Some(vec![2]));
        assert_eq!(prefix_successor(&[1, 0xfe, 0xff]), Some(vec![1, 0xff]));
    }

    #[test]
    fn key_group_ranges() {
        let state = StateId(2);
        let r = KeyRange::key_groups(state, KeyGroupRange::new(10, 20).unwrap()).unwrap();
        assert!(!r.contains(&state_key(2, 9, b"\xff", b"\xff")));
        assert!(r.contains(&state_key(2, 10, b"", b"")));
        assert!(r.contains(&state_key(2, 20, &[0xff; 300], b"\xff")));
        assert!(!r.contains(&state_key(2, 21, b"", b"")));
        assert!(!r.contains(&state_key(3, 15, b"", b"")));
        assert!(!r.contains(&state_key(1, 15, b"", b"")));
        // The last key group of the largest max parallelism.
        let r = KeyRange::key_groups(state, KeyGroupRange::new(0, 32767).unwrap()).unwrap();
        assert_eq!(r.end.as_deref(), Some(&[0, 0, 0, 2, 0x80, 0][..]));
        assert!(r.contains(&state_key(2, 32767, b"", b"")));
        assert_eq!(
            r,
            KeyRange::key_groups(state, KeyGroupRange::all(32768).unwrap()).unwrap()
        );
        assert!(KeyRange::key_groups(state, KeyGroupRange::EMPTY).is_none());
        // The last state has no end.
        let r = KeyRange::state(StateId(u32::MAX));
        assert_eq!(r.end, None);
        assert!(r.contains(&state_key(u32::MAX, 3, b"", b"")));
        assert_eq!(
            format!("{:?}", KeyRange::for_prefix(&[1, 0xab])),
            "01ab..01ac"
        );
    }

    #[test]
    fn builder_matches_the_free_functions() {
        let mut b = KeyBuilder::new();
        assert!(!b.has_key());
        assert_eq!(
            b.state_key(StateId(1), b"n"),
            &state_key(1, 0, b"", b"n")[..]
        );
        b.set_key(300, b"the key");
        assert!(b.has_key());
        for state in [0, 1, u32::MAX] {
            assert_eq!(
                b.state_key(StateId(state), b"ns"),
                &state_key(state, 300, b"the key", b"ns")[..]
            );
            assert_eq!(
                b.map_key(StateId(state), b"", b"uk"),
                &map_key(state, 300, b"the key", b"", b"uk")[..]
            );
            let mut p = Vec::new();
            key_prefix(&mut p, StateId(state), 300, b"the key");
            assert_eq!(b.key_prefix(StateId(state)), &p[..]);
        }
    }
}
