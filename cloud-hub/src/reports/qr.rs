//! The certificate's verification URL as a QR code (the `qrcode` crate,
//! pure Rust, no image features): drawn as vector squares in a PDF, or
//! served alone as SVG. Error correction M (15 %): a printed page that is
//! a little worn still scans.

use super::ReportError;
use super::pdf::Page;
use qrcode::{Color, EcLevel, QrCode};

/// The quiet zone QR readers need, in modules, on each side.
const QUIET: usize = 4;

/// The modules, row by row from the top: (side, dark?).
pub fn modules(url: &str) -> Result<(usize, Vec<bool>), ReportError> {
    let code = QrCode::with_error_correction_level(url.as_bytes(), EcLevel::M)
        .map_err(|e| ReportError::Invalid(format!("QR code of {url:?}: {e}")))?;
    let side = code.width();
    let dark = code
        .to_colors()
        .into_iter()
        .map(|c| c == Color::Dark)
        .collect();
    Ok((side, dark))
}

/// Runs of dark modules per row, as (row, first column, length): one
/// rectangle per run keeps the drawing small.
fn runs(side: usize, dark: &[bool]) -> Vec<(usize, usize, usize)> {
    let mut out = Vec::new();
    for r in 0..side {
        let mut c = 0;
        while c < side {
            if dark[r * side + c] {
                let start = c;
                while c < side && dark[r * side + c] {
                    c += 1;
                }
                out.push((r, start, c - start));
            } else {
                c += 1;
            }
        }
    }
    out
}

/// Draws the code with its quiet zone in a square of `size` points whose
/// top left corner is (x, top).
pub fn draw(page: &mut Page, url: &str, x: f32, top: f32, size: f32) -> Result<(), ReportError> {
    let (side, dark) = modules(url)?;
    let m = size / (side + 2 * QUIET) as f32;
    let rects: Vec<(f32, f32, f32, f32)> = runs(side, &dark)
        .into_iter()
        .map(|(r, c, len)| {
            (
                x + (QUIET + c) as f32 * m,
                top - (QUIET + r + 1) as f32 * m,
                len as f32 * m,
                m,
            )
        })
        .collect();
    page.fill_rects(&rects);
    Ok(())
}

/// The code as an SVG image (one path), `scale` pixels per module.
pub fn svg(url: &str, scale: usize) -> Result<String, ReportError> {
    let (side, dark) = modules(url)?;
    let total = (side + 2 * QUIET) * scale;
    let mut path = String::new();
    for (r, c, len) in runs(side, &dark) {
        path.push_str(&format!(
            "M{} {}h{}v{}h-{}z",
            (QUIET + c) * scale,
            (QUIET + r) * scale,
            len * scale,
            scale,
            len * scale
        ));
    }
    Ok(format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"{total}\" height=\"{total}\" \
         viewBox=\"0 0 {total} {total}\" shape-rendering=\"crispEdges\">\
         <rect width=\"{total}\" height=\"{total}\" fill=\"#fff\"/>\
         <path fill=\"#000\" d=\"{path}\"/></svg>\n"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_cover_exactly_the_dark_modules() {
        let (side, dark) =
            modules("https://verify.example/api/v1/verify/QI-CERT-2026-000001").expect("qr");
        let mut seen = vec![false; side * side];
        for (r, c, len) in runs(side, &dark) {
            for k in c..c + len {
                assert!(!seen[r * side + k]);
                seen[r * side + k] = true;
            }
        }
        assert_eq!(seen, dark);
        let s = svg("https://x.example/v/1", 4).expect("svg");
        assert!(s.starts_with("<?xml") && s.contains("<path fill=\"#000\" d=\"M"));
    }
}
