//! What a twin, a type and a relation are, and the rules a write must
//! satisfy before it reaches the database (the database re-checks the
//! structural ones as constraints, see migration 0008).

use serde::Serialize;
use serde_json::Value;

/// Longest id an engineer may give a twin or a type (discovered twins are
/// named from gateway and device ids and may be longer).
pub const MAX_TWIN_ID_LEN: usize = 128;
/// Largest `metadata` or `attributes` object, serialised.
pub const MAX_JSON_BYTES: usize = 16 * 1024;
/// Deepest nesting in `metadata` (a deep document costs stack to walk).
pub const MAX_JSON_DEPTH: usize = 16;
/// Longest name, serial number or description, and longest id in a path
/// (discovered twins' ids are made of two wire ids).
pub const MAX_TEXT_LEN: usize = 512;
/// Longest filter value in a listing's query (`q`, `type`, `attr`, ...).
pub const MAX_QUERY_TEXT_LEN: usize = 256;
/// Longest page cursor.
pub const MAX_CURSOR_LEN: usize = 2048;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Site,
    Area,
    Bench,
    Gateway,
    Instrument,
    Sample,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Site,
        Kind::Area,
        Kind::Bench,
        Kind::Gateway,
        Kind::Instrument,
        Kind::Sample,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Site => "site",
            Kind::Area => "area",
            Kind::Bench => "bench",
            Kind::Gateway => "gateway",
            Kind::Instrument => "instrument",
            Kind::Sample => "sample",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Which kinds may contain which: site > area > bench > instrument,
    /// gateways in a site, area or bench, samples on a bench or in storage
    /// (site, area). Anything else is a modelling mistake worth refusing.
    pub fn may_contain(self, child: Kind) -> bool {
        use Kind::*;
        matches!(
            (self, child),
            (Site, Area)
                | (Site, Bench)
                | (Site, Gateway)
                | (Site, Instrument)
                | (Site, Sample)
                | (Area, Area)
                | (Area, Bench)
                | (Area, Gateway)
                | (Area, Instrument)
                | (Area, Sample)
                | (Bench, Gateway)
                | (Bench, Instrument)
                | (Bench, Sample)
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RelationKind {
    /// parent > child (site > area > bench > instrument).
    Contains,
    /// instrument > gateway.
    ConnectedTo,
    /// instrument > sample, time-bounded.
    Measures,
    /// instrument > certificate (a reference, not a twin).
    CalibratedBy,
}

impl RelationKind {
    pub const ALL: [RelationKind; 4] = [
        RelationKind::Contains,
        RelationKind::ConnectedTo,
        RelationKind::Measures,
        RelationKind::CalibratedBy,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RelationKind::Contains => "contains",
            RelationKind::ConnectedTo => "connected_to",
            RelationKind::Measures => "measures",
            RelationKind::CalibratedBy => "calibrated_by",
        }
    }

    pub fn parse(s: &str) -> Option<RelationKind> {
        RelationKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The kinds a relation may join (source, target); None for the target
    /// of calibrated_by, which is a certificate id.
    pub fn allows(self, source: Kind, target: Option<Kind>) -> bool {
        match (self, target) {
            (RelationKind::Contains, Some(t)) => source.may_contain(t),
            (RelationKind::ConnectedTo, Some(t)) => {
                source == Kind::Instrument && t == Kind::Gateway
            }
            (RelationKind::Measures, Some(t)) => source == Kind::Instrument && t == Kind::Sample,
            (RelationKind::CalibratedBy, None) => source == Kind::Instrument,
            _ => false,
        }
    }
}

/// Why a write is refused before it reaches the database.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Invalid {
    #[error("{0}")]
    Field(String),
}

fn field(msg: impl Into<String>) -> Invalid {
    Invalid::Field(msg.into())
}

/// Ids that are path segments of the twin API's own routes.
pub const RESERVED_IDS: [&str; 1] = ["stream"];

/// A twin or type id chosen by a person: 1-128 of `A-Z a-z 0-9 . _ : @ -`
/// (safe in a URL path segment without encoding).
pub fn check_id(what: &str, id: &str) -> Result<(), Invalid> {
    let ok = !id.is_empty()
        && id.len() <= MAX_TWIN_ID_LEN
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '@' | '-'));
    if ok && RESERVED_IDS.contains(&id) {
        return Err(field(format!(
            "{id:?} names a route of the API (`/api/v1/twins/{id}`); choose another id"
        )));
    }
    if ok {
        Ok(())
    } else {
        Err(field(format!(
            "`{what}` must be 1-{MAX_TWIN_ID_LEN} characters of A-Z a-z 0-9 . _ : @ -; got {:?}",
            id.chars().take(40).collect::<String>()
        )))
    }
}

