//! `edge-agent protocols check`: the shipped templates pass with a summary,
//! a bad one fails with the place and a non-zero exit. Lives here rather than
//! in `tests/` because it needs only this binary, no database or peers.

use std::path::{Path, PathBuf};
use std::process::Command;

fn protocols_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../protocols")
}

fn check(files: &[PathBuf]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_edge-agent"))
        .args(["protocols", "check"])
        .args(files)
        .output()
        .unwrap_or_else(|e| panic!("cannot run edge-agent: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn shipped_templates_check_with_a_summary() {
    let dir = protocols_dir();
    let files: Vec<PathBuf> = ["tc200.toml", "dh1000.toml", "stc-power.toml"]
        .iter()
        .map(|f| dir.join(f))
        .collect();
    let (ok, stdout, stderr) = check(&files);
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stdout.contains(
            "tc200.toml: OK: Thermal cycling, 200 cycles (tc200 v1.0.0, IEC 61215-2:2021 MQT 11): \
             5 steps (1605 executed), nominal duration 573.5 h, 9 parameters, 7 criteria (1 need approval)"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("nominal duration 1001.5 h"), "{stdout}");
}

#[test]
fn a_bad_template_fails_naming_the_place() {
    let tmp = std::env::temp_dir().join(format!("protocols-check-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap_or_else(|e| panic!("{e}"));
    let text = std::fs::read_to_string(protocols_dir().join("tc200.toml"))
        .unwrap_or_else(|e| panic!("{e}"))
        .replace(
            "after.r_iso * max(area_m2, 0.1) >= r_area_min",
            "after.r_iso >= r_area_min",
        )
        .replace("hold = \"dwell\"", "hold = \"dwel\"");
    let bad = tmp.join("tc200.toml");
    std::fs::write(&bad, text).unwrap_or_else(|e| panic!("{e}"));
    let good = protocols_dir().join("pid96.toml");
    let (ok, stdout, stderr) = check(&[good, bad]);
    let _ = std::fs::remove_dir_all(&tmp);
    assert!(!ok, "{stdout}");
    assert!(stdout.contains("pid96.toml: OK"), "{stdout}");
    for want in [
        "tc200.toml: ERROR",
        "steps[3] (repeat).steps[3] (wait_until).hold: `dwel` is neither a duration",
        "criteria[4] (insulation).expression (line",
        "unit mismatch in `after.r_iso >= r_area_min`: MOhm against MOhm.m2",
    ] {
        assert!(stdout.contains(want), "wanted {want:?} in:\n{stdout}");
    }
    assert!(stderr.contains("1 of 2 protocols invalid"), "{stderr}");
}
