//! Instrument models from firmware profiles: a gateway's Hello names the
//! profile of each device it polls; the hub keeps one twin type per profile
//! (`profile:<id>`, source `profile`) and gives each device's instrument
//! twin that type, unless an engineer chose another one.

use qi_proto::limits::{
    MAX_DEVICE_POINTS, MAX_HELLO_DEVICES, MAX_ID_LEN, MAX_TEXT_LEN, valid_id, valid_text,
    valid_unit,
};
use qi_proto::v1::DeviceInfo;
use serde_json::json;
use sqlx::PgPool;
use std::collections::{BTreeMap, HashSet};

/// Prefix of the type ids made from profiles.
pub const PROFILE_TYPE_PREFIX: &str = "profile:";

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The Hello's device descriptions break the limits; nothing was written.
    #[error("{0}")]
    Invalid(String),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

/// What one Hello changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Types created or whose content changed (their version was bumped).
    pub types_changed: Vec<String>,
    /// Instrument twins that got a (new) type: (twin id, version).
    pub twins_typed: Vec<(String, i64)>,
}

/// Checks every device description before anything is written: a bad one
/// refuses the whole Hello.
pub fn validate(devices: &[DeviceInfo]) -> Result<(), String> {
    if devices.len() > MAX_HELLO_DEVICES {
        return Err(format!(
            "{} devices in the Hello; at most {MAX_HELLO_DEVICES}",
            devices.len()
        ));
    }
    let mut seen = HashSet::new();
    for (i, d) in devices.iter().enumerate() {
        let at = format!("devices[{i}]");
        if !valid_id(&d.device_id) || !valid_id(&d.profile_id) {
            return Err(format!(
                "{at}: device_id and profile_id must be 1..={MAX_ID_LEN} printable bytes"
            ));
        }
        if !seen.insert(d.device_id.as_str()) {
            return Err(format!("{at}: device {:?} described twice", d.device_id));
        }
        for (name, v) in [
            ("manufacturer", &d.manufacturer),
            ("model", &d.model),
            ("device_type", &d.device_type),
            ("description", &d.description),
        ] {
            if !valid_text(v) {
                return Err(format!(
                    "{at} ({}): {name} longer than {MAX_TEXT_LEN} bytes or not printable",
                    d.device_id
                ));
            }
        }
        if d.points.len() > MAX_DEVICE_POINTS {
            return Err(format!(
                "{at} ({}): {} points; at most {MAX_DEVICE_POINTS}",
                d.device_id,
                d.points.len()
            ));
        }
        let mut names = HashSet::new();
        for (j, p) in d.points.iter().enumerate() {
            let at = format!("{at}.points[{j}]");
            if !valid_id(&p.name) || !names.insert(p.name.as_str()) {
                return Err(format!(
                    "{at}: name must be 1..={MAX_ID_LEN} printable bytes and unique in the device"
                ));
            }
            if !valid_unit(&p.unit) || !valid_text(&p.description) {
                return Err(format!(
                    "{at} ({}): unit or description too long or not printable",
                    p.name
                ));
            }
            let finite = |v: Option<f64>| v.is_none_or(f64::is_finite);
            if !finite(p.min) || !finite(p.max) {
                return Err(format!("{at} ({}): min and max must be finite", p.name));
            }
            if let (Some(lo), Some(hi)) = (p.min, p.max)
                && lo > hi
            {
                return Err(format!("{at} ({}): min {lo} above max {hi}", p.name));
            }
        }
    }
    Ok(())
}

/// The `metrics` array of a type made from a device's points.
fn metrics_of(d: &DeviceInfo) -> serde_json::Value {
    serde_json::Value::Array(
        d.points
            .iter()
            .map(|p| {
                json!({
                    "name": p.name,
                    "unit": p.unit,
                    "description": p.description,
                    "writable": p.writable,
                    "min": p.min,
                    "max": p.max,
                })
            })
            .collect(),
    )
}

