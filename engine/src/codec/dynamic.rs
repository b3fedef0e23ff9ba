//! Decoding state bytes by codec name alone, without the Rust type: what a tool that prints a
//! snapshot (`flowstate dump`) knows is the codec names its metadata records.
//!
//! [`Schema::parse`] understands every built-in name of spec/formats.md section 2.2 (`ttl<…>` and
//! `timer<…>` included), nested
//! (`vec<option<string>>`, `tuple(u32,string)`); a user codec's name is not understood
//! (`None`), and the caller falls back to hex. [`Schema::decode`] follows the same byte rules
//! as the typed codecs, on hostile input too: it never allocates more than the input can
//! justify, and nesting is bounded.
//!
//! ```
//! use flowstate::codec::dynamic::Schema;
//! use flowstate::codec::to_bytes;
//!
//! let schema = Schema::parse("tuple(u32,vec<string>)").expect("a built-in name");
//! let value = schema.decode(&to_bytes(&(7u32, vec!["a".to_string()]))).unwrap();
//! assert_eq!(value.to_string(), r#"(7, ["a"])"#);
//! assert_eq!(value.to_json(), r#"[7,["a"]]"#);
//! ```

use std::borrow::Cow;
use std::fmt;

use super::{read_len, take, Codec, CodecError};

/// How deep codec names may nest (`vec<vec<…>>`): deeper names are not understood.
pub const MAX_DEPTH: usize = 32;

/// Elements of a list whose elements take no bytes (`vec<unit>`) accepted at most: a count
/// is otherwise bounded by the bytes left.
const MAX_EMPTY_ELEMENTS: usize = 1 << 16;

/// The shape of a built-in codec's bytes, parsed from its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schema {
    /// An unsigned integer of this many bytes, little-endian (`u8` … `u128`).
    UInt(usize),
    /// A two's-complement integer of this many bytes, little-endian (`i8` … `i128`).
    Int(usize),
    /// `f32`.
    F32,
    /// `f64`.
    F64,
    /// `bool`.
    Bool,
    /// `char`.
    Char,
    /// `unit`.
    Unit,
    /// `string`.
    String,
    /// `time-window`.
    TimeWindow,
    /// `vec<T>`.
    Vec(Box<Schema>),
    /// `option<T>`.
    Option(Box<Schema>),
    /// `tuple(A,B,…)`.
    Tuple(Vec<Schema>),
    /// `ttl<T>`: a value of a state with a TTL, after the time of its last update.
    Ttl(Box<Schema>),
    /// `timer<N>`: a timer's slot (domain, timestamp, namespace).
    Timer(Box<Schema>),
}

/// A value decoded by a [`Schema`].
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// An unsigned integer.
    UInt(u128),
    /// A signed integer.
    Int(i128),
    /// A floating-point number.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// A character.
    Char(char),
    /// The unit value.
    Unit,
    /// A string.
    String(String),
    /// A time window `[start, end)`.
    Window {
        /// Its start.
        start: i64,
        /// Its end.
        end: i64,
    },
    /// The elements of a `vec`.
    List(Vec<Value>),
    /// An `option`.
    Option(Option<Box<Value>>),
    /// The elements of a tuple.
    Tuple(Vec<Value>),
    /// A timer's slot: its domain (`"event"` or `"processing"`), timestamp and namespace.
    Timer {
        /// `"event"` or `"processing"`.
        domain: &'static str,
        /// When the timer fires.
        timestamp: i64,
        /// Its namespace.
        namespace: Box<Value>,
    },
    /// A value of a state with a TTL and the time of its last update (milliseconds).
    Ttl {
        /// The time of the last update.
        timestamp: u64,
        /// The value.
        value: Box<Value>,
    },
}

impl Schema {
    /// The schema of a built-in codec name, or `None` for a name this module does not know
    /// (a user codec, `serde-postcard`) or that nests deeper than [`MAX_DEPTH`].
    pub fn parse(name: &str) -> Option<Schema> {
        let (schema, rest) = parse_at(name, 0)?;
        rest.is_empty().then_some(schema)
    }

