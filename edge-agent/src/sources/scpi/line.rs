//! A line-oriented request/response port (SCPI instruments, ASCII chambers)
//! over a serial line or a TCP socket.
//!
//! Serial lines pick up noise and devices sometimes answer late; the port
//! therefore discards anything unsolicited before each command and, after a
//! timeout or a garbled reply, waits for the line to go quiet before the next
//! command ("resync"), so one bad reply never shifts every later reply by one.

use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

/// Longest reply accepted; anything longer is noise (or a binary block we do not parse).
const MAX_LINE: usize = 8192;
/// Longest reply of an IV sweep's query (10000 points of `%.6E,%.6E,` are
/// ~280 kB); only the transaction that asks for a curve allows it.
pub const MAX_SWEEP_REPLY: usize = 1 << 20;

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Io for T {}

#[derive(Debug, thiserror::Error)]
pub enum LineError {
    #[error("no reply within {} ms", .0.as_millis())]
    Timeout(Duration),
    #[error("garbled reply: {0}")]
    Noise(String),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("connection closed by the device")]
    Closed,
}

pub struct LinePort {
    io: BufReader<Box<dyn Io>>,
    ending: String,
}

impl LinePort {
    pub fn new(io: Box<dyn Io>, ending: &str) -> LinePort {
        LinePort {
            io: BufReader::new(io),
            ending: ending.to_string(),
        }
    }

    /// Discards whatever is already waiting on the line; returns how many bytes.
    pub async fn discard_pending(&mut self, quiet: Duration) -> Result<usize, LineError> {
        let mut dropped = 0;
        loop {
            let n = self.io.buffer().len();
            if n > 0 {
                self.io.consume(n);
                dropped += n;
            }
            match tokio::time::timeout(quiet, self.io.fill_buf()).await {
                Err(_) => return Ok(dropped),
                Ok(Ok([])) => return Err(LineError::Closed),
                Ok(Ok(_)) => continue,
                Ok(Err(e)) => return Err(e.into()),
            }
        }
    }

    /// Sends one command line without waiting for a reply.
    pub async fn send(&mut self, cmd: &str) -> Result<(), LineError> {
        let io = self.io.get_mut();
        io.write_all(cmd.as_bytes()).await?;
        io.write_all(self.ending.as_bytes()).await?;
        io.flush().await?;
        Ok(())
    }

    /// Reads one reply line (terminated by LF or CR; empty lines skipped).
    pub async fn read_line(&mut self, timeout: Duration) -> Result<String, LineError> {
        self.read_line_max(timeout, MAX_LINE).await
    }

    /// [`LinePort::read_line`] with its own length limit.
    pub async fn read_line_max(
        &mut self,
        timeout: Duration,
        max_line: usize,
    ) -> Result<String, LineError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut line: Vec<u8> = Vec::new();
        loop {
            let buf = match tokio::time::timeout_at(deadline, self.io.fill_buf()).await {
                Err(_) => return Err(LineError::Timeout(timeout)),
                Ok(Ok([])) => return Err(LineError::Closed),
                Ok(Ok(b)) => b,
                Ok(Err(e)) => return Err(e.into()),
            };
            let (taken, done) = match buf.iter().position(|&b| b == b'\n' || b == b'\r') {
                Some(p) => {
                    line.extend_from_slice(&buf[..p]);
                    (p + 1, true)
                }
                None => {
                    line.extend_from_slice(buf);
                    (buf.len(), false)
                }
            };
            self.io.consume(taken);
            if line.len() > max_line {
                return Err(LineError::Noise(format!(
                    "reply longer than {max_line} bytes"
                )));
            }
            if done {
                if line.is_empty() {
                    continue; // the LF of a CR LF, or a blank line
                }
                return match String::from_utf8(line) {
                    Ok(s) if s.chars().all(|c| c == '\t' || !c.is_control()) => {
                        Ok(s.trim().to_string())
                    }
                    Ok(s) => Err(LineError::Noise(format!("control characters in {s:?}"))),
                    Err(e) => Err(LineError::Noise(format!(
                        "not text: {:?}",
                        String::from_utf8_lossy(e.as_bytes())
                    ))),
                };
            }
        }
    }

    /// Command and reply: stale input discarded first.
    pub async fn query(
        &mut self,
        cmd: &str,
        timeout: Duration,
    ) -> Result<(String, usize), LineError> {
        let stale = self.discard_pending(Duration::from_millis(1)).await?;
        self.send(cmd).await?;
        Ok((self.read_line(timeout).await?, stale))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn query_discards_stale_input_and_skips_blank_lines() {
        let (a, mut b) = tokio::io::duplex(1024);
        let mut port = LinePort::new(Box::new(a), "\r\n");
        b.write_all(b"leftover junk\n").await.unwrap();
        let peer = tokio::spawn(async move {
            let mut cmd = [0u8; 7];
            b.read_exact(&mut cmd).await.unwrap();
            assert_eq!(&cmd, b"TEMP?\r\n");
            b.write_all(b"\r\n23.5,25.0,50.0,-50.0\r\n").await.unwrap();
            b
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let (reply, stale) = port.query("TEMP?", Duration::from_secs(1)).await.unwrap();
        assert_eq!(reply, "23.5,25.0,50.0,-50.0");
        assert_eq!(stale, 14);
        peer.await.unwrap();
    }

    #[tokio::test]
    async fn garbage_is_noise_and_silence_is_timeout() {
        let (a, mut b) = tokio::io::duplex(1024);
        let mut port = LinePort::new(Box::new(a), "\n");
        b.write_all(b"\x01\xff\xfe\n").await.unwrap();
        assert!(matches!(
            port.read_line(Duration::from_millis(200)).await,
            Err(LineError::Noise(_))
        ));
        assert!(matches!(
            port.read_line(Duration::from_millis(50)).await,
            Err(LineError::Timeout(_))
        ));
        drop(b);
        assert!(matches!(
            port.read_line(Duration::from_millis(50)).await,
            Err(LineError::Closed)
        ));
    }
}
