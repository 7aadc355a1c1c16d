//! Text for the standard fonts: Unicode to WinAnsiEncoding (what the
//! standard 14 fonts show without embedding), PDF string escaping, and
//! widths for line breaking.

use super::metrics;

/// The two faces the reports use (standard fonts: nothing embedded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Font {
    Regular,
    Bold,
}

impl Font {
    /// The resource name in every page's font dictionary.
    pub fn resource(self) -> &'static str {
        match self {
            Font::Regular => "F1",
            Font::Bold => "F2",
        }
    }

    fn widths(self) -> &'static [u16; 224] {
        match self {
            Font::Regular => &metrics::HELVETICA,
            Font::Bold => &metrics::HELVETICA_BOLD,
        }
    }
}

/// The WinAnsi code of a character, if it has one.
fn win_ansi(c: char) -> Option<u8> {
    let u = c as u32;
    // Latin-1 is WinAnsi from 160 on, but for the soft hyphen, which
    // viewers may hide: it is written as a hyphen by `encode`.
    if (32..=126).contains(&u) || ((160..=255).contains(&u) && u != 173) {
        return u8::try_from(u).ok();
    }
    Some(match c {
        '€' => 128,
        '‚' => 130,
        'ƒ' => 131,
        '„' => 132,
        '…' => 133,
        '†' => 134,
        '‡' => 135,
        'ˆ' => 136,
        '‰' => 137,
        'Š' => 138,
        '‹' => 139,
        'Œ' => 140,
        'Ž' => 142,
        '‘' => 145,
        '’' => 146,
        '“' => 147,
        '”' => 148,
        '•' => 149,
        '–' => 150,
        '—' => 151,
        '˜' => 152,
        '™' => 153,
        'š' => 154,
        '›' => 155,
        'œ' => 156,
        'ž' => 158,
        'Ÿ' => 159,
        _ => return None,
    })
}

/// What a character outside WinAnsi is written as: a spelled-out unit or
/// symbol where a reader expects one, else `?` (the standard fonts have
/// no glyphs for other scripts; embedding a font for them is left out).
fn replacement(c: char) -> &'static str {
    match c {
        '\u{3a9}' | '\u{2126}' => "Ohm",
        'μ' => "\u{b5}",
        '≤' => "<=",
        '≥' => ">=",
        '≠' => "!=",
        '→' => "->",
        '←' => "<-",
        '−' => "-",
        '\u{ad}' => "-",
        '·' => "\u{b7}",
        '√' => "sqrt",
        '∞' => "inf",
        'Δ' => "delta ",
        '\t' | '\n' | '\r' => " ",
        c if c.is_control() => "",
        _ => "?",
    }
}

/// `s` in WinAnsi bytes, characters outside it replaced.
pub fn encode(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    for c in s.chars() {
        match win_ansi(c) {
            Some(b) => out.push(b),
            None => out.extend(replacement(c).chars().filter_map(win_ansi)),
        }
    }
    out
}

/// A PDF literal string of WinAnsi bytes: parentheses and backslashes
/// escaped, bytes above 126 as octal so the content stream stays ASCII.
pub fn literal(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() + 2);
    s.push('(');
    for &b in bytes {
        match b {
            b'(' => s.push_str("\\("),
            b')' => s.push_str("\\)"),
            b'\\' => s.push_str("\\\\"),
            32..=126 => s.push(char::from(b)),
            _ => s.push_str(&format!("\\{b:03o}")),
        }
    }
    s.push(')');
    s
}

/// Width in points of WinAnsi bytes at `size`.
pub fn width_bytes(font: Font, size: f32, bytes: &[u8]) -> f32 {
    let w = font.widths();
    let units: u32 = bytes
        .iter()
        .map(|&b| {
            b.checked_sub(32)
                .and_then(|i| w.get(usize::from(i)))
                .map_or(0, |&x| u32::from(x))
        })
        .sum();
    units as f32 * size / 1000.0
}

/// Width in points of `s` at `size`, as it will be written.
pub fn width(font: Font, size: f32, s: &str) -> f32 {
    width_bytes(font, size, &encode(s))
}

/// `s` broken into lines no wider than `max` points: at spaces, and
/// inside words longer than a line (hashes, URLs).
pub fn wrap(font: Font, size: f32, s: &str, max: f32) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in s.split_whitespace() {
        let candidate = if line.is_empty() {
            word.to_string()
        } else {
            format!("{line} {word}")
        };
        if width(font, size, &candidate) <= max {
            line = candidate;
            continue;
        }
        if !line.is_empty() {
            lines.push(std::mem::take(&mut line));
        }
        // A word wider than the line is cut where it fills one.
        let mut rest = word.to_string();
        while width(font, size, &rest) > max {
            let mut cut = 0;
            for (i, c) in rest.char_indices() {
                let end = i + c.len_utf8();
                if width(font, size, &rest[..end]) > max {
                    break;
                }
                cut = end;
            }
            if cut == 0 {
                cut = rest.chars().next().map_or(rest.len(), char::len_utf8);
            }
            lines.push(rest[..cut].to_string());
            rest = rest[cut..].to_string();
        }
        line = rest;
    }
    if !line.is_empty() || lines.is_empty() {
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_latin_letters_stay_other_scripts_are_replaced() {
        assert_eq!(encode("25 °C, 3 µA"), b"25 \xb0C, 3 \xb5A".to_vec());
        assert_eq!(encode("10 MΩ"), b"10 MOhm".to_vec());
        assert_eq!(
            encode("Müller – “ok”"),
            b"M\xfcller \x96 \x93ok\x94".to_vec()
        );
        assert_eq!(encode("Иван"), b"????".to_vec());
        assert_eq!(encode("a\tb\u{7}c"), b"a bc".to_vec());
    }

    #[test]
    fn parentheses_backslashes_and_high_bytes_are_escaped() {
        assert_eq!(literal(b"a(b)c\\d"), "(a\\(b\\)c\\\\d)");
        assert_eq!(literal(&encode("°")), "(\\260)");
    }

    #[test]
    fn widths_come_from_the_font_metrics() {
        // Helvetica: space 278, A 667; bold A 722.
        assert!((width(Font::Regular, 10.0, "A ") - 9.45).abs() < 1e-3);
        assert!((width(Font::Bold, 10.0, "A") - 7.22).abs() < 1e-3);
    }

    #[test]
    fn wrapping_keeps_every_character_and_fits_the_width() {
        let s = "The sweep ran at 1000 W/m2 within the tolerance; \
                 a9f3c2e1d0b8a7f6e5d4c3b2a1f0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0";
        let lines = wrap(Font::Regular, 9.0, s, 120.0);
        assert!(lines.len() > 2, "{lines:?}");
        for l in &lines {
            assert!(width(Font::Regular, 9.0, l) <= 120.0, "{l}");
        }
        let joined: String = lines.concat().split_whitespace().collect();
        let orig: String = s.split_whitespace().collect();
        assert_eq!(joined, orig);
    }
}