    /// Decodes `bytes` as exactly one value of this schema.
    pub fn decode(&self, bytes: &[u8]) -> Result<Value, CodecError> {
        let mut input = bytes;
        let value = self.decode_from(&mut input)?;
        if input.is_empty() {
            Ok(value)
        } else {
            Err(CodecError::TrailingBytes { count: input.len() })
        }
    }

    /// Decodes one value from the front of `input`, advancing it. At most
    /// 65 536 values plus one per input byte are made, whatever the bytes say
    /// (nested lists of values that take no bytes would otherwise multiply).
    pub fn decode_from(&self, input: &mut &[u8]) -> Result<Value, CodecError> {
        let mut budget = input.len().saturating_add(MAX_EMPTY_ELEMENTS);
        self.decode_counted(input, &mut budget)
    }

    /// Decodes one value from the front of `input`, charging every value made to `budget`.
    fn decode_counted(&self, input: &mut &[u8], budget: &mut usize) -> Result<Value, CodecError> {
        *budget = budget
            .checked_sub(1)
            .ok_or(CodecError::Invalid(Cow::Borrowed(
                "more values than the bytes can justify",
            )))?;
        Ok(match self {
            Schema::UInt(n) => {
                let mut buf = [0u8; 16];
                buf[..*n].copy_from_slice(take(input, *n)?);
                Value::UInt(u128::from_le_bytes(buf))
            }
            Schema::Int(n) => {
                let bytes = take(input, *n)?;
                // Sign-extend from the top byte.
                let fill = if bytes[*n - 1] & 0x80 != 0 { 0xff } else { 0 };
                let mut buf = [fill; 16];
                buf[..*n].copy_from_slice(bytes);
                Value::Int(i128::from_le_bytes(buf))
            }
            Schema::F32 => Value::Float(f64::from(f32::decode_from(input)?)),
            Schema::F64 => Value::Float(f64::decode_from(input)?),
            Schema::Bool => Value::Bool(bool::decode_from(input)?),
            Schema::Char => Value::Char(char::decode_from(input)?),
            Schema::Unit => Value::Unit,
            Schema::String => Value::String(String::decode_from(input)?),
            Schema::TimeWindow => Value::Window {
                start: i64::decode_from(input)?,
                end: i64::decode_from(input)?,
            },
            Schema::Vec(element) => {
                let count = read_len(input)?;
                let bound = if element.min_len() == 0 {
                    MAX_EMPTY_ELEMENTS
                } else {
                    input.len() / element.min_len()
                };
                if count > bound {
                    return Err(CodecError::Invalid(Cow::Owned(format!(
                        "a list of {count} elements cannot fit in the {} bytes left",
                        input.len()
                    ))));
                }
                let mut items = Vec::with_capacity(count.min(*budget));
                for _ in 0..count {
                    items.push(element.decode_counted(input, budget)?);
                }
                Value::List(items)
            }
            Schema::Option(inner) => match take(input, 1)?[0] {
                0 => Value::Option(None),
                1 => Value::Option(Some(Box::new(inner.decode_counted(input, budget)?))),
                b => {
                    return Err(CodecError::Invalid(Cow::Owned(format!(
                        "option tag {b:#04x} is neither 0 nor 1"
                    ))))
                }
            },
            Schema::Tuple(parts) => {
                let mut items = Vec::with_capacity(parts.len());
                for part in parts {
                    items.push(part.decode_counted(input, budget)?);
                }
                Value::Tuple(items)
            }
            Schema::Timer(inner) => {
                let (domain, timestamp) = crate::timer::decode_slot_header(input)?;
                Value::Timer {
                    domain: match domain {
                        crate::timer::TimeDomain::EventTime => "event",
                        crate::timer::TimeDomain::ProcessingTime => "processing",
                    },
                    timestamp,
                    namespace: Box::new(inner.decode_counted(input, budget)?),
                }
            }
            Schema::Ttl(inner) => Value::Ttl {
                timestamp: u64::decode_from(input)?,
                value: Box::new(inner.decode_counted(input, budget)?),
            },
        })
    }

