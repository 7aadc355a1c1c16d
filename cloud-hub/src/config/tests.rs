use super::*;

fn load_text(text: &str) -> Result<Config, ConfigError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("hub.toml");
    std::fs::write(
        &p,
        format!("[database]\nurl = \"postgres://x@127.0.0.1/x\"\n{text}"),
    )
    .expect("write");
    Config::load(&p)
}

#[test]
fn an_unauthenticated_grpc_listener_must_be_loopback() {
    let e = load_text("[grpc]\nlisten = \"0.0.0.0:50051\"\n").expect_err("refused");
    let msg = e.to_string();
    assert!(msg.contains("grpc.auth") && msg.contains("mtls"), "{msg}");
    let ok = load_text("[grpc]\nlisten = \"127.0.0.1:50051\"\n").expect("loopback is fine");
    assert!(ok.grpc.listen.ip().is_loopback());
    let d = load_text("").expect("empty config");
    assert!(d.grpc.listen.ip().is_loopback() && d.http.listen.ip().is_loopback());
    assert!(load_text("[auth]\nlogin_attempts_per_minute = 0\n").is_err());
    assert!(load_text("[auth]\naccess_token_ttl_s = 0\n").is_err());
}

#[test]
fn the_example_config_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/cloud-hub.toml");
    let cfg = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => panic!("{}: {e}", path.display()),
    };
    assert_eq!(cfg.retention.raw_days, 30);
    assert_eq!(cfg.database.tier, crate::storage::TierChoice::Auto);
    assert_eq!(cfg.database.ingest, crate::storage::IngestMethod::Copy);
}

#[test]
fn the_examples_single_sign_on_block_loads_once_uncommented() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/cloud-hub.toml");
    let text = std::fs::read_to_string(&path).expect("example config");
    let block: String = text
        .lines()
        .skip_while(|l| !l.starts_with("# [auth.oidc]"))
        .map_while(|l| l.strip_prefix("# "))
        .map(|l| format!("{}\n", l.split("  #").next().unwrap_or(l)))
        .collect();
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("hub.toml");
    std::fs::write(
        &file,
        format!("[database]\nurl = \"postgres://x@h/qi\"\n{block}"),
    )
    .expect("write config");
    let cfg = Config::load(&file).unwrap_or_else(|e| panic!("{e}\n{block}"));
    let oidc = cfg.auth.oidc.expect("[auth.oidc] present");
    assert_eq!(oidc.roles_claim, "realm_access.roles");
    assert_eq!(oidc.role_map.len(), 4);
}

/// Loads `extra` appended to a minimal config; returns the refusal's key and line.
fn refusal(extra: &str) -> Option<(String, Option<usize>)> {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("hub.toml");
    let text = format!("[database]\nurl = \"postgres://x@127.0.0.1/qi\"\n{extra}\n");
    std::fs::write(&path, text).expect("write config");
    match Config::load(&path) {
        Ok(_) => None,
        Err(ConfigError::Invalid { key, line, .. }) => Some((key, line)),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn zero_and_negative_durations_and_sizes_are_refused() {
    for (extra, key, line) in [
        ("connect_timeout_s = 0", "database.connect_timeout_s", 3),
        ("max_connections = 0", "database.max_connections", 3),
        ("[http]\nmax_page_size = 0", "http.max_page_size", 4),
        (
            "[analytics]\nrollup_interval_s = 0",
            "analytics.rollup_interval_s",
            4,
        ),
        (
            "[analytics]\nmax_scan_rows = 0",
            "analytics.max_scan_rows",
            4,
        ),
        (
            "[analytics]\nmax_scan_rows = -1",
            "analytics.max_scan_rows",
            4,
        ),
        ("[analytics]\nmax_points = 0", "analytics.max_points", 4),
        ("[analytics]\nmax_series = 0", "analytics.max_series", 4),
        ("[retention]\nraw_days = -1", "retention.raw_days", 4),
        ("[retention]\nminute_days = -7", "retention.minute_days", 4),
        ("[retention]\nhour_days = -1", "retention.hour_days", 4),
        (
            "[retention]\ncompress_after_days = 0",
            "retention.compress_after_days",
            4,
        ),
        (
            "[retention]\npartition_days_ahead = 0",
            "retention.partition_days_ahead",
            4,
        ),
        (
            "[retention]\npartition_days_ahead = 400",
            "retention.partition_days_ahead",
            4,
        ),
    ] {
        assert_eq!(
            refusal(extra),
            Some((key.to_string(), Some(line))),
            "{extra}"
        );
    }
    assert_eq!(
        refusal(
            "[auth.oidc]\nissuer = \"http://id.example\"\naudience = \"urn:qi:hub\"\n\
             [auth.oidc.role_map]\nops = \"viewer\""
        ),
        Some(("auth.oidc.issuer".to_string(), Some(4)))
    );
    // 0 = forever where documented.
    assert_eq!(
        refusal("[retention]\nraw_days = 0\nminute_days = 0\nhour_days = 0"),
        None
    );
}

#[test]
fn the_public_url_is_a_base_url_and_defaults_to_the_listener() {
    for bad in [
        "hub.example",
        "ftp://hub",
        "https://hub/?x=1",
        "https://hub/#top",
    ] {
        assert_eq!(
            refusal(&format!("[http]\npublic_url = \"{bad}\"")),
            Some(("http.public_url".to_string(), Some(4))),
            "{bad}"
        );
    }
    assert_eq!(
        refusal("[http]\npublic_url = \"https://hub.example/qi/\""),
        None
    );
    let mut h = HttpConfig::default();
    assert_eq!(h.public_url(), "http://127.0.0.1:8081");
    h.public_url = "https://hub.example/qi/".into();
    assert_eq!(h.public_url(), "https://hub.example/qi");
}
