//! The SMU: a Keithley 2450 on its raw SCPI socket (LXI port 5025). Lines end
//! with LF (a CR before it is ignored); commands get no reply, queries one
//! line; anything it cannot execute goes to the error queue, as on the real
//! instrument, and a query it cannot answer gets no reply at all.

use super::iv::{self, MAX_POINTS, format_e};
use super::physics::Physics;
use super::{Counters, Device, Rig};
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Longest command line accepted; longer ones are dropped whole (an error).
pub const MAX_LINE: usize = 4096;
/// The error queue's depth; beyond it the newest entry becomes a queue overflow.
const ERROR_QUEUE: usize = 100;
pub const IDENTITY: &str = "KEITHLEY INSTRUMENTS,MODEL 2450,PVRIGSIM,1.0.0 (simulated)";

/// SCPI errors (code, message) as the 2450 reports them.
pub mod err {
    pub const UNDEFINED_HEADER: (i32, &str) = (-113, "Undefined header");
    pub const DATA_TYPE: (i32, &str) = (-104, "Data type error");
    pub const MISSING_PARAMETER: (i32, &str) = (-109, "Missing parameter");
    pub const ILLEGAL_VALUE: (i32, &str) = (-224, "Illegal parameter value");
    pub const OUT_OF_RANGE: (i32, &str) = (-222, "Data out of range");
    pub const NO_DATA: (i32, &str) = (-230, "Data corrupt or stale");
    pub const TOO_LONG: (i32, &str) = (-112, "Program mnemonic too long");
    pub const OVERFLOW: (i32, &str) = (-350, "Queue overflow");
}

#[derive(Debug)]
pub struct Smu {
    /// The voltage source level (V).
    pub level: f64,
    /// The configured linear sweep: start, stop, points.
    pub sweep: Option<(f64, f64, usize)>,
    /// defbuffer1: (source voltage, reading) per point of the last :INIT.
    pub buffer: Vec<(f64, f64)>,
    pub errors: VecDeque<(i32, String)>,
    pub output: bool,
}

impl Default for Smu {
    fn default() -> Smu {
        Smu {
            level: 0.0,
            sweep: None,
            buffer: Vec::new(),
            errors: VecDeque::new(),
            output: false,
        }
    }
}

/// A header node in its short form, upper case: `SOURce` and `SOUR` both
/// give `SOUR`, `LEVel` gives `LEV` (four letters, three when the fourth is a vowel).
fn short(node: &str) -> String {
    let up = node.to_ascii_uppercase();
    if up.len() <= 4 || !up.is_ascii() {
        return up;
    }
    let keep = if matches!(up.as_bytes()[3], b'A' | b'E' | b'I' | b'O' | b'U') {
        3
    } else {
        4
    };
    up[..keep].to_string()
}

fn header(raw: &str) -> String {
    if raw.starts_with('*') {
        return raw.to_ascii_uppercase();
    }
    let (path, q) = match raw.strip_suffix('?') {
        Some(p) => (p, "?"),
        None => (raw, ""),
    };
    let nodes: Vec<String> = path.trim_start_matches(':').split(':').map(short).collect();
    format!("{}{q}", nodes.join(":"))
}

/// Arguments split on commas outside quotes, trimmed.
fn args(raw: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in raw.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            ',' if !quoted => out.push(std::mem::take(&mut cur).trim().to_string()),
            _ => cur.push(c),
        }
    }
    if !cur.trim().is_empty() || !out.is_empty() {
        out.push(cur.trim().to_string());
    }
    out
}

fn number(s: &str) -> Result<f64, (i32, &'static str)> {
    let v: f64 = s.parse().map_err(|_| err::DATA_TYPE)?;
    if v.is_finite() {
        Ok(v)
    } else {
        Err(err::DATA_TYPE)
    }
}

fn unquote(s: &str) -> String {
    s.trim_matches('"').to_ascii_uppercase()
}

impl Smu {
    fn push_error(&mut self, (code, msg): (i32, &str)) {
        if self.errors.len() >= ERROR_QUEUE {
            self.errors.pop_back();
            self.errors
                .push_back((err::OVERFLOW.0, err::OVERFLOW.1.into()));
        } else {
            self.errors.push_back((code, msg.into()));
        }
    }

