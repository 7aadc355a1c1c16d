//! The certificate's PDF: what the signed JSON mirror says (laboratory,
//! item, customer, each run's protocol, verdict, criteria with their
//! explanations, instruments, measured values), the runs' IV curves and
//! chamber profiles, the QR code of the verification URL, and a note that
//! the signed documents, not this rendering, are the certificate.

use super::data::RunCharts;
use super::layout::{Column, Doc, MARGIN, RED, WIDTH};
use super::pdf::{Font, text};
use super::{ReportError, figures, qr};
use crate::certificates::document::{Certificate, RunResult};
use std::collections::BTreeMap;

pub const RENDERING_NOTE: &str = "This PDF is a rendering of the certificate for people to read. \
The certificate itself is the signed XML document (document.xml, XMLDSig) and its JSON mirror \
(document.json with the detached JWS document.jws): verify those, or ask the verification URL, not this file.";

/// A number as a person reads it: shortest round-trip form.
pub fn num(v: f64) -> String {
    if v.is_finite() {
        format!("{v}")
    } else {
        "-".into()
    }
}

fn unit(u: &str) -> &str {
    match u {
        "Cel" | "degC" => "°C",
        "uA" => "µA",
        "1" => "",
        other => other,
    }
}

/// `state`: the certificate's state when rendered (valid, revoked,
/// superseded), shown when it is not valid.
pub fn render(
    c: &Certificate,
    state: &str,
    charts: &BTreeMap<String, RunCharts>,
) -> Result<Vec<u8>, ReportError> {
    let mut d = Doc::new(
        &format!("Test certificate {}", c.id),
        &format!(
            "{} - {} - issued {} - a rendering: the signed XML/JSON are the certificate",
            c.id, c.laboratory.name, c.issued_at
        ),
    );
    d.title(&format!("Test certificate {}", c.id));
    d.paragraph_styled(&c.laboratory.name, Font::Bold, 11.0, super::pdf::BLACK);
    if let Some(w) = &c.warning {
        d.warning(w);
    }
    if state != "valid" {
        d.warning(&format!(
            "This certificate is {state}: check its status at the verification URL."
        ));
    }
    verification_band(&mut d, c)?;
    d.heading("Certificate");
    let mut rows = vec![
        ("Certificate id", c.id.clone()),
        ("UUID", c.uuid.clone()),
        ("Kind", c.kind.clone()),
        ("Issued", c.issued_at.clone()),
        (
            "Valid until",
            format!("{} ({} days)", c.expires_at, c.validity_days),
        ),
        (
            "Performance",
            format!("{} to {}", c.begin_performance_date, c.end_performance_date),
        ),
        (
            "Laboratory",
            format!("{} ({})", c.laboratory.name, c.laboratory.country),
        ),
        (
            "Customer",
            format!(
                "{} (service request {})",
                c.customer.name, c.customer.service_request
            ),
        ),
        (
            "Item",
            format!(
                "PV module {}, serial number {} ({})",
                c.item.module_type, c.item.serial_number, c.item.sample_id
            ),
        ),
        (
            "Responsible persons",
            c.responsible_persons
                .iter()
                .map(|p| format!("{} ({})", p.name, p.role))
                .collect::<Vec<_>>()
                .join(", "),
        ),
        (
            "Software",
            format!("{} {}", c.software.name, c.software.release),
        ),
    ];
    if let Some(old) = &c.supersedes {
        rows.push(("Supersedes", old.clone()));
    }
    d.pairs(&rows);
    d.paragraph(RENDERING_NOTE);
    for (i, r) in c.runs.iter().enumerate() {
        run(&mut d, i + 1, r, charts.get(&r.run_id));
        if d.is_full() {
            break;
        }
    }
    Ok(d.finish())
}

/// The QR code on the right, the URL and how to verify on the left.
fn verification_band(d: &mut Doc, c: &Certificate) -> Result<(), ReportError> {
    const QR: f32 = 110.0;
    let Some(top) = d.take(QR + 4.0) else {
        return Ok(());
    };
    let p = d.page();
    qr::draw(p, &c.verification_url, MARGIN + WIDTH - QR, top, QR)?;
    let w = WIDTH - QR - 10.0;
    let mut y = top - 14.0;
    p.text(MARGIN, y, Font::Bold, 10.0, "Verify this certificate");
    y -= 14.0;
    for line in text::wrap(Font::Regular, 9.0, &c.verification_url, w) {
        p.text_colored(MARGIN, y, Font::Regular, 9.0, super::chart::BLUE, &line);
        y -= 11.5;
    }
    y -= 4.0;
    for line in text::wrap(
        Font::Regular,
        8.0,
        "Scan the code or open the URL: the hub answers whether the certificate is valid, \
         revoked, superseded or expired. Offline: cloud-hub certificate verify with the \
         bundle and the laboratory's CA certificate.",
        w,
    ) {
        p.text(MARGIN, y, Font::Regular, 8.0, &line);
        y -= 10.0;
    }
    Ok(())
}

