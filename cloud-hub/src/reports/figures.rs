//! The two charts every report may carry, from a run's data: the IV
//! curve with its Pmax point, and the chamber profile against the
//! template's setpoint.

use super::chart::{BLUE, Chart, Line, ORANGE, PLOT_W};
use super::data::{IvCurve, Profile};
use super::layout::Doc;

fn downsampled_note(n: usize) -> Option<String> {
    let columns = PLOT_W as usize;
    (n > 4 * columns).then(|| {
        format!(
            "{n} readings drawn as the first, lowest, highest and last of each of {columns} \
             columns (peaks kept)."
        )
    })
}

pub fn iv(doc: &mut Doc, c: &IvCurve) {
    let mark = c.pmax().map(|(v, i, p)| {
        (
            v,
            i,
            format!("Pmax {p:.1} W at {v:.2} V, {i:.3} A (from the curve)"),
        )
    });
    Chart {
        title: format!("IV curve ({}, {} points)", c.label, c.points.len()),
        x_label: "voltage [V]".into(),
        y_label: "current [A]".into(),
        lines: vec![Line {
            name: "current".into(),
            color: BLUE,
            points: c.points.clone(),
        }],
        mark,
        note: downsampled_note(c.points.len()),
    }
    .draw(doc);
}

pub fn chamber(doc: &mut Doc, p: &Profile) {
    let unit = if p.unit == "Cel" { "°C" } else { &p.unit };
    let mut lines = vec![Line {
        name: format!("{} (recorded)", p.series),
        color: BLUE,
        points: p.points.clone(),
    }];
    if !p.setpoint.is_empty() {
        lines.push(Line {
            name: "setpoint (from the template's steps)".into(),
            color: ORANGE,
            points: p.setpoint.clone(),
        });
    }
    let mut note = downsampled_note(p.points.len());
    if p.truncated {
        note = Some(format!(
            "Only the first {} readings are drawn.",
            super::MAX_SERIES_READINGS
        ));
    }
    Chart {
        title: format!(
            "Chamber profile ({}, {} readings)",
            p.series,
            p.points.len()
        ),
        x_label: "time since the run's start [h]".into(),
        y_label: format!("temperature [{unit}]"),
        lines,
        mark: None,
        note,
    }
    .draw(doc);
}