pub fn check_text(what: &str, s: &str) -> Result<(), Invalid> {
    if s.len() > MAX_TEXT_LEN || s.chars().any(char::is_control) {
        return Err(field(format!(
            "`{what}` must be at most {MAX_TEXT_LEN} bytes with no control characters"
        )));
    }
    Ok(())
}

/// A free JSON object (metadata, attributes): an object, bounded in size
/// and depth.
pub fn check_object(what: &str, v: &Value) -> Result<(), Invalid> {
    if !v.is_object() {
        return Err(field(format!("`{what}` must be a JSON object")));
    }
    let size = serde_json::to_vec(v).map(|b| b.len()).unwrap_or(usize::MAX);
    if size > MAX_JSON_BYTES {
        return Err(field(format!(
            "`{what}` is {size} bytes; the limit is {MAX_JSON_BYTES}"
        )));
    }
    if has_nul(v) {
        return Err(field(format!(
            "`{what}` contains a NUL character (\\u0000), which PostgreSQL cannot store"
        )));
    }
    if depth(v) > MAX_JSON_DEPTH {
        return Err(field(format!(
            "`{what}` nests deeper than {MAX_JSON_DEPTH} levels"
        )));
    }
    Ok(())
}

/// Whether any key or string in `v` holds U+0000 (jsonb refuses it).
pub fn has_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(a) => a.iter().any(has_nul),
        Value::Object(o) => o.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

