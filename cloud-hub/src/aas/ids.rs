//! Identifiers of the shells and submodels the hub serves, and their
//! base64url form in URLs (AAS Part 2: identifiers in paths are base64url
//! encoded, without padding).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;

/// What the OpenAPI document says an id in a path looks like, exactly what
/// [`decode`] takes: base64url in whole groups of four, or a last group of
/// two or three whose final character carries no stray bits, then up to
/// two `=` (padding is tolerated, not checked: clients differ).
pub const PATTERN: &str = "^(?:[A-Za-z0-9_-]{4})*(?:[A-Za-z0-9_-]{4}|[A-Za-z0-9_-][AQgw]|[A-Za-z0-9_-]{2}[AEIMQUYcgkosw048])={0,2}$";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdError {
    #[error(
        "{0:?} is not base64url-encoded UTF-8 (AAS Part 2: identifiers in paths are base64url, no padding)"
    )]
    NotBase64Url(String),
}

pub fn encode(id: &str) -> String {
    B64.encode(id.as_bytes())
}

/// The identifier a path segment encodes. Err when it is not base64url
/// (the caller's mistake: 400); None when it decodes to bytes that are not
/// UTF-8 (no identifier of ours: 404). The OpenAPI document's pattern for
/// ids is exactly what the first check accepts.
pub fn decode(text: &str) -> Result<Option<String>, IdError> {
    let bad = || IdError::NotBase64Url(text.chars().take(64).collect());
    if unpadded(text).is_empty() {
        return Err(bad());
    }
    let bytes = B64.decode(unpadded(text)).map_err(|_| bad())?;
    // Our ids hold no control characters (and PostgreSQL text no NUL).
    Ok(String::from_utf8(bytes)
        .ok()
        .filter(|s| !s.chars().any(char::is_control)))
}

/// A paging cursor: opaque to clients, a position to us. Bytes that are
/// not UTF-8 still order somewhere, so any base64url text is a cursor.
pub fn decode_cursor(text: &str) -> Result<String, IdError> {
    let bad = || IdError::NotBase64Url(text.chars().take(64).collect());
    if unpadded(text).is_empty() {
        return Err(bad());
    }
    let bytes = B64.decode(unpadded(text)).map_err(|_| bad())?;
    // PostgreSQL text holds no NUL; the position barely moves without them.
    Ok(String::from_utf8_lossy(&bytes).replace('\0', ""))
}

fn unpadded(text: &str) -> &str {
    text.strip_suffix("==")
        .or_else(|| text.strip_suffix('='))
        .unwrap_or(text)
}

/// The three submodels of an instrument's shell, in the order they are listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmodelKind {
    Nameplate,
    TechnicalData,
    TimeSeries,
}

impl SubmodelKind {
    pub const ALL: [SubmodelKind; 3] = [
        SubmodelKind::Nameplate,
        SubmodelKind::TechnicalData,
        SubmodelKind::TimeSeries,
    ];

    pub fn slug(self) -> &'static str {
        match self {
            SubmodelKind::Nameplate => "nameplate",
            SubmodelKind::TechnicalData => "technical-data",
            SubmodelKind::TimeSeries => "time-series",
        }
    }

    pub fn index(self) -> usize {
        Self::ALL.iter().position(|k| *k == self).unwrap_or(0)
    }

    fn from_slug(s: &str) -> Option<SubmodelKind> {
        Self::ALL.into_iter().find(|k| k.slug() == s)
    }
}

const PREFIX: &str = "urn:qi:twin:";

pub fn asset_id(twin: &str) -> String {
    format!("{PREFIX}{twin}")
}

pub fn shell_id(twin: &str) -> String {
    format!("{PREFIX}{twin}:aas")
}

pub fn submodel_id(twin: &str, kind: SubmodelKind) -> String {
    format!("{PREFIX}{twin}:sm:{}", kind.slug())
}

/// The twin of a shell id of ours (None: not one of ours).
pub fn twin_of_shell(id: &str) -> Option<&str> {
    id.strip_prefix(PREFIX)?
        .strip_suffix(":aas")
        .filter(|t| !t.is_empty())
}

/// The twin and kind of a submodel id of ours.
pub fn twin_of_submodel(id: &str) -> Option<(&str, SubmodelKind)> {
    let (twin, slug) = id.strip_prefix(PREFIX)?.rsplit_once(":sm:")?;
    Some((twin, SubmodelKind::from_slug(slug)?)).filter(|(t, _)| !t.is_empty())
}