    /// The fewest bytes one value takes.
    fn min_len(&self) -> usize {
        match self {
            Schema::UInt(n) | Schema::Int(n) => *n,
            Schema::F32 | Schema::Char => 4,
            Schema::F64 => 8,
            Schema::Bool | Schema::String | Schema::Vec(_) | Schema::Option(_) => 1,
            Schema::Unit => 0,
            Schema::TimeWindow => 16,
            Schema::Tuple(parts) => parts.iter().map(Schema::min_len).sum(),
            Schema::Ttl(inner) => 8 + inner.min_len(),
            Schema::Timer(inner) => 9 + inner.min_len(),
        }
    }
}

/// Parses one schema from the front of `s` at nesting `depth`; returns it and the rest.
fn parse_at(s: &str, depth: usize) -> Option<(Schema, &str)> {
    if depth > MAX_DEPTH {
        return None;
    }
    if let Some(rest) = s.strip_prefix("vec<") {
        let (inner, rest) = parse_at(rest, depth + 1)?;
        return Some((Schema::Vec(Box::new(inner)), rest.strip_prefix('>')?));
    }
    if let Some(rest) = s.strip_prefix("timer<") {
        let (inner, rest) = parse_at(rest, depth + 1)?;
        return Some((Schema::Timer(Box::new(inner)), rest.strip_prefix('>')?));
    }
    if let Some(rest) = s.strip_prefix("ttl<") {
        let (inner, rest) = parse_at(rest, depth + 1)?;
        return Some((Schema::Ttl(Box::new(inner)), rest.strip_prefix('>')?));
    }
    if let Some(rest) = s.strip_prefix("option<") {
        let (inner, rest) = parse_at(rest, depth + 1)?;
        return Some((Schema::Option(Box::new(inner)), rest.strip_prefix('>')?));
    }
    if let Some(mut rest) = s.strip_prefix("tuple(") {
        let mut parts = Vec::new();
        loop {
            let (part, after) = parse_at(rest, depth + 1)?;
            parts.push(part);
            if let Some(after) = after.strip_prefix(',') {
                rest = after;
            } else {
                return Some((Schema::Tuple(parts), after.strip_prefix(')')?));
            }
        }
    }
    let end = s.find([',', '>', ')']).unwrap_or(s.len());
    let schema = match &s[..end] {
        "u8" => Schema::UInt(1),
        "u16" => Schema::UInt(2),
        "u32" => Schema::UInt(4),
        "u64" => Schema::UInt(8),
        "u128" => Schema::UInt(16),
        "i8" => Schema::Int(1),
        "i16" => Schema::Int(2),
        "i32" => Schema::Int(4),
        "i64" => Schema::Int(8),
        "i128" => Schema::Int(16),
        "f32" => Schema::F32,
        "f64" => Schema::F64,
        "bool" => Schema::Bool,
        "char" => Schema::Char,
        "unit" => Schema::Unit,
        "string" => Schema::String,
        // A file sink's transaction (file_sink::FileTxn) is encoded as its file name.
        "file-sink-txn" => Schema::String,
        "time-window" => Schema::TimeWindow,
        _ => return None,
    };
    Some((schema, &s[end..]))
}

/// `s` as a JSON string literal (for tools that print JSON around values).
pub fn json_literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    json_string(s, &mut out);
    out
}

/// Appends `s` to `out` as a JSON string literal.
pub fn json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

impl Value {
    /// The value as JSON: numbers, strings, `true`/`false`, `null` for unit and `None`, arrays
    /// for lists and tuples, `{"start":…,"end":…}` for a window. Integers are written in
    /// full (a reader that keeps 128-bit integers gets them exactly); a NaN or an infinity,
    /// which JSON has no number for, is written as a string.
    pub fn to_json(&self) -> String {
        let mut out = String::new();
        self.write_json(&mut out);
        out
    }

