//! The certificate's content, one Rust structure, and its two renderings:
//! the JSON mirror (serde, field order as declared) and the DCC-shaped XML
//! (PTB's Digital Calibration Certificate v3 vocabulary, namespaces
//! `https://ptb.de/dcc` and `https://ptb.de/si`), written in canonical form
//! (`xml`). Both come from the same value, and the offline verifier renders
//! the XML again from the JSON to prove they say the same.

use super::xml::Writer;
use dcc_parts::{calibration_result, content, identification, quantity, statement};
use serde::{Deserialize, Serialize};

/// The small DCC elements the XML rendering repeats.
mod dcc_parts;

pub const FORMAT: &str = "qi-certificate/1";
pub const DCC_NS: &str = "https://ptb.de/dcc";
pub const SI_NS: &str = "https://ptb.de/si";
pub const DCC_SCHEMA_VERSION: &str = "3.3.0";
/// What a simulated run's certificate says, in both renderings.
pub const SIMULATED_WARNING: &str = "SIMULATED: at least one run of this certificate was simulated \
faster than real time (time_scale != 1). Its results are NOT a real test of the item and must \
not be used as one.";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Certificate {
    pub format: String,
    /// The human-usable id, e.g. `QI-CERT-2026-000001`.
    pub id: String,
    pub uuid: String,
    /// `test` (a sample's protocols) or `calibration` (an instrument's,
    /// with [`Certificate::calibration`]).
    pub kind: String,
    pub simulated: bool,
    /// [`SIMULATED_WARNING`] when simulated.
    pub warning: Option<String>,
    /// RFC 3339, UTC, whole seconds.
    pub issued_at: String,
    pub expires_at: String,
    pub validity_days: u32,
    /// Dates (YYYY-MM-DD) of the first run's start and the last run's end.
    pub begin_performance_date: String,
    pub end_performance_date: String,
    pub verification_url: String,
    /// The certificate this one corrects.
    pub supersedes: Option<String>,
    pub software: Software,
    pub laboratory: Laboratory,
    /// A calibration certificate's customer is the laboratory itself
    /// (`service_request` empty).
    pub customer: Customer,
    /// A calibration certificate's item is the instrument: `sample_id` the
    /// instrument twin, `serial_number` its device id, `module_type` its
    /// twin type (or `instrument`).
    pub item: Item,
    /// The issuer first, then each approver.
    pub responsible_persons: Vec<Person>,
    pub runs: Vec<RunResult>,
    /// Kind `calibration` only; absent (not even null) in test
    /// certificates, whose bytes stay as they were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<CalibrationResult>,
}

