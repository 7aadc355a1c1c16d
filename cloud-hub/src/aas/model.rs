//! The AAS metamodel (v3.0 JSON) of an instrument twin: its shell and the
//! Nameplate, TechnicalData and TimeSeries submodels. The metamodel refuses
//! empty lists and empty strings, so absent facts leave elements out rather
//! than writing them empty.

use super::ids::{self, SubmodelKind};
use serde_json::{Value, json};

/// IDTA semantic ids: Digital Nameplate 2.0 (IDTA 02006-2-0), Technical
/// Data 1.2 (IDTA 02003-1-2), Time Series Data 1.1 (IDTA 02008-1-1), and the
/// ECLASS property ids the nameplate template uses.
pub mod semantic {
    pub const NAMEPLATE: &str = "https://admin-shell.io/zvei/nameplate/2/0/Nameplate";
    pub const MANUFACTURER_NAME: &str = "0173-1#02-AAO677#002";
    pub const MANUFACTURER_PRODUCT_DESIGNATION: &str = "0173-1#02-AAW338#001";
    pub const MANUFACTURER_PRODUCT_TYPE: &str = "0173-1#02-AAO057#002";
    pub const SERIAL_NUMBER: &str = "0173-1#02-AAM556#002";
    pub const TECHNICAL_DATA: &str = "https://admin-shell.io/ZVEI/TechnicalData/Submodel/1/2";
    pub const GENERAL_INFORMATION: &str =
        "https://admin-shell.io/ZVEI/TechnicalData/GeneralInformation/1/1";
    pub const TECHNICAL_PROPERTIES: &str =
        "https://admin-shell.io/ZVEI/TechnicalData/TechnicalProperties/1/1";
    pub const TIME_SERIES: &str = "https://admin-shell.io/idta/TimeSeries/1/1";
    pub const TS_METADATA: &str = "https://admin-shell.io/idta/TimeSeries/Metadata/1/1";
    pub const TS_NAME: &str = "https://admin-shell.io/idta/TimeSeries/Metadata/Name/1/1";
    pub const TS_SEGMENTS: &str = "https://admin-shell.io/idta/TimeSeries/Segments/1/1";
    pub const TS_LINKED_SEGMENT: &str =
        "https://admin-shell.io/idta/TimeSeries/Segments/LinkedSegment/1/1";
    pub const TS_SEGMENT_NAME: &str = "https://admin-shell.io/idta/TimeSeries/Segment/Name/1/1";
    pub const TS_ENDPOINT: &str = "https://admin-shell.io/idta/TimeSeries/Endpoint/1/1";
    pub const TS_QUERY: &str = "https://admin-shell.io/idta/TimeSeries/Query/1/1";
    pub const IEC61360: &str =
        "https://admin-shell.io/DataSpecificationTemplates/DataSpecificationIec61360/3/0";
}

/// An instrument twin with its type, as the shell shows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Instrument {
    pub twin_id: String,
    pub name: String,
    pub serial_number: Option<String>,
    pub type_id: Option<String>,
    pub gateway_id: Option<String>,
    pub device_id: Option<String>,
    pub type_name: Option<String>,
    pub manufacturer: Option<String>,
    pub device_type: Option<String>,
    pub type_description: Option<String>,
    pub metrics: Option<Value>,
}

/// A series of the instrument (its time series in the analytics API).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SeriesRef {
    pub gateway_id: String,
    pub device_id: String,
    pub series_id: i32,
    pub metric: String,
    pub unit: String,
}

/// Text as the metamodel takes it: no control characters, at most `max`
/// characters; None when nothing is left (empty strings are not allowed).
fn text(s: &str, max: usize) -> Option<String> {
    let t: String = s.chars().filter(|c| !c.is_control()).take(max).collect();
    let t = t.trim().to_string();
    (!t.is_empty()).then_some(t)
}

fn external(value: &str) -> Value {
    json!({"type": "ExternalReference", "keys": [{"type": "GlobalReference", "value": value}]})
}

fn lang(s: &str, max: usize) -> Option<Value> {
    text(s, max).map(|t| json!([{"language": "en", "text": t}]))
}

fn mlp(id_short: &str, semantic: &str, value: &str) -> Option<Value> {
    lang(value, 1023).map(|v| {
        json!({"modelType": "MultiLanguageProperty", "idShort": id_short,
               "semanticId": external(semantic), "value": v})
    })
}

fn string_property(id_short: &str, semantic: Option<&str>, value: &str) -> Option<Value> {
    text(value, 2000).map(|v| {
        let mut p = json!({"modelType": "Property", "idShort": id_short, "valueType": "xs:string", "value": v});
        if let Some(s) = semantic {
            p["semanticId"] = external(s);
        }
        p
    })
}

fn collection(id_short: &str, semantic: &str, value: Vec<Value>) -> Value {
    let mut c = json!({"modelType": "SubmodelElementCollection", "idShort": id_short,
                       "semanticId": external(semantic)});
    if !value.is_empty() {
        c["value"] = Value::Array(value);
    }
    c
}