    fn write_json(&self, out: &mut String) {
        match self {
            Value::UInt(v) => out.push_str(&v.to_string()),
            Value::Int(v) => out.push_str(&v.to_string()),
            Value::Float(v) if v.is_finite() => out.push_str(&format!("{v:?}")),
            Value::Float(v) => json_string(&v.to_string(), out),
            Value::Bool(v) => out.push_str(if *v { "true" } else { "false" }),
            Value::Char(c) => json_string(c.encode_utf8(&mut [0; 4]), out),
            Value::Unit | Value::Option(None) => out.push_str("null"),
            Value::String(s) => json_string(s, out),
            Value::Window { start, end } => {
                out.push_str(&format!("{{\"start\":{start},\"end\":{end}}}"));
            }
            Value::Option(Some(v)) => v.write_json(out),
            Value::Timer {
                domain,
                timestamp,
                namespace,
            } => {
                out.push_str(&format!(
                    "{{\"timer\":\"{domain}\",\"timestamp\":{timestamp},\"namespace\":"
                ));
                namespace.write_json(out);
                out.push('}');
            }
            Value::Ttl { timestamp, value } => {
                out.push_str(&format!("{{\"ttl_timestamp\":{timestamp},\"value\":"));
                value.write_json(out);
                out.push('}');
            }
            Value::List(items) | Value::Tuple(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write_json(out);
                }
                out.push(']');
            }
        }
    }
}

