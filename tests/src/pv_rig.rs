//! The simulated PV rig (`pv-rig-sim`) as a test peer: started on random
//! ports (read from its `listening` lines), driven through its control port,
//! its Modbus devices read and written by their firmware profiles, its SMU
//! asked over a raw SCPI socket.

use crate::{Proc, bin, profiles_dir, wait_for};
use anyhow::{Context, Result, bail};
use device_profile::{Decoded, Profile, decode_point, encode_checked};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_modbus::client::{Context as ModbusContext, Reader, Writer};

pub struct RigSim {
    pub proc: Proc,
    pub modbus: SocketAddr,
    pub scpi: SocketAddr,
    pub control: SocketAddr,
}

impl RigSim {
    /// Starts `pv-rig-sim` with all listeners on port 0 plus `extra` flags;
    /// its output goes to `log`.
    pub async fn start(log: &Path, extra: &[&str]) -> Result<RigSim> {
        let mut args = vec![
            "--modbus",
            "127.0.0.1:0",
            "--scpi",
            "127.0.0.1:0",
            "--control",
            "127.0.0.1:0",
        ];
        args.extend_from_slice(extra);
        let args: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
        let proc = Proc::spawn("pv-rig-sim", &bin("pv-rig-sim")?, &args, log)?;
        let addr = |text: &str, kind: &str| -> Option<SocketAddr> {
            let prefix = format!("listening {kind} ");
            text.lines()
                .find_map(|l| l.strip_prefix(prefix.as_str()))
                .and_then(|a| a.trim().parse().ok())
        };
        let (modbus, scpi, control) = wait_for(
            "pv-rig-sim listening lines",
            Duration::from_secs(20),
            || {
                let text = proc.log_text();
                let exited = proc.exit_status();
                async move {
                    if let Ok(Some(_)) = exited {
                        bail!("pv-rig-sim exited: {text}");
                    }
                    Ok(
                        match (
                            addr(&text, "modbus"),
                            addr(&text, "scpi"),
                            addr(&text, "control"),
                        ) {
                            (Some(m), Some(s), Some(c)) => Some((m, s, c)),
                            _ => None,
                        },
                    )
                }
            },
        )
        .await?;
        Ok(RigSim {
            proc,
            modbus,
            scpi,
            control,
        })
    }

    /// One control-port command and its reply line.
    pub async fn control(&self, command: &str) -> Result<String> {
        let stream = TcpStream::connect(self.control).await?;
        let (read, mut write) = stream.into_split();
        write.write_all(format!("{command}\n").as_bytes()).await?;
        let mut line = String::new();
        tokio::time::timeout(
            Duration::from_secs(10),
            BufReader::new(read).read_line(&mut line),
        )
        .await
        .context("control port did not answer")??;
        Ok(line.trim_end().to_string())
    }

    /// The control port's `state`, parsed.
    pub async fn state(&self) -> Result<serde_json::Value> {
        let line = self.control("state").await?;
        serde_json::from_str(&line).with_context(|| format!("state is not JSON: {line}"))
    }

    /// A Modbus client for one unit (1 chamber, 2 daq, 3 supply, 4 bias, 5 hipot).
    pub async fn modbus_unit(&self, unit: u8) -> Result<ModbusContext> {
        Ok(
            tokio_modbus::client::tcp::connect_slave(self.modbus, tokio_modbus::Slave(unit))
                .await?,
        )
    }

    /// A raw SCPI connection to the SMU.
    pub async fn scpi(&self) -> Result<Scpi> {
        let stream = TcpStream::connect(self.scpi).await?;
        let (read, write) = stream.into_split();
        Ok(Scpi {
            read: BufReader::new(read),
            write,
        })
    }
}

/// A point of a shipped profile, read and written as the agent does.
pub struct ProfilePoint {
    profile: Profile,
    index: usize,
}

impl ProfilePoint {
    pub fn new(profile_id: &str, point: &str) -> Result<ProfilePoint> {
        let profile = Profile::load_by_id(&profiles_dir(), profile_id)?;
        let index = profile
            .points
            .iter()
            .position(|p| p.name == point)
            .with_context(|| format!("{profile_id} has no point {point}"))?;
        Ok(ProfilePoint { profile, index })
    }

