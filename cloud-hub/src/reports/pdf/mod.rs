//! A small PDF 1.7 writer of our own: pages of text in the standard fonts
//! Helvetica and Helvetica-Bold (WinAnsiEncoding, nothing embedded),
//! lines, rectangles and paths. Enough for tables, charts and a QR code,
//! with no C library and no font files; `text` holds the encoding.
//!
//! Content streams are left uncompressed: they are small (charts are
//! downsampled), and the text stays greppable in the file.

pub mod metrics;
pub mod text;

pub use text::Font;

/// A4 in points.
pub const PAGE_W: f32 = 595.0;
pub const PAGE_H: f32 = 842.0;

/// An RGB colour, components 0..=1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rgb(pub f32, pub f32, pub f32);

pub const BLACK: Rgb = Rgb(0.0, 0.0, 0.0);
pub const GREY: Rgb = Rgb(0.55, 0.55, 0.55);
pub const LIGHT: Rgb = Rgb(0.88, 0.88, 0.88);

/// A number as content streams write it: few digits, no exponent.
fn n(v: f32) -> String {
    let v = if v.is_finite() { v } else { 0.0 };
    let s = format!("{v:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" || s.is_empty() {
        "0".into()
    } else {
        s.into()
    }
}

/// One page's content stream; coordinates from the bottom left, in points.
#[derive(Debug, Default, Clone)]
pub struct Page {
    ops: String,
}

impl Page {
    pub fn text(&mut self, x: f32, y: f32, font: Font, size: f32, s: &str) {
        self.text_colored(x, y, font, size, BLACK, s);
    }

    pub fn text_colored(&mut self, x: f32, y: f32, font: Font, size: f32, c: Rgb, s: &str) {
        let bytes = text::encode(s);
        if bytes.is_empty() {
            return;
        }
        self.ops.push_str(&format!(
            "BT {} {} {} rg /{} {} Tf {} {} Td {} Tj ET\n",
            n(c.0),
            n(c.1),
            n(c.2),
            font.resource(),
            n(size),
            n(x),
            n(y),
            text::literal(&bytes)
        ));
    }

    /// Text ending at `x` (right-aligned numbers, tick labels).
    pub fn text_right(&mut self, x: f32, y: f32, font: Font, size: f32, s: &str) {
        self.text(x - text::width(font, size, s), y, font, size, s);
    }

    pub fn text_center(&mut self, x: f32, y: f32, font: Font, size: f32, s: &str) {
        self.text(x - text::width(font, size, s) / 2.0, y, font, size, s);
    }

    /// Text turned a quarter to the left (a y axis's label), centred on y.
    pub fn text_vertical(&mut self, x: f32, y: f32, font: Font, size: f32, s: &str) {
        let bytes = text::encode(s);
        let y0 = y - text::width_bytes(font, size, &bytes) / 2.0;
        self.ops.push_str(&format!(
            "BT 0 0 0 rg /{} {} Tf 0 1 -1 0 {} {} Tm {} Tj ET\n",
            font.resource(),
            n(size),
            n(x),
            n(y0),
            text::literal(&bytes)
        ));
    }

    pub fn line(&mut self, x1: f32, y1: f32, x2: f32, y2: f32, width: f32, c: Rgb) {
        self.ops.push_str(&format!(
            "{} {} {} RG {} w {} {} m {} {} l S\n",
            n(c.0),
            n(c.1),
            n(c.2),
            n(width),
            n(x1),
            n(y1),
            n(x2),
            n(y2)
        ));
    }

    pub fn fill_rect(&mut self, x: f32, y: f32, w: f32, h: f32, c: Rgb) {
        self.ops.push_str(&format!(
            "{} {} {} rg {} {} {} {} re f\n",
            n(c.0),
            n(c.1),
            n(c.2),
            n(x),
            n(y),
            n(w),
            n(h)
        ));
    }

    pub fn stroke_rect(&mut self, x: f32, y: f32, w: f32, h: f32, width: f32, c: Rgb) {
        self.ops.push_str(&format!(
            "{} {} {} RG {} w {} {} {} {} re S\n",
            n(c.0),
            n(c.1),
            n(c.2),
            n(width),
            n(x),
            n(y),
            n(w),
            n(h)
        ));
    }

    /// Many black rectangles filled at once (the QR code's modules).
    pub fn fill_rects(&mut self, rects: &[(f32, f32, f32, f32)]) {
        if rects.is_empty() {
            return;
        }
        self.ops.push_str("0 0 0 rg\n");
        for (x, y, w, h) in rects {
            self.ops
                .push_str(&format!("{} {} {} {} re\n", n(*x), n(*y), n(*w), n(*h)));
        }
        self.ops.push_str("f\n");
    }

    /// An open path through the points, clipped to the box (x, y, w, h) so
    /// nothing strays outside a chart's plot area.
    pub fn polyline(&mut self, pts: &[(f32, f32)], width: f32, c: Rgb, clip: (f32, f32, f32, f32)) {
        let Some(first) = pts.first() else {
            return;
        };
        self.ops.push_str(&format!(
            "q {} {} {} {} re W n {} {} {} RG {} w 1 j {} {} m\n",
            n(clip.0),
            n(clip.1),
            n(clip.2),
            n(clip.3),
            n(c.0),
            n(c.1),
            n(c.2),
            n(width),
            n(first.0),
            n(first.1)
        ));
        for p in &pts[1..] {
            self.ops.push_str(&format!("{} {} l\n", n(p.0), n(p.1)));
        }
        self.ops.push_str("S Q\n");
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// The pages as one PDF file: catalog, page tree, the two fonts, an info
/// dictionary, each page and its content; a cross-reference table of
/// exact byte offsets.
pub fn write(pages: &[Page], title: &str) -> Vec<u8> {
    let mut out: Vec<u8> = Vec::new();
    let mut offsets: Vec<usize> = Vec::new();
    // Objects: 1 catalog, 2 pages, 3 F1, 4 F2, 5 info, then page/content pairs.
    let page_obj = |i: usize| 6 + 2 * i;
    let mut obj = |out: &mut Vec<u8>, body: &[u8]| {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n", offsets.len()).as_bytes());
        out.extend_from_slice(body);
        out.extend_from_slice(b"\nendobj\n");
    };
    out.extend_from_slice(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n");
    obj(&mut out, b"<< /Type /Catalog /Pages 2 0 R >>");
    let kids: Vec<String> = (0..pages.len())
        .map(|i| format!("{} 0 R", page_obj(i)))
        .collect();
    obj(
        &mut out,
        format!(
            "<< /Type /Pages /Kids [{}] /Count {} >>",
            kids.join(" "),
            pages.len()
        )
        .as_bytes(),
    );
    for base in ["Helvetica", "Helvetica-Bold"] {
        obj(
            &mut out,
            format!(
                "<< /Type /Font /Subtype /Type1 /BaseFont /{base} /Encoding /WinAnsiEncoding >>"
            )
            .as_bytes(),
        );
    }
    obj(
        &mut out,
        format!(
            "<< /Title {} /Producer (cloud-hub {}) >>",
            text::literal(&text::encode(title)),
            env!("CARGO_PKG_VERSION")
        )
        .as_bytes(),
    );
    for (i, p) in pages.iter().enumerate() {
        obj(
            &mut out,
            format!(
                "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {} {}] \
                 /Resources << /Font << /F1 3 0 R /F2 4 0 R >> >> /Contents {} 0 R >>",
                n(PAGE_W),
                n(PAGE_H),
                page_obj(i) + 1
            )
            .as_bytes(),
        );
        let mut body = format!("<< /Length {} >>\nstream\n", p.ops.len()).into_bytes();
        body.extend_from_slice(p.ops.as_bytes());
        body.extend_from_slice(b"\nendstream");
        obj(&mut out, &body);
    }
    let xref = out.len();
    out.extend_from_slice(
        format!("xref\n0 {}\n0000000000 65535 f \n", offsets.len() + 1).as_bytes(),
    );
    for o in &offsets {
        out.extend_from_slice(format!("{o:010} 00000 n \n").as_bytes());
    }
    out.extend_from_slice(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R /Info 5 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            offsets.len() + 1
        )
        .as_bytes(),
    );
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Every xref entry points at its own `N 0 obj`, and startxref at the
    /// table (byte offsets: the header's binary comment is not UTF-8).
    pub(crate) fn check_xref(pdf: &[u8]) -> usize {
        let at = |off: usize, what: &str| {
            pdf.get(off..)
                .is_some_and(|t| t.starts_with(what.as_bytes()))
        };
        let tail = String::from_utf8_lossy(&pdf[pdf.len().saturating_sub(64)..]).into_owned();
        let start: usize = tail
            .rsplit("startxref\n")
            .next()
            .and_then(|t| t.lines().next())
            .and_then(|t| t.parse().ok())
            .expect("startxref");
        assert!(at(start, "xref\n"), "startxref points at the table");
        let table = String::from_utf8_lossy(&pdf[start..]).into_owned();
        let mut lines = table.lines().skip(1);
        let count: usize = lines
            .next()
            .and_then(|h| h.split(' ').nth(1))
            .and_then(|c| c.parse().ok())
            .expect("xref header");
        lines.next();
        for i in 1..count {
            let off: usize = lines.next().expect("entry")[..10].parse().expect("offset");
            assert!(at(off, &format!("{i} 0 obj\n")), "object {i} at {off}");
        }
        count - 1
    }

    #[test]
    fn the_cross_reference_table_points_at_every_object() {
        let mut p = Page::default();
        p.text(50.0, 800.0, Font::Bold, 12.0, "Report (draft) \\ 25 °C");
        p.line(50.0, 790.0, 545.0, 790.0, 0.5, BLACK);
        let pdf = write(&[p.clone(), p], "a (title)");
        assert_eq!(check_xref(&pdf), 5 + 2 * 2);
        let s = String::from_utf8_lossy(&pdf);
        assert!(s.contains("(Report \\(draft\\) \\\\ 25 \\260C) Tj"), "{s}");
        assert!(s.contains("/Count 2"));
        assert!(s.ends_with("%%EOF\n"));
    }

    #[test]
    fn numbers_are_short_and_never_exponents() {
        assert_eq!(n(1.0), "1");
        assert_eq!(n(0.5), "0.5");
        assert_eq!(n(-0.001), "0");
        assert_eq!(n(1e-9), "0");
        assert_eq!(n(f32::NAN), "0");
        assert_eq!(n(123.456), "123.46");
    }
}