fn run(d: &mut Doc, n: usize, r: &RunResult, charts: Option<&RunCharts>) {
    let sim = if r.simulated { "SIMULATED " } else { "" };
    d.heading(&format!(
        "Run {n}: {sim}{} {} - verdict {}",
        r.protocol_id,
        r.protocol_version,
        r.verdict.to_uppercase()
    ));
    if r.simulated {
        d.paragraph_styled(
            &format!(
                "SIMULATED: this run ran {}x faster than real time; it is not a real test of the item.",
                num(r.time_scale)
            ),
            Font::Bold,
            9.0,
            RED,
        );
    }
    let mut rows = vec![
        ("Run id", r.run_id.clone()),
        (
            "Bench, gateway",
            format!("{} on {}", r.bench_id, r.gateway_id),
        ),
        ("Operator", r.operator.clone()),
        ("Performed", format!("{} to {}", r.started_at, r.ended_at)),
        ("Time scale", num(r.time_scale)),
        ("Template SHA-256", r.template_sha256.clone()),
        (
            "Evaluation",
            format!("{}: verdict {}", r.evaluation_id, r.verdict),
        ),
    ];
    if let Some(a) = &r.approval {
        rows.push((
            "Approved",
            format!("by {} at {}: {}", a.decided_by, a.decided_at, a.comment),
        ));
    }
    d.pairs(&rows);
    let criteria: Vec<Vec<String>> = r
        .criteria
        .iter()
        .map(|c| {
            let checks = c
                .checks
                .iter()
                .map(|k| {
                    format!(
                        "{} = {} {} {} = {} {}: {}",
                        k.computed,
                        num(k.value),
                        k.op,
                        k.limit_expr,
                        num(k.limit),
                        unit(&c.unit),
                        if k.holds { "holds" } else { "does not hold" }
                    )
                })
                .collect::<Vec<_>>()
                .join("; ");
            vec![
                c.id.clone(),
                c.verdict.clone(),
                format!("{} {}", c.description, c.explanation),
                checks,
            ]
        })
        .collect();
    d.table(
        &[
            Column {
                title: "Criterion",
                share: 1.2,
            },
            Column {
                title: "Verdict",
                share: 0.7,
            },
            Column {
                title: "Explanation",
                share: 3.0,
            },
            Column {
                title: "Checks",
                share: 2.4,
            },
        ],
        &criteria,
    );
    if !r.instruments.is_empty() {
        let rows: Vec<Vec<String>> = r
            .instruments
            .iter()
            .map(|i| {
                vec![
                    i.device_id.clone(),
                    i.twin_id.clone(),
                    i.calibration.clone(),
                ]
            })
            .collect();
        d.table(
            &[
                Column {
                    title: "Instrument",
                    share: 1.0,
                },
                Column {
                    title: "Twin",
                    share: 1.3,
                },
                Column {
                    title: "Calibration",
                    share: 3.0,
                },
            ],
            &rows,
        );
    }
    if !r.measured.is_empty() {
        let rows: Vec<Vec<String>> = r
            .measured
            .iter()
            .map(|q| {
                let unc = q
                    .uncertainty
                    .as_ref()
                    .map(|u| format!("U = {} (k = {})", num(u.expanded), num(u.coverage_factor)))
                    .unwrap_or_else(|| "none known".into());
                vec![q.name.clone(), num(q.value), unit(&q.unit).to_string(), unc]
            })
            .collect();
        d.table(
            &[
                Column {
                    title: "Measured value",
                    share: 2.0,
                },
                Column {
                    title: "Value",
                    share: 1.2,
                },
                Column {
                    title: "Unit",
                    share: 0.8,
                },
                Column {
                    title: "Uncertainty",
                    share: 1.5,
                },
            ],
            &rows,
        );
    }
    if let Some(ch) = charts {
        if let Some(iv) = &ch.iv {
            figures::iv(d, iv);
        }
        if let Some(p) = &ch.chamber {
            figures::chamber(d, p);
        }
    }
}