    /// One line from the socket: its reply line, if any query in it has one.
    /// Several commands in a line are separated by `;`.
    pub fn handle_line(
        &mut self,
        line: &str,
        p: &mut Physics,
        counters: &Counters,
    ) -> Option<String> {
        let mut replies = Vec::new();
        for command in split_commands(line) {
            match self.execute(command, p) {
                Ok(Some(r)) => replies.push(r),
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(command, code = e.0, "SCPI error");
                    Counters::add(&counters.scpi_errors);
                    self.push_error(e);
                }
            }
        }
        (!replies.is_empty()).then(|| replies.join(";"))
    }

    fn execute(
        &mut self,
        command: &str,
        p: &mut Physics,
    ) -> Result<Option<String>, (i32, &'static str)> {
        let (raw_header, raw_args) = command
            .split_once(char::is_whitespace)
            .unwrap_or((command, ""));
        let args = args(raw_args);
        let arg = |k: usize| {
            args.get(k)
                .map(String::as_str)
                .ok_or(err::MISSING_PARAMETER)
        };
        let reply = match header(raw_header).as_str() {
            "*IDN?" => Some(IDENTITY.to_string()),
            "*CLS" => {
                self.errors.clear();
                None
            }
            "*RST" => {
                let errors = std::mem::take(&mut self.errors);
                *self = Smu {
                    errors,
                    ..Smu::default()
                };
                None
            }
            "*WAI" | "*OPC" => None,
            "*OPC?" => Some("1".into()),
            "MEAS:CURR?" | "MEAS?" | "READ?" => {
                let i = self.measure(p, self.level);
                Some(format_e(i))
            }
            "MEAS:VOLT?" => Some(format_e(self.level)),
            "SOUR:VOLT:LEV" | "SOUR:VOLT" | "SOUR:VOLT:LEV:IMM:AMPL" => {
                let v = number(arg(0)?)?;
                if v.abs() > 210.0 {
                    return Err(err::OUT_OF_RANGE);
                }
                self.level = v;
                None
            }
            "SOUR:VOLT:LEV?" | "SOUR:VOLT?" => Some(format_e(self.level)),
            "SOUR:FUNC" => match unquote(arg(0)?).as_str() {
                "VOLT" | "VOLTAGE" => None,
                _ => return Err(err::ILLEGAL_VALUE),
            },
            "SOUR:FUNC?" => Some("VOLT".into()),
            "SENS:FUNC" => match unquote(arg(0)?).as_str() {
                "CURR" | "CURRENT" | "CURR:DC" => None,
                _ => return Err(err::ILLEGAL_VALUE),
            },
            "SENS:CURR:RANG:AUTO" | "OUTP" | "OUTP:STAT" => {
                let on = match unquote(arg(0)?).as_str() {
                    "ON" | "1" => true,
                    "OFF" | "0" => false,
                    _ => return Err(err::ILLEGAL_VALUE),
                };
                if !header(raw_header).starts_with("SENS") {
                    self.output = on;
                }
                None
            }
            "OUTP?" | "OUTP:STAT?" => Some(if self.output { "1" } else { "0" }.into()),
            "SOUR:SWE:VOLT:LIN" => {
                let start = number(arg(0)?)?;
                let stop = number(arg(1)?)?;
                let points: usize = arg(2)?.parse().map_err(|_| err::DATA_TYPE)?;
                if !(2..=MAX_POINTS).contains(&points) || start.abs() > 210.0 || stop.abs() > 210.0
                {
                    return Err(err::OUT_OF_RANGE);
                }
                self.sweep = Some((start, stop, points));
                None
            }
            "INIT" | "INIT:IMM" => {
                self.run(p);
                None
            }
            "TRAC:CLE" => {
                self.buffer.clear();
                None
            }
            "TRAC:ACT?" => Some(self.buffer.len().to_string()),
            "TRAC:DATA?" => Some(self.trace_data(&args)?),
            "SYST:ERR?" | "SYST:ERR:NEXT?" => Some(match self.errors.pop_front() {
                Some((code, msg)) => format!("{code},\"{msg}\""),
                None => "0,\"No error\"".into(),
            }),
            "SYST:ERR:COUN?" => Some(self.errors.len().to_string()),
            _ => return Err(err::UNDEFINED_HEADER),
        };
        Ok(reply)
    }

    /// The current the 2450 reads at source voltage `v` (negative while the module generates).
    fn measure(&self, p: &mut Physics, v: f64) -> f64 {
        let irradiance = noisy(p.irradiance(), 0.001);
        let diode = p.diode_now(irradiance);
        iv::sweep(diode.as_ref(), &[v], &mut current_noise)[0].1
    }

    /// :INIT: the configured sweep, or one reading at the source level, into defbuffer1.
    fn run(&mut self, p: &mut Physics) {
        let volts = match self.sweep {
            Some((start, stop, n)) => iv::voltages(start, stop, n),
            None => vec![self.level],
        };
        // One flash of the light source per sweep: one irradiance for all points.
        let irradiance = noisy(p.irradiance(), 0.001);
        let diode = p.diode_now(irradiance);
        self.buffer = iv::sweep(diode.as_ref(), &volts, &mut current_noise);
        if let Some(&(v, _)) = self.buffer.last() {
            self.level = v;
        }
    }

    /// `:TRAC:DATA? start, end, "defbuffer1", SOUR, READ`: the elements in
    /// the order asked, points `start..=end` (from 1), comma-separated.
    fn trace_data(&self, args: &[String]) -> Result<String, (i32, &'static str)> {
        let index = |k: usize| -> Result<usize, (i32, &'static str)> {
            args.get(k)
                .ok_or(err::MISSING_PARAMETER)?
                .parse()
                .map_err(|_| err::DATA_TYPE)
        };
        let (from, to) = (index(0)?, index(1)?);
        if let Some(name) = args.get(2)
            && unquote(name) != "DEFBUFFER1"
        {
            return Err(err::ILLEGAL_VALUE);
        }
        let elements: Vec<String> = args.iter().skip(3).map(|e| short(e)).collect();
        let elements = if elements.is_empty() {
            vec!["READ".to_string()]
        } else {
            elements
        };
        if elements.iter().any(|e| e != "SOUR" && e != "READ") {
            return Err(err::ILLEGAL_VALUE);
        }
        if self.buffer.is_empty() {
            return Err(err::NO_DATA);
        }
        if from == 0 || from > to || to > self.buffer.len() {
            return Err(err::OUT_OF_RANGE);
        }
        let mut out = Vec::with_capacity((to - from + 1) * elements.len());
        for &(v, i) in &self.buffer[from - 1..to] {
            for e in &elements {
                out.push(format_e(if e == "SOUR" { v } else { i }));
            }
        }
        Ok(out.join(","))
    }
}

