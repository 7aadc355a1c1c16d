//! Looking at the hub's PDF reports as a person would, with tools nobody
//! here wrote (Debian's poppler-utils, zbar-tools and qpdf, installed by
//! scripts/setup-test-peers.sh): the text as pdftotext reads it, every page
//! rendered to PNG by pdftoppm, the QR code decoded by zbarimg from the
//! rendered page, and the ink inside a chart counted on a rendered page.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

fn tool(name: &str, package: &str) -> Result<Command> {
    if Command::new(name).arg("-v").output().is_err() {
        bail!("{name} missing: run scripts/setup-test-peers.sh (Debian package {package})");
    }
    Ok(Command::new(name))
}

fn run(mut c: Command) -> Result<(bool, String, String)> {
    let out = c.output().with_context(|| format!("{c:?}"))?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// `pdftotext -layout`: the text, and what poppler complained about.
pub fn text(pdf: &Path) -> Result<(String, String)> {
    let mut c = tool("pdftotext", "poppler-utils")?;
    c.arg("-layout").arg(pdf).arg("-");
    let (ok, out, err) = run(c)?;
    anyhow::ensure!(ok, "pdftotext failed: {err}");
    Ok((out, err))
}

/// `qpdf --check`: (clean, output).
pub fn qpdf_check(pdf: &Path) -> Result<(bool, String)> {
    let mut c = tool("qpdf", "qpdf")?;
    c.arg("--check").arg(pdf);
    let (ok, out, err) = run(c)?;
    Ok((ok, format!("{out}{err}")))
}

/// Every page as a PNG at `dpi` (`pdftoppm -png`), in page order.
pub fn pngs(pdf: &Path, dpi: u32) -> Result<Vec<PathBuf>> {
    let dir = pdf.with_extension("pages");
    std::fs::create_dir_all(&dir)?;
    let mut c = tool("pdftoppm", "poppler-utils")?;
    c.arg("-png")
        .arg("-r")
        .arg(dpi.to_string())
        .arg(pdf)
        .arg(dir.join("p"));
    let (ok, _, err) = run(c)?;
    anyhow::ensure!(ok, "pdftoppm failed: {err}");
    let mut out: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "png"))
        .collect();
    // p-1.png .. p-N.png, zero-padded by pdftoppm to the same width.
    out.sort();
    Ok(out)
}

/// The QR codes zbarimg finds in an image, as their decoded text.
pub fn qr_codes(png: &Path) -> Result<Vec<String>> {
    let mut c = tool("zbarimg", "zbar-tools")?;
    c.arg("--raw").arg("-q").arg(png);
    let (_, out, _) = run(c)?;
    Ok(out.lines().map(str::to_string).collect())
}

/// One page at 72 dpi (a pixel per point) as RGB: (width, height, pixels).
pub fn page_rgb(pdf: &Path, page: usize) -> Result<(usize, usize, Vec<u8>)> {
    let mut c = tool("pdftoppm", "poppler-utils")?;
    let p = page.to_string();
    c.args(["-r", "72", "-f", &p, "-l", &p]).arg(pdf);
    let out = c.output()?;
    anyhow::ensure!(out.status.success(), "pdftoppm failed");
    parse_ppm(&out.stdout)
}

fn parse_ppm(b: &[u8]) -> Result<(usize, usize, Vec<u8>)> {
    // "P6\n<w> <h>\n255\n" then the pixels.
    let mut fields = Vec::new();
    let mut i = 0;
    while fields.len() < 4 {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        let s = i;
        while i < b.len() && !b[i].is_ascii_whitespace() {
            i += 1;
        }
        fields.push(String::from_utf8_lossy(&b[s..i]).into_owned());
    }
    anyhow::ensure!(fields[0] == "P6", "not a binary PPM");
    let (w, h): (usize, usize) = (fields[1].parse()?, fields[2].parse()?);
    let px = b.get(i + 1..).context("pixels")?.to_vec();
    anyhow::ensure!(px.len() >= w * h * 3, "short PPM");
    Ok((w, h, px))
}

/// Where pdftotext puts a word on a page (`-bbox`): (page from 1, xMin,
/// yMin, yMax) of the first word equal to `word` after the words `after`.
pub fn word_box(pdf: &Path, after: &str, word: &str) -> Result<Option<(usize, f64, f64, f64)>> {
    let mut c = tool("pdftotext", "poppler-utils")?;
    c.arg("-bbox").arg(pdf).arg("-");
    let (ok, out, err) = run(c)?;
    anyhow::ensure!(ok, "pdftotext -bbox failed: {err}");
    let (mut page, mut prev) = (0, String::new());
    for line in out.lines() {
        let l = line.trim();
        if l.starts_with("<page ") {
            page += 1;
            continue;
        }
        let Some(rest) = l.strip_prefix("<word ") else {
            continue;
        };
        let text = rest
            .split('>')
            .nth(1)
            .and_then(|t| t.split('<').next())
            .unwrap_or("");
        let attr = |k: &str| -> Option<f64> {
            rest.split(&format!("{k}=\""))
                .nth(1)?
                .split('"')
                .next()?
                .parse()
                .ok()
        };
        if text == word && prev == after {
            return Ok(Some((
                page,
                attr("xMin").unwrap_or(0.0),
                attr("yMin").unwrap_or(0.0),
                attr("yMax").unwrap_or(0.0),
            )));
        }
        prev = text.to_string();
    }
    Ok(None)
}

/// Pixels in the box (x0, y0)-(x1, y1) for which `pred(r, g, b)` holds.
pub fn count(
    (w, h, px): &(usize, usize, Vec<u8>),
    (x0, y0, x1, y1): (usize, usize, usize, usize),
    pred: impl Fn(u8, u8, u8) -> bool,
) -> usize {
    let mut n = 0;
    for y in y0.min(*h)..y1.min(*h) {
        for x in x0.min(*w)..x1.min(*w) {
            let i = (y * w + x) * 3;
            if pred(px[i], px[i + 1], px[i + 2]) {
                n += 1;
            }
        }
    }
    n
}