    pub async fn read(&self, ctx: &mut ModbusContext) -> Result<f64> {
        let p = &self.profile.points[self.index];
        let loc = p.modbus().context("not a Modbus point")?;
        let len = (loc.end_address() - u32::from(loc.address) + 1) as u16;
        let regs = match loc.register {
            device_profile::RegisterKind::Holding => {
                ctx.read_holding_registers(loc.address, len).await?
            }
            device_profile::RegisterKind::Input => {
                ctx.read_input_registers(loc.address, len).await?
            }
            other => bail!("{other:?} points are not used by the rig"),
        }
        .map_err(|e| anyhow::anyhow!("Modbus exception {e}"))?;
        match decode_point(p, &self.profile.modbus_defaults(), &regs, None)? {
            Decoded::Number(v) => Ok(v),
            Decoded::Text(t) => bail!("text {t}"),
        }
    }

    pub async fn write(&self, ctx: &mut ModbusContext, value: f64) -> Result<()> {
        let p = &self.profile.points[self.index];
        let loc = p.modbus().context("not a Modbus point")?;
        let d = self.profile.modbus_defaults();
        let t = p.data_type.context("no type")?;
        let words = encode_checked(
            value,
            t,
            p.byte_order(&d),
            p.word_order(&d),
            p.scale,
            p.offset,
        )?;
        ctx.write_multiple_registers(loc.address, &words)
            .await?
            .map_err(|e| anyhow::anyhow!("Modbus exception {e}"))?;
        Ok(())
    }
}

pub struct Scpi {
    read: BufReader<tokio::net::tcp::OwnedReadHalf>,
    write: tokio::net::tcp::OwnedWriteHalf,
}

impl Scpi {
    pub async fn send(&mut self, command: &str) -> Result<()> {
        self.write
            .write_all(format!("{command}\n").as_bytes())
            .await?;
        Ok(())
    }

    /// A query and its reply line; `None` when nothing comes within `wait`.
    pub async fn query(&mut self, query: &str, wait: Duration) -> Result<Option<String>> {
        self.send(query).await?;
        let mut line = String::new();
        match tokio::time::timeout(wait, self.read.read_line(&mut line)).await {
            Ok(n) => {
                if n? == 0 {
                    bail!("SMU closed the connection");
                }
                Ok(Some(line.trim_end().to_string()))
            }
            Err(_) => Ok(None),
        }
    }
}

/// The example bench (examples/pv-rig/devices-and-bench.toml) pointed at
/// `rig`, its templates read from `protocols`: the agent config most run
/// tests start from.
pub fn example_bench(rig: &RigSim, protocols: &Path) -> Result<String> {
    let example = std::fs::read_to_string(
        crate::workspace_root().join("examples/pv-rig/devices-and-bench.toml"),
    )?;
    Ok(example
        .replace("127.0.0.1:5021", &rig.modbus.to_string())
        .replace("127.0.0.1:5025", &rig.scpi.to_string())
        .replace(
            "/usr/share/edge-agent/protocols",
            &protocols.display().to_string(),
        ))
}

/// `dir`/protocols holding the shipped STC template only.
pub fn stc_only(dir: &Path) -> Result<std::path::PathBuf> {
    let p = dir.join("protocols");
    std::fs::create_dir_all(&p)?;
    std::fs::copy(
        crate::workspace_root().join("protocols/stc-power.toml"),
        p.join("stc-power.toml"),
    )?;
    Ok(p)
}

/// Waits (up to `within`) until the agent reports every device online.
pub async fn devices_online(stack: &crate::Stack, within: Duration) -> Result<()> {
    wait_for("the rig's devices online", within, || async {
        let h = stack.agent_health().await?;
        let all = h["devices"]
            .as_array()
            .map(|d| d.iter().all(|d| d["state"] == "online"));
        Ok((all == Some(true)).then_some(()))
    })
    .await
    .with_context(|| stack.logs())
}
