//! Benches against real shipped profiles: what contradicts a profile is
//! refused with the bench, the point and the reason.

use super::*;
use std::sync::Arc;

fn models() -> BTreeMap<String, (Arc<device_profile::Profile>, u64)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../firmware-profiles");
    let p = device_profile::Profile::load_by_id(&dir, "binder-mk53").expect("profile");
    [("chamber".to_string(), (Arc::new(p), 500))]
        .into_iter()
        .collect()
}

fn bench(points: &str) -> Vec<BenchConfig> {
    #[derive(Deserialize)]
    struct F {
        benches: Vec<BenchConfig>,
    }
    let f: F = toml::from_str(&format!(
        "[[benches]]\nid = \"b1\"\n{points}\n[[benches.instruments]]\nname = \"smu\"\ndevice = \"smu\"\n"
    ))
    .expect("toml");
    f.benches
}

const GOOD: &str = "[[benches.points]]\nname = \"chamber.temperature\"\ndevice = \"chamber\"\n\
    read = \"temperature\"\nwrite = \"temperature_setpoint\"\nmin = -45\nmax = 90\n";

#[test]
fn a_bench_resolves_with_units_and_poll_intervals_from_the_profile() {
    let b = resolve(&bench(GOOD), &models()).expect("resolves");
    let p = &b[0].points["chamber.temperature"];
    assert_eq!(
        (p.unit.as_str(), p.min, p.max, p.poll_ms),
        ("Cel", Some(-45.0), Some(90.0), 500)
    );
    // The SMU is not polled here: the bench stays, unavailable, with the reason.
    assert!(
        b[0].unavailable
            .as_deref()
            .is_some_and(|u| u.contains("\"smu\""))
    );
    let info = b[0].to_proto();
    assert_eq!(info.points[0].write_point, "temperature_setpoint");
    assert_eq!(info.instruments[0].device_id, "smu");
}

#[test]
fn mappings_that_contradict_the_profile_are_refused() {
    let unknown = GOOD.replace("read = \"temperature\"", "read = \"humidity\"");
    let e = resolve(&bench(&unknown), &models()).unwrap_err();
    assert!(e.message.contains("has no point \"humidity\""), "{e}");
    let read_only = GOOD.replace(
        "write = \"temperature_setpoint\"",
        "write = \"temperature\"",
    );
    let e = resolve(&bench(&read_only), &models()).unwrap_err();
    assert!(e.message.contains("not writable"), "{e}");
    let units = GOOD.replace(
        "write = \"temperature_setpoint\"",
        "write = \"operating_mode\"",
    );
    let e = resolve(&bench(&units), &models()).unwrap_err();
    assert!(e.message.contains("in Cel but write"), "{e}");
    assert_eq!(e.to_string().split(':').next(), Some("benches[0] (b1)"));
}

#[test]
fn the_shape_is_checked_before_any_profile() {
    let devices: HashSet<&str> = ["chamber", "smu"].into_iter().collect();
    let runs = RunsConfig::default();
    assert!(validate(&bench(GOOD), &runs, &devices).is_ok());
    let check = |text: &str, key: &str, says: &str| {
        let (k, m) = validate(&bench(text), &runs, &devices).unwrap_err();
        assert_eq!(k, key, "{m}");
        assert!(m.contains(says), "{m}");
    };
    check(
        &GOOD.replace("min = -45", "min = 95"),
        "benches[0].points[0].min",
        "above max",
    );
    check(
        &GOOD.replace("\"chamber\"\n", "\"oven\"\n"),
        "benches[0].points[0].device",
        "no device",
    );
    check(
        &GOOD.replace("chamber.temperature", "temperature"),
        "benches[0].points[0].name",
        "<role>.<point>",
    );
    check(
        &format!("{GOOD}{GOOD}"),
        "benches[0].points[1].name",
        "mapped twice",
    );
    let read_only_limits = GOOD.replace("write = \"temperature_setpoint\"\n", "");
    check(&read_only_limits, "benches[0].points[0].min", "no `write`");
    for bad in [0.5, f64::NAN, f64::INFINITY, 2e6] {
        let runs = RunsConfig {
            time_scale: bad,
            ..RunsConfig::default()
        };
        let (k, _) = validate(&bench(GOOD), &runs, &devices).unwrap_err();
        assert_eq!(k, "runs.time_scale");
    }
}