fn submodel(
    i: &Instrument,
    kind: SubmodelKind,
    id_short: &str,
    semantic: &str,
    elements: Vec<Value>,
) -> Value {
    let mut s = json!({
        "modelType": "Submodel",
        "id": ids::submodel_id(&i.twin_id, kind),
        "idShort": id_short,
        "kind": "Instance",
        "semanticId": external(semantic),
    });
    if !elements.is_empty() {
        s["submodelElements"] = Value::Array(elements);
    }
    s
}

/// The shell of an instrument twin.
pub fn shell(i: &Instrument) -> Value {
    let mut asset = json!({"assetKind": "Instance", "globalAssetId": ids::asset_id(&i.twin_id)});
    if let Some(t) = i.type_id.as_deref().and_then(|t| text(t, 2000)) {
        asset["assetType"] = json!(t);
    }
    let mut s = json!({
        "modelType": "AssetAdministrationShell",
        "id": ids::shell_id(&i.twin_id),
        "idShort": ids::id_short(&i.twin_id, "Twin_"),
        "assetInformation": asset,
        "submodels": SubmodelKind::ALL.iter().map(|k| json!({
            "type": "ModelReference",
            "keys": [{"type": "Submodel", "value": ids::submodel_id(&i.twin_id, *k)}],
        })).collect::<Vec<_>>(),
    });
    if let Some(name) = lang(&i.name, 128) {
        s["displayName"] = name;
    }
    s
}

/// Nameplate (Digital Nameplate 2.0): what is known of the maker and the unit.
pub fn nameplate(i: &Instrument) -> Value {
    let m = |x: &Option<String>| x.clone().unwrap_or_default();
    let elements: Vec<Value> = [
        mlp(
            "ManufacturerName",
            semantic::MANUFACTURER_NAME,
            &m(&i.manufacturer),
        ),
        mlp(
            "ManufacturerProductDesignation",
            semantic::MANUFACTURER_PRODUCT_DESIGNATION,
            &m(&i.type_name),
        ),
        string_property(
            "ManufacturerProductType",
            Some(semantic::MANUFACTURER_PRODUCT_TYPE),
            &m(&i.device_type),
        ),
        string_property(
            "SerialNumber",
            Some(semantic::SERIAL_NUMBER),
            &m(&i.serial_number),
        ),
    ]
    .into_iter()
    .flatten()
    .collect();
    submodel(
        i,
        SubmodelKind::Nameplate,
        "Nameplate",
        semantic::NAMEPLATE,
        elements,
    )
}

/// TechnicalData: the type's points (from the firmware profile) as
/// properties, each with its unit (IEC 61360 data specification), whether
/// it is writable and its range as qualifiers.
pub fn technical_data(i: &Instrument) -> Value {
    let m = |x: &Option<String>| x.clone().unwrap_or_default();
    let general: Vec<Value> = [
        mlp(
            "ManufacturerName",
            semantic::MANUFACTURER_NAME,
            &m(&i.manufacturer),
        ),
        mlp(
            "ManufacturerProductDesignation",
            semantic::MANUFACTURER_PRODUCT_DESIGNATION,
            &m(&i.type_name),
        ),
    ]
    .into_iter()
    .flatten()
    .collect();
    let metrics: Vec<&Value> = i
        .metrics
        .as_ref()
        .and_then(Value::as_array)
        .map(|a| a.iter().filter(|m| m["name"].is_string()).collect())
        .unwrap_or_default();
    let shorts = ids::unique_id_shorts(
        metrics
            .iter()
            .map(|m| m["name"].as_str().unwrap_or_default()),
        "P_",
    );
    let points: Vec<Value> = metrics
        .iter()
        .zip(shorts)
        .map(|(m, short)| point_property(m, &short))
        .collect();
    let mut elements = Vec::new();
    if !general.is_empty() {
        elements.push(collection(
            "GeneralInformation",
            semantic::GENERAL_INFORMATION,
            general,
        ));
    }
    elements.push(collection(
        "TechnicalProperties",
        semantic::TECHNICAL_PROPERTIES,
        points,
    ));
    submodel(
        i,
        SubmodelKind::TechnicalData,
        "TechnicalData",
        semantic::TECHNICAL_DATA,
        elements,
    )
}

