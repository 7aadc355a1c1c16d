//! What the gateway says about itself when it opens the stream: its devices
//! and the model of each, from the firmware profiles it loaded, so the hub
//! can give each instrument its type and know which points are writable.

use crate::fleet::FleetView;
use qi_proto::limits::{
    MAX_DEVICE_POINTS, MAX_HELLO_DEVICES, MAX_ID_LEN, MAX_TEXT_LEN, MAX_UNIT_LEN,
};
use qi_proto::v1::{DeviceInfo, PointInfo};

/// `s` cut to at most `max` bytes at a character boundary, control
/// characters dropped: a long description must not get the whole Hello refused.
fn fit(s: &str, max: usize) -> String {
    let mut out = String::new();
    for c in s.chars().filter(|c| !c.is_control()) {
        if out.len() + c.len_utf8() > max {
            break;
        }
        out.push(c);
    }
    out
}

/// The devices of `view` as the hub expects them, within the limits both
/// ends agree on. Ids and point names that break them are left out (the
/// hub would refuse the stream, and readings of such a device are refused
/// anyway); free text is shortened.
pub fn device_infos(view: &FleetView) -> Vec<DeviceInfo> {
    let ok_id = |s: &str| qi_proto::limits::valid_id(s);
    let mut out = Vec::new();
    for (id, p) in view.models.iter() {
        if out.len() == MAX_HELLO_DEVICES {
            tracing::warn!(
                max = MAX_HELLO_DEVICES,
                "more devices than a Hello may describe; the rest get no model at the hub"
            );
            break;
        }
        if !ok_id(id) || !ok_id(&p.model.id) {
            tracing::warn!(device = %id, profile = %p.model.id, max = MAX_ID_LEN,
                "device or profile id unfit for the hub; not described in the Hello");
            continue;
        }
        let points: Vec<PointInfo> = p
            .points
            .iter()
            .filter(|pt| (pt.report || pt.writable) && ok_id(&pt.name))
            .take(MAX_DEVICE_POINTS)
            .map(|pt| {
                let range = pt.value_range();
                PointInfo {
                    name: pt.name.clone(),
                    unit: fit(&pt.unit, MAX_UNIT_LEN),
                    description: fit(&pt.description, MAX_TEXT_LEN),
                    writable: pt.writable,
                    min: range.map(|r| r.0),
                    max: range.map(|r| r.1),
                }
            })
            .collect();
        out.push(DeviceInfo {
            device_id: id.clone(),
            profile_id: p.model.id.clone(),
            manufacturer: fit(&p.model.manufacturer, MAX_TEXT_LEN),
            model: fit(&p.model.name, MAX_TEXT_LEN),
            device_type: fit(&p.model.device_type, MAX_TEXT_LEN),
            description: fit(&p.model.description, MAX_TEXT_LEN),
            points,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_profile_becomes_a_device_description_within_the_limits() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../firmware-profiles");
        let p = device_profile::Profile::load_by_id(&dir, "binder-mk53").expect("profile");
        let view = FleetView {
            models: Arc::new(vec![
                ("chamber".into(), Arc::new(p)),
                (
                    "x".repeat(MAX_ID_LEN + 1),
                    Arc::new(
                        device_profile::Profile::load_by_id(&dir, "eastron-sdm630")
                            .expect("profile"),
                    ),
                ),
            ]),
            ..Default::default()
        };
        let infos = device_infos(&view);
        assert_eq!(infos.len(), 1, "the unfit id is left out");
        let d = &infos[0];
        assert_eq!(
            (d.device_id.as_str(), d.profile_id.as_str()),
            ("chamber", "binder-mk53")
        );
        let mode = d
            .points
            .iter()
            .find(|p| p.name == "operating_mode")
            .expect("point");
        assert!(mode.writable);
        assert_eq!((mode.min, mode.max), (Some(0.0), Some(65535.0)));
        let t = d
            .points
            .iter()
            .find(|p| p.name == "temperature")
            .expect("point");
        assert!(!t.writable && t.min.is_none());
        assert_eq!(fit(&"é".repeat(300), 5), "éé");
        assert_eq!(fit("a\nb", 10), "ab");
    }
}
