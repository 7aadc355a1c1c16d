//! Flowing a report onto A4 pages: headings, wrapped paragraphs, key/value
//! blocks, tables whose rows wrap and whose header repeats on each page,
//! boxes for charts, and a footer with "page X of Y" on every page. At
//! [`MAX_PAGES`] the report stops and says so on its last page.

use super::MAX_PAGES;
use super::pdf::{self, BLACK, Font, GREY, LIGHT, PAGE_H, PAGE_W, Page, Rgb, text};

pub const MARGIN: f32 = 50.0;
const TOP: f32 = PAGE_H - 50.0;
/// Above this, the footer.
const BOTTOM: f32 = 60.0;
pub const WIDTH: f32 = PAGE_W - 2.0 * MARGIN;
const BODY: f32 = 9.0;
const LEADING: f32 = 11.5;
pub const RED: Rgb = Rgb(0.75, 0.05, 0.05);

/// A table column: its header and its share of the width.
pub struct Column<'a> {
    pub title: &'a str,
    pub share: f32,
}

pub struct Doc {
    pages: Vec<Page>,
    y: f32,
    /// Left in the footer of every page (the report's id).
    footer: String,
    title: String,
    /// The page cap was reached: nothing more is drawn.
    full: bool,
}

impl Doc {
    pub fn new(title: &str, footer: &str) -> Doc {
        Doc {
            pages: vec![Page::default()],
            y: TOP,
            footer: footer.into(),
            title: title.into(),
            full: false,
        }
    }

    pub fn page(&mut self) -> &mut Page {
        let last = self.pages.len() - 1;
        &mut self.pages[last]
    }

    /// The page cap was reached (the caller may stop gathering rows).
    pub fn is_full(&self) -> bool {
        self.full
    }

    pub fn pages(&self) -> usize {
        self.pages.len()
    }

    fn new_page(&mut self) {
        if self.full {
            return;
        }
        if self.pages.len() >= MAX_PAGES {
            self.full = true;
            let y = BOTTOM - 18.0;
            let msg = format!(
                "Report cut at {MAX_PAGES} pages: the rest is in the API's JSON (docs/reports.md)."
            );
            self.page().text(MARGIN, y, Font::Bold, BODY, &msg);
            return;
        }
        self.pages.push(Page::default());
        self.y = TOP;
    }

    /// Room for `h` points below the cursor, on a new page if need be;
    /// false once the page cap is reached.
    pub fn ensure(&mut self, h: f32) -> bool {
        if self.y - h < BOTTOM {
            self.new_page();
        }
        !self.full
    }

    /// Takes `h` points from the cursor and returns the top of that band.
    pub fn take(&mut self, h: f32) -> Option<f32> {
        if !self.ensure(h) {
            return None;
        }
        let top = self.y;
        self.y -= h;
        Some(top)
    }

    pub fn space(&mut self, h: f32) {
        self.y -= h;
    }

    pub fn title(&mut self, s: &str) {
        for line in text::wrap(Font::Bold, 16.0, s, WIDTH) {
            if let Some(top) = self.take(20.0) {
                self.page()
                    .text(MARGIN, top - 15.0, Font::Bold, 16.0, &line);
            }
        }
        self.space(4.0);
    }

    pub fn heading(&mut self, s: &str) {
        // A heading alone at the bottom of a page goes with what follows.
        if !self.ensure(60.0) {
            return;
        }
        self.space(6.0);
        if let Some(top) = self.take(16.0) {
            let p = self.page();
            p.text(MARGIN, top - 12.0, Font::Bold, 12.0, s);
            p.line(MARGIN, top - 15.0, MARGIN + WIDTH, top - 15.0, 0.5, GREY);
        }
        self.space(4.0);
    }

    pub fn paragraph(&mut self, s: &str) {
        self.paragraph_styled(s, Font::Regular, BODY, BLACK);
    }

    pub fn paragraph_styled(&mut self, s: &str, font: Font, size: f32, c: Rgb) {
        let leading = size * 1.3;
        for line in text::wrap(font, size, s, WIDTH) {
            if let Some(top) = self.take(leading) {
                self.page()
                    .text_colored(MARGIN, top - size, font, size, c, &line);
            }
        }
        self.space(3.0);
    }

    /// A boxed warning in red (the SIMULATED statement).
    pub fn warning(&mut self, s: &str) {
        let lines = text::wrap(Font::Bold, 10.0, s, WIDTH - 16.0);
        let h = lines.len() as f32 * 13.0 + 12.0;
        let Some(top) = self.take(h) else { return };
        let p = self.page();
        p.fill_rect(MARGIN, top - h, WIDTH, h, Rgb(1.0, 0.92, 0.92));
        p.stroke_rect(MARGIN, top - h, WIDTH, h, 1.5, RED);
        for (i, l) in lines.iter().enumerate() {
            p.text_colored(
                MARGIN + 8.0,
                top - 16.0 - i as f32 * 13.0,
                Font::Bold,
                10.0,
                RED,
                l,
            );
        }
        self.space(6.0);
    }

