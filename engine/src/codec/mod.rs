//! Codecs: the stable, versioned byte encodings of keys, namespaces and values.
//!
//! Every key, namespace and state value is written with a [`Codec`]. The encodings are part of
//! the on-disk contract (spec/formats.md, section "Codecs"): the key group of a key is the hash of
//! its encoding, and snapshots store encoded bytes. A codec's [`Codec::codec_name`] and
//! [`Codec::VERSION`] are written into snapshot metadata so that a restore with an incompatible
//! codec is detected instead of misreading bytes.
//!
//! | type | encoding |
//! |---|---|
//! | `u8`..`u128`, `i8`..`i128` | fixed width, little-endian |
//! | `usize`, `isize` | as `u64` / `i64` |
//! | `f32`, `f64` | IEEE-754 bits, little-endian |
//! | `bool` | one byte, 0 or 1 (anything else is an error) |
//! | `char` | `u32` scalar value, little-endian (surrogates are an error) |
//! | `()` | nothing |
//! | `String` | varint byte length, then UTF-8 bytes |
//! | `Vec<T>` (so also `Vec<u8>`) | varint element count, then the elements |
//! | `Option<T>` | byte 0 (none) or 1 followed by the value |
//! | tuples up to 6 | the elements one after the other |
//!
//! ```
//! use flowstate::codec::Codec;
//! let mut out = Vec::new();
//! (7u32, "hi".to_string()).encode(&mut out);
//! assert_eq!(out, [7, 0, 0, 0, 2, b'h', b'i']);
//! assert_eq!(<(u32, String)>::decode(&out).unwrap(), (7, "hi".to_string()));
//! ```

use std::borrow::Cow;

use flowstate_formats::codec::varint;
use thiserror::Error;

pub mod dynamic;

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The input ended before the value was complete.
    #[error("truncated: needed {needed} bytes, {available} available")]
    Truncated {
        /// Bytes the value needed.
        needed: u64,
        /// Bytes that were left.
        available: u64,
    },
    /// Bytes were left over after the value.
    #[error("{count} trailing bytes after the value")]
    TrailingBytes {
        /// How many bytes were left.
        count: usize,
    },
    /// The bytes do not form a valid value of the type.
    #[error("invalid value: {0}")]
    Invalid(Cow<'static, str>),
}

impl From<flowstate_formats::FormatError> for CodecError {
    fn from(e: flowstate_formats::FormatError) -> Self {
        match e {
            flowstate_formats::FormatError::Truncated { needed, available } => {
                CodecError::Truncated { needed, available }
            }
            other => CodecError::Invalid(Cow::Owned(other.to_string())),
        }
    }
}

/// A stable, versioned byte encoding of a type.
///
/// Implementations must be deterministic (equal values encode to equal bytes, which the key-group
/// hash and the LSM key order rely on) and self-delimiting (a value can be decoded from the front
/// of a longer input, which composite codecs rely on). Decoding never panics and never allocates
/// more than the input can justify.
pub trait Codec: Sized {
    /// The version of this encoding, written into snapshot metadata next to the name.
    const VERSION: u32 = 1;

    /// A stable name of the encoding (for example `u64`, `string`, `vec<string>`), written into
    /// snapshot metadata to detect a restore with another codec.
    fn codec_name() -> Cow<'static, str>;

    /// Appends the encoding of `self` to `out`.
    fn encode(&self, out: &mut Vec<u8>);

    /// Decodes a value from the front of `input` and advances `input` past it.
    fn decode_from(input: &mut &[u8]) -> Result<Self, CodecError>;

    /// The time of the last update, for a value stored with a TTL (`TtlValue`); `None` for
    /// every other type. Lets the heap backend's TTL cleanup check typed values without
    /// encoding them.
    #[doc(hidden)]
    fn ttl_timestamp(&self) -> Option<u64> {
        None
    }

