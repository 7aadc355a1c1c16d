//! What a profile must satisfy beyond its types: checked once at load, so
//! the agent and the simulator can rely on it.

use super::*;

impl Profile {
    /// Checks what the type system cannot; returns the offending field and why.
    pub(crate) fn validate(&self) -> Result<(), Invalid> {
        if let Some(s) = &self.iv_sweep {
            if self.protocol != Protocol::Scpi {
                return Err((
                    "iv_sweep".into(),
                    "only an SCPI profile can sweep (its commands are SCPI lines)".into(),
                ));
            }
            s.validate()?;
        }
        if self.format_version != FORMAT_VERSION {
            return Err((
                "format_version".into(),
                format!(
                    "is {}, this build reads version {FORMAT_VERSION}",
                    self.format_version
                ),
            ));
        }
        if !is_identifier(&self.model.id, true) {
            return Err((
                "model.id".into(),
                "must be non-empty and use only a-z, 0-9, '-' and '_'".into(),
            ));
        }
        for (name, g) in &self.poll_groups {
            if g.interval_ms == 0 {
                return Err((
                    format!("poll_groups.{name}.interval_ms"),
                    "must be > 0".into(),
                ));
            }
        }
        if self.points.is_empty() {
            return Err(("points".into(), "a profile needs at least one point".into()));
        }
        let s = &self.serial;
        if s.baud == 0 || !(5..=8).contains(&s.data_bits) || !(1..=2).contains(&s.stop_bits) {
            return Err((
                "serial".into(),
                "baud must be > 0, data_bits 5..=8, stop_bits 1 or 2".into(),
            ));
        }
        let mut names = HashSet::new();
        for (i, p) in self.points.iter().enumerate() {
            if !is_identifier(&p.name, false) {
                return Err((
                    format!("points[{i}].name"),
                    format!(
                        "{:?} must be non-empty and use only a-z, 0-9 and '_'",
                        p.name
                    ),
                ));
            }
            if !names.insert(p.name.as_str()) {
                return Err((field(i, p, "name"), "is used by another point".into()));
            }
            if !p.scale.is_finite() || p.scale == 0.0 {
                return Err((field(i, p, "scale"), "must be finite and non-zero".into()));
            }
            if !p.offset.is_finite() {
                return Err((field(i, p, "offset"), "must be finite".into()));
            }
            if !(p.sim.period_s.is_finite() && p.sim.period_s > 0.0) {
                return Err((field(i, p, "sim.period_s"), "must be > 0".into()));
            }
            if let Some(g) = &p.poll_group
                && !self.poll_groups.contains_key(g)
            {
                return Err((
                    field(i, p, "poll_group"),
                    format!("{g:?} is not defined in [poll_groups]"),
                ));
            }
            match p.deadband {
                Some(Deadband::Absolute(v) | Deadband::Percent(v))
                    if !(v.is_finite() && v >= 0.0) =>
                {
                    return Err((
                        field(i, p, "deadband"),
                        "must be a finite number >= 0".into(),
                    ));
                }
                _ => {}
            }
            if p.max_report_interval_ms == Some(0) {
                return Err((field(i, p, "max_report_interval_ms"), "must be > 0".into()));
            }
        }
        match self.protocol {
            Protocol::Modbus => self.validate_modbus(),
            Protocol::Scpi => self.validate_scpi(),
        }
    }

