//! MQTT 3.1.1 packets at the agent's front door, decoded and encoded by
//! rumqttc's maintained codec (`mqttbytes::v4`): this module only frames the
//! byte stream (the raw bytes of each packet are what the broker receives)
//! and turns the codec's packets into the few facts the front door decides
//! on (who connects, with which Will; what is published or subscribed).

use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::{self, QoS, v4};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("malformed remaining length")]
    BadLength,
    #[error("packet of {0} bytes exceeds the limit of {1}")]
    TooBig(usize, usize),
    #[error("malformed {0} packet")]
    Malformed(&'static str),
    #[error("malformed packet: {0}")]
    Invalid(String),
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
    /// The largest remaining length accepted (for decoding).
    max: usize,
}

impl Frame {
    pub fn kind(&self) -> u8 {
        self.first >> 4
    }
    fn decode(&self) -> Result<v4::Packet, FrameError> {
        let mut b = BytesMut::from(&self.bytes[..]);
        v4::Packet::read(&mut b, self.max).map_err(|e| match e {
            mqttbytes::Error::InvalidProtocolLevel(l) => FrameError::Protocol(l),
            other => FrameError::Invalid(other.to_string()),
        })
    }
}

/// Takes the next complete packet off `buf`, if there is one.
pub fn next_frame(buf: &mut BytesMut, max: usize) -> Result<Option<Frame>, FrameError> {
    let header = match mqttbytes::check(buf.iter(), max) {
        Ok(h) => h,
        Err(mqttbytes::Error::InsufficientBytes(n)) => {
            buf.reserve(n);
            return Ok(None);
        }
        Err(mqttbytes::Error::PayloadSizeLimitExceeded(n)) => {
            return Err(FrameError::TooBig(n, max));
        }
        Err(mqttbytes::Error::MalformedRemainingLength) => return Err(FrameError::BadLength),
        Err(e) => return Err(FrameError::Invalid(e.to_string())),
    };
    let first = buf[0];
    let bytes = buf.split_to(header.frame_length()).freeze();
    Ok(Some(Frame { first, bytes, max }))
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

fn v4_connect(f: &Frame) -> Result<v4::Connect, FrameError> {
    match f.decode()? {
        v4::Packet::Connect(c) if c.protocol == mqttbytes::Protocol::V4 => Ok(c),
        v4::Packet::Connect(_) => Err(FrameError::Protocol(5)),
        _ => Err(FrameError::Malformed("CONNECT")),
    }
}

pub fn parse_connect(f: &Frame) -> Result<Connect, FrameError> {
    let c = v4_connect(f)?;
    let (username, password) = match c.login {
        Some(l) => (Some(l.username), Some(l.password.into_bytes())),
        None => (None, None),
    };
    Ok(Connect {
        client_id: c.client_id,
        clean_session: c.clean_session,
        keep_alive: c.keep_alive,
        will: c.last_will.map(|w| Will {
            topic: w.topic,
            qos: w.qos as u8,
            retain: w.retain,
        }),
        username,
        password,
    })
}

/// The same CONNECT with another keep-alive.
pub fn with_keep_alive(connect: &Frame, keep_alive: u16) -> Result<Bytes, FrameError> {
    let mut c = v4_connect(connect)?;
    c.keep_alive = keep_alive;
    let mut b = BytesMut::new();
    c.write(&mut b)
        .map_err(|e| FrameError::Invalid(e.to_string()))?;
    Ok(b.freeze())
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
    match f.decode()? {
        v4::Packet::Publish(p) => Ok(Publish {
            dup: p.dup,
            qos: p.qos as u8,
            retain: p.retain,
            topic: p.topic,
            pkid: p.pkid,
            payload: p.payload,
        }),
        _ => Err(FrameError::Malformed("PUBLISH")),
    }
}

#[derive(Debug, PartialEq, Eq)]
pub struct Subscribe {
    pub pkid: u16,
    pub filters: Vec<(String, u8)>,
}

pub fn parse_subscribe(f: &Frame) -> Result<Subscribe, FrameError> {
    match f.decode()? {
        v4::Packet::Subscribe(s) => Ok(Subscribe {
            pkid: s.pkid,
            filters: s
                .filters
                .into_iter()
                .map(|f| (f.path, f.qos as u8))
                .collect(),
        }),
        _ => Err(FrameError::Malformed("SUBSCRIBE")),
    }
}

/// Packet id of a PUBREL.
pub fn pubrel_pkid(f: &Frame) -> Option<u16> {
    match f.decode() {
        Ok(v4::Packet::PubRel(r)) => Some(r.pkid),
        _ => None,
    }
}

fn encode(p: v4::Packet) -> Bytes {
    let mut b = BytesMut::with_capacity(8);
    // Only fixed-size acknowledgements and publishes the agent built
    // itself come here; none exceeds the limit.
    let _ = p.write(&mut b, usize::MAX);
    b.freeze()
}

pub fn puback(pkid: u16) -> Bytes {
    encode(v4::Packet::PubAck(v4::PubAck::new(pkid)))
}
pub fn pubrec(pkid: u16) -> Bytes {
    encode(v4::Packet::PubRec(v4::PubRec::new(pkid)))
}
pub fn pubcomp(pkid: u16) -> Bytes {
    encode(v4::Packet::PubComp(v4::PubComp::new(pkid)))
}

/// CONNACK with a 3.1.1 return code (4: bad user name or password, 5: not authorised).
pub fn connack(code: u8) -> Bytes {
    use v4::ConnectReturnCode as C;
    let code = match code {
        0 => C::Success,
        1 => C::RefusedProtocolVersion,
        2 => C::BadClientId,
        3 => C::ServiceUnavailable,
        4 => C::BadUserNamePassword,
        _ => C::NotAuthorized,
    };
    encode(v4::Packet::ConnAck(v4::ConnAck::new(code, false)))
}

/// SUBACK with a return code per filter (0x80: failure).
pub fn suback(pkid: u16, codes: &[u8]) -> Bytes {
    let codes = codes
        .iter()
        .map(|c| match c {
            0 => v4::SubscribeReasonCode::Success(QoS::AtMostOnce),
            1 => v4::SubscribeReasonCode::Success(QoS::AtLeastOnce),
            2 => v4::SubscribeReasonCode::Success(QoS::ExactlyOnce),
            _ => v4::SubscribeReasonCode::Failure,
        })
        .collect();
    encode(v4::Packet::SubAck(v4::SubAck::new(pkid, codes)))
}

/// The same message as QoS 0 (no packet id), for the broker's subscribers:
/// the agent has acknowledged it already.
pub fn publish_qos0(p: &Publish) -> Bytes {
    let mut out = v4::Publish::new(p.topic.clone(), QoS::AtMostOnce, Vec::new());
    out.payload = p.payload.clone();
    out.retain = p.retain;
    encode(v4::Packet::Publish(out))
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
        let patched = frame(&with_keep_alive(&frame(&raw), 7).unwrap());
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
