//! The loader on TOML text: every duration and size that cannot work as 0 is
//! refused with the file, the line and the key.

use super::Config;
use qi_common::config::ConfigError;

const BASE: &str = r#"gateway_id = "gw"

[buffer]
path = "/tmp/unused"

[uplink]
hub_url = "http://127.0.0.1:50051"
"#;

fn load(text: &str) -> Result<Config, ConfigError> {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, text).expect("write config");
    Config::load(&path)
}

/// Loads `text`, expects a refusal naming `key` on line `line`, and returns the message.
fn refused(text: &str, key: &str, line: usize) -> String {
    match load(text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => {
            let msg = e.to_string();
            match e {
                ConfigError::Invalid {
                    key: k, line: l, ..
                } => {
                    assert_eq!((k.as_str(), l), (key, Some(line)), "{msg}");
                }
                other => panic!("wrong kind of error: {other}"),
            }
            assert!(msg.contains("agent.toml"), "{msg}");
            msg
        }
    }
}

fn device(extra: &str, transport: &str) -> String {
    format!("{BASE}\n[[devices]]\nid = \"d\"\nprofile = \"p\"\ntransport = {transport}\n{extra}\n")
}

const TCP: &str = r#"{ tcp = "127.0.0.1:502" }"#;
const SERIAL: &str = r#"{ serial = { device = "/dev/ttyUSB0" } }"#;
const RTU_TCP: &str = r#"{ rtu_over_tcp = "127.0.0.1:4001" }"#;

#[test]
fn base_config_loads() {
    let cfg = load(&device("", TCP)).expect("base config");
    assert_eq!(cfg.uplink.ack_timeout_ms, 30_000);
}

#[test]
fn device_timeout_zero_is_refused() {
    let msg = refused(&device("timeout_ms = 0", TCP), "devices[0].timeout_ms", 13);
    assert!(msg.contains("never come online"), "{msg}");
    load(&device("timeout_ms = 1", TCP)).expect("1 ms is allowed");
}

#[test]
fn unit_zero_is_refused_on_rtu_lines_only() {
    for t in [SERIAL, RTU_TCP] {
        let msg = refused(&device("unit_id = 0", t), "devices[0].unit_id", 13);
        assert!(msg.contains("broadcast"), "{msg}");
    }
    // Modbus TCP devices are addressed by IP; many answer unit 0.
    load(&device("unit_id = 0", TCP)).expect("unit 0 over TCP");
    load(&device("unit_id = 1", SERIAL)).expect("unit 1 on a line");
}

#[test]
fn ack_timeout_zero_is_refused() {
    let text = BASE.replace("[uplink]\n", "[uplink]\nack_timeout_ms = 0\n");
    let msg = refused(&text, "uplink.ack_timeout_ms", 7);
    assert!(msg.contains("stalled"), "{msg}");
}