/// Human-readable: Rust-like literals (`7`, `"a"`, `['x']`, `[1, 2]`, `(1, "a")`, `None`,
/// `Some(3)`, `[0, 60000)` for a window).
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::UInt(v) => write!(f, "{v}"),
            Value::Int(v) => write!(f, "{v}"),
            Value::Float(v) => write!(f, "{v:?}"),
            Value::Bool(v) => write!(f, "{v}"),
            Value::Char(c) => write!(f, "{c:?}"),
            Value::Unit => write!(f, "()"),
            Value::String(s) => write!(f, "{s:?}"),
            Value::Window { start, end } => write!(f, "[{start}, {end})"),
            Value::Option(None) => write!(f, "None"),
            Value::Option(Some(v)) => write!(f, "Some({v})"),
            Value::Ttl { timestamp, value } => write!(f, "{value} @{timestamp}"),
            Value::Timer {
                domain,
                timestamp,
                namespace,
            } => write!(f, "{domain}-time timer at {timestamp} in {namespace}"),
            Value::List(items) => {
                write!(f, "[")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{item}")?;
                }
                write!(f, "]")
            }
            Value::Tuple(items) => {
                write!(f, "(")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{item}")?;
                }
                if items.len() == 1 {
                    write!(f, ",")?;
                }
                write!(f, ")")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::to_bytes;
    use crate::TimeWindow;

    fn show<T: Codec>(v: &T) -> (String, String) {
        let schema = Schema::parse(&T::codec_name()).expect("a built-in name parses");
        let value = schema
            .decode(&to_bytes(v))
            .expect("the typed encoding decodes");
        (value.to_string(), value.to_json())
    }

    #[test]
    fn every_built_in_name_decodes_what_its_codec_encodes() {
        assert_eq!(show(&7u8), ("7".into(), "7".into()));
        assert_eq!(show(&u128::MAX).0, u128::MAX.to_string());
        assert_eq!(show(&-5i8).0, "-5");
        assert_eq!(show(&i128::MIN).0, i128::MIN.to_string());
        assert_eq!(show(&-70000i32).0, "-70000");
        assert_eq!(show(&1.5f32), ("1.5".into(), "1.5".into()));
        assert_eq!(show(&f64::NAN).1, "\"NaN\"");
        assert_eq!(show(&true).1, "true");
        assert_eq!(show(&'é'), ("'é'".into(), "\"é\"".into()));
        assert_eq!(show(&()), ("()".into(), "null".into()));
        assert_eq!(
            show(&"a\"b\n".to_string()),
            ("\"a\\\"b\\n\"".into(), "\"a\\\"b\\n\"".into())
        );
        assert_eq!(show(&vec![1u16, 2]), ("[1, 2]".into(), "[1,2]".into()));
        assert_eq!(show(&Some(3u64)), ("Some(3)".into(), "3".into()));
        assert_eq!(show(&None::<u64>), ("None".into(), "null".into()));
        assert_eq!(show(&(1u8,)).0, "(1,)");
        assert_eq!(
            show(&(1u8, "x".to_string(), vec![Some(true)], -2i64, 'c', ())),
            (
                "(1, \"x\", [Some(true)], -2, 'c', ())".into(),
                "[1,\"x\",[true],-2,\"c\",null]".into()
            )
        );
        assert_eq!(
            show(&TimeWindow::new(0, 60_000)),
            ("[0, 60000)".into(), "{\"start\":0,\"end\":60000}".into())
        );
        assert_eq!(show(&vec![vec![0u8; 2]]).0, "[[0, 0]]");
        assert_eq!(
            show(&crate::timer::TimerSlot {
                domain: crate::timer::TimeDomain::EventTime,
                timestamp: -3,
                namespace: 7u8,
            }),
            (
                "event-time timer at -3 in 7".into(),
                "{\"timer\":\"event\",\"timestamp\":-3,\"namespace\":7}".into()
            )
        );
        assert_eq!(
            show(&crate::TtlValue::new(5u32, 1_000)),
            (
                "5 @1000".into(),
                "{\"ttl_timestamp\":1000,\"value\":5}".into()
            )
        );
    }

    #[test]
    fn unknown_and_malformed_names_are_not_understood() {
        for name in [
            "serde-postcard",
            "my-codec",
            "vec<u8",
            "vec<u8>>",
            "tuple()",
            "tuple(u8,",
            "option<>",
            "",
            "u8 ",
        ] {
            assert_eq!(Schema::parse(name), None, "{name:?}");
        }
        let deep = format!("{}u8{}", "vec<".repeat(100), ">".repeat(100));
        assert_eq!(Schema::parse(&deep), None);
        let ok = format!("{}u8{}", "vec<".repeat(10), ">".repeat(10));
        assert!(Schema::parse(&ok).is_some());
    }

    #[test]
    fn bad_bytes_are_errors_and_lying_counts_do_not_allocate() {
        let s = Schema::parse("vec<u64>").unwrap();
        // A count of 2^40 elements with 3 bytes behind it.
        let mut bytes = Vec::new();
        flowstate_formats::codec::varint::encode_u64(1 << 40, &mut bytes);
        bytes.extend_from_slice(&[1, 2, 3]);
        assert!(s.decode(&bytes).is_err());
        let s = Schema::parse("vec<unit>").unwrap();
        assert!(s.decode(&bytes[..bytes.len() - 3]).is_err());
        assert!(Schema::parse("bool").unwrap().decode(&[2]).is_err());
        assert!(Schema::parse("u32").unwrap().decode(&[1, 2, 3]).is_err());
        assert!(matches!(
            Schema::parse("u8").unwrap().decode(&[1, 2]),
            Err(CodecError::TrailingBytes { count: 1 })
        ));
        // Nested lists of values that take no bytes cannot multiply: 301 bytes saying 100
        // lists of 65 536 units each are refused, not 6.5 M values made.
        let mut nested = Vec::new();
        flowstate_formats::codec::varint::encode_u64(100, &mut nested);
        for _ in 0..100 {
            flowstate_formats::codec::varint::encode_u64(65_536, &mut nested);
        }
        assert!(Schema::parse("vec<vec<unit>>")
            .unwrap()
            .decode(&nested)
            .is_err());
        // Every prefix of a valid encoding is an error, never a panic.
        let bytes = to_bytes(&(vec!["ab".to_string()], Some(7i16)));
        let s = Schema::parse("tuple(vec<string>,option<i16>)").unwrap();
        for cut in 0..bytes.len() {
            assert!(s.decode(&bytes[..cut]).is_err());
        }
    }
}
