//! The control port: one command per line, one reply line each, for tests
//! and the demo to look inside the rig and to break it on purpose.

use super::{Counters, Device, Rig};
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// Longest command line; a longer one ends the connection.
const MAX_LINE: usize = 1024;

pub const HELP: &str = "commands: state | silence <device> | answer <device> | wet on|off | help; \
devices: chamber daq supply bias hipot smu";

/// One command's reply (without the line end).
pub fn handle(rig: &Rig, line: &str) -> String {
    Counters::add(&rig.counters.control_commands);
    let words: Vec<&str> = line.split_whitespace().collect();
    let device = |name: &str| {
        Device::from_name(name).ok_or_else(|| format!("error: no device {name:?}; {HELP}"))
    };
    let result = match words.as_slice() {
        ["state"] => return rig.state_json(),
        ["help"] => return HELP.to_string(),
        ["silence", name] => device(name).map(|d| rig.set_silenced(d, true)),
        ["answer", name] => device(name).map(|d| rig.set_silenced(d, false)),
        ["wet", "on"] => {
            rig.physics(|p| p.wet = true);
            Ok(())
        }
        ["wet", "off"] => {
            rig.physics(|p| p.wet = false);
            Ok(())
        }
        _ => Err(format!("error: unknown command {line:?}; {HELP}")),
    };
    match result {
        Ok(()) => "ok".into(),
        Err(e) => e,
    }
}

pub async fn serve(listener: TcpListener, rig: Arc<Rig>) -> std::io::Result<()> {
    loop {
        let (stream, addr) = listener.accept().await?;
        let rig = Arc::clone(&rig);
        tokio::spawn(async move {
            if let Err(e) = connection(stream, &rig).await {
                tracing::debug!(%addr, error = %e, "control connection ended");
            }
        });
    }
}

async fn connection(stream: TcpStream, rig: &Rig) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = (&mut lines)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut buf)
            .await?;
        if n == 0 {
            return Ok(());
        }
        if buf.last() != Some(&b'\n') && n > MAX_LINE {
            write.write_all(b"error: line too long\n").await?;
            return Ok(());
        }
        let line = String::from_utf8_lossy(&buf);
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let mut reply = handle(rig, line);
        reply.push('\n');
        write.write_all(reply.as_bytes()).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rig::config::defaults;

    #[test]
    fn commands_answer_ok_or_error() {
        let rig = Rig::new(defaults()).expect("rig");
        assert_eq!(handle(&rig, "silence chamber"), "ok");
        assert!(rig.is_silenced(Device::Chamber));
        assert_eq!(handle(&rig, "answer chamber"), "ok");
        assert!(!rig.is_silenced(Device::Chamber));
        assert!(handle(&rig, "silence oven").starts_with("error: no device"));
        assert!(handle(&rig, "reboot").starts_with("error: unknown command"));
        let state: serde_json::Value = serde_json::from_str(&handle(&rig, "state")).expect("json");
        assert_eq!(state["chamber"]["temperature"], 25.0);
        assert_eq!(state["stress"]["thermal_cycles"], 0);
        assert!((state["module"]["pmax_stc_w"].as_f64().unwrap_or(0.0) - 400.0).abs() < 2.0);
        assert_eq!(state["counters"]["control_commands"], 5);
    }
}
