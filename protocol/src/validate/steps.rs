//! The steps: points and labels they introduce, and each kind's rules.

use super::{
    Ctx, MAX_IV_POINTS, MAX_REPEAT_COUNT, MAX_REPEAT_DEPTH, boolean, is_name, parse_expr, quoted,
};
use crate::model::{IV_METRICS, Step};
use crate::units::Unit;
use std::collections::BTreeSet;

/// Collects points and labels first, so a condition may name a point that a
/// later step sets.
pub(super) fn collect<'a>(ctx: &mut Ctx<'a>, steps: &'a [Step], path: &str) {
    for (i, step) in steps.iter().enumerate() {
        let place = format!("{path}[{i}] ({})", step.kind());
        match step {
            Step::Setpoint { point, unit, .. } => {
                let u = ctx.unit(&format!("{place}.unit"), unit);
                ctx.point(&format!("{place}.point"), point, u);
                ctx.driven.insert(point);
            }
            Step::ApplyBias { point, .. } => {
                ctx.point(&format!("{place}.point"), point, Unit::parse("V").ok());
                ctx.driven.insert(point);
            }
            Step::Repeat { steps, .. } => collect(ctx, steps, &format!("{place}.steps")),
            Step::Measure { label, points, .. } => {
                let lp = format!("{place}.label");
                if !is_name(label) {
                    ctx.bad(&lp, format!("`{label}` is not a name (a-z 0-9 _)"));
                }
                ctx.take(label, &lp);
                let mut seen = BTreeSet::new();
                for (j, m) in points.iter().enumerate() {
                    let mp = format!("{place}.points[{j}] ({})", m.name);
                    if !is_name(&m.name) {
                        ctx.bad(
                            format!("{mp}.name"),
                            format!("`{}` is not a name (a-z 0-9 _)", m.name),
                        );
                    }
                    if !seen.insert(m.name.as_str()) {
                        ctx.bad(format!("{mp}.name"), "measured twice in this step");
                    }
                    let u = ctx.unit(&format!("{mp}.unit"), &m.unit);
                    ctx.point(&format!("{mp}.point"), &m.point, u.clone());
                    if let Some(u) = u {
                        ctx.recorded.insert(format!("{label}.{}", m.name), u);
                    }
                }
                if points.is_empty() {
                    ctx.bad(format!("{place}.points"), "nothing to measure");
                }
            }
            Step::IvSweep { label, .. } => {
                let lp = format!("{place}.label");
                if !is_name(label) {
                    ctx.bad(&lp, format!("`{label}` is not a name (a-z 0-9 _)"));
                }
                ctx.take(label, &lp);
                for (m, u) in IV_METRICS {
                    if let Ok(u) = Unit::parse(u) {
                        ctx.recorded.insert(format!("{label}.{m}"), u);
                    }
                }
            }
            Step::WaitUntil { .. } | Step::Dwell { .. } => {}
        }
    }
}

pub(super) fn check_steps(ctx: &mut Ctx<'_>, steps: &[Step], path: &str, depth: usize) {
    if steps.is_empty() {
        ctx.bad(path, "no steps");
    }
    for (i, step) in steps.iter().enumerate() {
        let place = format!("{path}[{i}] ({})", step.kind());
        match step {
            Step::Setpoint {
                unit,
                value,
                ramp_per_h,
                ..
            } => {
                let Ok(u) = Unit::parse(unit) else { continue };
                ctx.quantity(&format!("{place}.value"), value, &u);
                if let Some(r) = ramp_per_h {
                    let per_h = Unit::parse(&format!("{unit}/h"));
                    if let Ok(per_h) = per_h
                        && let Some(r) = ctx.quantity(&format!("{place}.ramp_per_h"), r, &per_h)
                        && r <= 0.0
                    {
                        ctx.bad(
                            format!("{place}.ramp_per_h"),
                            "a ramp rate must be positive",
                        );
                    }
                }
            }
            Step::WaitUntil {
                condition,
                hold,
                timeout,
                ..
            } => {
                let cp = format!("{place}.condition");
                if let Some(e) = parse_expr(ctx, &cp, condition) {
                    let points = ctx.points.clone();
                    let params = ctx.params.clone();
                    let unit_of = |n: &str| {
                        points
                            .get(n)
                            .map(|(u, _)| u.clone())
                            .or_else(|| params.get(n).map(|(u, _)| u.clone()))
                    };
                    let unknown: Vec<&str> = e
                        .names()
                        .into_iter()
                        .filter(|n| unit_of(n).is_none())
                        .collect();
                    if !unknown.is_empty() {
                        ctx.bad(
                            &cp,
                            format!(
                                "references {}, which is neither a point this protocol uses nor a parameter",
                                quoted(&unknown)
                            ),
                        );
                    } else {
                        boolean(ctx, &cp, &e, &unit_of);
                    }
                }
                let h = ctx.duration(&format!("{place}.hold"), hold);
                let t = ctx.duration(&format!("{place}.timeout"), timeout);
                if let (Some(h), Some(t)) = (h, t)
                    && t < h
                {
                    ctx.bad(
                        format!("{place}.timeout"),
                        "is shorter than `hold`: the condition could never be confirmed",
                    );
                }
            }
            Step::Dwell { duration, .. } => {
                ctx.duration(&format!("{place}.duration"), duration);
            }
            Step::Repeat { count, steps, .. } => {
                if !(1..=MAX_REPEAT_COUNT).contains(count) {
                    ctx.bad(
                        format!("{place}.count"),
                        format!("{count} is not between 1 and {MAX_REPEAT_COUNT}"),
                    );
                }
                if depth + 1 > MAX_REPEAT_DEPTH {
                    ctx.bad(
                        &place,
                        format!("repeats nest deeper than {MAX_REPEAT_DEPTH}"),
                    );
                } else {
                    check_steps(ctx, steps, &format!("{place}.steps"), depth + 1);
                }
            }
            Step::Measure { .. } => {}
            Step::IvSweep {
                instrument,
                start_v,
                stop_v,
                points,
                ..
            } => {
                if !is_name(instrument) {
                    ctx.bad(
                        format!("{place}.instrument"),
                        format!("`{instrument}` is not a device name (a-z 0-9 _)"),
                    );
                }
                let Ok(v) = Unit::parse("V") else { continue };
                let a = ctx.quantity(&format!("{place}.start_v"), start_v, &v);
                let b = ctx.quantity(&format!("{place}.stop_v"), stop_v, &v);
                if a.is_some() && a == b {
                    ctx.bad(
                        format!("{place}.stop_v"),
                        "equals start_v: nothing to sweep",
                    );
                }
                if !(2..=MAX_IV_POINTS).contains(points) {
                    ctx.bad(
                        format!("{place}.points"),
                        format!("{points} is not between 2 and {MAX_IV_POINTS}"),
                    );
                }
            }
            Step::ApplyBias {
                voltage, duration, ..
            } => {
                if let Ok(v) = Unit::parse("V") {
                    ctx.quantity(&format!("{place}.voltage"), voltage, &v);
                }
                ctx.duration(&format!("{place}.duration"), duration);
            }
        }
    }
}
