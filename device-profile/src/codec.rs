//! Register <-> engineering value conversion for every supported data type and order.

use crate::model::{DataType, Endianness, ModbusDefaults, Point};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("expected {expected} registers, got {got}")]
    WrongLength { expected: usize, got: usize },
    #[error("value is not a finite number")]
    NotFinite,
    #[error("{0:?} is not a numeric register type")]
    NotNumeric(DataType),
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EncodeError {
    #[error("value {value} is not a finite number")]
    NotFinite { value: f64 },
    #[error("value {value} gives raw {raw}, outside the range of {data_type:?} ({min}..={max})")]
    OutOfRange {
        value: f64,
        raw: f64,
        data_type: DataType,
        min: f64,
        max: f64,
    },
    #[error("{0:?} points cannot be written as a number")]
    NotWritable(DataType),
    #[error(
        "value {value} gives raw {raw}, not a whole number: {data_type:?} holds integers \
         (with scale {scale}, write a multiple of {scale})"
    )]
    NotInteger {
        value: f64,
        raw: f64,
        data_type: DataType,
        scale: f64,
    },
}

/// A decoded point value.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    Number(f64),
    Text(String),
}

/// Registers as they come off the wire -> bytes in big-endian significance order.
fn to_be_bytes(regs: &[u16], byte_order: Endianness, word_order: Endianness) -> Vec<u8> {
    let mut words: Vec<u16> = regs.to_vec();
    if word_order == Endianness::Little {
        words.reverse();
    }
    words
        .iter()
        .flat_map(|w| match byte_order {
            Endianness::Big => w.to_be_bytes(),
            Endianness::Little => w.to_le_bytes(),
        })
        .collect()
}

fn from_be_bytes(bytes: &[u8], byte_order: Endianness, word_order: Endianness) -> Vec<u16> {
    let mut words: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|c| match byte_order {
            Endianness::Big => u16::from_be_bytes([c[0], c[1]]),
            Endianness::Little => u16::from_le_bytes([c[0], c[1]]),
        })
        .collect();
    if word_order == Endianness::Little {
        words.reverse();
    }
    words
}

/// Decodes raw registers to the engineering value (`raw * scale + offset`).
/// `data_type` must be a numeric register type (not bool, bit or string).
pub fn decode(
    regs: &[u16],
    data_type: DataType,
    byte_order: Endianness,
    word_order: Endianness,
    scale: f64,
    offset: f64,
) -> Result<f64, DecodeError> {
    let n = usize::from(data_type.fixed_size().unwrap_or(0));
    if regs.len() != n {
        return Err(DecodeError::WrongLength {
            expected: n,
            got: regs.len(),
        });
    }
    let b = to_be_bytes(regs, byte_order, word_order);
    let raw = match data_type {
        DataType::Bool | DataType::Bit | DataType::String => {
            return Err(DecodeError::NotNumeric(data_type));
        }
        DataType::U16 => f64::from(u16::from_be_bytes([b[0], b[1]])),
        DataType::I16 => f64::from(i16::from_be_bytes([b[0], b[1]])),
        DataType::U32 => f64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]])),
        DataType::I32 => f64::from(i32::from_be_bytes([b[0], b[1], b[2], b[3]])),
        DataType::F32 => f64::from(f32::from_be_bytes([b[0], b[1], b[2], b[3]])),
        // 64-bit integers above 2^53 lose precision in f64; counters that large are rare.
        DataType::U64 => u64::from_be_bytes(eight(&b)) as f64,
        DataType::I64 => i64::from_be_bytes(eight(&b)) as f64,
        DataType::F64 => f64::from_be_bytes(eight(&b)),
    };
    let value = raw * scale + offset;
    if value.is_finite() {
        Ok(value)
    } else {
        Err(DecodeError::NotFinite)
    }
}

/// How many f64 rounding steps `(value - offset) / scale` may be off by and still
/// count as a whole number: each of value, offset and scale carries half an ulp
/// from decimal conversion, and the subtraction can cancel digits, so the error
/// scales with `(|value| + |offset|) / |scale|`, not with the result.
const RAW_ULPS: f64 = 64.0;

