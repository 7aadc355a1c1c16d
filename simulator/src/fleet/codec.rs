//! The few MQTT 3.1.1 packets a fleet publisher needs, written by hand: a
//! client library would cost a task and buffers per client, and the point of
//! the fleet is many devices per connection at a few bytes each.

/// MQTT's variable-length "remaining length".
fn put_len(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let mut byte = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if n == 0 {
            return;
        }
    }
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

/// CONNECT, clean session, with an optional user name and password.
pub fn connect(client_id: &str, keep_alive_s: u16, login: Option<(&str, &str)>) -> Vec<u8> {
    let mut body = Vec::new();
    put_str(&mut body, b"MQTT");
    body.push(4);
    body.push(0x02 | if login.is_some() { 0xC0 } else { 0 });
    body.extend_from_slice(&keep_alive_s.to_be_bytes());
    put_str(&mut body, client_id.as_bytes());
    if let Some((u, p)) = login {
        put_str(&mut body, u.as_bytes());
        put_str(&mut body, p.as_bytes());
    }
    let mut out = vec![0x10];
    put_len(&mut out, body.len());
    out.extend_from_slice(&body);
    out
}

/// A QoS 1 PUBLISH whose payload `write` appends; returns nothing, grows `out`.
pub fn publish_qos1(out: &mut Vec<u8>, topic: &[u8], pkid: u16, payload: &[u8]) {
    out.push(0x32);
    put_len(out, 2 + topic.len() + 2 + payload.len());
    put_str(out, topic);
    out.extend_from_slice(&pkid.to_be_bytes());
    out.extend_from_slice(payload);
}

pub const DISCONNECT: [u8; 2] = [0xE0, 0x00];

/// One packet read from the agent.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    /// CONNACK with its return code (0 = accepted).
    ConnAck(u8),
    PubAck(u16),
    /// Anything else (PINGRESP, ...): skipped.
    Other,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("malformed remaining length")]
    Length,
}

/// The first complete packet in `buf` and its length in bytes, if there is
/// one (the caller drops consumed bytes once per read, not per packet).
pub fn parse(buf: &[u8]) -> Result<Option<(Incoming, usize)>, CodecError> {
    let mut len = 0usize;
    let mut i = 1;
    loop {
        let Some(&b) = buf.get(i) else {
            return Ok(None);
        };
        len |= usize::from(b & 0x7f) << (7 * (i - 1));
        i += 1;
        if b & 0x80 == 0 {
            break;
        }
        if i > 4 {
            return Err(CodecError::Length);
        }
    }
    if buf.len() < i + len {
        return Ok(None);
    }
    let body = &buf[i..i + len];
    let packet = match (buf[0] >> 4, body) {
        (2, [_, rc]) => Incoming::ConnAck(*rc),
        (4, [a, b]) => Incoming::PubAck(u16::from_be_bytes([*a, *b])),
        _ => Incoming::Other,
    };
    Ok(Some((packet, i + len)))
}

/// Takes one complete packet off the front of `buf`, if there is one.
pub fn next(buf: &mut Vec<u8>) -> Result<Option<Incoming>, CodecError> {
    Ok(parse(buf)?.map(|(p, n)| {
        buf.drain(..n);
        p
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_are_read_across_partial_reads() {
        let mut buf = vec![0x20, 2, 0, 0, 0x40, 2, 0x12];
        assert_eq!(next(&mut buf), Ok(Some(Incoming::ConnAck(0))));
        assert_eq!(next(&mut buf), Ok(None));
        buf.push(0x34);
        assert_eq!(next(&mut buf), Ok(Some(Incoming::PubAck(0x1234))));
        assert!(buf.is_empty());
    }

    #[test]
    fn long_publishes_carry_a_multi_byte_length() {
        let mut out = Vec::new();
        publish_qos1(&mut out, b"t", 7, &[b'x'; 300]);
        assert_eq!(&out[..3], &[0x32, 0xB1, 0x02]); // 2+1+2+300 = 305
        assert_eq!(out.len(), 3 + 305);
    }
}