#[test]
fn other_zero_durations_and_sizes_are_refused() {
    let d = |extra: &str| device(extra, TCP);
    let cases = [
        (d("poll_interval_ms = 0"), "devices[0].poll_interval_ms", 13),
        (
            d("bad_point_retry_s = 0"),
            "devices[0].bad_point_retry_s",
            13,
        ),
        (d("retry_min_ms = 0"), "devices[0].retry_min_ms", 13),
        (d("retry_max_ms = 0"), "devices[0].retry_max_ms", 13),
        (
            device("", r#"{ serial = { device = "/dev/ttyUSB0", baud = 0 } }"#),
            "devices[0].transport.serial",
            12,
        ),
        (
            BASE.replace("[buffer]\n", "[buffer]\ncache_mib = 0\n"),
            "buffer.cache_mib",
            4,
        ),
        (
            BASE.replace("[buffer]\n", "[buffer]\nmax_readings = 0\n"),
            "buffer.max_readings",
            4,
        ),
        (
            BASE.replace("[buffer]\n", "[buffer]\nmax_disk_mib = 0\n"),
            "buffer.max_disk_mib",
            4,
        ),
        (
            BASE.replace("[uplink]\n", "[uplink]\nbatch_max = 0\n"),
            "uplink.batch_max",
            7,
        ),
        (
            BASE.replace("[uplink]\n", "[uplink]\nmax_in_flight = 0\n"),
            "uplink.max_in_flight",
            7,
        ),
        (
            BASE.replace("[uplink]\n", "[uplink]\nreconnect_min_ms = 0\n"),
            "uplink.reconnect_min_ms",
            7,
        ),
        (
            BASE.replace("[uplink]\n", "[uplink]\nreconnect_max_ms = 0\n"),
            "uplink.reconnect_max_ms",
            7,
        ),
    ];
    for (text, key, line) in cases {
        refused(&text, key, line);
    }
}

#[test]
fn negative_durations_are_type_errors_with_the_line() {
    // Unsigned keys: toml's own report names the line and the key.
    let e = load(&device("timeout_ms = -5", TCP))
        .err()
        .map(|e| e.to_string());
    let msg = e.unwrap_or_default();
    assert!(
        msg.contains("line 13") && msg.contains("timeout_ms"),
        "{msg}"
    );
}

#[test]
fn zero_means_off_where_documented() {
    let text = BASE
        .replace(
            "[buffer]\n",
            "[buffer]\nrecycle_after_mib = 0\nflush_every_ms = 0\nttl_s = 0\nhigh_ttl_s = 0\n",
        )
        .replace(
            "[uplink]\n",
            "[uplink]\nbatch_linger_ms = 0\nshutdown_drain_ms = 0\n",
        );
    load(&text).expect("0 = off / at once");
}

#[test]
fn zero_mqtt_sizes_are_refused() {
    for key in [
        "max_connections",
        "segments",
        "max_readings_per_message",
        "max_payload_bytes",
        "segment_kib",
        "max_pending_connections",
        "max_connections_per_address",
        "connect_timeout_ms",
        "max_keep_alive_s",
    ] {
        let text = format!("{BASE}\n[mqtt]\n{key} = 0\n");
        refused(&text, &format!("mqtt.{key}"), 10);
    }
    let text = format!("{BASE}\n[mqtt]\nmax_keep_alive_s = 70000\n");
    refused(&text, "mqtt.max_keep_alive_s", 10);
}

#[test]
fn allowed_hosts_take_plain_names() {
    let text = format!("{BASE}\n[http]\nallowed_hosts = [\"gw.plant.local\"]\n");
    let cfg = load(&text).expect("plain name");
    assert_eq!(
        cfg.http.allowed_host_names(),
        Ok(vec!["gw.plant.local".to_string()])
    );
    let text = format!("{BASE}\n[http]\nallowed_hosts = [\"http://gw.plant.local:8080\"]\n");
    let msg = refused(&text, "http.allowed_hosts", 10);
    assert!(msg.contains("without scheme, port or path"), "{msg}");
}

#[test]
fn buffer_keys_become_buffer_options() {
    use crate::buffer::BufferOptions;
    use std::time::Duration;
    let text = BASE.replace(
        "path = \"/tmp/unused\"",
        "path = \"/tmp/unused\"\ncache_mib = 3\nrecycle_after_mib = 5\nmax_readings = 7\n\
         max_disk_mib = 11\nfull_policy = \"reject_newest\"\nflush_every_ms = 13\nttl_s = 17\n\
         high_full_policy = \"drop_oldest\"\nhigh_ttl_s = 19",
    );
    let cfg = load(&text).expect("valid buffer section");
    let o = BufferOptions::from(&cfg.buffer);
    assert_eq!(o.cache_bytes, 3 << 20);
    assert_eq!(o.recycle_after_bytes, 5 << 20);
    assert_eq!(o.max_readings, 7);
    assert_eq!(o.max_disk_bytes, 11 << 20);
    assert_eq!(o.flush_every, Some(Duration::from_millis(13)));
    assert_eq!(o.normal.ttl, Some(Duration::from_secs(17)));
    assert_eq!(o.normal.full_policy, super::FullPolicy::RejectNewest);
    assert_eq!(o.high.ttl, Some(Duration::from_secs(19)));
    assert_eq!(o.high.full_policy, super::FullPolicy::DropOldest);
    // 0 is the file's "off": no group-commit window, no TTL.
    let o = BufferOptions::from(&load(BASE).expect("defaults").buffer);
    assert_eq!(
        (o.flush_every, o.normal.ttl, o.high.ttl),
        (None, None, None)
    );
    assert_eq!(o.cache_bytes, 8 << 20);
}

const BENCH: &str = r#"
[runs]
protocols_dir = "/srv/protocols"
time_scale = 1000

[[benches]]
id = "rig-1"
description = "PV rig"

[[benches.points]]
name = "chamber.temperature"
device = "d"
read = "temperature"
write = "temperature_setpoint"
min = -45
max = 90

[[benches.instruments]]
name = "smu"
device = "d"
"#;

#[test]
fn benches_and_runs_load_and_nonsense_is_refused_with_the_key() {
    let cfg = load(&format!("{}{BENCH}", device("", TCP))).expect("bench config");
    assert_eq!(cfg.runs.time_scale, 1000.0);
    // Its effect on starts: calibration::tests (an unknown device refused).
    let strict = BENCH.replace(
        "time_scale = 1000",
        "time_scale = 1000\nrequire_calibration = true",
    );
    let strict = load(&format!("{}{strict}", device("", TCP))).expect("strict");
    assert!(strict.runs.require_calibration && !cfg.runs.require_calibration);
    assert_eq!(
        cfg.runs.protocols_dir,
        std::path::PathBuf::from("/srv/protocols")
    );
    assert_eq!(cfg.benches[0].points[0].max, Some(90.0));
    assert_eq!(cfg.benches[0].instruments[0].device, "d");
    // Defaults: real time, the packaged templates.
    let plain = load(&device("", TCP)).expect("base");
    assert_eq!(plain.runs.time_scale, 1.0);
    assert!(
        !plain.runs.require_calibration,
        "unknown calibration allowed by default"
    );
    assert_eq!(
        plain.runs.protocols_dir,
        std::path::PathBuf::from("/usr/share/edge-agent/protocols")
    );
    let msg = refused(
        &format!(
            "{}{}",
            device("", TCP),
            BENCH.replace("time_scale = 1000", "time_scale = 0")
        ),
        "runs.time_scale",
        17,
    );
    assert!(msg.contains("must be 1"), "{msg}");
    let msg = refused(
        &format!(
            "{}{}",
            device("", TCP),
            BENCH.replace("min = -45", "min = 100")
        ),
        "benches[0].points[0].min",
        28,
    );
    assert!(msg.contains("above max"), "{msg}");
    let msg = refused(
        &format!(
            "{}{}",
            device("", TCP),
            BENCH.replace("device = \"d\"\nread", "device = \"oven\"\nread")
        ),
        "benches[0].points[0].device",
        25,
    );
    assert!(msg.contains("no device \"oven\""), "{msg}");
}

#[test]
fn hub_urls_extend_hub_url_and_one_scheme_serves_all() {
    let cfg = load(&BASE.replace(
        "hub_url = \"http://127.0.0.1:50051\"",
        "hub_url = \"http://a:1\"\nhub_urls = [\"http://b:1\", \"http://a:1\"]",
    ))
    .expect("two hubs");
    assert_eq!(cfg.uplink.hub_endpoints(), ["http://a:1", "http://b:1"]);
    // hub_urls alone is enough.
    let cfg = load(&BASE.replace(
        "hub_url = \"http://127.0.0.1:50051\"",
        "hub_urls = [\"http://b:1\"]",
    ))
    .expect("hub_urls only");
    assert_eq!(cfg.uplink.hub_endpoints(), ["http://b:1"]);
    let mixed = BASE.replace(
        "hub_url = \"http://127.0.0.1:50051\"",
        "hub_url = \"http://a:1\"\nhub_urls = [\"https://b:1\"]",
    );
    let msg = refused(&mixed, "uplink.hub_urls", 8);
    assert!(msg.contains("mixes http:// and https://"), "{msg}");
    let none = BASE.replace("hub_url = \"http://127.0.0.1:50051\"", "");
    assert!(load(&none).is_err());
}
