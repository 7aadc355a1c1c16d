//! Everything a parsed template must satisfy before it can run. All problems
//! are collected, so one `check` shows a lab every mistake in a file.

mod steps;

use crate::expr::{self, Expr};
use crate::model::{FORMAT_VERSION, Protocol, Quantity, RECORD_AGGREGATES};
use crate::units::{self, DurationSpec, Unit};
use std::collections::{BTreeMap, BTreeSet};

/// One refusal: where (a field path, with the line when known) and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub place: String,
    pub message: String,
}

/// The deepest nesting of `repeat` steps: deeper plans are a template mistake.
pub const MAX_REPEAT_DEPTH: usize = 4;
pub const MAX_REPEAT_COUNT: u32 = 10_000;
pub const MAX_IV_POINTS: u32 = 10_000;

/// Lower-case names that can stand in an expression: `a-z 0-9 _`, not starting with a digit.
fn is_name(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// A device point: `device.point`, each part a name.
fn is_point(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() >= 2 && parts.iter().all(|p| is_name(p))
}

fn is_id(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset).map_or(0, |t| t.matches('\n').count()) + 1
}

struct Ctx<'a> {
    problems: Vec<Problem>,
    params: BTreeMap<&'a str, (Unit, Option<f64>)>,
    /// Device points and the unit every use must agree on.
    points: BTreeMap<&'a str, (Unit, String)>,
    /// Points the protocol drives (setpoints, bias): the safe state may set these.
    driven: BTreeSet<&'a str>,
    /// Names criteria may read besides parameters: recorded metrics, aggregates, sample values.
    recorded: BTreeMap<String, Unit>,
    /// Top-level names taken by parameters, labels and record series.
    taken: BTreeMap<&'a str, String>,
}

impl<'a> Ctx<'a> {
    fn bad(&mut self, place: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            place: place.into(),
            message: message.into(),
        });
    }

    fn unit(&mut self, place: &str, s: &str) -> Option<Unit> {
        match Unit::parse(s) {
            Ok(u) => Some(u),
            Err(m) => {
                self.bad(place, m);
                None
            }
        }
    }

    fn take(&mut self, name: &'a str, place: &str) {
        if name == "before" || name == "after" {
            self.bad(
                place,
                format!("`{name}` is reserved for the sample's values"),
            );
        } else if let Some(first) = self.taken.get(name) {
            let first = first.clone();
            self.bad(place, format!("`{name}` is already used by {first}"));
        } else {
            self.taken.insert(name, place.to_string());
        }
    }

    fn point(&mut self, place: &str, point: &'a str, unit: Option<Unit>) {
        if !is_point(point) {
            self.bad(
                place,
                format!("`{point}` is not a point name (`device.point`, a-z 0-9 _)"),
            );
            return;
        }
        let Some(unit) = unit else { return };
        match self.points.get(point) {
            Some((u, first)) if *u != unit => {
                let msg = format!("unit mismatch: `{point}` is {unit} here but {u} at {first}");
                self.bad(place, msg);
            }
            Some(_) => {}
            None => {
                self.points.insert(point, (unit, place.to_string()));
            }
        }
    }

    /// A number, or a parameter with a default in `want` units.
    fn quantity(&mut self, place: &str, q: &Quantity, want: &Unit) -> Option<f64> {
        match q {
            Quantity::Number(n) => Some(*n),
            Quantity::Parameter(p) => match self.params.get(p.as_str()).cloned() {
                None => {
                    self.bad(place, format!("`{p}` is not a parameter of this protocol"));
                    None
                }
                Some((u, default)) => {
                    if u != *want {
                        self.bad(
                            place,
                            format!("unit mismatch: parameter `{p}` is {u}, this needs {want}"),
                        );
                    }
                    if default.is_none() {
                        self.bad(
                            place,
                            format!("parameter `{p}` is used by a step and needs a `default`"),
                        );
                    }
                    default
                }
            },
        }
    }

    fn duration(&mut self, place: &str, s: &str) -> Option<f64> {
        match units::parse_duration(s) {
            Err(m) => {
                self.bad(place, m);
                None
            }
            Ok(DurationSpec::Seconds(s)) => Some(s),
            Ok(DurationSpec::Parameter(p)) => {
                let Some((u, default)) = self.params.get(p.as_str()).cloned() else {
                    self.bad(
                        place,
                        format!("`{p}` is neither a duration (\"10 min\") nor a parameter"),
                    );
                    return None;
                };
                let per = units::seconds_per(&u.to_string());
                match (per, default) {
                    (None, _) => {
                        self.bad(
                            place,
                            format!("unit mismatch: parameter `{p}` is {u}, a duration needs s, min, h or d"),
                        );
                        None
                    }
                    (_, None) => {
                        self.bad(
                            place,
                            format!("parameter `{p}` is used by a step and needs a `default`"),
                        );
                        None
                    }
                    (Some(per), Some(d)) if d > 0.0 => Some(d * per),
                    (Some(_), Some(_)) => {
                        self.bad(
                            place,
                            format!("parameter `{p}`: a duration must be positive"),
                        );
                        None
                    }
                }
            }
        }
    }
}

