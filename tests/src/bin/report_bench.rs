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
use cloud_hub::reports::certificate::render;
use cloud_hub::reports::data::{IvCurve, Profile, RunCharts};
use e2e_tests::bench::pct;
use e2e_tests::certificate_fixture::certificate;
use std::collections::BTreeMap;
use std::time::Instant;

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
    let c = certificate("QI-CERT-2026-000001", 2);
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