/// An idShort (`^[a-zA-Z][a-zA-Z0-9_]*$`, at most 128 characters) made
/// from any text: other characters become `_`, a leading non-letter gets
/// `prefix` before it.
pub fn id_short(text: &str, prefix: &str) -> String {
    let mut s: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if !s.starts_with(|c: char| c.is_ascii_alphabetic()) {
        s = format!("{prefix}{s}");
    }
    s.chars().take(128).collect()
}

/// idShorts unique among siblings: a second `a_b` (from `a.b` and `a-b`)
/// becomes `a_b_2`.
pub fn unique_id_shorts<'a>(names: impl Iterator<Item = &'a str>, prefix: &str) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    names
        .map(|n| {
            let base = id_short(n, prefix);
            let mut candidate = base.clone();
            let mut i = 2;
            while !seen.insert(candidate.clone()) {
                let suffix = format!("_{i}");
                candidate = format!(
                    "{}{suffix}",
                    base.chars().take(128 - suffix.len()).collect::<String>()
                );
                i += 1;
            }
            candidate
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_base64url() {
        let id = shell_id("instrument:gw-1:meter/1");
        let enc = encode(&id);
        assert!(
            !enc.contains('=') && !enc.contains('/') && !enc.contains('+'),
            "{enc}"
        );
        assert_eq!(decode(&enc), Ok(Some(id.clone())));
        let padded = base64::engine::general_purpose::URL_SAFE.encode(id.as_bytes());
        assert_eq!(decode(&padded), Ok(Some(id.clone())), "padding is accepted");
        assert!(decode("not base64!").is_err());
        assert!(decode("").is_err());
        assert_eq!(
            decode(&encode_bytes(&[0xff, 0xfe])),
            Ok(None),
            "not UTF-8: no id of ours"
        );
        // Non-canonical trailing bits and impossible lengths are not base64url.
        let pattern = regex_lite_free_pattern_check;
        for ok in [
            "AA", "AAA", "AAAA", "AA==", "AA=", "AAA=", "AAAA==", "_w", "-_8",
        ] {
            assert!(pattern(ok) && decode(ok).is_ok(), "{ok}");
        }
        for bad in ["00", "A", "A===", "AB", "AAB", "a*b", "==", "AAAAA"] {
            assert!(!pattern(bad) && decode(bad).is_err(), "{bad}");
        }
        assert_eq!(twin_of_shell(&id), Some("instrument:gw-1:meter/1"));
        assert_eq!(twin_of_shell("urn:qi:twin::aas"), None);
        let sm = submodel_id("a:sm:b", SubmodelKind::TimeSeries);
        assert_eq!(
            twin_of_submodel(&sm),
            Some(("a:sm:b", SubmodelKind::TimeSeries))
        );
        assert_eq!(twin_of_submodel("urn:qi:twin:a:sm:other"), None);
    }

    /// [`PATTERN`] spelt out (no regex engine in the hub): groups of four,
    /// or a last group of two or three without stray bits, then `={0,2}`.
    fn regex_lite_free_pattern_check(s: &str) -> bool {
        let body = s
            .strip_suffix("==")
            .or_else(|| s.strip_suffix('='))
            .unwrap_or(s);
        let alphabet = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
        if body.is_empty() || !body.chars().all(alphabet) {
            return false;
        }
        let last = body.chars().last().unwrap_or('A');
        match body.len() % 4 {
            0 => true,
            2 => "AQgw".contains(last),
            3 => "AEIMQUYcgkosw048".contains(last),
            _ => false,
        }
    }

    fn encode_bytes(b: &[u8]) -> String {
        B64.encode(b)
    }

    #[test]
    fn id_shorts_follow_the_metamodel_pattern_and_stay_unique() {
        assert_eq!(id_short("voltage_l1", "P_"), "voltage_l1");
        assert_eq!(id_short("1st-value", "P_"), "P_1st_value");
        assert_eq!(id_short("x".repeat(200).as_str(), "P_").len(), 128);
        assert_eq!(
            unique_id_shorts(["a.b", "a-b", "a_b"].into_iter(), "P_"),
            vec!["a_b", "a_b_2", "a_b_3"]
        );
    }
}
