//! The meta block: what the snapshot covers and what each state is.

use super::delta::DeltaOf;
use std::collections::HashSet;
use std::num::NonZeroU64;
use std::ops::RangeInclusive;

use crate::checkpoint::FileOrigin;
use crate::codec::varint;
use crate::cursor::Cursor;
use crate::record::{put_str, CodecRecord, MAX_NAME_LEN};
use crate::FormatError;

use super::MAX_PARALLELISM;

/// The most states one snapshot may hold: 65 536.
pub const MAX_STATES: usize = 1 << 16;

/// The kind of a keyed state, as its one-byte code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum StateKind {
    /// Code 0: one value per (key, namespace).
    Value = 0,
    /// Code 1: a list of elements.
    List = 1,
    /// Code 2: a map from user keys to values.
    Map = 2,
    /// Code 3: a value folded with a reduce function.
    Reducing = 3,
    /// Code 4: an accumulator folded with an aggregate function.
    Aggregating = 4,
}

impl StateKind {
    /// The kind with code `code`, if any.
    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => StateKind::Value,
            1 => StateKind::List,
            2 => StateKind::Map,
            3 => StateKind::Reducing,
            4 => StateKind::Aggregating,
            _ => return None,
        })
    }

    /// The on-disk code.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// How an entry's state is laid out: one value, a list, or a map.
    pub fn shape(self) -> ValueShape {
        match self {
            StateKind::Value | StateKind::Reducing | StateKind::Aggregating => ValueShape::Value,
            StateKind::List => ValueShape::List,
            StateKind::Map => ValueShape::Map,
        }
    }
}

/// The layout of an entry's state, which follows from the state's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueShape {
    /// One byte string (value, reducing and aggregating state).
    Value,
    /// A sequence of byte strings.
    List,
    /// A sequence of (user key, value) pairs, strictly ascending by user key.
    Map,
}

/// What one state of a snapshot is: name, kind, codecs, TTL.
///
/// ## Format
///
/// | size | field |
/// |---|---|
/// | varint + n | name (length, UTF-8), at most 65 535 bytes |
/// | 1 | kind code ([`StateKind`]) |
/// | codec | namespace codec ([`CodecRecord`]) |
/// | codec | value codec (value, list element, accumulator) |
/// | 1 | `01` if a user-key codec follows (map state), `00` otherwise |
/// | codec | user-key codec, if flagged |
/// | 8 | TTL in milliseconds, `u64` LE; `0` for none |
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StateMetaRecord {
    /// The state's name, unique within the snapshot.
    pub name: String,
    /// The state's kind.
    pub kind: StateKind,
    /// The namespace codec.
    pub namespace: CodecRecord,
    /// The codec of the value, list element or accumulator.
    pub value: CodecRecord,
    /// The user-key codec: present exactly for map state.
    pub user_key: Option<CodecRecord>,
    /// The state's time-to-live, if it has one (informational: the value codec `ttl<…>` tells a
    /// state with a TTL).
    pub ttl_millis: Option<NonZeroU64>,
}

/// What a snapshot covers and what its states are: the content of the meta block.
///
/// ## Format
///
/// | size | field |
/// |---|---|
/// | 4 | max parallelism, `u32` LE, in `1..=32768` |
/// | 2 | first key group of the range, `u16` LE |
/// | 2 | last key group of the range (inclusive), `u16` LE, below max parallelism |
/// | codec | key codec ([`CodecRecord`]) |
/// | varint | state count, at most [`MAX_STATES`] |
/// | … | each state ([`StateMetaRecord`]); a state's index is its position here |
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SnapshotMeta {
    /// The max parallelism (number of key groups) of the job.
    pub max_parallelism: u32,
    /// The first key group the snapshot covers.
    pub key_group_start: u16,
    /// The last key group the snapshot covers (inclusive).
    pub key_group_end: u16,
    /// The codec of the keys.
    pub key_codec: CodecRecord,
    /// The states, in index order.
    pub states: Vec<StateMetaRecord>,
}

