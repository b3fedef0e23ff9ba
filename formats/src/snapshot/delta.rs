//! Delta files (format version 3, spec/formats.md section 3.11): what a delta applies to.
//!
//! A delta file holds the changes of a keyed state since an earlier snapshot, the *base*: per
//! key group, the entries that are new or changed (upsert sections, as in a full file) and the
//! (key, namespace) pairs that were removed (removal sections). Replaying a base file and its
//! deltas in order gives the state of the last delta. The heap backend's incremental
//! checkpoints write them.

use crate::cursor::Cursor;
use crate::FormatError;

/// Where a delta file sits in its chain: the checkpoint whose full file is the chain's base,
/// and the delta's position after it (1 for the first delta).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeltaOf {
    /// The id of the checkpoint that wrote the chain's base file.
    pub base_checkpoint: u64,
    /// 1 for the first delta after the base, 2 for the next, …
    pub position: u32,
}

impl DeltaOf {
    /// Appends the delta field of the meta block: base checkpoint (u64 LE), position (u32 LE).
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.base_checkpoint.to_le_bytes());
        out.extend_from_slice(&self.position.to_le_bytes());
    }

    /// Decodes the delta field; a position of 0 is corrupt.
    pub(crate) fn decode(c: &mut Cursor<'_>) -> Result<Self, FormatError> {
        let base_checkpoint = c.u64()?;
        let at = c.pos();
        let position = c.u32()?;
        if position == 0 {
            return Err(c.corrupt_at(at, "delta position 0: the first delta is 1"));
        }
        Ok(DeltaOf {
            base_checkpoint,
            position,
        })
    }
}