/// Like [`encode`], but refuses values the register type cannot hold instead
/// of saturating or rounding: a write must never put a different value on the device.
pub fn encode_checked(
    value: f64,
    data_type: DataType,
    byte_order: Endianness,
    word_order: Endianness,
    scale: f64,
    offset: f64,
) -> Result<Vec<u16>, EncodeError> {
    if !value.is_finite() {
        return Err(EncodeError::NotFinite { value });
    }
    let raw = (value - offset) / scale;
    let (min, max) = match data_type {
        DataType::U16 => (0.0, f64::from(u16::MAX)),
        DataType::I16 => (f64::from(i16::MIN), f64::from(i16::MAX)),
        DataType::U32 => (0.0, f64::from(u32::MAX)),
        DataType::I32 => (f64::from(i32::MIN), f64::from(i32::MAX)),
        // Exactly representable bounds; beyond 2^53 integers are not exact in f64 anyway.
        DataType::U64 => (0.0, 9_007_199_254_740_992.0),
        DataType::I64 => (-9_007_199_254_740_992.0, 9_007_199_254_740_992.0),
        DataType::F32 => (f64::from(f32::MIN), f64::from(f32::MAX)),
        DataType::F64 => (f64::MIN, f64::MAX),
        DataType::Bool | DataType::Bit | DataType::String => {
            return Err(EncodeError::NotWritable(data_type));
        }
    };
    let integer = !matches!(data_type, DataType::F32 | DataType::F64);
    let rounded = if integer { raw.round() } else { raw };
    // Rounding would put a different value on the device than the one asked
    // for (2.7 -> 3 on a mode word). Only float error (23.5 / 0.1 =
    // 234.99999999999997) counts as whole.
    let magnitude = ((value.abs() + offset.abs()) / scale.abs()).max(1.0);
    if integer && raw.is_finite() && (raw - rounded).abs() > RAW_ULPS * f64::EPSILON * magnitude {
        return Err(EncodeError::NotInteger {
            value,
            raw,
            data_type,
            scale,
        });
    }
    if !(rounded >= min && rounded <= max) {
        return Err(EncodeError::OutOfRange {
            value,
            raw,
            data_type,
            min,
            max,
        });
    }
    Ok(encode(
        value, data_type, byte_order, word_order, scale, offset,
    ))
}

/// One bit of a register (0 = least significant).
pub fn decode_bit(reg: u16, bit: u8) -> f64 {
    if reg & (1u16 << (bit & 15)) != 0 {
        1.0
    } else {
        0.0
    }
}

/// ASCII text, two characters per register; NULs and surrounding spaces trimmed,
/// bytes outside printable ASCII replaced.
pub fn decode_text(regs: &[u16], byte_order: Endianness) -> String {
    let bytes: Vec<u8> = regs
        .iter()
        .flat_map(|w| match byte_order {
            Endianness::Big => w.to_be_bytes(),
            Endianness::Little => w.to_le_bytes(),
        })
        .collect();
    let text: String = bytes
        .iter()
        .take_while(|&&b| b != 0)
        .map(|&b| {
            if (0x20..0x7f).contains(&b) {
                b as char
            } else {
                '?'
            }
        })
        .collect();
    text.trim().to_string()
}

/// Inverse of [`decode_text`], padded with NULs to `len` registers (for simulators).
pub fn encode_text(text: &str, len: u16, byte_order: Endianness) -> Vec<u16> {
    let mut bytes: Vec<u8> = text.bytes().take(usize::from(len) * 2).collect();
    bytes.resize(usize::from(len) * 2, 0);
    bytes
        .chunks_exact(2)
        .map(|c| match byte_order {
            Endianness::Big => u16::from_be_bytes([c[0], c[1]]),
            Endianness::Little => u16::from_le_bytes([c[0], c[1]]),
        })
        .collect()
}

/// Decodes a register point (not `bool`) from exactly its registers.
/// `scale_factor` is the value of the point's SunSpec scale-factor register, if it has one.
pub fn decode_point(
    p: &Point,
    d: &ModbusDefaults,
    regs: &[u16],
    scale_factor: Option<i16>,
) -> Result<Decoded, DecodeError> {
    let Some(t) = p.data_type else {
        return Err(DecodeError::NotNumeric(DataType::String));
    };
    match t {
        DataType::String => Ok(Decoded::Text(decode_text(regs, p.byte_order(d)))),
        DataType::Bit => match regs {
            [r] => Ok(Decoded::Number(
                decode_bit(*r, p.bit.unwrap_or(0)) * p.scale + p.offset,
            )),
            _ => Err(DecodeError::WrongLength {
                expected: 1,
                got: regs.len(),
            }),
        },
        DataType::Bool => Err(DecodeError::NotNumeric(t)),
        _ => {
            let sf = scale_factor
                .map(|sf| 10f64.powi(i32::from(sf)))
                .unwrap_or(1.0);
            decode(
                regs,
                t,
                p.byte_order(d),
                p.word_order(d),
                p.scale * sf,
                p.offset,
            )
            .map(Decoded::Number)
        }
    }
}

fn eight(b: &[u8]) -> [u8; 8] {
    [b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]
}