    fn validate_modbus(&self) -> Result<(), Invalid> {
        let Some(m) = &self.modbus else {
            return Err((
                "modbus".into(),
                "a Modbus profile needs a [modbus] table".into(),
            ));
        };
        if m.max_registers_per_read == 0 || m.max_registers_per_read > MAX_REGISTERS_PER_READ {
            return Err((
                "modbus.max_registers_per_read".into(),
                format!(
                    "is {}, must be 1..=125 (the Modbus limit)",
                    m.max_registers_per_read
                ),
            ));
        }
        if m.max_bits_per_read == 0 || m.max_bits_per_read > MAX_BITS_PER_READ {
            return Err((
                "modbus.max_bits_per_read".into(),
                format!(
                    "is {}, must be 1..=2000 (the Modbus limit)",
                    m.max_bits_per_read
                ),
            ));
        }
        if m.timeout_ms == 0 {
            return Err(("modbus.timeout_ms".into(), "must be > 0".into()));
        }
        if m.max_in_flight == 0 || m.max_in_flight > MAX_IN_FLIGHT {
            return Err((
                "modbus.max_in_flight".into(),
                format!(
                    "is {}, must be 1..={MAX_IN_FLIGHT} (1: one request at a time; more only \
                     for Modbus TCP devices that answer pipelined requests by transaction id)",
                    m.max_in_flight
                ),
            ));
        }
        let by_name: HashMap<&str, &Point> =
            self.points.iter().map(|p| (p.name.as_str(), p)).collect();
        for (i, p) in self.points.iter().enumerate() {
            if p.query.is_some() || p.write_command.is_some() {
                return Err((field(i, p, "query"), "SCPI keys in a Modbus profile".into()));
            }
            let (Some(kind), Some(_), Some(t)) = (p.register, p.address, p.data_type) else {
                return Err((
                    field(i, p, "register"),
                    "a Modbus point needs `register`, `address` and `type`".into(),
                ));
            };
            let fits = if kind.is_bits() {
                t == DataType::Bool
            } else {
                t != DataType::Bool
            };
            if !fits {
                return Err((
                    field(i, p, "type"),
                    "coils and discrete inputs are type \"bool\"; registers are any other type"
                        .into(),
                ));
            }
            if t == DataType::Bit {
                match p.bit {
                    Some(b) if b < 16 => {}
                    _ => {
                        return Err((
                            field(i, p, "bit"),
                            "type \"bit\" needs `bit` = 0..=15".into(),
                        ));
                    }
                }
                if p.writable {
                    return Err((
                        field(i, p, "writable"),
                        "bit-in-register points cannot be written (it would need a read-modify-write that races the device)".into(),
                    ));
                }
            } else if p.bit.is_some() {
                return Err((field(i, p, "bit"), "only for type \"bit\"".into()));
            }
            if t == DataType::String {
                match p.length {
                    Some(n) if n >= 1 && n <= m.max_registers_per_read => {}
                    _ => {
                        return Err((
                            field(i, p, "length"),
                            "type \"string\" needs `length` = 1..=max_registers_per_read registers"
                                .into(),
                        ));
                    }
                }
                if p.writable {
                    return Err((
                        field(i, p, "writable"),
                        "string points cannot be written".into(),
                    ));
                }
            } else if p.length.is_some() {
                return Err((field(i, p, "length"), "only for type \"string\"".into()));
            }
            if p.writable && matches!(kind, RegisterKind::Input | RegisterKind::Discrete) {
                return Err((
                    field(i, p, "writable"),
                    format!("{kind:?} registers are read-only in Modbus").to_lowercase(),
                ));
            }
            let Some(loc) = p.modbus() else {
                return Err((field(i, p, "type"), "incomplete Modbus location".into()));
            };
            if loc.end_address() > 0xFFFF {
                return Err((
                    field(i, p, "address"),
                    format!(
                        "{} + {} runs past the last address 65535",
                        loc.address, loc.size
                    ),
                ));
            }
            let limit = if kind.is_bits() {
                m.max_bits_per_read
            } else {
                m.max_registers_per_read
            };
            if loc.size > limit {
                return Err((
                    field(i, p, "type"),
                    "needs more registers than one read may fetch".into(),
                ));
            }
            if let Some(sf) = &p.scale_factor {
                let Some(sfp) = by_name.get(sf.as_str()) else {
                    return Err((
                        field(i, p, "scale_factor"),
                        format!("no point named {sf:?}"),
                    ));
                };
                if sfp.data_type != Some(DataType::I16) || sfp.scale_factor.is_some() {
                    return Err((
                        field(i, p, "scale_factor"),
                        format!("{sf:?} must be an i16 point without a scale factor of its own"),
                    ));
                }
                if sfp.poll_group != p.poll_group {
                    return Err((
                        field(i, p, "scale_factor"),
                        format!("{sf:?} must be in the same poll group, so both are read together"),
                    ));
                }
            }
        }
        // Overlapping points would mean two names for the same registers: a
        // typo, except for bits of one register, which are meant to share it.
        let mut spans: Vec<(RegisterKind, u32, u32, &str, bool)> = self
            .points
            .iter()
            .filter_map(|p| {
                p.modbus().map(|l| {
                    (
                        l.register,
                        u32::from(l.address),
                        l.end_address(),
                        p.name.as_str(),
                        l.data_type == DataType::Bit,
                    )
                })
            })
            .collect();
        spans.sort();
        for (j, a) in spans.iter().enumerate() {
            for b in &spans[j + 1..] {
                if b.0 != a.0 || b.1 > a.2 {
                    break;
                }
                let both_bits_same_register = a.4 && b.4 && a.1 == b.1;
                if !both_bits_same_register {
                    return Err((
                        "points".into(),
                        format!("{} and {} overlap in {:?} registers", a.3, b.3, a.0)
                            .to_lowercase(),
                    ));
                }
            }
        }
        Ok(())
    }

    fn validate_scpi(&self) -> Result<(), Invalid> {
        let Some(s) = &self.scpi else {
            return Err(("scpi".into(), "an SCPI profile needs a [scpi] table".into()));
        };
        if !(s.line_ending == "\n" || s.line_ending == "\r\n" || s.line_ending == "\r") {
            return Err((
                "scpi.line_ending".into(),
                "must be \"\\n\", \"\\r\\n\" or \"\\r\"".into(),
            ));
        }
        if s.timeout_ms == 0 {
            return Err(("scpi.timeout_ms".into(), "must be > 0".into()));
        }
        for (i, p) in self.points.iter().enumerate() {
            let text_only = matches!(p.data_type, None | Some(DataType::String));
            if p.register.is_some() || p.address.is_some() || !text_only {
                return Err((
                    field(i, p, "register"),
                    "Modbus keys in an SCPI profile (only `type = \"string\"` is allowed, for text replies)".into(),
                ));
            }
            match &p.query {
                Some(q) if !q.trim().is_empty() && !q.contains(['\n', '\r']) => {}
                _ => {
                    return Err((
                        field(i, p, "query"),
                        "an SCPI point needs a one-line `query`".into(),
                    ));
                }
            }
            if p.separator.is_empty() {
                return Err((field(i, p, "separator"), "must not be empty".into()));
            }
            if p.writable {
                match &p.write_command {
                    Some(c) if c.contains("{value") && !c.contains(['\n', '\r']) => {}
                    _ => {
                        return Err((
                            field(i, p, "write_command"),
                            "a writable SCPI point needs a one-line `write_command` containing {value}".into(),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

fn field(i: usize, p: &Point, f: &str) -> String {
    format!("points[{i}] ({}).{f}", p.name)
}

fn is_identifier(s: &str, allow_dash: bool) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || (allow_dash && b == b'-')
        })
}
