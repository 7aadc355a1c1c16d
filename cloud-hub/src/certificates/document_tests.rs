//! The document's renderings: the JSON mirror reads back, the XML is
//! DCC-shaped and escaped, SIMULATED shows in both, units map to D-SI.

use super::*;

pub fn sample() -> Certificate {
    let q = |name: &str, v: f64, unit: &str| Quantity {
        name: name.into(),
        value: v,
        unit: unit.into(),
        si_unit: si_unit(unit),
        uncertainty: None,
    };
    Certificate {
        format: FORMAT.into(),
        id: "QI-CERT-2026-000001".into(),
        uuid: "5b0c8f2e-1111-4c3b-8a2e-000000000001".into(),
        kind: "test".into(),
        simulated: false,
        warning: None,
        issued_at: "2026-06-01T10:00:00Z".into(),
        expires_at: "2028-05-31T10:00:00Z".into(),
        validity_days: 730,
        begin_performance_date: "2026-05-30".into(),
        end_performance_date: "2026-05-31".into(),
        verification_url: "https://hub.example/api/v1/verify/QI-CERT-2026-000001".into(),
        supersedes: None,
        software: Software {
            name: "qi-platform cloud-hub".into(),
            release: "0.1.0".into(),
        },
        laboratory: Laboratory {
            name: "Test & Calibration <Lab>".into(),
            country: "DE".into(),
        },
        customer: Customer {
            name: "ACME \"Solar\"".into(),
            service_request: "SR-000001".into(),
        },
        item: Item {
            sample_id: "sample:MOD-1".into(),
            serial_number: "MOD-1".into(),
            module_type: "PV-400".into(),
        },
        responsible_persons: vec![Person {
            name: "erin".into(),
            role: "issuer".into(),
        }],
        runs: vec![RunResult {
            run_id: "0b7c2a4e-9f1d-4c3b-8a2e-000000000001".into(),
            protocol_id: "stc-power".into(),
            protocol_version: "1.0.0".into(),
            template_sha256: "ab".repeat(32),
            started_at: "2026-05-30T08:00:00Z".into(),
            ended_at: "2026-05-31T08:00:00Z".into(),
            gateway_id: "gw-1".into(),
            bench_id: "rig-1".into(),
            operator: "olga".into(),
            time_scale: 1.0,
            simulated: false,
            verdict: "pass".into(),
            evaluation_id: 7,
            approval: None,
            instruments: vec![Instrument {
                device_id: "smu".into(),
                twin_id: "instrument:gw-1:smu".into(),
                calibration: "unknown".into(),
            }],
            criteria: vec![Criterion {
                id: "pmax-rated".into(),
                description: "Pmax >= rated - 3 %".into(),
                unit: "W".into(),
                verdict: "pass".into(),
                explanation: "stc.pmax=395 >= 388 holds".into(),
                inputs: vec![q("stc.pmax", 395.0, "W")],
                checks: vec![Check {
                    computed: "stc.pmax".into(),
                    value: 395.0,
                    op: ">=".into(),
                    limit_expr: "rated_pmax * 0.97".into(),
                    limit: 388.0,
                    holds: true,
                }],
            }],
            measured: vec![
                q("stc.pmax", 395.0, "W"),
                q("insulation.r_iso", 500.5, "MOhm"),
            ],
        }],
        calibration: None,
    }
}

/// A calibration certificate: the instrument as its item, no runs.
pub fn calibration_sample() -> Certificate {
    let mut c = sample();
    c.kind = "calibration".into();
    c.runs.clear();
    c.customer = Customer {
        name: "Test & Calibration <Lab>".into(),
        service_request: String::new(),
    };
    c.item = Item {
        sample_id: "instrument:gw-1:smu".into(),
        serial_number: "smu".into(),
        module_type: "instrument".into(),
    };
    let q = |name: &str, v: f64, unit: &str, unc: Option<(f64, f64)>| Quantity {
        name: name.into(),
        value: v,
        unit: unit.into(),
        si_unit: si_unit(unit),
        uncertainty: unc.map(|(expanded, k)| Uncertainty {
            expanded,
            coverage_factor: k,
        }),
    };
    c.calibration = Some(CalibrationResult {
        calibration_id: 12,
        gateway_id: "gw-1".into(),
        device_id: "smu".into(),
        calibrated_at: "2026-05-01T09:00:00Z".into(),
        due_at: "2027-05-01T09:00:00Z".into(),
        method: "comparison with reference cell RC-7".into(),
        measured: vec![q("Isc", 9.81, "A", Some((0.05, 2.0)))],
        conditions: vec![q("ambient temperature", 23.1, "Cel", None)],
    });
    c
}

