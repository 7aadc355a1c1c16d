//! Whole reports rendered from data made here: every page numbered, the
//! file's cross-references exact, the charts and the QR code drawn, the
//! SIMULATED warning where it belongs, characters outside WinAnsi
//! replaced. Set `QI_REPORT_SAMPLES=<dir>` to keep the PDFs for a look.

use super::certificate;
use super::data::{IvCurve, Profile, RunCharts};
use crate::certificates::document::{SIMULATED_WARNING, tests::sample};
use std::collections::BTreeMap;

/// A single-diode-like IV curve of `n` points: Isc 9.8 A, Voc 48 V.
pub fn iv(n: usize) -> IvCurve {
    let points = (0..n)
        .map(|k| {
            let v = 48.0 * k as f64 / (n - 1) as f64;
            (v, 9.8 * (1.0 - ((v - 48.0) / 3.2).exp()))
        })
        .collect();
    IvCurve {
        label: "stc".into(),
        points,
    }
}

/// A day of a chamber at one reading a second, cycling -40..85 °C.
pub fn profile(n: usize) -> Profile {
    let h = |k: usize| k as f64 / 3600.0;
    Profile {
        series: "chamber_temperature".into(),
        unit: "Cel".into(),
        points: (0..n)
            .map(|k| (h(k), 22.5 + 62.5 * (h(k) * 0.8).sin()))
            .collect(),
        setpoint: vec![
            (0.0, 25.0),
            (1.0, 85.0),
            (12.0, 85.0),
            (13.0, -40.0),
            (24.0, -40.0),
        ],
        truncated: false,
    }
}

fn keep(name: &str, pdf: &[u8]) {
    if let Ok(dir) = std::env::var("QI_REPORT_SAMPLES") {
        let _ = std::fs::write(std::path::Path::new(&dir).join(name), pdf);
    }
}

#[test]
fn a_certificate_report_has_its_charts_qr_code_and_page_numbers() {
    let mut c = sample();
    c.laboratory.name = "Prüflabor µ-Ω (Köln) Иванов".into();
    let mut second = c.runs[0].clone();
    second.run_id = "0b7c2a4e-9f1d-4c3b-8a2e-000000000002".into();
    c.runs.push(second);
    let charts: BTreeMap<String, RunCharts> = c
        .runs
        .iter()
        .map(|r| {
            (
                r.run_id.clone(),
                RunCharts {
                    iv: Some(iv(1000)),
                    chamber: Some(profile(86_400)),
                },
            )
        })
        .collect();
    let pdf = certificate::render(&c, "valid", &charts).expect("renders");
    keep("certificate.pdf", &pdf);
    let pages = super::pdf::tests::check_xref(&pdf);
    let s = String::from_utf8_lossy(&pdf);
    let count = s.matches("/Type /Page ").count();
    assert!(count >= 2, "{count} pages");
    assert_eq!(pages, 5 + 2 * count);
    assert!(s.contains(&format!("(page {count} of {count}) Tj")));
    assert!(
        s.contains("(Pr\\374flabor \\265-Ohm \\(K\\366ln\\) ??????) Tj"),
        "WinAnsi"
    );
    assert!(s.contains("(https://hub.example/api/v1/verify/QI-CERT-2026-000001) Tj"));
    assert!(s.contains("IV curve \\(stc, 1000 points\\)"));
    assert!(s.contains("Pmax "));
    assert!(s.contains("86400 readings drawn as the first, lowest, highest and last"));
    assert!(!s.contains("SIMULATED"));
    // The QR code: many filled rectangles in one path.
    assert!(s.matches(" re\n").count() > 100);
    // Downsampled: the file stays small although 2 x 86,400 points went in.
    assert!(pdf.len() < 400_000, "{} bytes", pdf.len());
}

#[test]
fn a_simulated_certificate_says_so_first() {
    let mut c = sample();
    c.simulated = true;
    c.warning = Some(SIMULATED_WARNING.into());
    c.runs[0].simulated = true;
    c.runs[0].time_scale = 60.0;
    let pdf = certificate::render(&c, "revoked", &BTreeMap::new()).expect("renders");
    keep("simulated.pdf", &pdf);
    let s = String::from_utf8_lossy(&pdf);
    assert!(s.contains("(SIMULATED: at least one run"));
    assert!(s.contains("This certificate is revoked"));
    assert!(s.contains("Run 1: SIMULATED stc-power"));
}
