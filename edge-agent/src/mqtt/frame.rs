//! Just enough of MQTT 3.1.1 framing for the agent's front door: split a
//! byte stream into packets, read CONNECT, PUBLISH and SUBSCRIBE, and write
//! the acknowledgements the agent answers itself. Everything else passes
//! through to the embedded broker untouched.

use bytes::{Buf, BufMut, Bytes, BytesMut};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("malformed remaining length")]
    BadLength,
    #[error("packet of {0} bytes exceeds the limit of {1}")]
    TooBig(usize, usize),
    #[error("malformed {0} packet")]
    Malformed(&'static str),
    #[error("MQTT protocol level {0} not supported (3.1.1 only)")]
    Protocol(u8),
}

pub const CONNECT: u8 = 1;
pub const PUBLISH: u8 = 3;
pub const PUBREL: u8 = 6;
pub const SUBSCRIBE: u8 = 8;
pub const DISCONNECT: u8 = 14;

/// One whole packet: its first byte and the full bytes (header included).
#[derive(Debug, Clone)]
pub struct Frame {
    pub first: u8,
    pub bytes: Bytes,
    /// Offset of the variable header in `bytes`.
    pub body: usize,
}

impl Frame {
    pub fn kind(&self) -> u8 {
        self.first >> 4
    }
    fn payload(&self) -> &[u8] {
        &self.bytes[self.body..]
    }
}

/// Takes the next complete packet off `buf`, if there is one.
pub fn next_frame(buf: &mut BytesMut, max: usize) -> Result<Option<Frame>, FrameError> {
    let mut len = 0usize;
    let mut shift = 0;
    let mut i = 1;
    loop {
        let Some(&b) = buf.get(i) else {
            return Ok(None);
        };
        len |= ((b & 0x7f) as usize) << shift;
        i += 1;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 21 {
            return Err(FrameError::BadLength);
        }
    }
    if len > max {
        return Err(FrameError::TooBig(len, max));
    }
    if buf.len() < i + len {
        buf.reserve(i + len - buf.len());
        return Ok(None);
    }
    let first = buf[0];
    let bytes = buf.split_to(i + len).freeze();
    Ok(Some(Frame {
        first,
        bytes,
        body: i,
    }))
}

fn read_str(b: &mut &[u8], what: &'static str) -> Result<String, FrameError> {
    let bytes = read_bin(b, what)?;
    String::from_utf8(bytes).map_err(|_| FrameError::Malformed(what))
}

fn read_bin(b: &mut &[u8], what: &'static str) -> Result<Vec<u8>, FrameError> {
    if b.len() < 2 {
        return Err(FrameError::Malformed(what));
    }
    let n = b.get_u16() as usize;
    if b.len() < n {
        return Err(FrameError::Malformed(what));
    }
    let v = b[..n].to_vec();
    b.advance(n);
    Ok(v)
}

