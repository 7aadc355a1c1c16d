//! Start checks on a real template (tc200) and a hand-made bench.

use super::*;
use crate::benches::{Bench, BenchPoint};
use std::path::Path;

fn tc200() -> Protocol {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../protocols/tc200.toml");
    Protocol::load(&path).unwrap_or_else(|e| panic!("{e}"))
}

fn bp(name: &str, unit: &str, write: bool, lim: Option<(f64, f64)>) -> (String, BenchPoint) {
    (
        name.to_string(),
        BenchPoint {
            name: name.into(),
            device: "dev".into(),
            read: Some("r".into()),
            write: write.then(|| "w".into()),
            unit: unit.into(),
            min: lim.map(|l| l.0),
            max: lim.map(|l| l.1),
            poll_ms: 1000,
        },
    )
}

fn bench() -> Bench {
    Bench {
        id: "rig".into(),
        description: String::new(),
        points: [
            bp("chamber.temperature", "Cel", true, Some((-45.0, 90.0))),
            bp("module.temperature", "Cel", false, None),
            bp("supply.current", "A", true, Some((0.0, 15.0))),
            bp("supply.current_measured", "A", false, None),
            bp("supply.open_circuit", "1", false, None),
        ]
        .into_iter()
        .collect(),
        instruments: BTreeMap::new(),
        unavailable: None,
    }
}

fn given(kv: &[(&str, f64)]) -> BTreeMap<String, f64> {
    kv.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

#[test]
fn parameters_take_defaults_and_refuse_what_the_template_does_not_allow() {
    let p = tc200();
    let ok = parameters(&p, &given(&[("area_m2", 1.6)])).expect("ok");
    assert_eq!((ok["t_high"], ok["area_m2"]), (85.0, 1.6));
    let e = parameters(&p, &BTreeMap::new()).unwrap_err().to_string();
    assert!(e.contains("\"area_m2\"") && e.contains("no default"), "{e}");
    let e = parameters(&p, &given(&[("area_m2", 1.6), ("t_high", 95.0)]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("outside 83..87"), "{e}");
    let e = parameters(&p, &given(&[("area_m2", 1.6), ("tcycles", 3.0)]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("\"tcycles\" is not a parameter"), "{e}");
}

#[test]
fn the_bench_must_map_every_point_in_its_unit_and_allow_every_value() {
    let p = tc200();
    let params = parameters(&p, &given(&[("area_m2", 1.6)])).expect("ok");
    check(&p, &bench(), &params).expect("fits");
    // A missing mapping.
    let mut b = bench();
    b.points.remove("supply.open_circuit");
    let e = check(&p, &b, &params).unwrap_err();
    assert!(
        matches!(&e, StartError::Binding(m) if m.contains("supply.open_circuit")),
        "{e}"
    );
    // A unit that differs.
    let mut b = bench();
    b.points
        .extend([bp("supply.current", "mA", true, Some((0.0, 15.0)))]);
    let e = check(&p, &b, &params).unwrap_err();
    assert!(
        matches!(&e, StartError::Binding(m) if m.contains("in A in the template but in mA")),
        "{e}"
    );
    // A written point the bench only reads.
    let mut b = bench();
    b.points.extend([bp("supply.current", "A", false, None)]);
    assert!(matches!(
        check(&p, &b, &params),
        Err(StartError::Binding(_))
    ));
    // Limits: a chamber that stops at 80 Cel cannot run t_high = 85 (a ramp target);
    // one that does not go below 0 refuses t_low; the injection current beyond the supply's.
    for (point, lim, says) in [
        ("chamber.temperature", (-45.0, 80.0), "85"),
        ("chamber.temperature", (0.0, 90.0), "-40"),
        ("supply.current", (0.0, 5.0), "10"),
    ] {
        let mut b = bench();
        let unit = if point.starts_with("supply") {
            "A"
        } else {
            "Cel"
        };
        b.points.extend([bp(point, unit, true, Some(lim))]);
        let e = check(&p, &b, &params).unwrap_err();
        assert!(
            matches!(&e, StartError::Limit(m) if m.contains(says) && m.contains(point)),
            "{e}"
        );
    }
    // The safe state is held to the limits too: 25 Cel outside 30..90.
    let mut b = bench();
    b.points
        .extend([bp("chamber.temperature", "Cel", true, Some((-45.0, 90.0)))]);
    let mut p2 = p.clone();
    p2.safe_state.setpoints[1].value = 95.0;
    let e = check(&p2, &b, &params).unwrap_err();
    assert!(
        matches!(&e, StartError::Limit(m) if m.contains("safe_state")),
        "{e}"
    );
}

#[test]
fn durations_from_parameters_are_in_seconds() {
    let p = tc200();
    let params = parameters(&p, &given(&[("area_m2", 1.6)])).expect("ok");
    assert_eq!(seconds(&p, "dwell", &params), Some(600.0));
    assert_eq!(seconds(&p, "2 h", &params), Some(7200.0));
    assert_eq!(
        value(&Quantity::Parameter("ramp_max".into()), &params),
        Some(100.0)
    );
}