    /// Decodes a value that spans all of `input`; trailing bytes are an error.
    fn decode(mut input: &[u8]) -> Result<Self, CodecError> {
        let value = Self::decode_from(&mut input)?;
        if input.is_empty() {
            Ok(value)
        } else {
            Err(CodecError::TrailingBytes { count: input.len() })
        }
    }

    /// Encodes a slice of values without the count; `Vec<T>` uses it. Types with a faster bulk
    /// form (bytes) override it.
    #[doc(hidden)]
    fn encode_slice(items: &[Self], out: &mut Vec<u8>) {
        for item in items {
            item.encode(out);
        }
    }

    /// Decodes `count` values; the counterpart of [`Codec::encode_slice`].
    #[doc(hidden)]
    fn decode_vec(input: &mut &[u8], count: usize) -> Result<Vec<Self>, CodecError> {
        // Never trust the count for the allocation: at most one element per remaining byte.
        let mut items = Vec::with_capacity(count.min(input.len()));
        // Elements that encode to no bytes (unit, say) could make a lying count spin for ever:
        // at most `MAX_EMPTY_ELEMENTS` of them are accepted in one vector.
        let mut empty_elements = 0usize;
        for _ in 0..count {
            let before = input.len();
            items.push(Self::decode_from(input)?);
            if input.len() == before {
                empty_elements += 1;
                if empty_elements > MAX_EMPTY_ELEMENTS {
                    return Err(CodecError::Invalid(Cow::Borrowed(
                        "too many zero-length elements in a vector",
                    )));
                }
            }
        }
        Ok(items)
    }
}

/// The most elements that encode to zero bytes one decoded vector may hold (1,024). Nested
/// vectors multiply: decoding stays bounded by 1,024 steps per input byte.
pub const MAX_EMPTY_ELEMENTS: usize = 1 << 10;

/// Encodes `value` into a new vector.
pub fn to_bytes<T: Codec>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    value.encode(&mut out);
    out
}

#[inline]
pub(crate) fn take<'a>(input: &mut &'a [u8], n: usize) -> Result<&'a [u8], CodecError> {
    if input.len() < n {
        return Err(CodecError::Truncated {
            needed: n as u64,
            available: input.len() as u64,
        });
    }
    let (head, tail) = input.split_at(n);
    *input = tail;
    Ok(head)
}

#[inline]
fn read_len(input: &mut &[u8]) -> Result<usize, CodecError> {
    let n = varint::decode_u64(input)?;
    usize::try_from(n).map_err(|_| CodecError::Invalid(Cow::Borrowed("length overflows usize")))
}

macro_rules! fixed_int_codec {
    ($($t:ty => $name:literal),* $(,)?) => {$(
        impl Codec for $t {
            fn codec_name() -> Cow<'static, str> {
                Cow::Borrowed($name)
            }
            #[inline]
            fn encode(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            #[inline]
            fn decode_from(input: &mut &[u8]) -> Result<Self, CodecError> {
                let bytes = take(input, std::mem::size_of::<$t>())?;
                let mut buf = [0u8; std::mem::size_of::<$t>()];
                buf.copy_from_slice(bytes);
                Ok(<$t>::from_le_bytes(buf))
            }
        }
    )*};
}

fixed_int_codec!(
    u16 => "u16", u32 => "u32", u64 => "u64", u128 => "u128",
    i8 => "i8", i16 => "i16", i32 => "i32", i64 => "i64", i128 => "i128",
    f32 => "f32", f64 => "f64",
);

impl Codec for u8 {
    fn codec_name() -> Cow<'static, str> {
        Cow::Borrowed("u8")
    }
    #[inline]
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(*self);
    }
    #[inline]
    fn decode_from(input: &mut &[u8]) -> Result<Self, CodecError> {
        Ok(take(input, 1)?[0])
    }
    fn encode_slice(items: &[Self], out: &mut Vec<u8>) {
        out.extend_from_slice(items);
    }
    fn decode_vec(input: &mut &[u8], count: usize) -> Result<Vec<Self>, CodecError> {
        Ok(take(input, count)?.to_vec())
    }
}

