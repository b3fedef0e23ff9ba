//! [`TimerSlot`]: where a timer sits in its service's keyed state (the namespace of the entry),
//! and its codec `timer<NAME>`, whose bytes sort in time order.

use std::borrow::Cow;

use super::TimeDomain;
use crate::codec::{Codec, CodecError};
use crate::state::Namespace;

/// Where a timer sits in the service's keyed state: its domain, timestamp and namespace (the
/// namespace of the state's entry). Codec `timer<NAME>`: the domain byte (`00` event time,
/// `01` processing time), the timestamp as 8 big-endian bytes with the sign bit flipped (so that
/// byte order is time order), then the namespace's encoding.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TimerSlot<N> {
    /// The time domain.
    pub domain: TimeDomain,
    /// When the timer fires, in milliseconds.
    pub timestamp: i64,
    /// The timer's namespace (a window, say).
    pub namespace: N,
}

/// The length of a [`TimerSlot`]'s encoding before the namespace.
pub(crate) const SLOT_HEADER_LEN: usize = 9;

/// A timestamp's 8 bytes in a slot: big-endian with the sign bit flipped (byte order = time
/// order).
pub(crate) fn timestamp_bytes(ts: i64) -> [u8; 8] {
    ((ts as u64) ^ (1 << 63)).to_be_bytes()
}

fn timestamp_of(bytes: [u8; 8]) -> i64 {
    (u64::from_be_bytes(bytes) ^ (1 << 63)) as i64
}

impl<N: Codec> Codec for TimerSlot<N> {
    fn codec_name() -> Cow<'static, str> {
        Cow::Owned(format!("timer<{}>", N::codec_name()))
    }
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.domain.code());
        out.extend_from_slice(&timestamp_bytes(self.timestamp));
        self.namespace.encode(out);
    }
    fn decode_from(input: &mut &[u8]) -> std::result::Result<Self, CodecError> {
        let (domain, timestamp) = decode_slot_header(input)?;
        Ok(TimerSlot {
            domain,
            timestamp,
            namespace: N::decode_from(input)?,
        })
    }
}

/// Decodes the domain and timestamp that start a [`TimerSlot`]'s encoding (before the
/// namespace), advancing `input`.
pub(crate) fn decode_slot_header(
    input: &mut &[u8],
) -> std::result::Result<(TimeDomain, i64), CodecError> {
    let domain = match u8::decode_from(input)? {
        0 => TimeDomain::EventTime,
        1 => TimeDomain::ProcessingTime,
        other => {
            return Err(CodecError::Invalid(Cow::Owned(format!(
                "timer domain {other} is neither 0 nor 1"
            ))))
        }
    };
    let mut ts = [0u8; 8];
    ts.copy_from_slice(crate::codec::take(input, 8)?);
    Ok((domain, timestamp_of(ts)))
}

impl<N: Namespace> Namespace for TimerSlot<N> {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::to_bytes;
    use crate::timer::TimeDomain;

    #[test]
    fn slots_encode_in_time_order() {
        let enc = |ts: i64| {
            to_bytes(&TimerSlot {
                domain: TimeDomain::EventTime,
                timestamp: ts,
                namespace: 3u8,
            })
        };
        let mut times = [i64::MIN, -5, -1, 0, 1, 7, 1 << 40, i64::MAX];
        let mut encoded: Vec<Vec<u8>> = times.iter().map(|&t| enc(t)).collect();
        encoded.sort();
        times.sort();
        for (bytes, t) in encoded.iter().zip(times) {
            assert_eq!(TimerSlot::<u8>::decode(bytes).unwrap().timestamp, t);
        }
        assert_eq!(TimerSlot::<u8>::codec_name(), "timer<u8>");
        assert!(TimerSlot::<u8>::decode(&[2, 0, 0, 0, 0, 0, 0, 0, 0, 1]).is_err());
        assert!(TimerSlot::<u8>::decode(&[0, 0, 0]).is_err());
    }
}