fn quoted(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn parse_expr(ctx: &mut Ctx<'_>, place: &str, text: &str) -> Option<Expr> {
    match expr::parse(text) {
        Ok(e) => Some(e),
        Err(e) => {
            ctx.bad(place, format!("`{text}` {e}"));
            None
        }
    }
}

/// Types a condition; returns the comparisons' units when it is one.
fn boolean(
    ctx: &mut Ctx<'_>,
    place: &str,
    e: &Expr,
    unit_of: &dyn Fn(&str) -> Option<Unit>,
) -> Option<Vec<units::Compared>> {
    let mut compared = Vec::new();
    match units::check(e, unit_of, &mut compared) {
        Ok(units::Ty::Bool) => Some(compared),
        Ok(units::Ty::Number(_)) => {
            ctx.bad(
                place,
                format!("`{e}` is a number; a comparison is needed (`... <= 5`)"),
            );
            None
        }
        Err(m) => {
            ctx.bad(place, m);
            None
        }
    }
}

pub fn validate(p: &mut Protocol, text: &str) -> Vec<Problem> {
    let mut ctx = Ctx {
        problems: Vec::new(),
        params: BTreeMap::new(),
        points: BTreeMap::new(),
        driven: BTreeSet::new(),
        recorded: BTreeMap::new(),
        taken: BTreeMap::new(),
    };
    if p.format_version != FORMAT_VERSION {
        ctx.bad(
            "format_version",
            format!(
                "is {}; this version reads format {FORMAT_VERSION}",
                p.format_version
            ),
        );
        return ctx.problems;
    }
    let info = &p.protocol;
    if !is_id(&info.id) {
        ctx.bad(
            "protocol.id",
            format!("`{}` is not an id (a-z 0-9 _ -)", info.id),
        );
    }
    for (key, v) in [
        ("protocol.name", &info.name),
        ("protocol.version", &info.version),
        ("protocol.standard", &info.standard),
    ] {
        if v.trim().is_empty() {
            ctx.bad(key, "must not be empty");
        }
    }

    for (i, par) in p.parameters.iter().enumerate() {
        let place = format!("parameters[{i}] ({})", par.name);
        if !is_name(&par.name) {
            ctx.bad(&place, format!("`{}` is not a name (a-z 0-9 _)", par.name));
        }
        ctx.take(&par.name, &place);
        let u = ctx.unit(&format!("{place}.unit"), &par.unit);
        if let (Some(lo), Some(hi)) = (par.min, par.max)
            && lo > hi
        {
            ctx.bad(format!("{place}.min"), format!("{lo} is above max {hi}"));
        }
        if let Some(d) = par.default {
            if par.min.is_some_and(|lo| d < lo) || par.max.is_some_and(|hi| d > hi) {
                ctx.bad(
                    format!("{place}.default"),
                    format!("{d} is outside min..max"),
                );
            }
            if !d.is_finite() {
                ctx.bad(format!("{place}.default"), "must be a finite number");
            }
        }
        if let Some(u) = u {
            ctx.params.insert(&par.name, (u, par.default));
        }
    }

    for (i, s) in p.sample_values.iter().enumerate() {
        let place = format!("sample_values[{i}] ({})", s.name);
        let ok = ["before.", "after."]
            .iter()
            .any(|pre| s.name.strip_prefix(pre).is_some_and(is_name));
        if !ok {
            ctx.bad(
                &place,
                format!("`{}` must be `before.<name>` or `after.<name>`", s.name),
            );
        }
        if ctx.recorded.contains_key(&s.name) {
            ctx.bad(&place, "declared twice");
        }
        match s.source.get() {
            Some(crate::ValueSource::Run { protocol, value }) => {
                if !is_id(protocol) {
                    ctx.bad(
                        format!("{place}.source.protocol"),
                        format!("`{protocol}` is not a protocol id (a-z 0-9 _ -)"),
                    );
                }
                let ok = value
                    .split_once('.')
                    .is_some_and(|(a, b)| is_name(a) && is_name(b));
                if !ok {
                    ctx.bad(
                        format!("{place}.source.value"),
                        format!("`{value}` must be `<label>.<name>` of a value that protocol records"),
                    );
                }
            }
            Some(crate::ValueSource::Observation(o)) => {
                if !is_name(o) {
                    ctx.bad(
                        format!("{place}.source.observation"),
                        format!("`{o}` is not a name (a-z 0-9 _)"),
                    );
                }
            }
            None => ctx.bad(
                format!("{place}.source"),
                "give `{ protocol = \"<id>\", value = \"<label>.<name>\" }` or `{ observation = \"<name>\" }`",
            ),
        }
        if let Some(u) = ctx.unit(&format!("{place}.unit"), &s.unit) {
            ctx.recorded.insert(s.name.clone(), u);
        }
    }

    for (i, r) in p.record.iter().enumerate() {
        let place = format!("record[{i}] ({})", r.name);
        if !is_name(&r.name) {
            ctx.bad(&place, format!("`{}` is not a name (a-z 0-9 _)", r.name));
        }
        ctx.take(&r.name, &place);
        let u = ctx.unit(&format!("{place}.unit"), &r.unit);
        ctx.point(&format!("{place}.point"), &r.point, u.clone());
        ctx.duration(&format!("{place}.interval"), &r.interval);
        if let Some(u) = u {
            for agg in RECORD_AGGREGATES {
                ctx.recorded.insert(format!("{}.{agg}", r.name), u.clone());
            }
        }
    }

    steps::collect(&mut ctx, &p.steps, "steps");
    steps::check_steps(&mut ctx, &p.steps, "steps", 0);

    for (i, s) in p.safe_state.setpoints.iter().enumerate() {
        let place = format!("safe_state.setpoints[{i}] ({})", s.point);
        let u = ctx.unit(&format!("{place}.unit"), &s.unit);
        ctx.point(&format!("{place}.point"), &s.point, u);
        if !ctx.driven.contains(s.point.as_str()) {
            ctx.bad(
                &place,
                format!("`{}` is not a point this protocol drives", s.point),
            );
        }
    }

    if p.criteria.is_empty() {
        ctx.bad(
            "criteria",
            "a protocol needs at least one pass/fail criterion",
        );
    }
    let mut ids = BTreeSet::new();
    for (i, c) in p.criteria.iter_mut().enumerate() {
        let line = line_of(text, c.expression.span().start);
        let place = format!("criteria[{i}] ({})", c.id);
        if !is_id(&c.id) {
            ctx.bad(&place, format!("`{}` is not an id (a-z 0-9 _ -)", c.id));
        }
        if !ids.insert(c.id.clone()) {
            ctx.bad(&place, "id used twice");
        }
        let ep = format!("{place}.expression (line {line})");
        let declared = ctx.unit(&format!("{place}.unit"), &c.unit);
        let Some(e) = parse_expr(&mut ctx, &ep, c.expression.get_ref()) else {
            continue;
        };
        let recorded = ctx.recorded.clone();
        let params = ctx.params.clone();
        let unit_of = |n: &str| {
            recorded
                .get(n)
                .cloned()
                .or_else(|| params.get(n).map(|(u, _)| u.clone()))
        };
        let unknown: Vec<&str> = e
            .names()
            .into_iter()
            .filter(|n| unit_of(n).is_none())
            .collect();
        if !unknown.is_empty() {
            ctx.bad(
                &ep,
                format!(
                    "references {}, which nothing records and no parameter or sample value declares",
                    quoted(&unknown)
                ),
            );
            continue;
        }
        let Some(compared) = boolean(&mut ctx, &ep, &e, &unit_of) else {
            continue;
        };
        if let Some(declared) = declared {
            for cmp in compared {
                if let Some(u) = cmp.unit
                    && u != declared
                {
                    ctx.bad(
                        &ep,
                        format!(
                            "unit mismatch: `{}` compares {u} but the criterion's unit is {}",
                            cmp.text, c.unit
                        ),
                    );
                }
            }
        }
        c.parsed = Some(e);
    }
    ctx.problems
}