impl Codec for usize {
    fn codec_name() -> Cow<'static, str> {
        Cow::Borrowed("u64")
    }
    fn encode(&self, out: &mut Vec<u8>) {
        (*self as u64).encode(out);
    }
    fn decode_from(input: &mut &[u8]) -> Result<Self, CodecError> {
        usize::try_from(u64::decode_from(input)?)
            .map_err(|_| CodecError::Invalid(Cow::Borrowed("value overflows usize")))
    }
}

impl Codec for isize {
    fn codec_name() -> Cow<'static, str> {
        Cow::Borrowed("i64")
    }
    fn encode(&self, out: &mut Vec<u8>) {
        (*self as i64).encode(out);
    }
    fn decode_from(input: &mut &[u8]) -> Result<Self, CodecError> {
        isize::try_from(i64::decode_from(input)?)
            .map_err(|_| CodecError::Invalid(Cow::Borrowed("value overflows isize")))
    }
}

impl Codec for bool {
    fn codec_name() -> Cow<'static, str> {
        Cow::Borrowed("bool")
    }
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(u8::from(*self));
    }
    fn decode_from(input: &mut &[u8]) -> Result<Self, CodecError> {
        match take(input, 1)?[0] {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(CodecError::Invalid(Cow::Owned(format!(
                "bool byte {b:#04x} is neither 0 nor 1"
            )))),
        }
    }
}

impl Codec for char {
    fn codec_name() -> Cow<'static, str> {
        Cow::Borrowed("char")
    }
    fn encode(&self, out: &mut Vec<u8>) {
        u32::from(*self).encode(out);
    }
    fn decode_from(input: &mut &[u8]) -> Result<Self, CodecError> {
        let v = u32::decode_from(input)?;
        char::from_u32(v).ok_or_else(|| {
            CodecError::Invalid(Cow::Owned(format!("{v:#x} is not a Unicode scalar value")))
        })
    }
}

impl Codec for () {
    fn codec_name() -> Cow<'static, str> {
        Cow::Borrowed("unit")
    }
    #[inline]
    fn encode(&self, _out: &mut Vec<u8>) {}
    #[inline]
    fn decode_from(_input: &mut &[u8]) -> Result<Self, CodecError> {
        Ok(())
    }
}

impl Codec for String {
    fn codec_name() -> Cow<'static, str> {
        Cow::Borrowed("string")
    }
    fn encode(&self, out: &mut Vec<u8>) {
        varint::encode_u64(self.len() as u64, out);
        out.extend_from_slice(self.as_bytes());
    }
    fn decode_from(input: &mut &[u8]) -> Result<Self, CodecError> {
        let len = read_len(input)?;
        let bytes = take(input, len)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|e| CodecError::Invalid(Cow::Owned(format!("string is not UTF-8: {e}"))))
    }
}

impl<T: Codec> Codec for Vec<T> {
    fn codec_name() -> Cow<'static, str> {
        Cow::Owned(format!("vec<{}>", T::codec_name()))
    }
    fn encode(&self, out: &mut Vec<u8>) {
        varint::encode_u64(self.len() as u64, out);
        T::encode_slice(self, out);
    }
    fn decode_from(input: &mut &[u8]) -> Result<Self, CodecError> {
        let count = read_len(input)?;
        T::decode_vec(input, count)
    }
}

impl<T: Codec> Codec for Option<T> {
    fn codec_name() -> Cow<'static, str> {
        Cow::Owned(format!("option<{}>", T::codec_name()))
    }
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            None => out.push(0),
            Some(v) => {
                out.push(1);
                v.encode(out);
            }
        }
    }
    fn decode_from(input: &mut &[u8]) -> Result<Self, CodecError> {
        match take(input, 1)?[0] {
            0 => Ok(None),
            1 => Ok(Some(T::decode_from(input)?)),
            b => Err(CodecError::Invalid(Cow::Owned(format!(
                "option tag {b:#04x} is neither 0 nor 1"
            )))),
        }
    }
}

