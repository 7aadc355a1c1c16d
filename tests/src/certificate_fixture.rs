//! A test certificate document with made-up but plausible contents, for
//! the benchmarks that sign, verify or render one (cert_bench,
//! report_bench): the same document for both.

use cloud_hub::certificates::document::{
    Certificate, Check, Criterion, Customer, FORMAT, Instrument, Item, Laboratory, Person,
    Quantity, RunResult, Software, si_unit,
};

/// A quantity without uncertainty.
pub fn q(name: &str, v: f64, unit: &str) -> Quantity {
    Quantity {
        name: name.into(),
        value: v,
        unit: unit.into(),
        si_unit: si_unit(unit),
        uncertainty: None,
    }
}

/// Run `n`: a passed STC run with three criteria.
pub fn run(n: u32) -> RunResult {
    RunResult {
        run_id: format!("0b7c2a4e-9f1d-4c3b-8a2e-{n:012x}"),
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
        evaluation_id: i64::from(n),
        approval: None,
        instruments: ["smu", "refcell", "module", "chamber"]
            .iter()
            .map(|d| Instrument {
                device_id: (*d).into(),
                twin_id: format!("instrument:gw-1:{d}"),
                calibration: "unknown: the hub keeps no calibration records yet".into(),
            })
            .collect(),
        criteria: (0..3)
            .map(|c| Criterion {
                id: format!("criterion-{c}"),
                description: "Pmax at STC is at least the rated power less its tolerance.".into(),
                unit: "W".into(),
                verdict: "pass".into(),
                explanation: "stc.pmax = 395 >= rated_pmax * 0.97 = 388: holds".into(),
                inputs: vec![q("stc.pmax", 395.0, "W"), q("rated_pmax", 400.0, "W")],
                checks: vec![Check {
                    computed: "stc.pmax".into(),
                    value: 395.0,
                    op: ">=".into(),
                    limit_expr: "rated_pmax * 0.97".into(),
                    limit: 388.0,
                    holds: true,
                }],
            })
            .collect(),
        measured: vec![
            q("stc.pmax", 395.0, "W"),
            q("stc.voc", 48.0, "V"),
            q("stc.isc", 9.8, "A"),
            q("conditions.cell_temperature", 25.3, "Cel"),
        ],
    }
}

/// A test certificate `id` over `runs` runs.
pub fn certificate(id: &str, runs: u32) -> Certificate {
    Certificate {
        format: FORMAT.into(),
        id: id.into(),
        uuid: "5b0c8f2e-1111-4c3b-8a2e-000000000001".into(),
        kind: "test".into(),
        simulated: false,
        warning: None,
        issued_at: "2026-06-01T10:00:00Z".into(),
        expires_at: "2028-05-31T10:00:00Z".into(),
        validity_days: 730,
        begin_performance_date: "2026-05-30".into(),
        end_performance_date: "2026-05-31".into(),
        verification_url: format!("https://hub.example/api/v1/verify/{id}"),
        supersedes: None,
        software: Software {
            name: "qi-platform cloud-hub".into(),
            release: "0.1.0".into(),
        },
        laboratory: Laboratory {
            name: "PV Lab".into(),
            country: "DE".into(),
        },
        customer: Customer {
            name: "Solar GmbH".into(),
            service_request: "SR-000001".into(),
        },
        item: Item {
            sample_id: "sample:MOD-1".into(),
            serial_number: "MOD-1".into(),
            module_type: "SG-400M".into(),
        },
        responsible_persons: vec![Person {
            name: "erin".into(),
            role: "issuer".into(),
        }],
        runs: (1..=runs).map(run).collect(),
        calibration: None,
    }
}
