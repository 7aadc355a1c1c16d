//! A small XML writer whose output is already in Exclusive XML
//! Canonicalization form (<http://www.w3.org/2001/10/xml-exc-c14n#>), so the
//! bytes the hub writes are the bytes an XMLDSig verifier digests: no XML
//! crate, no canonicalizer, and nothing to disagree about.
//!
//! What that takes (exc-c14n, section 2 and C14N 1.0 section 2.3):
//! - start and end tags for every element, never `<a/>`;
//! - namespace declarations only where a prefix is first used on the way
//!   down (callers declare `xmlns:si` on each `si:real`, not on the root:
//!   exc-c14n would move it there), sorted by prefix, before the attributes;
//! - attributes sorted by name (all unqualified here), values in double
//!   quotes with `& < "` and TAB, LF, CR escaped;
//! - text with `& < >` and CR escaped;
//! - no whitespace between elements (whitespace would be text nodes, kept).
//!
//! Characters XML 1.0 does not allow at all (most C0 controls, U+FFFE/F) are
//! replaced by U+FFFD by [`clean`] before anything is stored, so the JSON
//! mirror and the XML carry the same text.

/// `s` with every character XML 1.0 forbids replaced by U+FFFD.
pub fn clean(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '\t' | '\n' | '\r' => c,
            c if (c as u32) < 0x20 => '\u{FFFD}',
            '\u{FFFE}' | '\u{FFFF}' => '\u{FFFD}',
            c => c,
        })
        .collect()
}

/// Text content as exc-c14n writes it.
pub fn escape_text(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\r' => out.push_str("&#xD;"),
            c => out.push(c),
        }
    }
}

/// An attribute value as exc-c14n writes it.
pub fn escape_attr(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '"' => out.push_str("&quot;"),
            '\t' => out.push_str("&#x9;"),
            '\n' => out.push_str("&#xA;"),
            '\r' => out.push_str("&#xD;"),
            c => out.push(c),
        }
    }
}

/// Writes elements in canonical form. Names are the caller's constants
/// (never data); only attribute values and text are escaped.
#[derive(Default)]
pub struct Writer {
    out: String,
}

impl Writer {
    pub fn new() -> Writer {
        Writer::default()
    }

    /// `<name xmlns:p="uri"... a="v"...>`; namespaces sorted by prefix,
    /// attributes by name, as exc-c14n orders them.
    pub fn open_ns(&mut self, name: &str, ns: &[(&str, &str)], attrs: &[(&str, &str)]) {
        let mut ns = ns.to_vec();
        ns.sort_by(|a, b| a.0.cmp(b.0));
        let mut attrs = attrs.to_vec();
        attrs.sort_by(|a, b| a.0.cmp(b.0));
        self.out.push('<');
        self.out.push_str(name);
        for (prefix, uri) in ns {
            self.out.push_str(" xmlns:");
            self.out.push_str(prefix);
            self.out.push_str("=\"");
            escape_attr(uri, &mut self.out);
            self.out.push('"');
        }
        for (k, v) in attrs {
            self.out.push(' ');
            self.out.push_str(k);
            self.out.push_str("=\"");
            escape_attr(v, &mut self.out);
            self.out.push('"');
        }
        self.out.push('>');
    }

    pub fn open(&mut self, name: &str) {
        self.open_ns(name, &[], &[]);
    }

    pub fn open_attrs(&mut self, name: &str, attrs: &[(&str, &str)]) {
        self.open_ns(name, &[], attrs);
    }

    pub fn close(&mut self, name: &str) {
        self.out.push_str("</");
        self.out.push_str(name);
        self.out.push('>');
    }

    /// `<name attrs>text</name>`.
    pub fn leaf_attrs(&mut self, name: &str, attrs: &[(&str, &str)], text: &str) {
        self.open_attrs(name, attrs);
        escape_text(text, &mut self.out);
        self.close(name);
    }

    pub fn leaf(&mut self, name: &str, text: &str) {
        self.leaf_attrs(name, &[], text);
    }

    /// Bytes already canonical (a nested element written by another writer).
    pub fn raw(&mut self, canonical: &str) {
        self.out.push_str(canonical);
    }

    pub fn finish(self) -> String {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_attributes_are_escaped_as_exc_c14n_writes_them() {
        let mut t = String::new();
        escape_text("a & b < c > d \"q\" 'a'\r\n\tend", &mut t);
        assert_eq!(t, "a &amp; b &lt; c &gt; d \"q\" 'a'&#xD;\n\tend");
        let mut a = String::new();
        escape_attr("a & b < c > d \"q\" 'a'\r\n\tend", &mut a);
        assert_eq!(
            a,
            "a &amp; b &lt; c > d &quot;q&quot; 'a'&#xD;&#xA;&#x9;end"
        );
    }

    #[test]
    fn forbidden_characters_become_replacement_characters() {
        assert_eq!(
            clean("ok\u{0}\u{1b}[31m\u{FFFE}\tü€"),
            "ok\u{FFFD}\u{FFFD}[31m\u{FFFD}\tü€"
        );
    }

    #[test]
    fn elements_have_end_tags_and_sorted_declarations_and_attributes() {
        let mut w = Writer::new();
        w.open_ns(
            "dcc:x",
            &[("si", "https://ptb.de/si"), ("dcc", "https://ptb.de/dcc")],
            &[("schemaVersion", "3.3.0"), ("refType", "a\"b")],
        );
        w.leaf("dcc:empty", "");
        w.leaf_attrs("dcc:content", &[("lang", "en")], "1 < 2");
        w.close("dcc:x");
        assert_eq!(
            w.finish(),
            "<dcc:x xmlns:dcc=\"https://ptb.de/dcc\" xmlns:si=\"https://ptb.de/si\" \
             refType=\"a&quot;b\" schemaVersion=\"3.3.0\"><dcc:empty></dcc:empty>\
             <dcc:content lang=\"en\">1 &lt; 2</dcc:content></dcc:x>"
        );
    }
}