/// Encodes an engineering value into registers (inverse of [`decode`]); integer
/// types round and saturate. For simulators; writes use [`encode_checked`].
pub fn encode(
    value: f64,
    data_type: DataType,
    byte_order: Endianness,
    word_order: Endianness,
    scale: f64,
    offset: f64,
) -> Vec<u16> {
    let raw = (value - offset) / scale;
    let bytes: Vec<u8> = match data_type {
        DataType::Bool | DataType::Bit | DataType::String => vec![0, 0],
        DataType::U16 => (raw.round() as u16).to_be_bytes().to_vec(),
        DataType::I16 => (raw.round() as i16).to_be_bytes().to_vec(),
        DataType::U32 => (raw.round() as u32).to_be_bytes().to_vec(),
        DataType::I32 => (raw.round() as i32).to_be_bytes().to_vec(),
        DataType::F32 => (raw as f32).to_be_bytes().to_vec(),
        DataType::U64 => (raw.round() as u64).to_be_bytes().to_vec(),
        DataType::I64 => (raw.round() as i64).to_be_bytes().to_vec(),
        DataType::F64 => raw.to_be_bytes().to_vec(),
    };
    from_be_bytes(&bytes, byte_order, word_order)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Endianness::{Big, Little};

    #[test]
    fn sdm630_float_abcd() {
        // 230.0f32 = 0x43660000
        assert_eq!(
            decode(&[0x4366, 0x0000], DataType::F32, Big, Big, 1.0, 0.0),
            Ok(230.0)
        );
    }

    #[test]
    fn word_swapped_cdab() {
        assert_eq!(
            decode(&[0x0000, 0x4366], DataType::F32, Big, Little, 1.0, 0.0),
            Ok(230.0)
        );
    }

    #[test]
    fn byte_swapped_badc() {
        assert_eq!(
            decode(&[0x6643, 0x0000], DataType::F32, Little, Big, 1.0, 0.0),
            Ok(230.0)
        );
    }

    #[test]
    fn scaled_signed() {
        assert_eq!(
            decode(&[0xFFF6], DataType::I16, Big, Big, 0.1, 0.0),
            Ok(-1.0)
        );
    }

    #[test]
    fn round_trip_every_type_and_order() {
        let types = [
            DataType::U16,
            DataType::I16,
            DataType::U32,
            DataType::I32,
            DataType::U64,
            DataType::I64,
            DataType::F32,
            DataType::F64,
        ];
        for t in types {
            for bo in [Big, Little] {
                for wo in [Big, Little] {
                    let v = if matches!(t, DataType::U16 | DataType::U32 | DataType::U64) {
                        1234.0
                    } else {
                        -1234.0
                    };
                    let regs = encode(v, t, bo, wo, 1.0, 0.0);
                    assert_eq!(regs.len(), usize::from(t.fixed_size().unwrap_or(0)));
                    assert_eq!(
                        decode(&regs, t, bo, wo, 1.0, 0.0),
                        Ok(v),
                        "{t:?} {bo:?} {wo:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn fractions_on_integer_types_are_refused_not_rounded() {
        // The field trial: 2.7 to a u16 mode word went out as 3, 1.5 to a u32 as 2.
        for (v, t) in [
            (2.7, DataType::U16),
            (1.5, DataType::U32),
            (-2.5, DataType::I16),
            (0.001, DataType::I32),
            (7.25, DataType::U64),
            (-0.5, DataType::I64),
        ] {
            assert!(
                matches!(
                    encode_checked(v, t, Big, Big, 1.0, 0.0),
                    Err(EncodeError::NotInteger { .. })
                ),
                "{v} as {t:?}"
            );
        }
        // Scale 0.5: 0.25 is half a count; 1.5 is three.
        assert!(matches!(
            encode_checked(0.25, DataType::U16, Big, Big, 0.5, 0.0),
            Err(EncodeError::NotInteger { .. })
        ));
        assert_eq!(
            encode_checked(1.5, DataType::U16, Big, Big, 0.5, 0.0),
            Ok(vec![3])
        );
        // 23.5 / 0.1 is 234.99999999999997 in f64: float error, not a fraction.
        assert_eq!(
            encode_checked(23.5, DataType::U16, Big, Big, 0.1, 0.0),
            Ok(vec![235])
        );
        let msg = encode_checked(23.45, DataType::I16, Big, Big, 0.1, 0.0)
            .map_err(|e| e.to_string())
            .err()
            .unwrap_or_default();
        assert!(msg.contains("not a whole number"), "{msg}");
        // Offset cancellation (100.3 - 100 = 0.29999999999999716) is float error too.
        assert_eq!(
            encode_checked(100.3, DataType::U16, Big, Big, 0.1, 100.0),
            Ok(vec![3])
        );
        // Floats take fractions as they are.
        assert!(encode_checked(2.7, DataType::F32, Big, Big, 1.0, 0.0).is_ok());
    }

    #[test]
    fn wrong_length_and_nan_are_errors() {
        assert!(matches!(
            decode(&[1], DataType::F32, Big, Big, 1.0, 0.0),
            Err(DecodeError::WrongLength { .. })
        ));
        // 0x7FC00000 is a quiet NaN: SunSpec's "not implemented".
        assert_eq!(
            decode(&[0x7FC0, 0], DataType::F32, Big, Big, 1.0, 0.0),
            Err(DecodeError::NotFinite)
        );
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use Endianness::{Big, Little};
    use proptest::prelude::*;

    fn order() -> impl Strategy<Value = Endianness> {
        prop_oneof![Just(Big), Just(Little)]
    }

    proptest! {
        #[test]
        fn integers_round_trip(v in any::<i32>(), bo in order(), wo in order()) {
            let v = f64::from(v);
            for (t, lo, hi) in [
                (DataType::I16, f64::from(i16::MIN), f64::from(i16::MAX)),
                (DataType::U16, 0.0, f64::from(u16::MAX)),
                (DataType::I32, f64::from(i32::MIN), f64::from(i32::MAX)),
                (DataType::U32, 0.0, f64::from(u32::MAX)),
                (DataType::I64, -1e15, 1e15),
                (DataType::U64, 0.0, 1e15),
            ] {
                let regs = encode_checked(v, t, bo, wo, 1.0, 0.0);
                if v >= lo && v <= hi {
                    let regs = regs.unwrap();
                    prop_assert_eq!(decode(&regs, t, bo, wo, 1.0, 0.0), Ok(v));
                } else {
                    let is_out_of_range = matches!(regs, Err(EncodeError::OutOfRange { .. }));
                    prop_assert!(is_out_of_range);
                }
            }
        }

        #[test]
        fn scaled_integers_take_whole_counts_only(n in -30000i32..30000,
                scale in prop_oneof![Just(1.0), Just(0.1), Just(0.01), Just(0.5), Just(10.0)],
                frac in 0.01f64..0.99, bo in order(), wo in order()) {
            let v = f64::from(n) * scale;
            let regs = encode_checked(v, DataType::I16, bo, wo, scale, 0.0);
            prop_assert_eq!(regs.map(|r| decode(&r, DataType::I16, bo, wo, 1.0, 0.0)), Ok(Ok(f64::from(n))));
            let off = (f64::from(n) + frac) * scale;
            let refused = matches!(encode_checked(off, DataType::I32, bo, wo, scale, 0.0),
                Err(EncodeError::NotInteger { .. }));
            prop_assert!(refused, "{} with scale {}", off, scale);
        }

        #[test]
        fn floats_round_trip_with_scale(v in -1e6f64..1e6, scale in prop_oneof![Just(1.0), Just(0.1), Just(0.01), Just(10.0)],
                                        offset in -100.0f64..100.0, bo in order(), wo in order()) {
            let regs = encode_checked(v, DataType::F64, bo, wo, scale, offset).unwrap();
            let back = decode(&regs, DataType::F64, bo, wo, scale, offset).unwrap();
            prop_assert!((back - v).abs() <= 1e-9 * v.abs().max(1.0));
            let regs = encode_checked(v, DataType::F32, bo, wo, 1.0, 0.0).unwrap();
            let back = decode(&regs, DataType::F32, bo, wo, 1.0, 0.0).unwrap();
            prop_assert_eq!(back, f64::from(v as f32));
        }

        #[test]
        fn word_and_byte_order_are_the_documented_permutations(raw in any::<u32>()) {
            let b = raw.to_be_bytes();
            let abcd = [u16::from_be_bytes([b[0], b[1]]), u16::from_be_bytes([b[2], b[3]])];
            let cdab = [abcd[1], abcd[0]];
            let badc = [u16::from_be_bytes([b[1], b[0]]), u16::from_be_bytes([b[3], b[2]])];
            let dcba = [badc[1], badc[0]];
            let want = f64::from(raw);
            prop_assert_eq!(decode(&abcd, DataType::U32, Big, Big, 1.0, 0.0), Ok(want));
            prop_assert_eq!(decode(&cdab, DataType::U32, Big, Little, 1.0, 0.0), Ok(want));
            prop_assert_eq!(decode(&badc, DataType::U32, Little, Big, 1.0, 0.0), Ok(want));
            prop_assert_eq!(decode(&dcba, DataType::U32, Little, Little, 1.0, 0.0), Ok(want));
        }

        #[test]
        fn text_and_bits(s in "[ -~]{0,20}", len in 1u16..12, reg in any::<u16>(), bit in 0u8..16) {
            let regs = encode_text(&s, len, Big);
            prop_assert_eq!(regs.len(), usize::from(len));
            let cut: String = s.chars().take(usize::from(len) * 2).collect();
            prop_assert_eq!(decode_text(&regs, Big), cut.trim().to_string());
            prop_assert_eq!(decode_bit(reg, bit), f64::from((reg >> bit) & 1));
        }
    }
}