fn depth(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

pub fn check_location(lat: Option<f64>, lon: Option<f64>) -> Result<(), Invalid> {
    match (lat, lon) {
        (None, None) => Ok(()),
        (Some(a), Some(o)) if (-90.0..=90.0).contains(&a) && (-180.0..=180.0).contains(&o) => {
            Ok(())
        }
        (Some(_), Some(_)) => Err(field(
            "`latitude` must be in -90..=90 and `longitude` in -180..=180",
        )),
        _ => Err(field("give both `latitude` and `longitude`, or neither")),
    }
}

/// A type's declaration of one attribute.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AttributeSpec {
    #[serde(rename = "type")]
    pub value_type: ValueType,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub unit: String,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueType {
    Number,
    String,
    Boolean,
}

impl ValueType {
    fn matches(self, v: &Value) -> bool {
        matches!(
            (self, v),
            (ValueType::Number, Value::Number(_))
                | (ValueType::String, Value::String(_))
                | (ValueType::Boolean, Value::Bool(_))
        )
    }
}

/// Parses a type's `attributes` declaration.
pub fn parse_specs(v: &Value) -> Result<Vec<(String, AttributeSpec)>, Invalid> {
    check_object("attributes", v)?;
    let mut out = Vec::new();
    if let Value::Object(o) = v {
        for (k, s) in o {
            check_id("attributes key", k)?;
            let spec: AttributeSpec = serde_json::from_value(s.clone()).map_err(|e| {
                field(format!(
                    "attribute {k:?}: {e} (expected {{\"type\": \"number\"|\"string\"|\"boolean\", \"required\": bool, \"unit\": \"...\"}})"
                ))
            })?;
            check_text("attribute unit", &spec.unit)?;
            check_text("attribute description", &spec.description)?;
            out.push((k.clone(), spec));
        }
    }
    Ok(out)
}

/// Checks a twin's attributes against its type: declared ones have the
/// declared value type, required ones are present. Attributes the type does
/// not declare are allowed (a lab records more than a model foresees).
pub fn check_attributes(attrs: &Value, specs: &[(String, AttributeSpec)]) -> Result<(), Invalid> {
    check_object("attributes", attrs)?;
    for (name, spec) in specs {
        match attrs.get(name) {
            None | Some(Value::Null) if spec.required => {
                return Err(field(format!(
                    "attribute {name:?} is required by the twin's type"
                )));
            }
            Some(v) if !v.is_null() && !spec.value_type.matches(v) => {
                return Err(field(format!(
                    "attribute {name:?} must be a {:?}; got {v}",
                    spec.value_type
                )));
            }
            _ => {}
        }
    }
    Ok(())
}

/// RFC 7386 JSON merge patch: null removes a key, objects merge, anything
/// else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(serde_json::Map::new());
            }
            if let Value::Object(t) = target {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn containment_follows_the_lab_hierarchy() {
        assert!(Kind::Site.may_contain(Kind::Area));
        assert!(Kind::Bench.may_contain(Kind::Instrument));
        assert!(!Kind::Instrument.may_contain(Kind::Bench));
        assert!(!Kind::Sample.may_contain(Kind::Sample));
        assert!(!Kind::Bench.may_contain(Kind::Site));
        assert!(RelationKind::Measures.allows(Kind::Instrument, Some(Kind::Sample)));
        assert!(!RelationKind::Measures.allows(Kind::Sample, Some(Kind::Instrument)));
        assert!(RelationKind::CalibratedBy.allows(Kind::Instrument, None));
        assert!(!RelationKind::CalibratedBy.allows(Kind::Instrument, Some(Kind::Sample)));
    }

    #[test]
    fn ids_text_and_objects_are_bounded() {
        assert!(check_id("id", "bench-3.a:b@c_d").is_ok());
        assert!(check_id("id", "").is_err());
        assert!(check_id("id", "a/b").is_err());
        assert!(check_id("id", "stream").is_err());
        assert!(check_id("id", &"x".repeat(129)).is_err());
        assert!(check_object("metadata", &json!([1])).is_err());
        let big = json!({"a": "x".repeat(MAX_JSON_BYTES)});
        assert!(check_object("metadata", &big).is_err());
        let mut deep = json!(1);
        for _ in 0..20 {
            deep = json!({ "a": deep });
        }
        assert!(check_object("metadata", &deep).is_err());
        assert!(check_object("metadata", &json!({"a\u{0}": 1})).is_err());
        assert!(check_object("metadata", &json!({"a": ["\u{0}"]})).is_err());
        assert!(check_location(Some(91.0), Some(0.0)).is_err());
        assert!(check_location(Some(1.0), None).is_err());
    }

    #[test]
    fn attributes_are_checked_against_the_type() {
        let specs = parse_specs(&json!({
            "area_m2": {"type": "number", "required": true, "unit": "m2"},
            "maker": {"type": "string"}
        }))
        .expect("specs");
        assert!(check_attributes(&json!({"area_m2": 1.6}), &specs).is_ok());
        assert!(check_attributes(&json!({"maker": "x"}), &specs).is_err());
        assert!(check_attributes(&json!({"area_m2": "big"}), &specs).is_err());
        assert!(check_attributes(&json!({"area_m2": 2, "extra": true}), &specs).is_ok());
        assert!(parse_specs(&json!({"a": {"type": "date"}})).is_err());
    }

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut t = json!({"a": 1, "b": {"c": 2, "d": 3}});
        merge_patch(&mut t, &json!({"a": null, "b": {"c": 5}, "e": [1]}));
        assert_eq!(t, json!({"b": {"c": 5, "d": 3}, "e": [1]}));
    }
}