/// A CONNECT's Will: what the broker publishes for the client when it
/// drops without DISCONNECT. The front door checks it like a PUBLISH.
#[derive(Debug, PartialEq, Eq)]
pub struct Will {
    pub topic: String,
    pub qos: u8,
    pub retain: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Connect {
    pub client_id: String,
    pub clean_session: bool,
    /// Seconds; 0 = the client asked for none.
    pub keep_alive: u16,
    pub will: Option<Will>,
    pub username: Option<String>,
    pub password: Option<Vec<u8>>,
}

pub fn parse_connect(f: &Frame) -> Result<Connect, FrameError> {
    let mut b = f.payload();
    let name = read_str(&mut b, "CONNECT")?;
    if b.len() < 4 {
        return Err(FrameError::Malformed("CONNECT"));
    }
    let level = b.get_u8();
    if name != "MQTT" || level != 4 {
        return Err(FrameError::Protocol(level));
    }
    let flags = b.get_u8();
    // Reserved bit set, or Will QoS/retain without a Will, or Will QoS 3:
    // malformed per MQTT 3.1.1 3.1.2-3, 3.1.2-11..15.
    let will_qos = (flags >> 3) & 0x03;
    if flags & 0x01 != 0
        || will_qos == 3
        || (flags & 0x04 == 0 && (will_qos != 0 || flags & 0x20 != 0))
    {
        return Err(FrameError::Malformed("CONNECT flags"));
    }
    let keep_alive = b.get_u16();
    let client_id = read_str(&mut b, "CONNECT")?;
    let will = if flags & 0x04 != 0 {
        let topic = read_str(&mut b, "CONNECT will topic")?;
        read_bin(&mut b, "CONNECT will message")?;
        Some(Will {
            topic,
            qos: will_qos,
            retain: flags & 0x20 != 0,
        })
    } else {
        None
    };
    let username = if flags & 0x80 != 0 {
        Some(read_str(&mut b, "CONNECT username")?)
    } else {
        None
    };
    let password = if flags & 0x40 != 0 {
        Some(read_bin(&mut b, "CONNECT password")?)
    } else {
        None
    };
    Ok(Connect {
        client_id,
        clean_session: flags & 0x02 != 0,
        keep_alive,
        will,
        username,
        password,
    })
}

/// The same CONNECT with another keep-alive (a parsed CONNECT's
/// keep-alive sits right after "MQTT", the level and the flags).
pub fn with_keep_alive(connect: &Frame, keep_alive: u16) -> Bytes {
    let mut b = BytesMut::from(&connect.bytes[..]);
    let at = connect.body + 8;
    b[at..at + 2].copy_from_slice(&keep_alive.to_be_bytes());
    b.freeze()
}

#[derive(Debug, PartialEq, Eq)]
pub struct Publish {
    /// DUP flag: the client may have sent this packet id before.
    pub dup: bool,
    pub qos: u8,
    pub retain: bool,
    pub topic: String,
    pub pkid: u16,
    pub payload: Bytes,
}

pub fn parse_publish(f: &Frame) -> Result<Publish, FrameError> {
    let qos = (f.first >> 1) & 0x03;
    if qos == 3 {
        return Err(FrameError::Malformed("PUBLISH (QoS 3)"));
    }
    let mut b = f.payload();
    let topic = read_str(&mut b, "PUBLISH topic")?;
    let pkid = if qos > 0 {
        if b.len() < 2 {
            return Err(FrameError::Malformed("PUBLISH"));
        }
        b.get_u16()
    } else {
        0
    };
    let consumed = f.bytes.len() - b.len();
    Ok(Publish {
        dup: f.first & 0x08 != 0,
        qos,
        retain: f.first & 0x01 != 0,
        topic,
        pkid,
        payload: f.bytes.slice(consumed..),
    })
}

#[derive(Debug, PartialEq, Eq)]
pub struct Subscribe {
    pub pkid: u16,
    pub filters: Vec<(String, u8)>,
}

pub fn parse_subscribe(f: &Frame) -> Result<Subscribe, FrameError> {
    let mut b = f.payload();
    if b.len() < 2 {
        return Err(FrameError::Malformed("SUBSCRIBE"));
    }
    let pkid = b.get_u16();
    let mut filters = Vec::new();
    while !b.is_empty() {
        let t = read_str(&mut b, "SUBSCRIBE filter")?;
        if b.is_empty() {
            return Err(FrameError::Malformed("SUBSCRIBE"));
        }
        filters.push((t, b.get_u8() & 0x03));
    }
    if filters.is_empty() {
        return Err(FrameError::Malformed("SUBSCRIBE"));
    }
    Ok(Subscribe { pkid, filters })
}

/// Packet id of a PUBREL.
pub fn pubrel_pkid(f: &Frame) -> Option<u16> {
    let b = f.payload();
    (b.len() >= 2).then(|| u16::from_be_bytes([b[0], b[1]]))
}

fn ack(kind: u8, pkid: u16) -> Bytes {
    let mut b = BytesMut::with_capacity(4);
    b.put_u8(kind);
    b.put_u8(2);
    b.put_u16(pkid);
    b.freeze()
}

pub fn puback(pkid: u16) -> Bytes {
    ack(0x40, pkid)
}
pub fn pubrec(pkid: u16) -> Bytes {
    ack(0x50, pkid)
}
pub fn pubcomp(pkid: u16) -> Bytes {
    ack(0x70, pkid)
}

/// CONNACK with a 3.1.1 return code (4: bad user name or password, 5: not authorised).
pub fn connack(code: u8) -> Bytes {
    Bytes::from(vec![0x20, 2, 0, code])
}

pub fn suback(pkid: u16, codes: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(4 + codes.len());
    b.put_u8(0x90);
    b.put_u8((2 + codes.len()) as u8);
    b.put_u16(pkid);
    b.put_slice(codes);
    b.freeze()
}

/// The same message as QoS 0 (no packet id), for the broker's subscribers:
/// the agent has acknowledged it already.
pub fn publish_qos0(p: &Publish) -> Bytes {
    let body = 2 + p.topic.len() + p.payload.len();
    let mut b = BytesMut::with_capacity(body + 5);
    b.put_u8(0x30 | u8::from(p.retain));
    let mut n = body;
    loop {
        let mut byte = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            byte |= 0x80;
        }
        b.put_u8(byte);
        if n == 0 {
            break;
        }
    }
    b.put_u16(p.topic.len() as u16);
    b.put_slice(p.topic.as_bytes());
    b.put_slice(&p.payload);
    b.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(bytes: &[u8]) -> Frame {
        let mut b = BytesMut::from(bytes);
        next_frame(&mut b, 1 << 20).unwrap().unwrap()
    }

