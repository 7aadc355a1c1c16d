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
    }
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
