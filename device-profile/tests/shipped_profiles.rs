//! Every profile shipped in `firmware-profiles/` must load and validate.

use device_profile::Profile;
use std::path::Path;

#[test]
fn every_shipped_profile_is_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../firmware-profiles");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("firmware-profiles/ exists") {
        let path = entry.expect("readable entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let id = path
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("utf-8 name");
        let p = Profile::load_by_id(&dir, id).unwrap_or_else(|e| panic!("{e}"));
        assert!(!p.points.is_empty());
        n += 1;
    }
    assert!(n >= 1, "no profiles found in {}", dir.display());
}

#[test]
fn errors_name_the_line_or_the_field() {
    let bad_type = "format_version = 1\n[model]\nid = \"x\"\nmanufacturer = \"m\"\nname = \"n\"\ndevice_type = \"t\"\n[modbus]\n[[points]]\nname = \"a\"\nunit = \"V\"\nregister = \"input\"\naddress = 0\ntype = \"float\"\n";
    let e = Profile::parse(bad_type, Path::new("x.toml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("line 13"), "{e}");

    let overlap = "format_version = 1\n[model]\nid = \"x\"\nmanufacturer = \"m\"\nname = \"n\"\ndevice_type = \"t\"\n[modbus]\n[[points]]\nname = \"a\"\nunit = \"V\"\nregister = \"input\"\naddress = 0\ntype = \"f32\"\n[[points]]\nname = \"b\"\nunit = \"V\"\nregister = \"input\"\naddress = 1\ntype = \"u16\"\n";
    let e = Profile::parse(overlap, Path::new("x.toml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("a and b overlap"), "{e}");

    let too_many = overlap.replace("[modbus]", "[modbus]\nmax_registers_per_read = 126");
    let e = Profile::parse(&too_many, Path::new("x.toml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("max_registers_per_read"), "{e}");
}

#[test]
fn integer_registers_bound_what_a_write_can_hold() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../firmware-profiles");
    let p = Profile::load_by_id(&dir, "binder-mk53").expect("binder profile");
    let point = |n: &str| p.points.iter().find(|x| x.name == n).expect("point");
    assert_eq!(point("operating_mode").value_range(), Some((0.0, 65535.0)));
    // Floats are bounded only by their format: no range to show.
    assert_eq!(point("temperature_setpoint").value_range(), None);
    let scaled = "format_version = 1\n[model]\nid = \"x\"\nmanufacturer = \"m\"\nname = \"n\"\ndevice_type = \"t\"\n[modbus]\n[[points]]\nname = \"a\"\nunit = \"V\"\nregister = \"holding\"\naddress = 0\ntype = \"i16\"\nscale = -0.1\noffset = 5\nwritable = true\n";
    let p = Profile::parse(scaled, Path::new("x.toml")).expect("parses");
    let (lo, hi) = p.points[0].value_range().expect("range");
    assert!((lo - (32767.0 * -0.1 + 5.0)).abs() < 1e-9, "{lo}");
    assert!((hi - (-32768.0 * -0.1 + 5.0)).abs() < 1e-9, "{hi}");
}
