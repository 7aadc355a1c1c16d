//! Every duration and size in the profile format where 0 cannot work is
//! refused with the field (and the file), not accepted to fail in the field.

use device_profile::Profile;
use std::path::Path;

const MODBUS: &str = "format_version = 1\n[model]\nid = \"x\"\nmanufacturer = \"m\"\nname = \"n\"\ndevice_type = \"t\"\n[serial]\n[modbus]\n[poll_groups.slow]\ninterval_ms = 1000\n[[points]]\nname = \"a\"\nregister = \"input\"\naddress = 0\ntype = \"u16\"\npoll_group = \"slow\"\n";
const SCPI: &str = "format_version = 1\nprotocol = \"scpi\"\n[model]\nid = \"x\"\nmanufacturer = \"m\"\nname = \"n\"\ndevice_type = \"t\"\n[scpi]\n[[points]]\nname = \"a\"\nquery = \"A?\"\n";

fn refused(text: &str, field: &str) {
    match Profile::parse(text, Path::new("x.toml")) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.contains(field) && msg.contains("x.toml"),
                "{field}: {msg}"
            );
        }
    }
}

#[test]
fn the_templates_are_valid() {
    Profile::parse(MODBUS, Path::new("x.toml")).expect("modbus template");
    Profile::parse(SCPI, Path::new("x.toml")).expect("scpi template");
}

#[test]
fn zero_durations_and_sizes_are_refused() {
    let modbus = |table: &str, key: &str| MODBUS.replace(table, &format!("{table}\n{key} = 0"));
    refused(&modbus("[modbus]", "timeout_ms"), "modbus.timeout_ms");
    refused(
        &modbus("[modbus]", "max_registers_per_read"),
        "modbus.max_registers_per_read",
    );
    refused(
        &modbus("[modbus]", "max_bits_per_read"),
        "modbus.max_bits_per_read",
    );
    refused(&modbus("[serial]", "baud"), "serial");
    refused(&modbus("[serial]", "data_bits"), "serial");
    refused(&modbus("[serial]", "stop_bits"), "serial");
    refused(
        &MODBUS.replace("interval_ms = 1000", "interval_ms = 0"),
        "poll_groups.slow.interval_ms",
    );
    refused(
        &format!("{MODBUS}max_report_interval_ms = 0\n"),
        "max_report_interval_ms",
    );
    refused(&format!("{MODBUS}scale = 0.0\n"), "scale");
    refused(
        &format!("{MODBUS}sim = {{ period_s = 0.0 }}\n"),
        "sim.period_s",
    );
    refused(
        &MODBUS.replace("type = \"u16\"", "type = \"string\"\nlength = 0"),
        "length",
    );
    refused(
        &SCPI.replace("[scpi]", "[scpi]\ntimeout_ms = 0"),
        "scpi.timeout_ms",
    );
}

#[test]
fn zero_means_none_where_documented() {
    let text = MODBUS.replace(
        "[modbus]",
        "[modbus]\ngap_tolerance = 0\ninter_request_delay_ms = 0\nunit_id = 0",
    );
    Profile::parse(&text, Path::new("x.toml")).expect("0 = no gap, no delay; unit 0 over TCP");
}

#[test]
fn max_in_flight_is_bounded_and_defaults_to_one_at_a_time() {
    let with = |n: &str| MODBUS.replace("[modbus]", &format!("[modbus]\nmax_in_flight = {n}"));
    refused(&with("0"), "modbus.max_in_flight");
    refused(&with("17"), "modbus.max_in_flight");
    let p = Profile::parse(MODBUS, Path::new("x.toml")).expect("template");
    assert_eq!(p.modbus_defaults().max_in_flight, 1);
    for n in ["1", "4", "16"] {
        let p = Profile::parse(&with(n), Path::new("x.toml")).expect(n);
        assert_eq!(p.modbus_defaults().max_in_flight.to_string(), n);
    }
}
