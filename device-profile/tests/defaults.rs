//! The protocol defaults a profile gets without a table are the ones an empty
//! table gives: one set of values, so the agent never repeats (and drifts from) them.

use device_profile::{ModbusDefaults, Profile, ScpiDefaults};
use std::path::Path;

const HEAD: &str = "format_version = 1\n[model]\nid = \"x\"\nmanufacturer = \"m\"\nname = \"n\"\ndevice_type = \"t\"\n";

fn parse(text: &str) -> Profile {
    Profile::parse(text, Path::new("x.toml")).expect("valid profile")
}

#[test]
fn an_empty_scpi_table_and_none_give_the_same_defaults() {
    let scpi = parse(&format!(
        "protocol = \"scpi\"\n{HEAD}[scpi]\n[[points]]\nname = \"a\"\nquery = \"A?\"\n"
    ));
    let from_table = scpi.scpi_defaults();
    assert_eq!(
        format!("{from_table:?}"),
        format!("{:?}", ScpiDefaults::default())
    );
    assert_eq!(
        (from_table.line_ending.as_str(), from_table.timeout_ms),
        ("\n", 1000)
    );
    let modbus = parse(&format!(
        "{HEAD}[modbus]\n[[points]]\nname = \"a\"\nregister = \"input\"\naddress = 0\ntype = \"u16\"\n"
    ));
    assert!(modbus.scpi.is_none());
    assert_eq!(
        format!("{:?}", modbus.scpi_defaults()),
        format!("{from_table:?}")
    );
    assert_eq!(
        format!("{:?}", modbus.modbus_defaults()),
        format!("{:?}", ModbusDefaults::default())
    );
}