    /// Label/value pairs, labels bold in a narrow column.
    pub fn pairs(&mut self, rows: &[(&str, String)]) {
        let label_w = 130.0;
        for (k, v) in rows {
            let lines = text::wrap(Font::Regular, BODY, v, WIDTH - label_w);
            let h = lines.len() as f32 * LEADING;
            let Some(top) = self.take(h) else { return };
            let p = self.page();
            p.text(MARGIN, top - BODY, Font::Bold, BODY, k);
            for (i, l) in lines.iter().enumerate() {
                p.text(
                    MARGIN + label_w,
                    top - BODY - i as f32 * LEADING,
                    Font::Regular,
                    BODY,
                    l,
                );
            }
        }
        self.space(4.0);
    }

    fn table_header(&mut self, cols: &[Column], widths: &[f32]) -> bool {
        let Some(top) = self.take(LEADING + 4.0) else {
            return false;
        };
        let p = self.page();
        p.fill_rect(MARGIN, top - LEADING - 3.0, WIDTH, LEADING + 3.0, LIGHT);
        let mut x = MARGIN;
        for (c, w) in cols.iter().zip(widths) {
            p.text(x + 2.0, top - BODY - 1.0, Font::Bold, BODY, c.title);
            x += w;
        }
        true
    }

    /// A table: cells wrap within their column; a row that does not fit
    /// goes to the next page, under the header again.
    pub fn table(&mut self, cols: &[Column], rows: &[Vec<String>]) {
        let total: f32 = cols.iter().map(|c| c.share).sum();
        let widths: Vec<f32> = cols.iter().map(|c| c.share / total * WIDTH).collect();
        if !self.ensure(3.0 * LEADING) || !self.table_header(cols, &widths) {
            return;
        }
        for row in rows {
            let cells: Vec<Vec<String>> = row
                .iter()
                .zip(&widths)
                .map(|(s, w)| text::wrap(Font::Regular, BODY - 0.5, s, w - 4.0))
                .collect();
            let h = cells.iter().map(Vec::len).max().unwrap_or(1) as f32 * LEADING + 2.0;
            if self.y - h < BOTTOM {
                self.new_page();
                if self.full || !self.table_header(cols, &widths) {
                    return;
                }
            }
            let Some(top) = self.take(h) else { return };
            let p = self.page();
            let mut x = MARGIN;
            for (lines, w) in cells.iter().zip(&widths) {
                for (i, l) in lines.iter().enumerate() {
                    p.text(
                        x + 2.0,
                        top - BODY - 1.0 - i as f32 * LEADING,
                        Font::Regular,
                        BODY - 0.5,
                        l,
                    );
                }
                x += w;
            }
            p.line(MARGIN, top - h, MARGIN + WIDTH, top - h, 0.25, LIGHT);
        }
        self.space(6.0);
    }

    /// The pages with their footers, as a PDF file.
    pub fn finish(mut self) -> Vec<u8> {
        let total = self.pages.len();
        // The footer keeps clear of the page number: cut to one line.
        let footer = text::wrap(Font::Regular, 7.5, &self.footer, WIDTH - 70.0)
            .into_iter()
            .next()
            .unwrap_or_default();
        for (i, p) in self.pages.iter_mut().enumerate() {
            p.line(
                MARGIN,
                BOTTOM - 8.0,
                MARGIN + WIDTH,
                BOTTOM - 8.0,
                0.5,
                GREY,
            );
            p.text(MARGIN, BOTTOM - 20.0, Font::Regular, 7.5, &footer);
            p.text_right(
                MARGIN + WIDTH,
                BOTTOM - 20.0,
                Font::Regular,
                7.5,
                &format!("page {} of {total}", i + 1),
            );
        }
        pdf::write(&self.pages, &self.title)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pdf_text(pdf: &[u8]) -> String {
        String::from_utf8_lossy(pdf).into_owned()
    }

    #[test]
    fn a_long_table_breaks_pages_repeats_its_header_and_numbers_them() {
        let mut d = Doc::new("t", "QI-CERT-2026-000001");
        d.title("A long table");
        let rows: Vec<Vec<String>> = (0..150)
            .map(|i| vec![format!("row {i}"), "x ".repeat(i % 40)])
            .collect();
        d.table(
            &[
                Column {
                    title: "Name",
                    share: 1.0,
                },
                Column {
                    title: "Value (unit)",
                    share: 3.0,
                },
            ],
            &rows,
        );
        let pages = d.pages();
        assert!(pages >= 3, "{pages}");
        let pdf = d.finish();
        let s = pdf_text(&pdf);
        assert_eq!(s.matches("(Value \\(unit\\)) Tj").count(), pages);
        assert!(s.contains(&format!("(page {pages} of {pages}) Tj")));
        assert!(s.contains("(row 149) Tj"));
        assert_eq!(s.matches("(QI-CERT-2026-000001) Tj").count(), pages);
        super::super::pdf::tests::check_xref(&pdf);
    }

    #[test]
    fn the_page_cap_stops_the_report_and_says_so() {
        let mut d = Doc::new("t", "f");
        let rows: Vec<Vec<String>> = (0..20_000).map(|i| vec![format!("{i}")]).collect();
        d.table(
            &[Column {
                title: "n",
                share: 1.0,
            }],
            &rows,
        );
        assert!(d.is_full());
        assert_eq!(d.pages(), MAX_PAGES);
        let s = pdf_text(&d.finish());
        assert!(s.contains(&format!("(Report cut at {MAX_PAGES} pages")));
    }
}