impl SnapshotMeta {
    /// The key groups the snapshot covers.
    pub fn key_group_range(&self) -> RangeInclusive<u16> {
        self.key_group_start..=self.key_group_end
    }

    /// The number of key groups in the range (0 if the range is inverted, which
    /// [`validate`](SnapshotMeta::validate) refuses).
    pub fn key_group_count(&self) -> usize {
        if self.key_group_start > self.key_group_end {
            0
        } else {
            usize::from(self.key_group_end - self.key_group_start) + 1
        }
    }

    /// Checks the rules a meta block must keep: max parallelism in `1..=32768`, a
    /// non-empty range below it, at most [`MAX_STATES`] states with distinct names, names at
    /// most 65 535 bytes, and a user-key codec exactly for map state.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_parallelism == 0 || self.max_parallelism > MAX_PARALLELISM {
            return Err(format!(
                "max parallelism {} is not in 1..={MAX_PARALLELISM}",
                self.max_parallelism
            ));
        }
        if self.key_group_start > self.key_group_end
            || u32::from(self.key_group_end) >= self.max_parallelism
        {
            return Err(format!(
                "key-group range {}..={} is not a range within 0..{}",
                self.key_group_start, self.key_group_end, self.max_parallelism
            ));
        }
        if self.states.len() > MAX_STATES {
            return Err(format!(
                "{} states, more than the {MAX_STATES} allowed",
                self.states.len()
            ));
        }
        check_name(&self.key_codec.name, "key codec name")?;
        let mut names = HashSet::with_capacity(self.states.len());
        for (i, s) in self.states.iter().enumerate() {
            check_name(&s.name, "state name")?;
            check_name(&s.namespace.name, "namespace codec name")?;
            check_name(&s.value.name, "value codec name")?;
            if let Some(uk) = &s.user_key {
                check_name(&uk.name, "user-key codec name")?;
            }
            if !names.insert(s.name.as_str()) {
                return Err(format!("state {i} repeats the name '{}'", s.name));
            }
            if (s.kind == StateKind::Map) != s.user_key.is_some() {
                return Err(format!(
                    "state '{}' of kind {:?} {} a user-key codec",
                    s.name,
                    s.kind,
                    if s.user_key.is_some() { "has" } else { "lacks" }
                ));
            }
        }
        Ok(())
    }

    /// The value shape of each state, by index.
    pub(crate) fn shapes(&self) -> Vec<ValueShape> {
        self.states.iter().map(|s| s.kind.shape()).collect()
    }

    /// Appends the meta block (without CRC: the footer holds it).
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.max_parallelism.to_le_bytes());
        out.extend_from_slice(&self.key_group_start.to_le_bytes());
        out.extend_from_slice(&self.key_group_end.to_le_bytes());
        self.key_codec.encode(out);
        varint::encode_u64(self.states.len() as u64, out);
        for s in &self.states {
            put_str(&s.name, out);
            out.push(s.kind.code());
            s.namespace.encode(out);
            s.value.encode(out);
            match &s.user_key {
                Some(uk) => {
                    out.push(1);
                    uk.encode(out);
                }
                None => out.push(0),
            }
            let ttl = s.ttl_millis.map_or(0, NonZeroU64::get);
            out.extend_from_slice(&ttl.to_le_bytes());
        }
    }

    /// Decodes a meta block of format `version` that spans `bytes` (found at `at` of `file`):
    /// the meta, validated, (versions 2 and 3) the file's origin after it and (version 3,
    /// a delta file) what the delta applies to.
    pub(crate) fn decode_block(
        bytes: &[u8],
        file: &str,
        at: u64,
        version: u32,
    ) -> Result<(Self, Option<FileOrigin>, Option<DeltaOf>), FormatError> {
        let mut c = Cursor::new(bytes, file, at);
        let meta = Self::decode_from(&mut c)?;
        let origin = if version >= 2 {
            FileOrigin::decode(&mut c)?
        } else {
            None
        };
        let delta = if version >= 3 {
            Some(DeltaOf::decode(&mut c)?)
        } else {
            None
        };
        c.finish("meta block")?;
        Ok((meta, origin, delta))
    }

    /// Decodes a meta block without an origin (version 1; also the meta inside a native
    /// snapshot file) that spans `bytes`.
    pub(crate) fn decode(bytes: &[u8], file: &str, at: u64) -> Result<Self, FormatError> {
        Ok(Self::decode_block(bytes, file, at, 1)?.0)
    }

    /// Decodes the meta from `c`, validated.
    fn decode_from(c: &mut Cursor<'_>) -> Result<Self, FormatError> {
        let start = c.pos();
        let max_parallelism = c.u32()?;
        let key_group_start = c.u16()?;
        let key_group_end = c.u16()?;
        let key_codec = CodecRecord::decode(c)?;
        let count_at = c.pos();
        // A state takes at least 1 + 1 + 5 + 5 + 1 + 8 = 21 bytes.
        let count = c.count(21, "state")?;
        if count > MAX_STATES as u64 {
            return Err(c.limit_at(count_at, "state count", count, MAX_STATES as u64));
        }
        let mut states = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let name = c.string(MAX_NAME_LEN, "state name length")?.to_owned();
            let kind_at = c.pos();
            let code = c.u8()?;
            let kind = StateKind::from_code(code)
                .ok_or_else(|| c.corrupt_at(kind_at, format!("unknown state kind {code}")))?;
            let namespace = CodecRecord::decode(c)?;
            let value = CodecRecord::decode(c)?;
            let flag_at = c.pos();
            let user_key = match c.u8()? {
                0 => None,
                1 => Some(CodecRecord::decode(c)?),
                other => {
                    return Err(
                        c.corrupt_at(flag_at, format!("user-key flag {other} is not 0 or 1"))
                    )
                }
            };
            let ttl_millis = NonZeroU64::new(c.u64()?);
            states.push(StateMetaRecord {
                name,
                kind,
                namespace,
                value,
                user_key,
                ttl_millis,
            });
        }
        let meta = SnapshotMeta {
            max_parallelism,
            key_group_start,
            key_group_end,
            key_codec,
            states,
        };
        meta.validate()
            .map_err(|reason| c.corrupt_at(start, format!("meta block: {reason}")))?;
        Ok(meta)
    }
}

