//! The DCC elements `Certificate::to_xml` writes many times over: names,
//! identifications, statements and `si:real` quantities.

use super::super::xml::Writer;
use super::{CalibrationResult, Quantity, SI_NS, num};

/// A calibration's measurement result: method, conditions
/// (`dcc:influenceConditions`) and the measured values with their expanded
/// uncertainty (`si:real` with `si:expandedUnc`).
pub(super) fn calibration_result(w: &mut Writer, c: &CalibrationResult) {
    w.open("dcc:measurementResult");
    content(
        w,
        "dcc:name",
        &format!("calibration {} of {}", c.calibration_id, c.device_id),
    );
    w.open("dcc:usedMethods");
    w.open_attrs("dcc:usedMethod", &[("refType", "qi_calibration_method")]);
    content(w, "dcc:name", &c.method);
    w.close("dcc:usedMethod");
    w.close("dcc:usedMethods");
    if !c.conditions.is_empty() {
        w.open("dcc:influenceConditions");
        for q in &c.conditions {
            w.open_attrs("dcc:influenceCondition", &[("refType", "qi_condition")]);
            content(w, "dcc:name", &q.name);
            w.open("dcc:data");
            quantity(w, "qi_condition", q);
            w.close("dcc:data");
            w.close("dcc:influenceCondition");
        }
        w.close("dcc:influenceConditions");
    }
    w.open("dcc:results");
    w.open_attrs("dcc:result", &[("refType", "qi_calibration_values")]);
    content(w, "dcc:name", "measured values");
    w.open("dcc:data");
    for q in &c.measured {
        quantity(w, "qi_measured", q);
    }
    w.close("dcc:data");
    w.close("dcc:result");
    w.close("dcc:results");
    w.close("dcc:measurementResult");
}

/// `<name><dcc:content lang="en">text</dcc:content></name>`.
pub(super) fn content(w: &mut Writer, name: &str, text: &str) {
    w.open(name);
    w.leaf_attrs("dcc:content", &[("lang", "en")], text);
    w.close(name);
}

pub(super) fn identification(w: &mut Writer, issuer: &str, value: &str, what: &str) {
    w.open("dcc:identification");
    w.leaf("dcc:issuer", issuer);
    w.leaf("dcc:value", value);
    content(w, "dcc:name", what);
    w.close("dcc:identification");
}

pub(super) fn statement(w: &mut Writer, ref_type: &str, text: &str, until: Option<(&str, u32)>) {
    w.open_attrs("dcc:statement", &[("refType", ref_type)]);
    content(w, "dcc:declaration", text);
    if let Some((at, days)) = until {
        w.leaf("dcc:validity", at);
        w.leaf("dcc:period", &format!("P{days}D"));
    }
    w.close("dcc:statement");
}

/// A `dcc:quantity` with its `si:real`; `xmlns:si` on the `si:real`
/// itself, where exc-c14n puts it.
pub(super) fn quantity(w: &mut Writer, ref_type: &str, q: &Quantity) {
    w.open_attrs("dcc:quantity", &[("refType", ref_type)]);
    content(w, "dcc:name", &format!("{} [{}]", q.name, q.unit));
    w.open_ns("si:real", &[("si", SI_NS)], &[]);
    w.leaf("si:value", &num(q.value));
    w.leaf("si:unit", &q.si_unit);
    if let Some(u) = &q.uncertainty {
        w.open("si:expandedUnc");
        w.leaf("si:uncertainty", &num(u.expanded));
        w.leaf("si:coverageFactor", &num(u.coverage_factor));
        w.leaf("si:coverageProbability", "0.95");
        w.close("si:expandedUnc");
    }
    w.close("si:real");
    w.close("dcc:quantity");
}