fn point_property(m: &Value, id_short: &str) -> Value {
    let name = m["name"].as_str().unwrap_or_default();
    let mut content = json!({
        "modelType": "DataSpecificationIec61360",
        "preferredName": lang(name, 255).unwrap_or_else(|| json!([{"language": "en", "text": id_short}])),
        "dataType": "REAL_MEASURE",
    });
    if let Some(u) = m["unit"].as_str().and_then(|u| text(u, 2000)) {
        content["unit"] = json!(u);
    }
    if let Some(d) = m["description"].as_str().and_then(|d| lang(d, 1023)) {
        content["definition"] = d;
    }
    let mut qualifiers = vec![json!({
        "kind": "ConceptQualifier", "type": "qi:writable", "valueType": "xs:boolean",
        "value": if m["writable"] == true { "true" } else { "false" },
    })];
    for bound in ["min", "max"] {
        if let Some(v) = m[bound].as_f64() {
            qualifiers.push(
                json!({"kind": "ConceptQualifier", "type": format!("qi:{bound}"),
                                   "valueType": "xs:double", "value": v.to_string()}),
            );
        }
    }
    let mut p = json!({
        "modelType": "Property",
        "idShort": id_short,
        "valueType": "xs:double",
        "qualifiers": qualifiers,
        "embeddedDataSpecifications": [{
            "dataSpecification": external(semantic::IEC61360),
            "dataSpecificationContent": content,
        }],
    });
    if let Some(d) = m["description"].as_str().and_then(|d| lang(d, 1023)) {
        p["description"] = d;
    }
    p
}

/// TimeSeries (Time Series Data 1.1): one LinkedSegment per series of the
/// instrument, its Endpoint the analytics API's downsample of that series.
pub fn time_series(i: &Instrument, series: &[SeriesRef], base_url: &str) -> Value {
    let metadata = collection(
        "Metadata",
        semantic::TS_METADATA,
        mlp(
            "Name",
            semantic::TS_NAME,
            &format!("Readings of {}", i.twin_id),
        )
        .into_iter()
        .collect(),
    );
    let shorts = ids::unique_id_shorts(series.iter().map(|s| s.metric.as_str()), "S_");
    let segments: Vec<Value> = series
        .iter()
        .zip(shorts)
        .map(|(s, short)| {
            let label = if s.unit.is_empty() {
                s.metric.clone()
            } else {
                format!("{} [{}]", s.metric, s.unit)
            };
            collection(
                &short,
                semantic::TS_LINKED_SEGMENT,
                [
                    mlp("Name", semantic::TS_SEGMENT_NAME, &label),
                    string_property(
                        "Endpoint",
                        Some(semantic::TS_ENDPOINT),
                        &format!("{base_url}/api/v1/series/{}/downsample", s.series_id),
                    ),
                    // The API's own parameters; a client adds from= and to=
                    // (RFC 3339) for another window than the last 24 h.
                    string_property("Query", Some(semantic::TS_QUERY), "points=500"),
                ]
                .into_iter()
                .flatten()
                .collect(),
            )
        })
        .collect();
    let elements = vec![
        metadata,
        collection("Segments", semantic::TS_SEGMENTS, segments),
    ];
    submodel(
        i,
        SubmodelKind::TimeSeries,
        "TimeSeries",
        semantic::TIME_SERIES,
        elements,
    )
}

/// One of the instrument's submodels.
pub fn submodel_of(
    i: &Instrument,
    kind: SubmodelKind,
    series: &[SeriesRef],
    base_url: &str,
) -> Value {
    match kind {
        SubmodelKind::Nameplate => nameplate(i),
        SubmodelKind::TechnicalData => technical_data(i),
        SubmodelKind::TimeSeries => time_series(i, series, base_url),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meter() -> Instrument {
        Instrument {
            twin_id: "instrument:gw:meter-1".into(),
            name: "meter-1".into(),
            serial_number: None,
            type_id: Some("profile:eastron-sdm630".into()),
            gateway_id: Some("gw".into()),
            device_id: Some("meter-1".into()),
            type_name: Some("SDM630 Modbus V2".into()),
            manufacturer: Some("Eastron".into()),
            device_type: Some("".into()),
            type_description: None,
            metrics: Some(json!([
                {"name": "voltage_l1", "unit": "V", "description": "", "writable": false, "min": null, "max": null},
                {"name": "1mode", "unit": "", "description": "Mode", "writable": true, "min": 0.0, "max": 3.0},
            ])),
        }
    }

    #[test]
    fn absent_facts_are_left_out_not_written_empty() {
        let n = nameplate(&meter());
        let names: Vec<&str> = n["submodelElements"]
            .as_array()
            .map(|a| a.iter().filter_map(|e| e["idShort"].as_str()).collect())
            .unwrap_or_default();
        assert_eq!(
            names,
            vec!["ManufacturerName", "ManufacturerProductDesignation"]
        );
        let t = technical_data(&meter());
        let props = &t["submodelElements"][1]["value"];
        assert_eq!(props[0]["idShort"], "voltage_l1");
        assert!(props[0].get("description").is_none());
        assert_eq!(props[1]["idShort"], "P_1mode");
        assert_eq!(props[1]["qualifiers"][0]["value"], "true");
        assert_eq!(props[1]["qualifiers"][2]["value"], "3");
        let unit = &props[0]["embeddedDataSpecifications"][0]["dataSpecificationContent"]["unit"];
        assert_eq!(unit, "V");
        let s = time_series(&meter(), &[], "http://hub");
        assert!(s["submodelElements"][1].get("value").is_none());
    }
}