macro_rules! tuple_codec {
    ($($name:ident),+) => {
        impl<$($name: Codec),+> Codec for ($($name,)+) {
            fn codec_name() -> Cow<'static, str> {
                let parts: Vec<Cow<'static, str>> = vec![$($name::codec_name()),+];
                Cow::Owned(format!("tuple({})", parts.join(",")))
            }
            #[allow(non_snake_case)]
            fn encode(&self, out: &mut Vec<u8>) {
                let ($($name,)+) = self;
                $($name.encode(out);)+
            }
            fn decode_from(input: &mut &[u8]) -> Result<Self, CodecError> {
                Ok(($($name::decode_from(input)?,)+))
            }
        }
    };
}

tuple_codec!(A);
tuple_codec!(A, B);
tuple_codec!(A, B, C);
tuple_codec!(A, B, C, D);
tuple_codec!(A, B, C, D, E);
tuple_codec!(A, B, C, D, E, F);

/// Any serde type as a [`Codec`], encoded with postcard behind a varint length prefix.
///
/// Enabled by the `serde` feature. The codec name is `serde-postcard`; the type's own evolution
/// rules are those of postcard (field order matters, no field names are stored).
///
/// ```
/// # #[cfg(feature = "serde")] {
/// use flowstate::codec::{Codec, SerdeCodec};
/// #[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq)]
/// struct Click { page: String, at: u64 }
/// let bytes = flowstate::codec::to_bytes(&SerdeCodec(Click { page: "/".into(), at: 7 }));
/// assert_eq!(SerdeCodec::<Click>::decode(&bytes).unwrap().0.at, 7);
/// # }
/// ```
#[cfg(feature = "serde")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct SerdeCodec<T>(pub T);

