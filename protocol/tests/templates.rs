//! The shipped templates in `protocols/` and the refusals of bad ones.

use qi_protocol::{Protocol, ProtocolError};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn protocols_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../protocols")
}

fn load(name: &str) -> Protocol {
    let path = protocols_dir().join(name);
    Protocol::load(&path).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn every_shipped_template_is_valid_and_named_after_its_id() {
    let mut ids = Vec::new();
    for entry in std::fs::read_dir(protocols_dir()).unwrap_or_else(|e| panic!("{e}")) {
        let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let p = Protocol::load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            path.file_stem().and_then(|s| s.to_str()),
            Some(p.protocol.id.as_str()),
            "{}",
            path.display()
        );
        ids.push(p.protocol.id);
    }
    ids.sort();
    assert_eq!(
        ids,
        [
            "dh1000",
            "hf10",
            "insulation-wet-leakage",
            "pid96",
            "stc-power",
            "tc200"
        ]
    );
}

#[test]
fn templates_follow_the_standard_numbers() {
    let tc = load("tc200.toml");
    // 200 x (two 125 C ramps at 100 C/h + two 10 min dwells + two 1 min holds at 25 C),
    // less the first ramp starting at 25 C rather than -40 C (0.65 h), plus the
    // initial 10 min settle and the final ramp from -40 to 25 C (0.65 h).
    let hours = tc.nominal_duration_s() / 3600.0;
    let want = 200.0 * (2.5 + 22.0 / 60.0) - 0.65 + 10.0 / 60.0 + 0.65;
    assert!((hours - want).abs() < 1e-6, "{hours} vs {want}");
    assert_eq!(tc.executed_steps(), 3 + 1 + 200 * 8 + 1);
    let dh = load("dh1000.toml");
    assert!((dh.nominal_duration_s() / 3600.0 - 1001.5).abs() < 1e-6);
    let hf = load("hf10.toml");
    assert!(hf.nominal_duration_s() / 3600.0 > 10.0 * 20.5);
    let pid = load("pid96.toml");
    assert!((pid.nominal_duration_s() / 3600.0 - 96.5).abs() < 1e-6);
    assert!(tc.summary().contains("200"), "{}", tc.summary());
}