#[test]
fn a_test_certificate_carries_no_calibration_field_at_all() {
    let j = String::from_utf8(sample().to_json()).expect("utf8");
    assert!(
        !j.contains("\"calibration\":{") && !j.contains("\"calibration\":null"),
        "{j}"
    );
    assert!(j.ends_with("]}]}"), "runs stay the last field: {j}");
    let x = sample().to_xml();
    assert!(x.contains("<dcc:value>SR-000001</dcc:value>"));
    assert!(!x.contains("qi_recalibration") && !x.contains("influenceConditions"));
}

#[test]
fn a_calibration_certificate_states_values_with_their_uncertainty() {
    let c = calibration_sample();
    let back: Certificate = serde_json::from_slice(&c.to_json()).expect("json");
    assert_eq!(back, c);
    assert_eq!(back.to_xml(), c.to_xml());
    let x = c.to_xml();
    for part in [
        "<dcc:value>calibration</dcc:value>",
        "<dcc:content lang=\"en\">instrument smu (instrument)</dcc:content>",
        "<si:value>9.81</si:value><si:unit>\\ampere</si:unit><si:expandedUnc>\
         <si:uncertainty>0.05</si:uncertainty><si:coverageFactor>2.0</si:coverageFactor>",
        "<dcc:influenceConditions><dcc:influenceCondition refType=\"qi_condition\">",
        "<si:value>23.1</si:value><si:unit>\\degreecelsius</si:unit>",
        "due for calibration again on 2027-05-01T09:00:00Z",
    ] {
        assert!(x.contains(part), "{part} missing in {x}");
    }
    assert!(
        !x.contains("service request"),
        "no empty service request: {x}"
    );
}

#[test]
fn the_json_mirror_reads_back_as_the_same_certificate() {
    let c = sample();
    let back: Certificate = serde_json::from_slice(&c.to_json()).expect("json");
    assert_eq!(back, c);
    assert_eq!(back.to_xml(), c.to_xml());
}

#[test]
fn the_xml_is_dcc_shaped_and_escaped() {
    let x = sample().to_xml();
    assert!(x.starts_with(
        "<dcc:digitalCalibrationCertificate xmlns:dcc=\"https://ptb.de/dcc\" schemaVersion=\"3.3.0\">"
    ));
    for part in [
        "<dcc:uniqueIdentifier>QI-CERT-2026-000001</dcc:uniqueIdentifier>",
        "<dcc:countryCodeISO3166_1>DE</dcc:countryCodeISO3166_1>",
        "<dcc:content lang=\"en\">Test &amp; Calibration &lt;Lab&gt;</dcc:content>",
        "<dcc:content lang=\"en\">ACME \"Solar\"</dcc:content>",
        "<si:real xmlns:si=\"https://ptb.de/si\"><si:value>395.0</si:value><si:unit>\\watt</si:unit></si:real>",
        "<si:value>500.5</si:value><si:unit>\\mega\\ohm</si:unit>",
        "<dcc:period>P730D</dcc:period>",
    ] {
        assert!(x.contains(part), "{part} missing in {x}");
    }
    assert!(!x.contains("/>"), "no empty-element tags in canonical form");
    assert!(!x.contains("expandedUnc"), "no uncertainty is invented");
}

#[test]
fn a_simulated_certificate_says_so_in_both_renderings() {
    let mut c = sample();
    c.simulated = true;
    c.warning = Some(SIMULATED_WARNING.into());
    c.runs[0].simulated = true;
    let x = c.to_xml();
    assert!(x.contains("refType=\"qi_simulated\"") && x.contains("NOT a real test"));
    assert!(x.contains("SIMULATED stc-power"));
    let j = String::from_utf8(c.to_json()).expect("utf8");
    assert!(j.contains("\"simulated\":true") && j.contains("NOT a real test"));
}

#[test]
fn units_map_to_d_si() {
    assert_eq!(si_unit("Cel"), "\\degreecelsius");
    assert_eq!(si_unit("%"), "\\percent");
    assert_eq!(si_unit("W/m2"), "\\watt\\metre\\tothe{-2}");
    assert_eq!(si_unit("furlong"), "|furlong|");
}
