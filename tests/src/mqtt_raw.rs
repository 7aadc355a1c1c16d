//! A raw MQTT 3.1.1 client for the front door's attack tests: it sends
//! exactly the bytes a test asks for (Wills on foreign topics, wildcards in
//! topic names, resent QoS 2 packets, silence), which the well-behaved
//! clients (paho, mosquitto) refuse to do.

use anyhow::{Context, Result, bail};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

fn remaining_length(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            break;
        }
    }
}

fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    remaining_length(body.len(), &mut out);
    out.extend_from_slice(body);
    out
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

/// A Will: topic, QoS, retain, message.
pub struct Will<'a> {
    pub topic: &'a str,
    pub qos: u8,
    pub retain: bool,
    pub message: &'a [u8],
}

/// What goes into a CONNECT.
pub struct Connect<'a> {
    pub client_id: &'a str,
    pub login: Option<(&'a str, &'a str)>,
    pub clean_session: bool,
    pub keep_alive: u16,
    pub will: Option<Will<'a>>,
}

impl Default for Connect<'_> {
    fn default() -> Self {
        Connect {
            client_id: "raw",
            login: None,
            clean_session: true,
            keep_alive: 60,
            will: None,
        }
    }
}

pub fn connect(c: &Connect<'_>) -> Vec<u8> {
    let mut flags = 0u8;
    if c.clean_session {
        flags |= 0x02;
    }
    if let Some(w) = &c.will {
        flags |= 0x04 | (w.qos << 3) | if w.retain { 0x20 } else { 0 };
    }
    if c.login.is_some() {
        flags |= 0xC0;
    }
    let mut body = Vec::new();
    put_str(&mut body, b"MQTT");
    body.push(4);
    body.push(flags);
    body.extend_from_slice(&c.keep_alive.to_be_bytes());
    put_str(&mut body, c.client_id.as_bytes());
    if let Some(w) = &c.will {
        put_str(&mut body, w.topic.as_bytes());
        put_str(&mut body, w.message);
    }
    if let Some((u, p)) = c.login {
        put_str(&mut body, u.as_bytes());
        put_str(&mut body, p.as_bytes());
    }
    packet(0x10, &body)
}

pub fn publish(
    topic: &str,
    qos: u8,
    pkid: u16,
    dup: bool,
    retain: bool,
    payload: &[u8],
) -> Vec<u8> {
    let mut body = Vec::new();
    put_str(&mut body, topic.as_bytes());
    if qos > 0 {
        body.extend_from_slice(&pkid.to_be_bytes());
    }
    body.extend_from_slice(payload);
    let first = 0x30 | (qos << 1) | if dup { 0x08 } else { 0 } | u8::from(retain);
    packet(first, &body)
}

pub fn subscribe(pkid: u16, filter: &str, qos: u8) -> Vec<u8> {
    let mut body = pkid.to_be_bytes().to_vec();
    put_str(&mut body, filter.as_bytes());
    body.push(qos);
    packet(0x82, &body)
}

pub fn pubrel(pkid: u16) -> Vec<u8> {
    packet(0x62, &pkid.to_be_bytes())
}

pub const DISCONNECT: [u8; 2] = [0xE0, 0];

/// One received packet: its first byte and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub first: u8,
    pub body: Vec<u8>,
}

impl Packet {
    pub fn kind(&self) -> u8 {
        self.first >> 4
    }
}

pub struct Raw {
    pub stream: TcpStream,
}

impl Raw {
    /// Opens a TCP connection, from `source` (an address on this host such
    /// as 127.0.0.2) when given.
    pub async fn open(addr: SocketAddr, source: Option<[u8; 4]>) -> Result<Raw> {
        let socket = TcpSocket::new_v4()?;
        if let Some(ip) = source {
            socket.bind(SocketAddr::from((ip, 0)))?;
        }
        let stream = socket
            .connect(addr)
            .await
            .with_context(|| format!("connect to {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(Raw { stream })
    }

    /// Opens a connection, sends CONNECT and returns the CONNACK return code.
    pub async fn login(addr: SocketAddr, c: &Connect<'_>) -> Result<(Raw, u8)> {
        let mut r = Raw::open(addr, None).await?;
        r.send(&connect(c)).await?;
        let p = r
            .next(Duration::from_secs(10))
            .await?
            .context("connection closed before CONNACK")?;
        if p.kind() != 2 || p.body.len() != 2 {
            bail!("expected CONNACK, got {p:?}");
        }
        Ok((r, p.body[1]))
    }

    pub async fn send(&mut self, bytes: &[u8]) -> Result<()> {
        self.stream.write_all(bytes).await?;
        Ok(())
    }

    /// The next packet, `None` if the server closed the connection; an error
    /// if nothing came within `wait`.
    pub async fn next(&mut self, wait: Duration) -> Result<Option<Packet>> {
        tokio::time::timeout(wait, self.read_packet())
            .await
            .context("no packet in time")?
    }

    async fn read_packet(&mut self) -> Result<Option<Packet>> {
        let mut first = [0u8; 1];
        match self.stream.read(&mut first).await {
            Ok(0) | Err(_) => return Ok(None),
            Ok(_) => {}
        }
        let mut len = 0usize;
        let mut shift = 0;
        loop {
            let mut b = [0u8; 1];
            if self.stream.read_exact(&mut b).await.is_err() {
                return Ok(None);
            }
            len |= ((b[0] & 0x7f) as usize) << shift;
            if b[0] & 0x80 == 0 {
                break;
            }
            shift += 7;
        }
        let mut body = vec![0u8; len];
        if self.stream.read_exact(&mut body).await.is_err() {
            return Ok(None);
        }
        Ok(Some(Packet {
            first: first[0],
            body,
        }))
    }

    /// Waits for the server to close the connection; errors if it is still
    /// open after `wait`. Packets arriving meanwhile are skipped.
    pub async fn closed_within(&mut self, wait: Duration) -> Result<Duration> {
        let start = std::time::Instant::now();
        loop {
            let left = wait.saturating_sub(start.elapsed());
            match tokio::time::timeout(left, self.read_packet()).await {
                Err(_) => bail!("connection still open after {wait:?}"),
                Ok(Ok(None)) | Ok(Err(_)) => return Ok(start.elapsed()),
                Ok(Ok(Some(_))) => continue,
            }
        }
    }
}