fn values(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

#[test]
fn tc200_criteria_pass_and_fail_with_explanations() {
    let tc = load("tc200.toml");
    let passing = values(&[
        ("area_m2", 1.6),
        ("before.pmax", 400.0),
        ("after.pmax", 388.0),
        ("after.r_iso", 500.0),
        ("after.wet_r_iso", 120.0),
        ("after.major_visual_defects", 0.0),
        ("module_temperature.min", -40.6),
        ("module_temperature.max", 85.3),
        ("open_circuit.max", 0.0),
    ]);
    let results = tc.evaluate_criteria(&passing);
    assert_eq!(results.len(), 7);
    for r in &results {
        let x = r
            .outcome
            .as_ref()
            .unwrap_or_else(|e| panic!("{}: {e}", r.id));
        assert!(x.verdict, "{r}");
    }
    let dp = results
        .iter()
        .find(|r| r.id == "pmax-degradation")
        .map(ToString::to_string);
    assert_eq!(
        dp.as_deref(),
        Some(
            "pmax-degradation [%]: PASS; (before.pmax - after.pmax) / before.pmax * 100 = 3 <= 5 \
             (= max_degradation_pct) holds; inputs: before.pmax=400, after.pmax=388, max_degradation_pct=5"
        )
    );
    let visual = results
        .iter()
        .find(|r| r.id == "visual")
        .map(ToString::to_string);
    assert!(
        visual.is_some_and(|v| v.ends_with("(provisional until approved)")),
        "{results:?}"
    );

    // 6.5 % loss, and a small wet module: 20 MOhm x 1.6 m2 = 32 < 40.
    let mut failing = passing.clone();
    failing.insert("after.pmax".into(), 374.0);
    failing.insert("after.wet_r_iso".into(), 20.0);
    let results = tc.evaluate_criteria(&failing);
    let failed: Vec<String> = results
        .iter()
        .filter(|r| r.outcome.as_ref().is_ok_and(|x| !x.verdict))
        .map(|r| r.id.clone())
        .collect();
    assert_eq!(failed, ["pmax-degradation", "wet-leakage"]);
    let wet = results
        .iter()
        .find(|r| r.id == "wet-leakage")
        .map(ToString::to_string);
    assert_eq!(
        wet.as_deref(),
        Some(
            "wet-leakage [MOhm.m2]: FAIL; after.wet_r_iso * max(area_m2, 0.1) = 32 >= 40 \
             (= r_area_min) does not hold; inputs: after.wet_r_iso=20, area_m2=1.6, r_area_min=40"
        )
    );

    // A missing input is no verdict, and says which.
    let mut missing = passing.clone();
    missing.remove("before.pmax");
    let results = tc.evaluate_criteria(&missing);
    let dp = results.iter().find(|r| r.id == "pmax-degradation");
    assert!(
        dp.is_some_and(|r| r
            .to_string()
            .contains("NO VERDICT: `before.pmax` has no value")),
        "{results:?}"
    );
    // before.pmax = 0 is refused, not a pass.
    let mut zero = passing;
    zero.insert("before.pmax".into(), 0.0);
    let results = tc.evaluate_criteria(&zero);
    assert!(
        results
            .iter()
            .any(|r| r.to_string().contains("NO VERDICT: division by zero")),
        "{results:?}"
    );
}

const MINIMAL: &str = r#"format_version = 1
[protocol]
id = "t"
name = "t"
version = "1"
standard = "none"
on_device_offline = "pause"
on_restart = "resume"

[[parameters]]
name = "t_high"
unit = "Cel"
default = 85

[[steps]]
kind = "setpoint"
point = "chamber.temperature"
unit = "Cel"
value = "t_high"

[[steps]]
kind = "measure"
label = "m"
points = [{ name = "r_iso", point = "hipot.resistance", unit = "MOhm" }]

[[criteria]]
id = "c"
description = "d"
expression = "m.r_iso >= 40"
unit = "MOhm"
"#;

fn refusal(text: &str) -> String {
    match Protocol::parse(text, Path::new("bad.toml")) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e @ (ProtocolError::Parse { .. } | ProtocolError::Invalid { .. })) => e.to_string(),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn the_minimal_template_is_valid() {
    let p = Protocol::parse(MINIMAL, Path::new("t.toml")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(p.steps.len(), 2);
}

#[test]
fn bad_templates_are_refused_naming_the_place() {
    for (what, from, to, want) in [
        (
            "unknown step kind",
            "kind = \"measure\"",
            "kind = \"measure_twice\"",
            &["line 22", "unknown variant `measure_twice`", "setpoint"][..],
        ),
        (
            "unknown field",
            "value = \"t_high\"",
            "value = \"t_high\"\nramp = 100",
            &["line 15", "unknown field `ramp`"][..],
        ),
        (
            "criterion referencing nothing",
            "expression = \"m.r_iso >= 40\"",
            "expression = \"m.r_iso * area_m2 >= 40\"",
            &[
                "criteria[0] (c).expression (line 29)",
                "references `area_m2`, which nothing records",
            ][..],
        ),
        (
            "unit mismatch in a criterion",
            "unit = \"MOhm\"\n",
            "unit = \"MOhm.m2\"\n",
            &[
                "criteria[0] (c).expression (line 29)",
                "unit mismatch: `m.r_iso >= 40` compares MOhm but the criterion's unit is MOhm.m2",
            ][..],
        ),
        (
            "unit mismatch in an expression",
            "m.r_iso >= 40",
            "m.r_iso - t_high >= 40",
            &["unit mismatch in `m.r_iso - t_high`: MOhm against Cel"][..],
        ),
        (
            "unit mismatch of a parameter",
            "unit = \"Cel\"\nvalue",
            "unit = \"K\"\nvalue",
            &["steps[0] (setpoint).value: unit mismatch: parameter `t_high` is Cel, this needs K"]
                [..],
        ),
        (
            "bad parameter reference",
            "value = \"t_high\"",
            "value = \"t_hihg\"",
            &["steps[0] (setpoint).value: `t_hihg` is not a parameter of this protocol"][..],
        ),
        (
            "bad id",
            "id = \"t\"",
            "id = \"TC 200\"",
            &["protocol.id: `TC 200` is not an id"][..],
        ),
        (
            "future format",
            "format_version = 1",
            "format_version = 2",
            &["format_version: is 2; this version reads format 1"][..],
        ),
        (
            "criterion that is not a comparison",
            "m.r_iso >= 40",
            "m.r_iso * 2",
            &["is a number; a comparison is needed"][..],
        ),
        (
            "syntax error in a criterion",
            "m.r_iso >= 40",
            "m.r_iso >= >= 40",
            &["criteria[0] (c).expression (line 29)", "at column 12"][..],
        ),
        (
            "bad policy",
            "on_restart = \"resume\"",
            "on_restart = \"retry\"",
            &["line 8", "unknown variant `retry`"][..],
        ),
    ] {
        assert!(MINIMAL.contains(from), "{what}: {from}");
        let msg = refusal(&MINIMAL.replacen(from, to, 1));
        for w in want {
            assert!(msg.contains(w), "{what}: wanted {w:?} in:\n{msg}");
        }
    }
}

#[test]
fn step_rules() {
    let with_steps =
        |steps: &str| MINIMAL.replacen("[[criteria]]", &format!("{steps}\n[[criteria]]"), 1);
    for (steps, want) in [
        (
            "[[steps]]\nkind = \"dwell\"\nduration = \"0 min\"\n",
            "steps[2] (dwell).duration: `0 min`: a duration must be positive",
        ),
        (
            "[[steps]]\nkind = \"dwell\"\nduration = \"t_high\"\n",
            "unit mismatch: parameter `t_high` is Cel, a duration needs s, min, h or d",
        ),
        (
            "[[steps]]\nkind = \"repeat\"\ncount = 0\n[[steps.steps]]\nkind = \"dwell\"\nduration = \"1 h\"\n",
            "steps[2] (repeat).count: 0 is not between 1 and 10000",
        ),
        (
            "[[steps]]\nkind = \"repeat\"\ncount = 2\nsteps = []\n",
            "steps[2] (repeat).steps: no steps",
        ),
        (
            "[[steps]]\nkind = \"wait_until\"\ncondition = \"oven.temperature > 80\"\nhold = \"1 min\"\ntimeout = \"1 h\"\n",
            "references `oven.temperature`, which is neither a point this protocol uses nor a parameter",
        ),
        (
            "[[steps]]\nkind = \"wait_until\"\ncondition = \"chamber.temperature > 80\"\nhold = \"2 h\"\ntimeout = \"1 h\"\n",
            "steps[2] (wait_until).timeout: is shorter than `hold`",
        ),
        (
            "[[steps]]\nkind = \"setpoint\"\npoint = \"chamber.temperature\"\nunit = \"K\"\nvalue = 300\n",
            "unit mismatch: `chamber.temperature` is K here but Cel at steps[0] (setpoint).point",
        ),
        (
            "[[steps]]\nkind = \"setpoint\"\npoint = \"chamber.temperature\"\nunit = \"Cel\"\nvalue = 25\nramp_per_h = \"t_high\"\n",
            "unit mismatch: parameter `t_high` is Cel, this needs Cel.h-1",
        ),
        (
            "[[steps]]\nkind = \"measure\"\nlabel = \"m\"\npoints = [{ name = \"x\", point = \"a.b\", unit = \"V\" }]\n",
            "steps[2] (measure).label: `m` is already used by steps[1] (measure).label",
        ),
        (
            "[[steps]]\nkind = \"iv_sweep\"\nlabel = \"s\"\ninstrument = \"smu\"\nstart_v = 0\nstop_v = 0\npoints = 1\n",
            "steps[2] (iv_sweep).stop_v: equals start_v",
        ),
        (
            "[safe_state]\nsetpoints = [{ point = \"hipot.resistance\", unit = \"MOhm\", value = 0 }]\n",
            "`hipot.resistance` is not a point this protocol drives",
        ),
    ] {
        let msg = refusal(&with_steps(steps));
        assert!(msg.contains(want), "wanted {want:?} in:\n{msg}");
    }
}

#[test]
fn sample_values_say_where_their_value_comes_from() {
    use qi_protocol::ValueSource;
    let tc = Protocol::load(&protocols_dir().join("tc200.toml")).unwrap_or_else(|e| panic!("{e}"));
    let sources: Vec<(&str, ValueSource)> = tc
        .sample_values
        .iter()
        .filter_map(|s| Some((s.name.as_str(), s.source.get()?)))
        .collect();
    assert_eq!(sources.len(), tc.sample_values.len());
    assert!(sources.contains(&(
        "before.pmax",
        ValueSource::Run {
            protocol: "stc-power",
            value: "stc.pmax"
        }
    )));
    assert!(sources.contains(&(
        "after.major_visual_defects",
        ValueSource::Observation("major_visual_defects")
    )));
    let with = |source: &str| {
        MINIMAL.replacen(
            "[[criteria]]",
            &format!(
                "[[sample_values]]\nname = \"before.r\"\nunit = \"MOhm\"\nsource = {source}\n\n[[criteria]]"
            ),
            1,
        )
    };
    assert!(Protocol::parse(&with("{ observation = \"r\" }"), Path::new("t.toml")).is_ok());
    for (source, want) in [
        (
            "{ protocol = \"x\", value = \"r\" }",
            "sample_values[0] (before.r).source.value: `r` must be `<label>.<name>`",
        ),
        (
            "{ protocol = \"x\", observation = \"r\" }",
            "sample_values[0] (before.r).source: give",
        ),
        ("{ observation = \"R R\" }", "is not a name"),
        ("{ inspection = \"r\" }", "unknown field `inspection`"),
    ] {
        let msg = refusal(&with(source));
        assert!(msg.contains(want), "{source}: wanted {want:?} in:\n{msg}");
    }
    let missing = MINIMAL.replacen(
        "[[criteria]]",
        "[[sample_values]]\nname = \"before.r\"\nunit = \"MOhm\"\n\n[[criteria]]",
        1,
    );
    assert!(refusal(&missing).contains("missing field `source`"));
}

#[test]
fn recorded_values_are_the_labels_of_measures_and_sweeps() {
    let stc =
        Protocol::load(&protocols_dir().join("stc-power.toml")).unwrap_or_else(|e| panic!("{e}"));
    let v = stc.recorded_values();
    assert!(v.contains(&"conditions.irradiance".to_string()), "{v:?}");
    assert!(v.contains(&"stc.pmax".to_string()), "{v:?}");
    assert!(!v.iter().any(|n| n.starts_with("before.")), "{v:?}");
}