#[cfg(feature = "serde")]
impl<T: serde::Serialize + serde::de::DeserializeOwned> Codec for SerdeCodec<T> {
    fn codec_name() -> Cow<'static, str> {
        Cow::Borrowed("serde-postcard")
    }
    fn encode(&self, out: &mut Vec<u8>) {
        // Serializing into memory only fails for types whose Serialize impl itself reports an
        // error (for example a map with non-serializable keys); such a type cannot be state.
        let body = postcard::to_allocvec(&self.0)
            .expect("the state type's Serialize impl reported an error: it cannot be stored");
        varint::encode_u64(body.len() as u64, out);
        out.extend_from_slice(&body);
    }
    fn decode_from(input: &mut &[u8]) -> Result<Self, CodecError> {
        let len = read_len(input)?;
        let body = take(input, len)?;
        let (value, rest) = postcard::take_from_bytes(body)
            .map_err(|e| CodecError::Invalid(Cow::Owned(format!("postcard: {e}"))))?;
        if !rest.is_empty() {
            return Err(CodecError::TrailingBytes { count: rest.len() });
        }
        Ok(SerdeCodec(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<T: Codec + PartialEq + std::fmt::Debug>(v: T) {
        let bytes = to_bytes(&v);
        assert_eq!(T::decode(&bytes).unwrap(), v);
        // Every strict prefix is rejected with an error, never a panic.
        for cut in 0..bytes.len() {
            assert!(T::decode(&bytes[..cut]).is_err(), "prefix of {cut} bytes");
        }
    }

    #[test]
    fn primitives_round_trip() {
        round_trip(0u8);
        round_trip(u16::MAX);
        round_trip(0xdead_beefu32);
        round_trip(u64::MAX);
        round_trip(-5i8);
        round_trip(i64::MIN);
        round_trip(i128::MAX);
        round_trip(1.5f32);
        round_trip(-0.25f64);
        round_trip(true);
        round_trip('é');
        round_trip(42usize);
        round_trip(-42isize);
        round_trip("grüße".to_string());
        round_trip(vec![1u8, 2, 3]);
        round_trip(vec!["a".to_string(), String::new()]);
        round_trip(Some(3u32));
        round_trip(None::<u32>);
        round_trip((1u8, "x".to_string(), 2.0f64));
        round_trip((1u8, 2u16, 3u32, 4u64, 5i8, 6i16));
    }

    #[test]
    fn encodings_are_the_documented_bytes() {
        assert_eq!(to_bytes(&0x0102_0304u32), [4, 3, 2, 1]);
        assert_eq!(to_bytes(&"ab".to_string()), [2, b'a', b'b']);
        assert_eq!(to_bytes(&vec![7u8, 8]), [2, 7, 8]);
        assert_eq!(to_bytes(&vec![7u16]), [1, 7, 0]);
        assert_eq!(to_bytes(&Some(true)), [1, 1]);
        assert_eq!(to_bytes(&None::<bool>), [0]);
        assert_eq!(to_bytes(&()), [] as [u8; 0]);
        assert_eq!(to_bytes(&1.0f64), 1.0f64.to_bits().to_le_bytes());
    }

    #[test]
    fn names_are_stable() {
        assert_eq!(u64::codec_name(), "u64");
        assert_eq!(<Vec<Option<String>>>::codec_name(), "vec<option<string>>");
        assert_eq!(<(u32, String)>::codec_name(), "tuple(u32,string)");
        assert_eq!(<Vec<u8>>::codec_name(), "vec<u8>");
    }

    #[test]
    fn invalid_bytes_are_errors() {
        assert!(bool::decode(&[2]).is_err());
        assert!(char::decode(&0xd800u32.to_le_bytes()).is_err());
        assert!(String::decode(&[2, 0xff, 0xfe]).is_err());
        assert!(<Option<u8>>::decode(&[9, 0]).is_err());
        assert!(matches!(
            u32::decode(&[1, 2, 3, 4, 5]),
            Err(CodecError::TrailingBytes { count: 1 })
        ));
    }

    #[test]
    fn hostile_lengths_do_not_allocate() {
        // A count of 2^60 elements with no bytes behind it fails without reserving memory.
        let mut bytes = Vec::new();
        varint::encode_u64(1 << 60, &mut bytes);
        assert!(<Vec<u64>>::decode(&bytes).is_err());
        assert!(<Vec<u8>>::decode(&bytes).is_err());
        assert!(String::decode(&bytes).is_err());
        // A huge count of zero-sized elements is capped by the input, not trusted.
        let mut bytes = Vec::new();
        varint::encode_u64(3, &mut bytes);
        assert_eq!(<Vec<()>>::decode(&bytes).unwrap().len(), 3);
        let mut bytes = Vec::new();
        varint::encode_u64(1 << 60, &mut bytes);
        assert!(
            <Vec<()>>::decode(&bytes).is_err(),
            "a lying count of empty elements ends"
        );
    }

    #[cfg(feature = "serde")]
    #[test]
    fn serde_types_round_trip_and_reject_damage() {
        #[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq)]
        struct Click {
            page: String,
            at: u64,
            tags: Vec<String>,
        }
        let click = SerdeCodec(Click {
            page: "/a".into(),
            at: 9,
            tags: vec!["x".into()],
        });
        round_trip(click.clone());
        round_trip((1u8, click.clone()));
        // Bytes left inside the length-prefixed body are an error, not ignored.
        let mut body = postcard::to_allocvec(&click.0).expect("serializable");
        body.push(0);
        let mut bytes = Vec::new();
        varint::encode_u64(body.len() as u64, &mut bytes);
        bytes.extend_from_slice(&body);
        assert!(matches!(
            SerdeCodec::<Click>::decode(&bytes),
            Err(CodecError::TrailingBytes { count: 1 })
        ));
    }
}
