//! The `codec_decode` property: every built-in codec on arbitrary bytes.

use crate::codec::Codec;

/// Decodes `data` with `T`; if that succeeds, the value must re-encode to the bytes consumed,
/// and decoding those bytes alone must give the same encoding again.
fn round_trip<T: Codec>(data: &[u8]) {
    let mut input = data;
    if let Ok(value) = T::decode_from(&mut input) {
        let consumed = &data[..data.len() - input.len()];
        let mut again = Vec::new();
        value.encode(&mut again);
        assert_eq!(
            again,
            consumed,
            "{} re-encodes differently from the bytes it decoded",
            T::codec_name()
        );
        // `decode` of exactly the consumed bytes succeeds; with the rest appended it must
        // report the trailing bytes, not succeed.
        assert!(T::decode(consumed).is_ok());
        if !input.is_empty() {
            assert!(T::decode(data).is_err());
        }
    }
}

/// The property of the `codec_decode` fuzz target: every built-in codec, on arbitrary bytes,
/// returns a value or an error (no panic, no unbounded allocation), and a value re-encodes to
/// exactly the bytes it was decoded from. The first byte picks the type.
pub fn check_codec_decode(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    match selector % 16 {
        0 => round_trip::<u64>(rest),
        1 => round_trip::<i32>(rest),
        2 => round_trip::<bool>(rest),
        3 => round_trip::<char>(rest),
        4 => round_trip::<String>(rest),
        5 => round_trip::<Vec<u8>>(rest),
        6 => round_trip::<Vec<String>>(rest),
        7 => round_trip::<Option<u16>>(rest),
        8 => round_trip::<(u8, String, i64)>(rest),
        9 => round_trip::<Vec<Vec<()>>>(rest),
        10 => round_trip::<Vec<Option<Vec<u32>>>>(rest),
        11 => round_trip::<f64>(rest),
        12 => round_trip::<crate::TimeWindow>(rest),
        13 => round_trip::<(bool, char, f32)>(rest),
        14 => round_trip::<Vec<(String, Vec<u8>)>>(rest),
        _ => round_trip::<u128>(rest),
    }
}
