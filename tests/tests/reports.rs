//! PDF reports (issue #15) from a real hub, looked at as a person would
//! with tools nobody here wrote: a certificate issued for a passing STC
//! run with a swept IV curve, a simulated one, and a damp-heat run with
//! its chamber record. pdftotext reads the texts (serial, verdicts,
//! criteria explanations, Pmax, the verification URL, SIMULATED), qpdf
//! checks the structure, pdftoppm renders every page to PNG, zbarimg
//! decodes the QR code from the rendered page to exactly the verification
//! URL, and the rendered charts carry ink where the curves are.

use anyhow::{Context, Result};
use cloud_hub::identity::Role;
use e2e_tests::Stack;
use e2e_tests::certs::{IssuingPki, T0, evaluated, login, send, uuid, write};
use e2e_tests::hub_auth::{admin_token, call, new_key};
use e2e_tests::pdf;
use e2e_tests::runs::Run;
use qi_proto::v1::RunEventKind;
use reqwest::Method;
use serde_json::json;
use std::path::Path;

/// An STC run whose sweep has 150 points (Isc 9.8 A, Voc 48 V) and whose
/// recorded Pmax is `pmax`.
fn stc_swept(run: &mut Run, sample: &str, pmax: f64, time_scale: f64) -> Result<()> {
    run.start(
        "stc-power",
        sample,
        "erin",
        &[("rated_pmax", 400.0)],
        time_scale,
    )?;
    run.event(RunEventKind::StepStarted, "0")
        .reading(
            "conditions.irradiance",
            "refcell",
            "irradiance",
            "W/m2",
            1001.0,
        )
        .reading(
            "conditions.cell_temperature",
            "module",
            "temperature",
            "Cel",
            25.3,
        )
        .event(RunEventKind::StepFinished, "0")
        .event(RunEventKind::StepStarted, "1");
    for k in 0..150 {
        let v = 48.0 * f64::from(k) / 149.0;
        let i = 9.8 * (1.0 - ((v - 48.0) / 3.2).exp());
        run.reading("stc.curve", "smu", "voltage", "V", v).reading(
            "stc.curve",
            "smu",
            "current",
            "A",
            i,
        );
    }
    for (m, unit, v) in [
        ("isc", "A", 9.8),
        ("voc", "V", 48.0),
        ("imp", "A", 9.3),
        ("vmp", "V", pmax / 9.3),
        ("pmax", "W", pmax),
        ("ff", "%", 80.0),
    ] {
        run.reading(&format!("stc.{m}"), "smu", m, unit, v);
    }
    run.event(RunEventKind::StepFinished, "1")
        .event(RunEventKind::Completed, "");
    Ok(())
}

/// A damp-heat run: the chamber set to 85 °C, recorded every 5 min while
/// it heats and holds, then set to 25 °C.
fn damp_heat(run: &mut Run, sample: &str) -> Result<()> {
    run.start("dh1000", sample, "erin", &[("area_m2", 1.6)], 1.0)?;
    run.event(RunEventKind::StepStarted, "0")
        .event(RunEventKind::StepFinished, "0");
    let mut t = 23.0;
    for _ in 0..60 {
        t += (85.0 - t) * 0.15;
        run.reading("chamber_temperature", "chamber", "temperature", "Cel", t)
            .wait_s(300);
    }
    run.event(RunEventKind::StepStarted, "5")
        .event(RunEventKind::StepFinished, "5");
    for _ in 0..30 {
        t += (25.0 - t) * 0.15;
        run.reading("chamber_temperature", "chamber", "temperature", "Cel", t)
            .wait_s(300);
    }
    run.event(RunEventKind::Completed, "");
    Ok(())
}

