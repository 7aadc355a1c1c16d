//! A streaming xlsx (Office Open XML spreadsheet, ECMA-376) writer: the
//! fixed parts first, then each sheet row by row into a deflated ZIP entry.
//! Strings are inline (`t="inlineStr"`), so nothing is kept per string;
//! numbers are numbers, times Excel dates with a number format, the header
//! row bold and frozen, columns as wide as the table says.

use super::Cell;
use super::cell::excel_serial;
use super::columns::Column;
use super::zip::ZipWriter;
use std::fmt::Write as _;
use std::io;

/// Excel's limit on one cell's text.
const MAX_CELL_CHARS: usize = 32_767;
const TRUNCATED: &str = " [truncated]";

/// Styles (`cellXfs` of styles.xml by index).
const STYLE_HEADER: u8 = 1;
const STYLE_TIME: u8 = 2;
/// Text shown and kept as text even if it looks like a formula (what
/// Excel itself sets when one types `'=...`).
const STYLE_QUOTED: u8 = 3;

const MAIN_NS: &str = "http://schemas.openxmlformats.org/spreadsheetml/2006/main";
const REL_NS: &str = "http://schemas.openxmlformats.org/officeDocument/2006/relationships";
const XML_HEAD: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?>\n";

const STYLES: &str = "<styleSheet xmlns=\"http://schemas.openxmlformats.org/spreadsheetml/2006/main\">\
<numFmts count=\"1\"><numFmt numFmtId=\"164\" formatCode=\"yyyy-mm-dd hh:mm:ss.000\"/></numFmts>\
<fonts count=\"2\"><font><sz val=\"11\"/><name val=\"Calibri\"/><family val=\"2\"/></font>\
<font><b/><sz val=\"11\"/><name val=\"Calibri\"/><family val=\"2\"/></font></fonts>\
<fills count=\"2\"><fill><patternFill patternType=\"none\"/></fill><fill><patternFill patternType=\"gray125\"/></fill></fills>\
<borders count=\"1\"><border><left/><right/><top/><bottom/><diagonal/></border></borders>\
<cellStyleXfs count=\"1\"><xf numFmtId=\"0\" fontId=\"0\" fillId=\"0\" borderId=\"0\"/></cellStyleXfs>\
<cellXfs count=\"4\"><xf numFmtId=\"0\" fontId=\"0\" fillId=\"0\" borderId=\"0\" xfId=\"0\"/>\
<xf numFmtId=\"0\" fontId=\"1\" fillId=\"0\" borderId=\"0\" xfId=\"0\" applyFont=\"1\"/>\
<xf numFmtId=\"164\" fontId=\"0\" fillId=\"0\" borderId=\"0\" xfId=\"0\" applyNumberFormat=\"1\"/>\
<xf numFmtId=\"0\" fontId=\"0\" fillId=\"0\" borderId=\"0\" xfId=\"0\" quotePrefix=\"1\"/></cellXfs>\
<cellStyles count=\"1\"><cellStyle name=\"Normal\" xfId=\"0\" builtinId=\"0\"/></cellStyles>\
</styleSheet>";

/// Text as XML character data: escaped, and the characters XML 1.0 cannot
/// hold (controls but tab and line breaks) replaced.
fn escape(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
}

/// A column's letters: 0 -> A, 26 -> AA.
fn column_name(mut i: usize, out: &mut String) {
    let mut buf = [0u8; 4];
    let mut n = 0;
    loop {
        buf[n] = b'A' + (i % 26) as u8;
        n += 1;
        if i < 26 {
            break;
        }
        i = i / 26 - 1;
    }
    for b in buf[..n].iter().rev() {
        out.push(*b as char);
    }
}

pub struct Workbook {
    zip: ZipWriter,
    sheets: usize,
    /// 1-based number of the next row of the open sheet.
    row: u64,
    line: String,
}