fn check_name(name: &str, what: &str) -> Result<(), String> {
    if name.len() > MAX_NAME_LEN {
        Err(format!(
            "{what} of {} bytes is longer than {MAX_NAME_LEN}",
            name.len()
        ))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> SnapshotMeta {
        SnapshotMeta {
            max_parallelism: 128,
            key_group_start: 3,
            key_group_end: 9,
            key_codec: CodecRecord::new("string", 1),
            states: vec![StateMetaRecord {
                name: "m".into(),
                kind: StateKind::Map,
                namespace: CodecRecord::new("unit", 1),
                value: CodecRecord::new("u64", 1),
                user_key: Some(CodecRecord::new("string", 1)),
                ttl_millis: NonZeroU64::new(60_000),
            }],
        }
    }

    #[test]
    fn round_trips() {
        let m = meta();
        let mut out = Vec::new();
        m.encode(&mut out);
        assert_eq!(SnapshotMeta::decode(&out, "f", 12).unwrap(), m);
    }

    #[test]
    fn validation_refuses_broken_rules() {
        let mut m = meta();
        m.states[0].user_key = None;
        assert!(m.validate().is_err());
        let mut m = meta();
        m.key_group_end = 128;
        assert!(m.validate().is_err());
        let mut m = meta();
        m.states.push(m.states[0].clone());
        assert!(m.validate().unwrap_err().contains("repeats"));
        let mut m = meta();
        m.max_parallelism = 0;
        assert!(m.validate().is_err());
    }

    #[test]
    fn every_strict_prefix_is_an_error() {
        let mut out = Vec::new();
        meta().encode(&mut out);
        for cut in 0..out.len() {
            assert!(
                SnapshotMeta::decode(&out[..cut], "f", 0).is_err(),
                "cut {cut}"
            );
        }
    }
}
