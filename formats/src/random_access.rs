//! Positional reads from a file-like source, so that a reader fetches only the parts of a file
//! it needs (the footer, the index, the key groups it restores).

use std::io;
use std::sync::Arc;

use crate::FormatError;

/// A source of bytes that can be read at any offset: a byte slice, a memory map, a file.
///
/// The engine implements it for its storage files; it is implemented here for byte slices and
/// vectors, and through references, boxes and `Arc`s.
pub trait RandomAccess {
    /// The length of the source in bytes.
    fn len(&self) -> u64;

    /// Whether the source is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fills `buf` with the bytes at `offset..offset + buf.len()`. Readers only ask for
    /// ranges within [`len`](RandomAccess::len); a short source is an error
    /// (`io::ErrorKind::UnexpectedEof`), never a partial fill.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;

    /// The `len` bytes at `offset`, in place, for a source that holds them in memory (a slice,
    /// a memory-mapped file); `None` (the default) for a source that must copy them with
    /// [`read_at`](RandomAccess::read_at), and for a range past the end. Readers use it to
    /// check and decompress a block where it lies, without copying it first.
    fn bytes_at(&self, offset: u64, len: usize) -> Option<&[u8]> {
        let _ = (offset, len);
        None
    }
}

/// The `len` bytes of `bytes` at `offset`, if they lie within it.
fn slice_at(bytes: &[u8], offset: u64, len: usize) -> Option<&[u8]> {
    let start = usize::try_from(offset).ok()?;
    bytes.get(start..start.checked_add(len)?)
}

impl RandomAccess for [u8] {
    fn len(&self) -> u64 {
        <[u8]>::len(self) as u64
    }

    fn bytes_at(&self, offset: u64, len: usize) -> Option<&[u8]> {
        slice_at(self, offset, len)
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        match slice_at(self, offset, buf.len()) {
            Some(bytes) => {
                buf.copy_from_slice(bytes);
                Ok(())
            }
            None => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("read of {} bytes at {offset} past the end", buf.len()),
            )),
        }
    }
}

impl RandomAccess for Vec<u8> {
    fn len(&self) -> u64 {
        self.as_slice().len() as u64
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.as_slice().read_at(offset, buf)
    }

    fn bytes_at(&self, offset: u64, len: usize) -> Option<&[u8]> {
        slice_at(self, offset, len)
    }
}

impl<T: RandomAccess + ?Sized> RandomAccess for &T {
    fn len(&self) -> u64 {
        (**self).len()
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        (**self).read_at(offset, buf)
    }

    fn bytes_at(&self, offset: u64, len: usize) -> Option<&[u8]> {
        (**self).bytes_at(offset, len)
    }
}

impl<T: RandomAccess + ?Sized> RandomAccess for Box<T> {
    fn len(&self) -> u64 {
        (**self).len()
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        (**self).read_at(offset, buf)
    }

    fn bytes_at(&self, offset: u64, len: usize) -> Option<&[u8]> {
        (**self).bytes_at(offset, len)
    }
}

impl<T: RandomAccess + ?Sized> RandomAccess for Arc<T> {
    fn len(&self) -> u64 {
        (**self).len()
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        (**self).read_at(offset, buf)
    }

    fn bytes_at(&self, offset: u64, len: usize) -> Option<&[u8]> {
        (**self).bytes_at(offset, len)
    }
}

/// Reads `buf.len()` bytes at `offset` of `source`, after checking that they lie within it.
pub(crate) fn read_exact<R: RandomAccess + ?Sized>(
    source: &R,
    file: &str,
    offset: u64,
    buf: &mut [u8],
) -> Result<(), FormatError> {
    let len = source.len();
    let available = len.saturating_sub(offset);
    if buf.len() as u64 > available {
        return Err(FormatError::TruncatedFile {
            file: file.to_owned(),
            offset,
            needed: buf.len() as u64,
            available,
        });
    }
    source
        .read_at(offset, buf)
        .map_err(|source| FormatError::Io {
            file: file.to_owned(),
            offset,
            source,
        })
}

/// Reads `len` bytes at `offset` of `source` into `buf` (resized), after checking that they
/// lie within the source: the allocation never exceeds what the source holds.
pub(crate) fn read_into<R: RandomAccess + ?Sized>(
    source: &R,
    file: &str,
    offset: u64,
    len: u64,
    buf: &mut Vec<u8>,
) -> Result<(), FormatError> {
    let available = source.len().saturating_sub(offset);
    if len > available {
        return Err(FormatError::TruncatedFile {
            file: file.to_owned(),
            offset,
            needed: len,
            available,
        });
    }
    // `len` is at most the source's length, which a reader has already bounded by a limit.
    let n = usize::try_from(len).map_err(|_| FormatError::LimitExceeded {
        file: file.to_owned(),
        offset,
        what: "read length",
        value: len,
        limit: usize::MAX as u64,
    })?;
    buf.clear();
    buf.resize(n, 0);
    read_exact(source, file, offset, buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_read_in_range_and_refuse_past_the_end() {
        let data = vec![1u8, 2, 3, 4];
        let mut buf = [0u8; 2];
        data.read_at(2, &mut buf).unwrap();
        assert_eq!(buf, [3, 4]);
        assert!(data.read_at(3, &mut buf).is_err());
        assert!(data.read_at(u64::MAX, &mut buf).is_err());
        let err = read_exact(&data, "f", 3, &mut buf).unwrap_err();
        assert!(matches!(
            err,
            FormatError::TruncatedFile {
                offset: 3,
                needed: 2,
                available: 1,
                ..
            }
        ));
        let shared: Arc<[u8]> = Arc::from(&data[..]);
        assert_eq!(RandomAccess::len(&shared), 4);
    }
}