    #[test]
    fn splits_and_reads_a_qos1_publish() {
        let p = Publish {
            dup: false,
            qos: 1,
            retain: false,
            topic: "a/b".into(),
            pkid: 0,
            payload: Bytes::from_static(b"x=1"),
        };
        // Build a QoS1 frame by hand: 0x32, len, topic, pkid 7, payload.
        let mut raw = vec![0x32, 2 + 3 + 2 + 3, 0, 3, b'a', b'/', b'b', 0, 7];
        raw.extend_from_slice(b"x=1");
        let mut buf = BytesMut::from(&raw[..5]);
        assert!(next_frame(&mut buf, 100).unwrap().is_none());
        buf.extend_from_slice(&raw[5..]);
        let f = next_frame(&mut buf, 100).unwrap().unwrap();
        assert_eq!(f.kind(), PUBLISH);
        let got = parse_publish(&f).unwrap();
        assert_eq!((got.qos, got.pkid, got.topic.as_str()), (1, 7, "a/b"));
        assert_eq!(&got.payload[..], b"x=1");
        let q0 = frame(&publish_qos0(&p));
        let back = parse_publish(&q0).unwrap();
        assert_eq!(
            (back.qos, back.topic.as_str(), &back.payload[..]),
            (0, "a/b", &b"x=1"[..])
        );
    }

    #[test]
    fn reads_connect_with_credentials_and_refuses_other_levels() {
        let mut raw = vec![0x10, 0];
        let mut body = vec![
            0, 4, b'M', b'Q', b'T', b'T', 4, 0xC2, 0, 60, 0, 2, b'c', b'1',
        ];
        body.extend_from_slice(&[0, 1, b'u', 0, 2, b'p', b'w']);
        raw[1] = body.len() as u8;
        raw.extend_from_slice(&body);
        let c = parse_connect(&frame(&raw)).unwrap();
        assert_eq!(c.client_id, "c1");
        assert_eq!((c.clean_session, c.keep_alive, &c.will), (true, 60, &None));
        assert_eq!(c.username.as_deref(), Some("u"));
        assert_eq!(c.password.as_deref(), Some(&b"pw"[..]));
        let patched = frame(&with_keep_alive(&frame(&raw), 7));
        assert_eq!(parse_connect(&patched).unwrap().keep_alive, 7);
        raw[8] = 5;
        assert_eq!(parse_connect(&frame(&raw)), Err(FrameError::Protocol(5)));
    }

    #[test]
    fn reads_a_will_and_refuses_inconsistent_flags() {
        // Flags: username, will retain, will QoS 1, will, clean session.
        let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0xAE, 0, 2, 0, 1, b'c'];
        body.extend_from_slice(&[0, 3, b'a', b'/', b'w', 0, 1, b'x', 0, 1, b'u']);
        let mut raw = vec![0x10, body.len() as u8];
        raw.extend_from_slice(&body);
        let c = parse_connect(&frame(&raw)).unwrap();
        let will = c.will.unwrap();
        assert_eq!(
            (will.topic.as_str(), will.qos, will.retain),
            ("a/w", 1, true)
        );
        assert_eq!((c.keep_alive, c.username.as_deref()), (2, Some("u")));
        // Will QoS 3, and Will retain without a Will, are malformed.
        raw[9] = 0x9E;
        assert!(parse_connect(&frame(&raw)).is_err());
        raw[9] = 0xA2;
        assert!(parse_connect(&frame(&raw)).is_err());
    }

    #[test]
    fn garbage_lengths_and_oversized_packets_are_errors() {
        let mut b = BytesMut::from(&[0x30u8, 0xff, 0xff, 0xff, 0xff, 0x01][..]);
        assert_eq!(
            next_frame(&mut b, 1 << 20).unwrap_err(),
            FrameError::BadLength
        );
        let mut b = BytesMut::from(&[0x30u8, 0xff, 0x7f][..]);
        assert!(matches!(
            next_frame(&mut b, 1000),
            Err(FrameError::TooBig(..))
        ));
        let truncated = frame(&[0x32, 3, 0, 5, b'a']);
        assert!(parse_publish(&truncated).is_err());
    }
}