/// What a calibration certificate states of the instrument's calibration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalibrationResult {
    /// The hub's calibration record.
    pub calibration_id: i64,
    pub gateway_id: String,
    pub device_id: String,
    /// RFC 3339, UTC, whole seconds.
    pub calibrated_at: String,
    /// When the instrument is due for calibration again (the certificate's expiry).
    pub due_at: String,
    pub method: String,
    /// Measured values with their expanded uncertainty and coverage factor.
    pub measured: Vec<Quantity>,
    /// Conditions of the calibration (ambient temperature, ...).
    pub conditions: Vec<Quantity>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Software {
    pub name: String,
    pub release: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Laboratory {
    pub name: String,
    /// ISO 3166-1 alpha-2.
    pub country: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Customer {
    pub name: String,
    pub service_request: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Item {
    /// The sample twin, `sample:<serial>`.
    pub sample_id: String,
    pub serial_number: String,
    pub module_type: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Person {
    pub name: String,
    /// `issuer` or `approver`.
    pub role: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunResult {
    pub run_id: String,
    pub protocol_id: String,
    pub protocol_version: String,
    pub template_sha256: String,
    pub started_at: String,
    pub ended_at: String,
    pub gateway_id: String,
    pub bench_id: String,
    pub operator: String,
    pub time_scale: f64,
    pub simulated: bool,
    /// The verdict that stands (`pass`).
    pub verdict: String,
    pub evaluation_id: i64,
    pub approval: Option<Approval>,
    pub instruments: Vec<Instrument>,
    pub criteria: Vec<Criterion>,
    pub measured: Vec<Quantity>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    pub decided_by: String,
    pub decided_at: String,
    pub comment: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Instrument {
    pub device_id: String,
    pub twin_id: String,
    /// What the hub knows of its calibration (nothing yet: says so).
    pub calibration: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Criterion {
    pub id: String,
    pub description: String,
    pub unit: String,
    pub verdict: String,
    pub explanation: String,
    pub inputs: Vec<Quantity>,
    pub checks: Vec<Check>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Check {
    pub computed: String,
    pub value: f64,
    pub op: String,
    pub limit_expr: String,
    pub limit: f64,
    pub holds: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quantity {
    pub name: String,
    pub value: f64,
    /// As recorded (`W`, `Cel`, `MOhm`, ...).
    pub unit: String,
    /// D-SI (`\watt`, `\degreecelsius`, `\mega\ohm`); the recorded unit
    /// between `|` when the table below does not know it.
    pub si_unit: String,
    /// Expanded uncertainty and its coverage factor, where known (nothing
    /// known yet: absent rather than invented).
    pub uncertainty: Option<Uncertainty>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Uncertainty {
    pub expanded: f64,
    pub coverage_factor: f64,
}

/// D-SI unit of a unit as instruments and templates write it.
pub fn si_unit(unit: &str) -> String {
    let known = match unit {
        "W" => "\\watt",
        "kW" => "\\kilo\\watt",
        "V" => "\\volt",
        "mV" => "\\milli\\volt",
        "A" => "\\ampere",
        "mA" => "\\milli\\ampere",
        "uA" => "\\micro\\ampere",
        "Cel" | "°C" | "degC" => "\\degreecelsius",
        "K" => "\\kelvin",
        "%" => "\\percent",
        "Ohm" => "\\ohm",
        "kOhm" => "\\kilo\\ohm",
        "MOhm" => "\\mega\\ohm",
        "GOhm" => "\\giga\\ohm",
        "MOhm.m2" | "MOhm*m2" => "\\mega\\ohm\\metre\\tothe{2}",
        "W/m2" => "\\watt\\metre\\tothe{-2}",
        "m2" => "\\metre\\tothe{2}",
        "s" => "\\second",
        "min" => "\\minute",
        "h" => "\\hour",
        "Hz" => "\\hertz",
        "Pa" => "\\pascal",
        "kPa" => "\\kilo\\pascal",
        "1" | "" => "\\one",
        _ => return format!("|{unit}|"),
    };
    known.to_string()
}

/// A number as the JSON mirror writes it (serde_json's shortest
/// round-trip form), so both renderings show the same digits.
fn num(v: f64) -> String {
    serde_json::to_string(&v).unwrap_or_else(|_| "NaN".into())
}

impl Certificate {
    /// The JSON mirror: the bytes the detached JWS signs.
    pub fn to_json(&self) -> Vec<u8> {
        // A struct of strings, numbers and vectors always serializes.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The DCC-shaped XML root element without its signature, canonical.
    pub fn to_xml(&self) -> String {
        let mut w = Writer::new();
        w.open_ns(
            "dcc:digitalCalibrationCertificate",
            &[("dcc", DCC_NS)],
            &[("schemaVersion", DCC_SCHEMA_VERSION)],
        );
        self.administrative_data(&mut w);
        self.measurement_results(&mut w);
        w.close("dcc:digitalCalibrationCertificate");
        w.finish()
    }

    fn administrative_data(&self, w: &mut Writer) {
        w.open("dcc:administrativeData");
        w.open("dcc:dccSoftware");
        w.open("dcc:software");
        content(w, "dcc:name", &self.software.name);
        w.leaf("dcc:release", &self.software.release);
        w.close("dcc:software");
        w.close("dcc:dccSoftware");

        w.open("dcc:coreData");
        w.leaf("dcc:countryCodeISO3166_1", &self.laboratory.country);
        w.leaf("dcc:usedLangCodeISO639_1", "en");
        w.leaf("dcc:mandatoryLangCodeISO639_1", "en");
        w.leaf("dcc:uniqueIdentifier", &self.id);
        w.open("dcc:identifications");
        identification(w, "calibrationLaboratory", &self.uuid, "certificate UUID");
        if !self.customer.service_request.is_empty() {
            identification(
                w,
                "customer",
                &self.customer.service_request,
                "service request",
            );
        }
        identification(w, "other", &self.kind, "certificate kind");
        if let Some(old) = &self.supersedes {
            identification(w, "calibrationLaboratory", old, "supersedes certificate");
        }
        w.close("dcc:identifications");
        w.leaf("dcc:beginPerformanceDate", &self.begin_performance_date);
        w.leaf("dcc:endPerformanceDate", &self.end_performance_date);
        w.leaf("dcc:issueDate", self.issued_at.get(..10).unwrap_or(""));
        w.close("dcc:coreData");

        w.open("dcc:items");
        w.open("dcc:item");
        if let Some(c) = &self.calibration {
            content(
                w,
                "dcc:name",
                &format!("instrument {} ({})", c.device_id, self.item.module_type),
            );
            w.open("dcc:identifications");
            identification(w, "owner", &c.device_id, "device id");
            identification(w, "owner", &c.gateway_id, "gateway");
            identification(
                w,
                "calibrationLaboratory",
                &self.item.sample_id,
                "instrument twin",
            );
            w.close("dcc:identifications");
        } else {
            content(
                w,
                "dcc:name",
                &format!("PV module {}", self.item.module_type),
            );
            w.open("dcc:identifications");
            identification(w, "manufacturer", &self.item.serial_number, "serial number");
            identification(w, "calibrationLaboratory", &self.item.sample_id, "sample");
            identification(w, "manufacturer", &self.item.module_type, "module type");
            w.close("dcc:identifications");
        }
        w.close("dcc:item");
        w.close("dcc:items");

        w.open("dcc:calibrationLaboratory");
        w.open("dcc:contact");
        content(w, "dcc:name", &self.laboratory.name);
        w.open("dcc:location");
        w.leaf("dcc:countryCode", &self.laboratory.country);
        w.close("dcc:location");
        w.close("dcc:contact");
        w.close("dcc:calibrationLaboratory");

        w.open("dcc:respPersons");
        for p in &self.responsible_persons {
            w.open("dcc:respPerson");
            w.open("dcc:person");
            content(w, "dcc:name", &p.name);
            w.close("dcc:person");
            w.leaf("dcc:role", &p.role);
            w.close("dcc:respPerson");
        }
        w.close("dcc:respPersons");

        w.open("dcc:customer");
        content(w, "dcc:name", &self.customer.name);
        w.close("dcc:customer");

        w.open("dcc:statements");
        if let Some(warning) = &self.warning {
            statement(w, "qi_simulated", warning, None);
        }
        if let Some(c) = &self.calibration {
            statement(
                w,
                "qi_recalibration",
                &format!(
                    "Calibrated {}; the instrument is due for calibration again on {}.",
                    c.calibrated_at, c.due_at
                ),
                None,
            );
        }
        statement(
            w,
            "qi_validity",
            &format!(
                "Valid until {} unless revoked or superseded.",
                self.expires_at
            ),
            Some((&self.expires_at, self.validity_days)),
        );
        statement(
            w,
            "qi_verification",
            &format!("Verify online at {}", self.verification_url),
            None,
        );
        w.close("dcc:statements");
        w.close("dcc:administrativeData");
    }

    fn measurement_results(&self, w: &mut Writer) {
        w.open("dcc:measurementResults");
        if let Some(c) = &self.calibration {
            calibration_result(w, c);
        }
        for r in &self.runs {
            w.open("dcc:measurementResult");
            let title = if r.simulated {
                format!(
                    "SIMULATED {} {} run {}",
                    r.protocol_id, r.protocol_version, r.run_id
                )
            } else {
                format!("{} {} run {}", r.protocol_id, r.protocol_version, r.run_id)
            };
            content(w, "dcc:name", &title);
            w.open("dcc:usedMethods");
            w.open_attrs("dcc:usedMethod", &[("refType", "qi_protocol")]);
            content(
                w,
                "dcc:name",
                &format!("{} {}", r.protocol_id, r.protocol_version),
            );
            content(
                w,
                "dcc:description",
                &format!(
                    "template sha256 {}; run {} on bench {} of gateway {}, operator {}, \
                     {} to {}, time scale {}; evaluation {}, verdict {}{}",
                    r.template_sha256,
                    r.run_id,
                    r.bench_id,
                    r.gateway_id,
                    r.operator,
                    r.started_at,
                    r.ended_at,
                    num(r.time_scale),
                    r.evaluation_id,
                    r.verdict,
                    r.approval
                        .as_ref()
                        .map(|a| format!(
                            "; approved by {} at {}: {}",
                            a.decided_by, a.decided_at, a.comment
                        ))
                        .unwrap_or_default()
                ),
            );
            w.close("dcc:usedMethod");
            w.close("dcc:usedMethods");
            if !r.instruments.is_empty() {
                w.open("dcc:measuringEquipments");
                for i in &r.instruments {
                    w.open("dcc:measuringEquipment");
                    content(w, "dcc:name", &i.device_id);
                    content(
                        w,
                        "dcc:description",
                        &format!("calibration: {}", i.calibration),
                    );
                    w.open("dcc:identifications");
                    identification(w, "calibrationLaboratory", &i.twin_id, "instrument twin");
                    w.close("dcc:identifications");
                    w.close("dcc:measuringEquipment");
                }
                w.close("dcc:measuringEquipments");
            }
            w.open("dcc:results");
            for c in &r.criteria {
                w.open_attrs("dcc:result", &[("refType", "qi_criterion")]);
                content(w, "dcc:name", &c.id);
                content(
                    w,
                    "dcc:description",
                    &format!("{}: {} [{}]", c.description, c.explanation, c.verdict),
                );
                w.open("dcc:data");
                for (n, k) in c.checks.iter().enumerate() {
                    let q = |name: String, v: f64| Quantity {
                        name,
                        value: v,
                        unit: c.unit.clone(),
                        si_unit: si_unit(&c.unit),
                        uncertainty: None,
                    };
                    quantity(
                        w,
                        "qi_computed",
                        &q(
                            format!("check {}: {} {} {}", n + 1, k.computed, k.op, k.limit_expr),
                            k.value,
                        ),
                    );
                    quantity(
                        w,
                        "qi_limit",
                        &q(format!("check {} limit: {}", n + 1, k.limit_expr), k.limit),
                    );
                    w.leaf_attrs(
                        "dcc:text",
                        &[("refType", "qi_conformity")],
                        if k.holds { "holds" } else { "does not hold" },
                    );
                }
                for i in &c.inputs {
                    quantity(w, "qi_input", i);
                }
                w.close("dcc:data");
                w.leaf_attrs("dcc:text", &[("refType", "qi_verdict")], &c.verdict);
                w.close("dcc:result");
            }
            if !r.measured.is_empty() {
                w.open_attrs("dcc:result", &[("refType", "qi_measured_values")]);
                content(w, "dcc:name", "measured values");
                w.open("dcc:data");
                for q in &r.measured {
                    quantity(w, "qi_measured", q);
                }
                w.close("dcc:data");
                w.close("dcc:result");
            }
            w.close("dcc:results");
            w.close("dcc:measurementResult");
        }
        w.close("dcc:measurementResults");
    }
}

#[cfg(test)]
#[path = "document_tests.rs"]
pub(crate) mod tests;
