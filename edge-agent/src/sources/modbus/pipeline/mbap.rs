//! Modbus TCP framing (MBAP header + PDU) for the pipelined bus: requests
//! out, answers checked against the request they claim to answer.
//!
//! Everything here is pure (bytes in, values out) so the rules that keep an
//! answer from reaching the wrong request are unit-tested without sockets.

/// Transaction id (2), protocol id (2), length (2), unit id (1).
pub const HEADER_LEN: usize = 7;
/// The length field counts the unit id and the PDU: 1 + at most 253.
const MIN_LENGTH: u16 = 2;
const MAX_LENGTH: u16 = 254;

/// Why a frame cannot be taken as the answer it claims to be. Any of these
/// leaves the stream's state in doubt: the connection is dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("protocol id {0} in an MBAP header (Modbus is 0)")]
    Protocol(u16),
    #[error("MBAP length field {0} outside {MIN_LENGTH}..={MAX_LENGTH}")]
    Length(u16),
    #[error("answer with transaction id {0}, which no request in flight has")]
    UnknownTransaction(u16),
    #[error("answer from unit {got} to a request for unit {want}")]
    Unit { want: u8, got: u8 },
    #[error("function code {got:#04x} answers a request with function {want:#04x}")]
    Function { want: u8, got: u8 },
    #[error("malformed answer to function {function:#04x}: {what}")]
    Body { function: u8, what: String },
}

impl FrameError {
    /// The `reason` label of `edge_modbus_pipeline_bad_frames_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            FrameError::Protocol(_) | FrameError::Length(_) => "garbage",
            FrameError::UnknownTransaction(_) => "unknown_transaction",
            FrameError::Unit { .. } | FrameError::Function { .. } => "mismatch",
            FrameError::Body { .. } => "short",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub tid: u16,
    /// Bytes after the header: the PDU (the length field minus the unit id).
    pub pdu_len: usize,
    pub unit: u8,
}

pub fn parse_header(b: &[u8; HEADER_LEN]) -> Result<Header, FrameError> {
    let protocol = u16::from_be_bytes([b[2], b[3]]);
    if protocol != 0 {
        return Err(FrameError::Protocol(protocol));
    }
    let length = u16::from_be_bytes([b[4], b[5]]);
    if !(MIN_LENGTH..=MAX_LENGTH).contains(&length) {
        return Err(FrameError::Length(length));
    }
    Ok(Header {
        tid: u16::from_be_bytes([b[0], b[1]]),
        pdu_len: usize::from(length) - 1,
        unit: b[6],
    })
}

/// What the pollers ask: reads of functions 1-4 and the three writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Function 1 (coils), 2 (discrete inputs), 3 (holding), 4 (input registers).
    Read {
        function: u8,
        start: u16,
        count: u16,
    },
    WriteCoil {
        address: u16,
        on: bool,
    },
    WriteRegister {
        address: u16,
        value: u16,
    },
    WriteRegisters {
        address: u16,
        values: Vec<u16>,
    },
}

/// A well-formed answer to its request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Registers(Vec<u16>),
    /// Exactly as many bits as asked (the padding of the last byte dropped).
    Bits(Vec<bool>),
    Written,
    Exception(u8),
}

impl Request {
    pub fn function(&self) -> u8 {
        match self {
            Request::Read { function, .. } => *function,
            Request::WriteCoil { .. } => 5,
            Request::WriteRegister { .. } => 6,
            Request::WriteRegisters { .. } => 16,
        }
    }

    fn pdu(&self) -> Vec<u8> {
        let mut p = vec![self.function()];
        let mut put = |v: u16| p.extend_from_slice(&v.to_be_bytes());
        match self {
            Request::Read { start, count, .. } => {
                put(*start);
                put(*count);
            }
            Request::WriteCoil { address, on } => {
                put(*address);
                put(if *on { 0xFF00 } else { 0 });
            }
            Request::WriteRegister { address, value } => {
                put(*address);
                put(*value);
            }
            Request::WriteRegisters { address, values } => {
                put(*address);
                put(values.len() as u16);
                p.push((values.len() * 2) as u8);
                for v in values {
                    p.extend_from_slice(&v.to_be_bytes());
                }
            }
        }
        p
    }

