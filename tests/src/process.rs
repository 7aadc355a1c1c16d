//! Child processes that are always cleaned up, with their output in a log file.

use anyhow::{Context, Result};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::ffi::OsStr;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, program: &Path, args: &[&OsStr], log: &Path) -> Result<Proc> {
        Self::spawn_cmd(name, Command::new(program).args(args), log)
    }

    pub fn spawn_cmd(name: &str, cmd: &mut Command, log: &Path) -> Result<Proc> {
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("cannot open {}", log.display()))?;
        let err = out.try_clone()?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .env(
                "RUST_LOG",
                std::env::var("QI_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        Ok(Proc {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `Some(status)` once the process has exited.
    pub fn exit_status(&self) -> Result<Option<String>> {
        // try_wait needs &mut; peek through /proc instead so callers can share &self.
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .unwrap_or("X");
        Ok(if state == "Z" || state == "X" {
            Some("exited".into())
        } else {
            None
        })
    }

    pub fn signal(&self, sig: Signal) -> Result<()> {
        kill(Pid::from_raw(self.pid() as i32), sig)
            .with_context(|| format!("cannot send {sig} to {}", self.name))
    }

    /// SIGKILL: no chance to clean up (a crash or power cut, for the process).
    pub fn kill9(mut self) -> Result<()> {
        self.signal(Signal::SIGKILL)?;
        self.child.wait()?;
        Ok(())
    }

    /// SIGTERM and wait up to `timeout` for a clean exit; returns the exit status.
    pub fn terminate(self, timeout: Duration) -> Result<ExitStatus> {
        self.stop_with(Signal::SIGTERM, timeout)
    }

    /// SIGINT and wait up to `timeout` for the process to exit.
    pub fn interrupt(self, timeout: Duration) -> Result<ExitStatus> {
        self.stop_with(Signal::SIGINT, timeout)
    }

    fn stop_with(mut self, sig: Signal, timeout: Duration) -> Result<ExitStatus> {
        self.signal(sig)?;
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait()? {
                return Ok(st);
            }
            if start.elapsed() > timeout {
                let _ = self.child.kill();
                anyhow::bail!(
                    "{} did not exit within {timeout:?} of {sig}; log:\n{}",
                    self.name,
                    self.log_tail(40)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the process to exit by itself.
    pub fn wait(mut self, timeout: Duration) -> Result<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait()? {
                return Ok(st);
            }
            if start.elapsed() > timeout {
                anyhow::bail!("{} still running after {timeout:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.signal(Signal::SIGKILL);
            let _ = self.child.wait();
        }
    }
}
