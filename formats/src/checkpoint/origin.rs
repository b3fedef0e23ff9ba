//! What a state file belongs to, recorded inside the file itself: the kind and id of the
//! snapshot that wrote it and the file's name in that snapshot's directory
//! (spec/formats.md section 4.9).
//!
//! `_metadata` binds each file to its checkpoint by size and CRC-32C; the origin binds it
//! from the other side, so that a file copied into another checkpoint's directory (a stale
//! file of the same size, say) is refused by reading the file alone, even under a version-1
//! `_metadata` that records no checksum. Canonical snapshot files (version 2), operator state
//! files (version 2) and native LSM snapshot files (version 2) carry it. LSM tables do not:
//! an incremental checkpoint shares them between checkpoints, and the native snapshot's record
//! of each table's CRC-32C binds them instead.
//!
//! ```
//! use flowstate_formats::checkpoint::{FileOrigin, OriginKind};
//!
//! let origin = FileOrigin { kind: OriginKind::Checkpoint, id: 9, name: "source-0".into() };
//! assert!(origin.check_path("chk-9/source-0").is_ok());
//! // The same bytes copied into checkpoint 10 are refused.
//! assert!(origin.check_path("chk-10/source-0").is_err());
//! ```

use crate::cursor::Cursor;
use crate::record::{put_str, MAX_NAME_LEN};
use crate::FormatError;

/// The kind of snapshot a file was written for (one-byte code; `0` means no origin).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum OriginKind {
    /// Code 1: a checkpoint, whose files live in `chk-<id>/`.
    Checkpoint = 1,
    /// Code 2: a savepoint, whose directory may be moved (its files are found by name).
    Savepoint = 2,
}

/// The snapshot a state file was written for and its name there.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FileOrigin {
    /// Checkpoint or savepoint.
    pub kind: OriginKind,
    /// The checkpoint's (or savepoint's) id.
    pub id: u64,
    /// The file's name in the snapshot's directory (one path component).
    pub name: String,
}

impl FileOrigin {
    /// Appends the origin field: `00` for none, else the kind code, the id as `u64` LE and the
    /// name (varint length + UTF-8).
    pub fn encode(origin: Option<&FileOrigin>, out: &mut Vec<u8>) {
        match origin {
            None => out.push(0),
            Some(o) => {
                out.push(o.kind as u8);
                out.extend_from_slice(&o.id.to_le_bytes());
                put_str(&o.name, out);
            }
        }
    }

    /// Decodes an origin field written by [`encode`](FileOrigin::encode).
    pub(crate) fn decode(c: &mut Cursor<'_>) -> Result<Option<FileOrigin>, FormatError> {
        let at = c.pos();
        let kind = match c.u8()? {
            0 => return Ok(None),
            1 => OriginKind::Checkpoint,
            2 => OriginKind::Savepoint,
            other => return Err(c.corrupt_at(at, format!("unknown origin kind {other}"))),
        };
        let id = c.u64()?;
        let name_at = c.pos();
        let name = c.string(MAX_NAME_LEN, "origin name length")?.to_owned();
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(c.corrupt_at(name_at, format!("origin name {name:?} is not a file name")));
        }
        Ok(Some(FileOrigin { kind, id, name }))
    }

    /// Checks that a file found at `path` (relative to the checkpoint storage's root) is where
    /// this origin says it was written: its last component is the origin's name, and a
    /// checkpoint's file is in `chk-<id>/` of that very id, a savepoint's file is not in any
    /// checkpoint's directory. The error says where the file belongs.
    pub fn check_path(&self, path: &str) -> Result<(), String> {
        let (dir, name) = match path.rsplit_once('/') {
            Some((dir, name)) => (dir, name),
            None => ("", path),
        };
        let dir_name = dir.rsplit('/').next().unwrap_or(dir);
        let in_checkpoint_dir = dir_name
            .strip_prefix("chk-")
            .and_then(|n| n.parse::<u64>().ok());
        let belongs = name == self.name
            && match self.kind {
                OriginKind::Checkpoint => in_checkpoint_dir == Some(self.id),
                OriginKind::Savepoint => in_checkpoint_dir.is_none(),
            };
        if belongs {
            Ok(())
        } else {
            Err(format!(
                "the file was written as '{}' of {} {}, not as {path}: a file of another \
                 snapshot in its place",
                self.name,
                match self.kind {
                    OriginKind::Checkpoint => "checkpoint",
                    OriginKind::Savepoint => "savepoint",
                },
                self.id
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(kind: OriginKind, id: u64, name: &str) -> FileOrigin {
        FileOrigin {
            kind,
            id,
            name: name.into(),
        }
    }

    #[test]
    fn encodes_and_decodes_every_form() {
        for o in [
            None,
            Some(origin(OriginKind::Checkpoint, 7, "user-activity-0")),
            Some(origin(OriginKind::Savepoint, u64::MAX, "é")),
        ] {
            let mut bytes = Vec::new();
            FileOrigin::encode(o.as_ref(), &mut bytes);
            let mut c = Cursor::new(&bytes, "f", 0);
            assert_eq!(FileOrigin::decode(&mut c).unwrap(), o);
            assert!(c.is_empty());
        }
        let mut bytes = Vec::new();
        FileOrigin::encode(Some(&origin(OriginKind::Checkpoint, 1, "a")), &mut bytes);
        assert_eq!(bytes, [1, 1, 0, 0, 0, 0, 0, 0, 0, 1, b'a']);
    }

    #[test]
    fn bad_fields_are_errors() {
        for bytes in [
            &[3u8][..],
            &[1, 1, 0, 0, 0, 0, 0, 0, 0, 0],
            &[1, 1, 0, 0, 0, 0, 0, 0, 0, 2, b'.', b'.'],
            &[2, 1, 0, 0, 0, 0, 0, 0, 0, 3, b'a', b'/', b'b'],
            &[1, 1, 0, 0],
        ] {
            let mut c = Cursor::new(bytes, "f", 0);
            assert!(FileOrigin::decode(&mut c).is_err(), "{bytes:?}");
        }
    }

    #[test]
    fn a_file_belongs_only_where_it_was_written() {
        let c = origin(OriginKind::Checkpoint, 9, "source-0");
        assert!(c.check_path("chk-9/source-0").is_ok());
        assert!(c.check_path("chk-10/source-0").is_err());
        assert!(c.check_path("chk-9/source-1").is_err());
        assert!(c.check_path("savepoints/sp-9/source-0").is_err());
        let s = origin(OriginKind::Savepoint, 3, "t-0");
        assert!(s.check_path("savepoints/sp-3/t-0").is_ok());
        assert!(s.check_path("moved/elsewhere/t-0").is_ok());
        assert!(s.check_path("chk-3/t-0").is_err());
        assert!(s.check_path("savepoints/sp-3/t-1").is_err());
    }
}
