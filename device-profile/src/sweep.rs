//! `[iv_sweep]`: how an SCPI source-measure unit sweeps an IV curve, as
//! data: the commands sent in order, then one query whose one-line reply is
//! `v1,i1,v2,i2,...`. `{start}`, `{stop}` (decimal volts) and `{points}` (an
//! integer) are filled in per sweep; nothing else in braces is allowed.

use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IvSweep {
    /// Sent in order without reading replies.
    pub commands: Vec<String>,
    /// Its reply is the curve: source voltage and measured current per point.
    pub query: String,
    /// How long the whole sweep may take (commands, sweep, reply).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_timeout_ms() -> u64 {
    60_000
}

const PLACEHOLDERS: [&str; 3] = ["{start}", "{stop}", "{points}"];

/// Checks one command: braces only around a known placeholder.
fn check(s: &str) -> Result<(), String> {
    let mut rest = s;
    while let Some(i) = rest.find('{') {
        let tail = &rest[i..];
        match PLACEHOLDERS.iter().find(|p| tail.starts_with(**p)) {
            Some(p) => rest = &tail[p.len()..],
            None => {
                return Err(format!(
                    "{s:?}: only {{start}}, {{stop}} and {{points}} may be filled in"
                ));
            }
        }
    }
    if rest.contains('}') || s.chars().any(|c| c.is_control()) {
        return Err(format!("{s:?}: stray '}}' or a control character"));
    }
    Ok(())
}

impl IvSweep {
    pub(crate) fn validate(&self) -> Result<(), (String, String)> {
        for (i, c) in self.commands.iter().enumerate() {
            check(c).map_err(|m| (format!("iv_sweep.commands[{i}]"), m))?;
        }
        if self.query.trim().is_empty() {
            return Err(("iv_sweep.query".into(), "must not be empty".into()));
        }
        check(&self.query).map_err(|m| ("iv_sweep.query".into(), m))?;
        if self.timeout_ms == 0 {
            return Err(("iv_sweep.timeout_ms".into(), "must be > 0".into()));
        }
        Ok(())
    }

    /// The commands and the query of one sweep, filled in.
    pub fn render(&self, start_v: f64, stop_v: f64, points: u32) -> (Vec<String>, String) {
        let fill = |s: &str| {
            s.replace("{start}", &start_v.to_string())
                .replace("{stop}", &stop_v.to_string())
                .replace("{points}", &points.to_string())
        };
        (
            self.commands.iter().map(|c| fill(c)).collect(),
            fill(&self.query),
        )
    }
}

#[cfg(test)]
mod tests {
    use crate::Profile;
    use std::path::Path;

    #[test]
    fn the_keithley_profile_renders_the_contract_sequence() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../firmware-profiles");
        let p = Profile::load_by_id(&dir, "keithley-2450").expect("profile");
        let (cmds, query) = p.iv_sweep.expect("iv_sweep").render(-0.5, 60.0, 200);
        assert_eq!(
            cmds,
            [
                "*CLS",
                ":SOUR:FUNC VOLT",
                ":SENS:FUNC \"CURR\"",
                ":SENS:CURR:RANG:AUTO ON",
                ":SOUR:SWE:VOLT:LIN -0.5, 60, 200",
                ":INIT",
                "*WAI",
            ]
        );
        assert_eq!(query, ":TRAC:DATA? 1, 200, \"defbuffer1\", SOUR, READ");
    }

    #[test]
    fn unknown_placeholders_and_non_scpi_profiles_are_refused() {
        let base = "format_version = 1\nprotocol = \"scpi\"\n[model]\nid = \"s\"\nmanufacturer = \"m\"\n\
            name = \"n\"\ndevice_type = \"smu\"\n[scpi]\n[[points]]\nname = \"v\"\nquery = \"V?\"\n";
        let with = |sweep: &str| Profile::parse(&format!("{base}{sweep}"), Path::new("s.toml"));
        if let Err(e) = with("[iv_sweep]\ncommands = [\"A {start}\"]\nquery = \"Q? {points}\"\n") {
            panic!("{e}");
        }
        let e = with("[iv_sweep]\ncommands = [\"A {volts}\"]\nquery = \"Q?\"\n").unwrap_err();
        assert!(e.to_string().contains("iv_sweep.commands[0]"), "{e}");
        let e = with("[iv_sweep]\ncommands = []\nquery = \" \"\n").unwrap_err();
        assert!(e.to_string().contains("iv_sweep.query"), "{e}");
        let modbus = base.replace("protocol = \"scpi\"", "protocol = \"modbus\"");
        let e = Profile::parse(
            &format!("{modbus}[iv_sweep]\ncommands = []\nquery = \"Q?\"\n"),
            Path::new("s.toml"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("iv_sweep"), "{e}");
    }
}
