//! Register <-> engineering value conversion for every supported data type and order.

use crate::model::{DataType, Endianness};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("expected {expected} registers, got {got}")]
    WrongLength { expected: usize, got: usize },
    #[error("value is not a finite number")]
    NotFinite,
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
pub fn decode(
    regs: &[u16],
    data_type: DataType,
    byte_order: Endianness,
    word_order: Endianness,
    scale: f64,
    offset: f64,
) -> Result<f64, DecodeError> {
    let n = usize::from(data_type.registers());
    if regs.len() != n {
        return Err(DecodeError::WrongLength {
            expected: n,
            got: regs.len(),
        });
    }
    let b = to_be_bytes(regs, byte_order, word_order);
    let raw = match data_type {
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

fn eight(b: &[u8]) -> [u8; 8] {
    [b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]
}

/// Encodes an engineering value into registers (inverse of [`decode`]); integer
/// types round and saturate.
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
                    assert_eq!(regs.len(), usize::from(t.registers()));
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
