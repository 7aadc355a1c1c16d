//! PDF render time (BENCHMARKS.md, issue #15): the certificate report of
//! two runs, each with a 1,000-point IV curve and a 24 h chamber profile
//! of 86,400 readings (one a second, downsampled to the plot's columns),
//! rendered N times on one thread by `cloud_hub::reports::certificate::
//! render`, what `GET /api/v1/certificates/{id}/report.pdf` runs after
//! its database reads. Prints p50/p95/max and the PDF's size. Goal: p95
//! <= 100 ms.
//!
//! Run: `cargo run -p e2e-tests --bin report_bench -- 200` (add
//! `--release` for an optimised figure).
use anyhow::Result;
use cloud_hub::certificates::document::{
    Certificate, Check, Criterion, Customer, FORMAT, Instrument, Item, Laboratory, Person,
    Quantity, RunResult, Software, si_unit,
};
use cloud_hub::reports::certificate::render;
use cloud_hub::reports::data::{IvCurve, Profile, RunCharts};
use e2e_tests::bench::pct;
use std::collections::BTreeMap;
use std::time::Instant;

fn q(name: &str, v: f64, unit: &str) -> Quantity {
    Quantity {
        name: name.into(),
        value: v,
        unit: unit.into(),
        si_unit: si_unit(unit),
        uncertainty: None,
    }
}

fn run(n: u32) -> RunResult {
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

fn certificate() -> Certificate {
    let id = "QI-CERT-2026-000001";
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
        runs: (1..=2).map(run).collect(),
        calibration: None,
    }
}

fn charts() -> RunCharts {
    let iv = (0..1000)
        .map(|k| {
            let v = 48.0 * f64::from(k) / 999.0;
            (v, 9.8 * (1.0 - ((v - 48.0) / 3.2).exp()))
        })
        .collect();
    let h = |k: u32| f64::from(k) / 3600.0;
    RunCharts {
        iv: Some(IvCurve {
            label: "stc".into(),
            points: iv,
        }),
        chamber: Some(Profile {
            series: "chamber_temperature".into(),
            unit: "Cel".into(),
            points: (0..86_400)
                .map(|k| {
                    (
                        h(k),
                        22.5 + 62.5 * (h(k) * 0.8).sin() + f64::from(k % 7) * 0.05,
                    )
                })
                .collect(),
            setpoint: vec![
                (0.0, 25.0),
                (1.0, 85.0),
                (12.0, 85.0),
                (13.0, -40.0),
                (24.0, -40.0),
            ],
            truncated: false,
        }),
    }
}

fn main() -> Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(200);
    let c = certificate();
    let charts: BTreeMap<String, RunCharts> = c
        .runs
        .iter()
        .map(|r| (r.run_id.clone(), charts()))
        .collect();
    let mut ms = Vec::with_capacity(n);
    let mut size = 0;
    let mut pages = 0;
    for _ in 0..n.max(1) {
        let t = Instant::now();
        let pdf = render(&c, "valid", &charts)?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
        size = pdf.len();
        pages = String::from_utf8_lossy(&pdf)
            .matches("/Type /Page ")
            .count();
    }
    let max = ms.iter().copied().fold(0.0, f64::max);
    println!(
        "certificate report, 2 runs x (IV 1,000 points + chamber 86,400 readings), {n} renders: \
         p50 {:.1} ms, p95 {:.1} ms, max {max:.1} ms; {size} bytes, {pages} pages",
        pct(&mut ms, 0.5),
        pct(&mut ms, 0.95),
    );
    Ok(())
}