    /// The whole frame: MBAP header and PDU.
    pub fn frame(&self, tid: u16, unit: u8) -> Vec<u8> {
        let pdu = self.pdu();
        let mut out = Vec::with_capacity(HEADER_LEN + pdu.len());
        out.extend_from_slice(&tid.to_be_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&(pdu.len() as u16 + 1).to_be_bytes());
        out.push(unit);
        out.extend_from_slice(&pdu);
        out
    }

    /// Checks `pdu` (function code onwards) as the answer to this request:
    /// the function, the byte count against the quantity asked, a write's echo.
    pub fn answer(&self, pdu: &[u8]) -> Result<Answer, FrameError> {
        let want = self.function();
        let body = |what: String| FrameError::Body {
            function: want,
            what,
        };
        let Some(&got) = pdu.first() else {
            return Err(body("empty PDU".into()));
        };
        if got == want | 0x80 {
            return match pdu {
                [_, code] => Ok(Answer::Exception(*code)),
                _ => Err(body(format!(
                    "exception answer of {} bytes (2 expected)",
                    pdu.len()
                ))),
            };
        }
        if got != want {
            return Err(FrameError::Function { want, got });
        }
        match self {
            Request::Read { count, .. } => {
                let bits = matches!(want, 1 | 2);
                let expected = if bits {
                    usize::from(*count).div_ceil(8)
                } else {
                    usize::from(*count) * 2
                };
                let Some(&byte_count) = pdu.get(1) else {
                    return Err(body("no byte count".into()));
                };
                let data = &pdu[2..];
                if usize::from(byte_count) != expected || data.len() != expected {
                    return Err(body(format!(
                        "{} data bytes (byte count says {byte_count}) for {count} items asked, \
                         {expected} expected",
                        data.len()
                    )));
                }
                Ok(if bits {
                    Answer::Bits(
                        (0..usize::from(*count))
                            .map(|i| data[i / 8] & (1 << (i % 8)) != 0)
                            .collect(),
                    )
                } else {
                    Answer::Registers(
                        data.chunks_exact(2)
                            .map(|w| u16::from_be_bytes([w[0], w[1]]))
                            .collect(),
                    )
                })
            }
            // Single writes echo the request; a multiple write echoes address and quantity.
            _ => {
                let sent = self.pdu();
                if pdu.len() == 5 && pdu[1..5] == sent[1..5] {
                    Ok(Answer::Written)
                } else {
                    Err(body(format!(
                        "write echo {pdu:02x?} does not match the request {:02x?}",
                        &sent[..5]
                    )))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(tid: u16, protocol: u16, length: u16, unit: u8) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0..2].copy_from_slice(&tid.to_be_bytes());
        h[2..4].copy_from_slice(&protocol.to_be_bytes());
        h[4..6].copy_from_slice(&length.to_be_bytes());
        h[6] = unit;
        h
    }

    #[test]
    fn a_request_frame_is_what_the_spec_says() {
        let r = Request::Read {
            function: 4,
            start: 0x0102,
            count: 10,
        };
        assert_eq!(
            r.frame(0xABCD, 7),
            [0xAB, 0xCD, 0, 0, 0, 6, 7, 4, 0x01, 0x02, 0, 10]
        );
        let w = Request::WriteRegisters {
            address: 5,
            values: vec![1, 0xFFFF],
        };
        assert_eq!(
            w.frame(1, 2),
            [0, 1, 0, 0, 0, 11, 2, 16, 0, 5, 0, 2, 4, 0, 1, 0xFF, 0xFF]
        );
    }

    #[test]
    fn headers_with_lying_length_fields_or_another_protocol_are_refused() {
        let h = parse_header(&header(9, 0, 7, 3)).unwrap();
        assert_eq!(
            h,
            Header {
                tid: 9,
                pdu_len: 6,
                unit: 3
            }
        );
        // 0 and 1 leave no room for a function code; 255+ is beyond the 260-byte ADU.
        for bad in [0, 1, 255, 0xFFFF] {
            let e = parse_header(&header(9, 0, bad, 3)).unwrap_err();
            assert_eq!(e, FrameError::Length(bad));
            assert_eq!(e.reason(), "garbage");
        }
        assert_eq!(
            parse_header(&header(9, 1, 7, 3)),
            Err(FrameError::Protocol(1))
        );
    }

    #[test]
    fn a_short_or_padded_read_answer_is_refused() {
        let r = Request::Read {
            function: 3,
            start: 0,
            count: 2,
        };
        assert_eq!(
            r.answer(&[3, 4, 0, 1, 0, 2]),
            Ok(Answer::Registers(vec![1, 2]))
        );
        for bad in [
            &[3u8][..],                // no byte count
            &[3, 4, 0, 1, 0],          // byte count says 4, 3 bytes follow
            &[3, 2, 0, 1],             // one register for two asked
            &[3, 6, 0, 1, 0, 2, 0, 3], // three for two
            &[3, 4, 0, 1, 0, 2, 0xAA], // trailing byte
            &[],                       // nothing
        ] {
            let e = r.answer(bad).unwrap_err();
            assert_eq!(e.reason(), "short", "{bad:?}: {e}");
        }
    }

    #[test]
    fn an_answer_to_another_function_is_a_mismatch_and_an_exception_is_not() {
        let r = Request::Read {
            function: 4,
            start: 0,
            count: 1,
        };
        let e = r.answer(&[3, 2, 0, 1]).unwrap_err();
        assert_eq!(e, FrameError::Function { want: 4, got: 3 });
        assert_eq!(e.reason(), "mismatch");
        assert_eq!(r.answer(&[0x84, 2]), Ok(Answer::Exception(2)));
        // Another function's exception is a mismatch too.
        assert_eq!(
            r.answer(&[0x83, 2]),
            Err(FrameError::Function { want: 4, got: 0x83 })
        );
        assert_eq!(r.answer(&[0x84, 2, 0]).unwrap_err().reason(), "short");
    }

    #[test]
    fn bits_are_unpacked_lsb_first_and_cut_to_the_count() {
        let r = Request::Read {
            function: 1,
            start: 0,
            count: 10,
        };
        let got = r.answer(&[1, 2, 0b1000_0101, 0b0000_0010]).unwrap();
        let mut want = vec![false; 10];
        want[0] = true;
        want[2] = true;
        want[7] = true;
        want[9] = true;
        assert_eq!(got, Answer::Bits(want));
        assert_eq!(r.answer(&[1, 1, 0xFF]).unwrap_err().reason(), "short");
    }

    #[test]
    fn a_write_answer_must_echo_the_request() {
        let w = Request::WriteRegister {
            address: 10,
            value: 0x1234,
        };
        assert_eq!(w.answer(&[6, 0, 10, 0x12, 0x34]), Ok(Answer::Written));
        assert_eq!(
            w.answer(&[6, 0, 11, 0x12, 0x34]).unwrap_err().reason(),
            "short"
        );
        let c = Request::WriteCoil {
            address: 1,
            on: true,
        };
        assert_eq!(c.answer(&[5, 0, 1, 0xFF, 0]), Ok(Answer::Written));
        let m = Request::WriteRegisters {
            address: 3,
            values: vec![7, 8],
        };
        assert_eq!(m.answer(&[16, 0, 3, 0, 2]), Ok(Answer::Written));
        assert!(m.answer(&[16, 0, 3, 0, 3]).is_err());
    }
}
