//! Opening serial lines (RS-485 / RS-232) with settings from the device entry or its profile.

use crate::config::SerialLine;
use device_profile::{Parity, SerialDefaults};
use std::path::PathBuf;
use std::time::Duration;
use tokio_serial::{DataBits, SerialStream, StopBits};

/// Line settings after applying the profile's defaults to the device entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LineSettings {
    pub device: PathBuf,
    pub baud: u32,
    pub parity: Parity,
    pub data_bits: u8,
    pub stop_bits: u8,
}

impl LineSettings {
    pub fn resolve(line: &SerialLine, defaults: &SerialDefaults) -> LineSettings {
        LineSettings {
            device: line.device.clone(),
            baud: line.baud.unwrap_or(defaults.baud),
            parity: line.parity.unwrap_or(defaults.parity),
            data_bits: line.data_bits.unwrap_or(defaults.data_bits),
            stop_bits: line.stop_bits.unwrap_or(defaults.stop_bits),
        }
    }

    /// Time on the wire for one character (start + data + parity + stop bits).
    pub fn char_time(&self) -> Duration {
        let bits = 1
            + u32::from(self.data_bits)
            + u32::from(self.parity != Parity::None)
            + u32::from(self.stop_bits);
        Duration::from_secs_f64(f64::from(bits) / f64::from(self.baud.max(1)))
    }

    /// Modbus RTU inter-frame silence: 3.5 character times, fixed at 1.75 ms
    /// above 19200 baud (Modbus over serial line spec, 2.5.1.1).
    pub fn rtu_silence(&self) -> Duration {
        if self.baud > 19_200 {
            Duration::from_micros(1750)
        } else {
            self.char_time().mul_f64(3.5)
        }
    }

    pub fn open(&self) -> std::io::Result<SerialStream> {
        let builder = tokio_serial::new(self.device.to_string_lossy(), self.baud)
            .data_bits(match self.data_bits {
                5 => DataBits::Five,
                6 => DataBits::Six,
                7 => DataBits::Seven,
                _ => DataBits::Eight,
            })
            .parity(match self.parity {
                Parity::None => tokio_serial::Parity::None,
                Parity::Even => tokio_serial::Parity::Even,
                Parity::Odd => tokio_serial::Parity::Odd,
            })
            .stop_bits(if self.stop_bits == 2 {
                StopBits::Two
            } else {
                StopBits::One
            });
        SerialStream::open(&builder).map_err(std::io::Error::from)
    }
}

impl std::fmt::Display for LineSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = match self.parity {
            Parity::None => 'N',
            Parity::Even => 'E',
            Parity::Odd => 'O',
        };
        write!(
            f,
            "{} {} {}{}{}",
            self.device.display(),
            self.baud,
            self.data_bits,
            p,
            self.stop_bits
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(baud: u32, parity: Parity) -> LineSettings {
        LineSettings {
            device: "/dev/null".into(),
            baud,
            parity,
            data_bits: 8,
            stop_bits: 1,
        }
    }

    #[test]
    fn rtu_silence_is_three_and_a_half_characters() {
        // 9600 8N1: 10 bits a character, 3.5 characters = 3.646 ms.
        let s = line(9600, Parity::None).rtu_silence();
        assert!(
            (s.as_secs_f64() - 3.5 * 10.0 / 9600.0).abs() < 1e-6,
            "{s:?}"
        );
        // 2400 8E1: 11 bits a character.
        let s = line(2400, Parity::Even).rtu_silence();
        assert!(
            (s.as_secs_f64() - 3.5 * 11.0 / 2400.0).abs() < 1e-6,
            "{s:?}"
        );
        // Above 19200 baud the spec fixes it at 1.75 ms.
        assert_eq!(
            line(115_200, Parity::None).rtu_silence(),
            Duration::from_micros(1750)
        );
    }
}