impl Workbook {
    /// Writes the fixed parts for sheets named `names`.
    pub fn begin(names: &[&str], out: &mut Vec<u8>) -> io::Result<Workbook> {
        let mut zip = ZipWriter::new(chrono::Utc::now());
        let mut types = format!(
            "{XML_HEAD}<Types xmlns=\"http://schemas.openxmlformats.org/package/2006/content-types\">\
<Default Extension=\"rels\" ContentType=\"application/vnd.openxmlformats-package.relationships+xml\"/>\
<Default Extension=\"xml\" ContentType=\"application/xml\"/>\
<Override PartName=\"/xl/workbook.xml\" ContentType=\"application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml\"/>\
<Override PartName=\"/xl/styles.xml\" ContentType=\"application/vnd.openxmlformats-officedocument.spreadsheetml.styles+xml\"/>"
        );
        let mut sheets = String::new();
        let mut rels = format!(
            "{XML_HEAD}<Relationships xmlns=\"http://schemas.openxmlformats.org/package/2006/relationships\">"
        );
        for (i, name) in names.iter().enumerate() {
            let n = i + 1;
            let _ = write!(
                types,
                "<Override PartName=\"/xl/worksheets/sheet{n}.xml\" ContentType=\"application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml\"/>"
            );
            sheets.push_str("<sheet name=\"");
            escape(name, &mut sheets);
            let _ = write!(sheets, "\" sheetId=\"{n}\" r:id=\"rId{n}\"/>");
            let _ = write!(
                rels,
                "<Relationship Id=\"rId{n}\" Type=\"{REL_NS}/worksheet\" Target=\"worksheets/sheet{n}.xml\"/>"
            );
        }
        types.push_str("</Types>");
        let _ = write!(
            rels,
            "<Relationship Id=\"rId{}\" Type=\"{REL_NS}/styles\" Target=\"styles.xml\"/></Relationships>",
            names.len() + 1
        );
        let root_rels = format!(
            "{XML_HEAD}<Relationships xmlns=\"http://schemas.openxmlformats.org/package/2006/relationships\">\
<Relationship Id=\"rId1\" Type=\"{REL_NS}/officeDocument\" Target=\"xl/workbook.xml\"/></Relationships>"
        );
        let workbook = format!(
            "{XML_HEAD}<workbook xmlns=\"{MAIN_NS}\" xmlns:r=\"{REL_NS}\"><sheets>{sheets}</sheets></workbook>"
        );
        zip.entry("[Content_Types].xml", types.as_bytes(), out)?;
        zip.entry("_rels/.rels", root_rels.as_bytes(), out)?;
        zip.entry("xl/workbook.xml", workbook.as_bytes(), out)?;
        zip.entry("xl/_rels/workbook.xml.rels", rels.as_bytes(), out)?;
        zip.entry(
            "xl/styles.xml",
            format!("{XML_HEAD}{STYLES}").as_bytes(),
            out,
        )?;
        Ok(Workbook {
            zip,
            sheets: 0,
            row: 1,
            line: String::new(),
        })
    }

    /// Opens the next sheet: widths, frozen header row, the header (names
    /// with their unit).
    pub fn start_sheet(&mut self, header: &[Column], out: &mut Vec<u8>) -> io::Result<()> {
        self.sheets += 1;
        self.row = 1;
        self.zip
            .start(&format!("xl/worksheets/sheet{}.xml", self.sheets), out)?;
        let mut head = format!(
            "{XML_HEAD}<worksheet xmlns=\"{MAIN_NS}\" xmlns:r=\"{REL_NS}\"><sheetViews>\
<sheetView workbookViewId=\"0\"><pane ySplit=\"1\" topLeftCell=\"A2\" activePane=\"bottomLeft\" state=\"frozen\"/>\
<selection pane=\"bottomLeft\" activeCell=\"A2\" sqref=\"A2\"/></sheetView></sheetViews>\
<sheetFormatPr defaultRowHeight=\"15\"/><cols>"
        );
        for (i, c) in header.iter().enumerate() {
            let _ = write!(
                head,
                "<col min=\"{n}\" max=\"{n}\" width=\"{w}\" customWidth=\"1\"/>",
                n = i + 1,
                w = c.width
            );
        }
        head.push_str("</cols><sheetData>");
        self.zip.write(head.as_bytes(), out)?;
        let titles: Vec<Cell> = header
            .iter()
            .map(|c| {
                Cell::Text(match c.unit {
                    Some(u) => format!("{} ({u})", c.name),
                    None => c.name.to_string(),
                })
            })
            .collect();
        self.write_row(&titles, Some(STYLE_HEADER), out)
    }