async fn fetch(url: &str, token: Option<&str>) -> Result<(u16, String, String, Vec<u8>)> {
    let mut r = reqwest::Client::new().get(url);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let r = r.send().await?;
    let h = |k: &str| {
        r.headers()
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let (ct, cd) = (h("content-type"), h("content-disposition"));
    Ok((r.status().as_u16(), ct, cd, r.bytes().await?.to_vec()))
}

/// Blue ink (the charts' measured lines) and orange (the setpoint) in
/// the plot under the chart titled `first second`.
fn chart_ink(file: &Path, first: &str, second: &str) -> Result<(usize, usize)> {
    let (page, _, _, y_max) = pdf::word_box(file, first, second)?
        .with_context(|| format!("no chart titled {first} {second}"))?;
    let img = pdf::page_rgb(file, page)?;
    let area = (101, y_max as usize + 12, 544, y_max as usize + 180);
    let blue = pdf::count(&img, area, |r, g, b| b > 150 && r < 90 && g < 130);
    let orange = pdf::count(&img, area, |r, g, b| {
        r > 200 && (80..170).contains(&g) && b < 80
    });
    Ok((blue, orange))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_read_right_render_and_carry_a_qr_code_of_the_verification_url() -> Result<()> {
    let mut stack = Stack::new().await?;
    let dir = stack.dir.path().to_path_buf();
    let pki = IssuingPki::new(&dir, "lab")?;
    stack.hub_after = pki.hub_table(
        "lab_name = \"Prüflabor Köln (µ-Ω)\"\nlab_country = \"DE\"\nid_prefix = \"LAB-R\"\n\
         verify_base_url = \"https://verify.example/qi\"",
    );
    stack.start_hub().await?;
    let url = stack.hub_url();
    let admin = admin_token(&stack);
    let viewer = new_key(&stack, Role::Viewer, None).await?;
    let operator = new_key(&stack, Role::Operator, None).await?;
    let erin = login(&url, &admin, "erin", "engineer").await?;

    let (s, sr) = call(
        Method::POST,
        &format!("{url}/api/v1/service-requests"),
        Some(&operator),
        Some(
            &json!({"customer": "Solar (Nord) GmbH", "module_type": "SG-400M",
                     "protocols": ["stc-power", "dh1000"]}),
        ),
    )
    .await?;
    assert_eq!(s, 201, "{sr}");
    let sr_id = sr["request_id"].as_str().context("id")?.to_string();
    for serial in ["MOD-P", "MOD-S", "MOD-D"] {
        let (s, v) = call(
            Method::POST,
            &format!("{url}/api/v1/service-requests/{sr_id}/samples"),
            Some(&operator),
            Some(&json!({"serial_number": serial})),
        )
        .await?;
        assert_eq!(s, 201, "{v}");
    }
    let (pass, sim, dh) = (uuid(1), uuid(2), uuid(3));
    let mut r = Run::new(&pass, 1, T0);
    stc_swept(&mut r, "sample:MOD-P", 395.0, 1.0)?;
    send(&stack, &r).await?;
    let mut r = Run::new(&sim, 1000, T0);
    stc_swept(&mut r, "sample:MOD-S", 399.0, 60.0)?;
    send(&stack, &r).await?;
    let mut r = Run::new(&dh, 2000, T0);
    damp_heat(&mut r, "sample:MOD-D")?;
    send(&stack, &r).await?;
    for id in [&pass, &sim, &dh] {
        evaluated(&url, &viewer, id, |_| true).await?;
    }
    let certs = format!("{url}/api/v1/certificates");
    let (s, v) = call(
        Method::POST,
        &certs,
        Some(&erin),
        Some(&json!({"sample": "sample:MOD-P"})),
    )
    .await?;
    assert_eq!(s, 201, "{v}");
    let id = v["certificate"]["certificate_id"]
        .as_str()
        .context("id")?
        .to_string();
    let (s, v) = call(
        Method::POST,
        &certs,
        Some(&erin),
        Some(&json!({"sample": "sample:MOD-S", "allow_simulated": true})),
    )
    .await?;
    assert_eq!(s, 201, "{v}");
    let sim_id = v["certificate"]["certificate_id"]
        .as_str()
        .context("id")?
        .to_string();
    let verify_url = format!("https://verify.example/qi/api/v1/verify/{id}");
    let mirror: serde_json::Value = serde_json::from_slice(
        &fetch(&format!("{certs}/{id}/document.json"), Some(&viewer))
            .await?
            .3,
    )?;

    // The certificate's PDF, as a viewer fetches it.
    let (s, ct, cd, body) = fetch(&format!("{certs}/{id}/report.pdf"), Some(&viewer)).await?;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(ct, "application/pdf");
    assert_eq!(cd, format!("attachment; filename=\"{id}.report.pdf\""));
    assert!(body.starts_with(b"%PDF-1.7"));
    let file = write(&dir, "cert.pdf", &body)?;
    let (ok, out) = pdf::qpdf_check(&file)?;
    assert!(ok, "qpdf --check: {out}");
    let (text, complaints) = pdf::text(&file)?;
    assert!(complaints.trim().is_empty(), "poppler: {complaints}");
    let explanation = mirror["runs"][0]["criteria"][2]["explanation"]
        .as_str()
        .context("an explanation")?;
    // A table cell wraps: every word of the explanation is there.
    for word in explanation.split_whitespace() {
        assert!(
            text.contains(word),
            "{word:?} of {explanation:?} missing in:\n{text}"
        );
    }
    for part in [
        &format!("Test certificate {id}"),
        "Prüflabor Köln (µ-Ohm)",
        "Solar (Nord) GmbH",
        "serial number MOD-P",
        "Run 1: stc-power",
        "verdict PASS",
        "pmax-rated",
        "395",
        "Pmax",
        &verify_url,
        &pass,
        "IV curve (stc, 150 points)",
        "the signed XML document",
        "page 1 of",
    ] {
        assert!(text.contains(part), "{part:?} missing in:\n{text}");
    }
    assert!(!text.contains("SIMULATED"), "{text}");
    let pages = pdf::pngs(&file, 100)?;
    assert!(!pages.is_empty());
    for p in &pages {
        assert!(
            std::fs::metadata(p)?.len() > 1000,
            "{} rendered",
            p.display()
        );
    }
    assert_eq!(
        pdf::qr_codes(&pages[0])?,
        vec![verify_url.clone()],
        "zbarimg reads the verification URL from the rendered first page"
    );
    let (blue, _) = chart_ink(&file, "IV", "curve")?;
    assert!(blue > 150, "the IV curve is drawn: {blue} blue pixels");

    // The simulated certificate says so.
    let (s, _, _, body) = fetch(&format!("{certs}/{sim_id}/report.pdf"), Some(&viewer)).await?;
    assert_eq!(s, 200);
    let file = write(&dir, "sim.pdf", &body)?;
    let (text, _) = pdf::text(&file)?;
    assert!(text.contains("SIMULATED: at least one run"), "{text}");
    assert!(text.contains("Run 1: SIMULATED stc-power"), "{text}");

    // The QR code alone: public, SVG; an unknown id 404, a bad one 400.
    let (s, ct, _, svg) = fetch(&format!("{certs}/{id}/qr.svg"), None).await?;
    assert_eq!((s, ct.as_str()), (200, "image/svg+xml"));
    assert!(String::from_utf8(svg)?.contains("<svg"));
    let (s, _, _, _) = fetch(&format!("{certs}/LAB-R-1999-000009/qr.svg"), None).await?;
    assert_eq!(s, 404);
    let (s, _, _, _) = fetch(&format!("{certs}/lower/qr.svg"), None).await?;
    assert_eq!(s, 400);
    // The PDF needs a login; an unknown certificate is 404.
    let (s, _, _, _) = fetch(&format!("{certs}/{id}/report.pdf"), None).await?;
    assert_eq!(s, 401);
    let (s, _, _, _) = fetch(
        &format!("{certs}/LAB-R-1999-000009/report.pdf"),
        Some(&viewer),
    )
    .await?;
    assert_eq!(s, 404);

    // The damp-heat run's PDF: the chamber against its setpoint.
    let runs = format!("{url}/api/v1/runs");
    let (s, ct, cd, body) = fetch(&format!("{runs}/{dh}/report.pdf"), Some(&viewer)).await?;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(ct, "application/pdf");
    assert_eq!(cd, format!("attachment; filename=\"run-{dh}.report.pdf\""));
    let file = write(&dir, "dh.pdf", &body)?;
    let (ok, out) = pdf::qpdf_check(&file)?;
    assert!(ok, "qpdf --check: {out}");
    let (text, _) = pdf::text(&file)?;
    for part in [
        "Protocol run: dh1000",
        "sample:MOD-D",
        "Chamber profile (chamber_temperature, 90 readings)",
        "setpoint (from the template's steps)",
        "temperature [°C]",
        "Event timeline",
        "step_started",
        "pmax-degradation",
    ] {
        assert!(text.contains(part), "{part:?} missing in:\n{text}");
    }
    assert!(!pdf::pngs(&file, 100)?.is_empty());
    let (blue, orange) = chart_ink(&file, "Chamber", "profile")?;
    assert!(blue > 150, "the chamber temperature is drawn: {blue}");
    assert!(orange > 150, "the setpoint is drawn: {orange}");

    // The passing run's PDF: its evaluation, approval line and IV curve.
    let (s, _, _, body) = fetch(&format!("{runs}/{pass}/report.pdf"), Some(&viewer)).await?;
    assert_eq!(s, 200);
    let file = write(&dir, "pass.pdf", &body)?;
    let (text, _) = pdf::text(&file)?;
    for part in [
        "Protocol run: stc-power",
        "PASS",
        "pmax-rated",
        "rated_pmax = 400",
        "IV curve",
    ] {
        assert!(text.contains(part), "{part:?} missing in:\n{text}");
    }
    let (s, _, _, _) = fetch(&format!("{runs}/{}/report.pdf", uuid(99)), Some(&viewer)).await?;
    assert_eq!(s, 404);
    Ok(())
}