/// Records the models of a gateway's devices, in one transaction: one type
/// per profile (created, or updated with its version bumped only when its
/// content changed; a type an engineer wrote under the same id is left
/// alone), and each device's instrument twin (discovered if new) typed by
/// its profile unless an engineer gave it a type of their own.
pub async fn apply_hello(
    pool: &PgPool,
    gateway: &str,
    devices: &[DeviceInfo],
) -> Result<Applied, ModelError> {
    validate(devices).map_err(ModelError::Invalid)?;
    if devices.is_empty() {
        return Ok(Applied::default());
    }
    // One type per profile; the first device of a profile describes it (one
    // agent loads one file per profile id).
    let mut profiles: BTreeMap<&str, &DeviceInfo> = BTreeMap::new();
    for d in devices {
        profiles.entry(d.profile_id.as_str()).or_insert(d);
    }
    let mut out = Applied::default();
    let mut tx = pool.begin().await?;
    for (profile, d) in &profiles {
        let type_id = format!("{PROFILE_TYPE_PREFIX}{profile}");
        let changed: Option<String> = sqlx::query_scalar(
            "INSERT INTO twin_types (type_id, kind, name, metrics, manufacturer, device_type, description, source)
             VALUES ($1, 'instrument', $2, $3, $4, $5, $6, 'profile')
             ON CONFLICT (type_id) DO UPDATE
                SET name = EXCLUDED.name, metrics = EXCLUDED.metrics,
                    manufacturer = EXCLUDED.manufacturer, device_type = EXCLUDED.device_type,
                    description = EXCLUDED.description,
                    version = twin_types.version + 1, updated_at = now()
              WHERE twin_types.source = 'profile'
                AND (twin_types.name, twin_types.metrics, twin_types.manufacturer,
                     twin_types.device_type, twin_types.description)
                    IS DISTINCT FROM
                    (EXCLUDED.name, EXCLUDED.metrics, EXCLUDED.manufacturer,
                     EXCLUDED.device_type, EXCLUDED.description)
             RETURNING type_id",
        )
        .bind(&type_id)
        .bind(&d.model)
        .bind(metrics_of(d))
        .bind(&d.manufacturer)
        .bind(&d.device_type)
        .bind(&d.description)
        .fetch_optional(&mut *tx)
        .await?;
        out.types_changed.extend(changed);
    }
    for d in devices {
        let type_id = format!("{PROFILE_TYPE_PREFIX}{}", d.profile_id);
        let twin: String = sqlx::query_scalar("SELECT twin_discover_instrument($1, $2)")
            .bind(gateway)
            .bind(&d.device_id)
            .fetch_one(&mut *tx)
            .await?;
        // Never over a type an engineer chose (source 'user'), nor with a
        // type id an engineer wrote under the profile's name.
        let typed: Option<i64> = sqlx::query_scalar(
            "UPDATE twins t SET type_id = $2, version = t.version + 1, updated_at = now()
              WHERE t.twin_id = $1
                AND t.type_id IS DISTINCT FROM $2
                AND EXISTS (SELECT 1 FROM twin_types n WHERE n.type_id = $2 AND n.source = 'profile')
                AND (t.type_id IS NULL
                     OR EXISTS (SELECT 1 FROM twin_types o WHERE o.type_id = t.type_id AND o.source = 'profile'))
             RETURNING t.version",
        )
        .bind(&twin)
        .bind(&type_id)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(v) = typed {
            out.twins_typed.push((twin, v));
        }
    }
    tx.commit().await?;
    Ok(out)
}

/// [`apply_hello`], logged, with each twin typed announced on the live
/// fan-out.
pub async fn record(
    pool: &PgPool,
    live: &crate::live::Fanout,
    gateway: &str,
    devices: &[DeviceInfo],
) -> Result<(), ModelError> {
    let applied = apply_hello(pool, gateway, devices).await?;
    if !applied.types_changed.is_empty() || !applied.twins_typed.is_empty() {
        tracing::info!(%gateway, types = ?applied.types_changed, twins = applied.twins_typed.len(),
            "instrument models recorded from the gateway's profiles");
    }
    for (twin_id, version) in applied.twins_typed {
        live.publish(crate::live::EventBody::Twin {
            twin_id,
            kind: "instrument".into(),
            change: "type_from_profile".into(),
            version,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use qi_proto::v1::PointInfo;

    fn device(id: &str) -> DeviceInfo {
        DeviceInfo {
            device_id: id.into(),
            profile_id: "binder-mk53".into(),
            manufacturer: "Binder".into(),
            model: "MK 53".into(),
            points: vec![PointInfo {
                name: "setpoint".into(),
                unit: "Cel".into(),
                writable: true,
                min: Some(-40.0),
                max: Some(180.0),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn bad_device_descriptions_are_refused_whole() {
        assert!(validate(&[device("a"), device("b")]).is_ok());
        assert!(
            validate(&[device("a"), device("a")])
                .unwrap_err()
                .contains("twice")
        );
        let mut d = device("a");
        d.description = "x".repeat(MAX_TEXT_LEN + 1);
        assert!(validate(&[d]).unwrap_err().contains("description"));
        let mut d = device("a");
        d.points[0].min = Some(f64::NAN);
        assert!(validate(&[d]).unwrap_err().contains("finite"));
        let mut d = device("a");
        d.points[0].min = Some(500.0);
        assert!(validate(&[d]).unwrap_err().contains("above max"));
        let mut d = device("a");
        d.points.push(d.points[0].clone());
        assert!(validate(&[d]).unwrap_err().contains("unique"));
        let mut d = device("a");
        d.profile_id = String::new();
        assert!(validate(&[d]).is_err());
        let many: Vec<DeviceInfo> = (0..=MAX_HELLO_DEVICES)
            .map(|i| device(&i.to_string()))
            .collect();
        assert!(validate(&many).unwrap_err().contains("at most"));
    }

    #[test]
    fn a_type_lists_the_points_with_units_and_writable_flags() {
        let m = metrics_of(&device("a"));
        assert_eq!(m[0]["name"], "setpoint");
        assert_eq!(m[0]["unit"], "Cel");
        assert_eq!(m[0]["writable"], true);
        assert_eq!(m[0]["max"], 180.0);
    }
}