/// Commands of one line: split on `;` outside quotes, empty ones dropped.
fn split_commands(line: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut quoted = false;
    let mut start = 0;
    for (k, c) in line.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ';' if !quoted => {
                out.push(line[start..k].trim());
                start = k + 1;
            }
            _ => {}
        }
    }
    out.push(line[start..].trim());
    out.retain(|c| !c.is_empty());
    out
}

fn noisy(x: f64, relative: f64) -> f64 {
    x * (1.0 + rand::random_range(-relative..=relative))
}

/// The 2450's reading error: 0.02 % of the reading plus 1 uA.
fn current_noise(i: f64) -> f64 {
    let span = 2e-4 * i.abs() + 1e-6;
    rand::random_range(-span..=span)
}

/// Serves the SMU to every connection until the listener fails.
pub async fn serve(listener: TcpListener, rig: Arc<Rig>) -> std::io::Result<()> {
    loop {
        let (stream, addr) = listener.accept().await?;
        tracing::info!(%addr, "SCPI client connected");
        let rig = Arc::clone(&rig);
        tokio::spawn(async move {
            if let Err(e) = connection(stream, &rig).await {
                tracing::debug!(%addr, error = %e, "SCPI connection ended");
            }
        });
    }
}

async fn connection(mut stream: TcpStream, rig: &Rig) -> std::io::Result<()> {
    let mut pending: Vec<u8> = Vec::new();
    let mut discarding = false;
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        for &b in &chunk[..n] {
            if b != b'\n' {
                if !discarding {
                    pending.push(b);
                    if pending.len() > MAX_LINE {
                        pending.clear();
                        discarding = true;
                    }
                }
                continue;
            }
            let line = String::from_utf8_lossy(&pending)
                .trim_end_matches('\r')
                .to_string();
            pending.clear();
            Counters::add(&rig.counters.scpi_lines);
            if rig.is_silenced(Device::Smu) {
                discarding = false;
                continue;
            }
            let reply = if std::mem::take(&mut discarding) {
                Counters::add(&rig.counters.scpi_errors);
                rig.smu(|smu, _| smu.push_error(err::TOO_LONG));
                None
            } else {
                rig.smu(|smu, p| smu.handle_line(&line, p, &rig.counters))
            };
            if let Some(mut reply) = reply {
                reply.push('\n');
                stream.write_all(reply.as_bytes()).await?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rig::config::defaults;

    fn ask(smu: &mut Smu, p: &mut Physics, line: &str) -> Option<String> {
        smu.handle_line(line, p, &Counters::default())
    }

    #[test]
    fn the_agent_s_sweep_sequence_returns_the_curve() {
        let mut p = Physics::new(defaults()).expect("physics");
        let mut smu = Smu::default();
        for cmd in [
            "*CLS",
            ":SOUR:FUNC VOLT",
            ":SENS:FUNC \"CURR\"",
            ":SENS:CURR:RANG:AUTO ON",
            ":SOUR:SWE:VOLT:LIN -0.5, 60, 200",
            ":INIT",
            "*WAI",
        ] {
            assert_eq!(ask(&mut smu, &mut p, cmd), None, "{cmd}");
        }
        let reply = ask(
            &mut smu,
            &mut p,
            ":TRAC:DATA? 1, 200, \"defbuffer1\", SOUR, READ",
        )
        .expect("reply");
        let nums: Vec<f64> = reply
            .split(',')
            .map(|s| s.parse().expect("number"))
            .collect();
        assert_eq!(nums.len(), 400);
        assert_eq!(nums[0], -0.5);
        assert_eq!(nums[398], 60.0);
        assert!(nums[1] < -10.0, "generating reads negative: {}", nums[1]);
        let curve: Vec<(f64, f64)> = nums.chunks(2).map(|c| (c[0], -c[1])).collect();
        let f = iv::figures(&curve).expect("figures");
        assert!((f.pmax - 400.0).abs() / 400.0 < 0.005, "{f:?}");
        assert_eq!(
            ask(&mut smu, &mut p, ":SYST:ERR:COUN?").as_deref(),
            Some("0")
        );
    }

    #[test]
    fn garbage_goes_to_the_error_queue_never_a_reply() {
        let mut p = Physics::new(defaults()).expect("physics");
        let mut smu = Smu::default();
        for junk in [
            "HELLO",
            ":FOO:BAR?",
            ":SOUR:VOLT:LEV abc",
            ":SOUR:VOLT:LEV",
            ":SOUR:VOLT:LEV 1e400",
            ":SOUR:SWE:VOLT:LIN 0, 50, 1",
            ":SOUR:SWE:VOLT:LIN 0, 50, 20000",
            ":TRAC:DATA? 1, 10, \"defbuffer1\", SOUR, READ",
            "\u{fffd}\u{0}\u{7f}",
            ":SOUR:FUNC CURR",
            ";;;",
            "?",
            ":",
            "*",
        ] {
            assert_eq!(ask(&mut smu, &mut p, junk), None, "{junk:?}");
        }
        assert_eq!(
            ask(&mut smu, &mut p, ":SYST:ERR:COUN?").as_deref(),
            Some("13")
        );
        assert_eq!(
            ask(&mut smu, &mut p, ":SYST:ERR?").as_deref(),
            Some("-113,\"Undefined header\"")
        );
        assert_eq!(ask(&mut smu, &mut p, "*CLS"), None);
        assert_eq!(
            ask(&mut smu, &mut p, ":SYST:ERR?").as_deref(),
            Some("0,\"No error\"")
        );
        // Buffer reads past the end are refused.
        ask(&mut smu, &mut p, ":SOUR:SWE:VOLT:LIN 0, 50, 10;:INIT");
        assert_eq!(
            ask(&mut smu, &mut p, ":TRAC:DATA? 1, 11, \"defbuffer1\", READ"),
            None
        );
        assert_eq!(
            ask(&mut smu, &mut p, ":SYST:ERR:COUN?").as_deref(),
            Some("1")
        );
        for _ in 0..200 {
            ask(&mut smu, &mut p, "X");
        }
        assert_eq!(
            ask(&mut smu, &mut p, ":SYST:ERR:COUN?").as_deref(),
            Some("100")
        );
    }

    #[test]
    fn polled_queries_answer_long_and_short_forms() {
        let mut p = Physics::new(defaults()).expect("physics");
        let mut smu = Smu::default();
        assert_eq!(ask(&mut smu, &mut p, "*IDN?").as_deref(), Some(IDENTITY));
        assert_eq!(ask(&mut smu, &mut p, ":source:voltage:level 12.5"), None);
        assert_eq!(
            ask(&mut smu, &mut p, ":SOUR:VOLT:LEV?").as_deref(),
            Some("1.250000E+01")
        );
        assert_eq!(
            ask(&mut smu, &mut p, ":MEAS:VOLT?").as_deref(),
            Some("1.250000E+01")
        );
        let i: f64 = ask(&mut smu, &mut p, ":MEASure:CURRent?")
            .expect("reply")
            .parse()
            .expect("number");
        assert!(i < -10.0 && i > -10.5, "{i}");
        assert_eq!(
            ask(&mut smu, &mut p, "*OPC?;:SYST:ERR:COUN?").as_deref(),
            Some("1;0")
        );
    }
}