    pub fn row(&mut self, cells: &[Cell], out: &mut Vec<u8>) -> io::Result<()> {
        self.write_row(cells, None, out)
    }

    fn write_row(
        &mut self,
        cells: &[Cell],
        style: Option<u8>,
        out: &mut Vec<u8>,
    ) -> io::Result<()> {
        let r = self.row;
        self.row += 1;
        let mut l = std::mem::take(&mut self.line);
        l.clear();
        let _ = write!(l, "<row r=\"{r}\">");
        for (i, c) in cells.iter().enumerate() {
            let at = |l: &mut String| {
                l.push_str("<c r=\"");
                column_name(i, l);
                let _ = write!(l, "{r}\"");
            };
            match c {
                Cell::Empty => continue,
                Cell::Number(x) if x.is_finite() => {
                    at(&mut l);
                    let _ = write!(l, "><v>{x}</v></c>");
                }
                Cell::Int(n) => {
                    at(&mut l);
                    let _ = write!(l, "><v>{n}</v></c>");
                }
                Cell::Bool(b) => {
                    at(&mut l);
                    let _ = write!(l, " t=\"b\"><v>{}</v></c>", u8::from(*b));
                }
                Cell::Time(t) => {
                    at(&mut l);
                    let _ = write!(l, " s=\"{STYLE_TIME}\"><v>{}</v></c>", excel_serial(t));
                }
                _ => {
                    at(&mut l);
                    let s = match style {
                        Some(s) => s,
                        None if c.is_hostile_text() => STYLE_QUOTED,
                        None => 0,
                    };
                    if s != 0 {
                        let _ = write!(l, " s=\"{s}\"");
                    }
                    l.push_str(" t=\"inlineStr\"><is><t xml:space=\"preserve\">");
                    let text = c.plain();
                    if text.chars().count() > MAX_CELL_CHARS {
                        let cut: String = text
                            .chars()
                            .take(MAX_CELL_CHARS - TRUNCATED.len())
                            .collect();
                        escape(&cut, &mut l);
                        l.push_str(TRUNCATED);
                    } else {
                        escape(&text, &mut l);
                    }
                    l.push_str("</t></is></c>");
                }
            }
        }
        l.push_str("</row>");
        let res = self.zip.write(l.as_bytes(), out);
        self.line = l;
        res
    }

    pub fn end_sheet(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        self.zip.write(b"</sheetData></worksheet>", out)?;
        self.zip.finish_entry(out)
    }

    pub fn finish(self, out: &mut Vec<u8>) -> io::Result<()> {
        self.zip.finish(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_lettered_like_excel() {
        for (i, want) in [
            (0, "A"),
            (25, "Z"),
            (26, "AA"),
            (27, "AB"),
            (701, "ZZ"),
            (702, "AAA"),
        ] {
            let mut s = String::new();
            column_name(i, &mut s);
            assert_eq!(s, want);
        }
    }

    #[test]
    fn text_is_escaped_and_controls_replaced() {
        let mut s = String::new();
        escape("a<b>&\"\u{1}\n", &mut s);
        assert_eq!(s, "a&lt;b&gt;&amp;&quot;\u{fffd}\n");
    }
}
