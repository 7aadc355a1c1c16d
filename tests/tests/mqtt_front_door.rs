//! The site bus's front door tried as an attacker would, with a raw MQTT
//! client over real sockets against the real agent: Wills on foreign topics,
//! session takeover across users, silent sockets, clients that stop talking,
//! resent QoS 2 packets, wildcards in topic names, and descriptor exhaustion
//! (field-trial findings 1-7).
// qi-test: tier-independent (the agent's MQTT front door; the hub is only a sink): scripts/test.sh runs it once, on tier none.

use anyhow::{Context, Result};
use e2e_tests::mqtt_raw::{self, Connect, Raw, Will};
use e2e_tests::pki::TestCa;
use e2e_tests::{Stack, bin, free_port, get_json, wait_for};
use std::net::SocketAddr;
use std::time::Duration;

const PW: &str = "s3cret-pw";
const TELEMETRY: &str = "site/s1/thermo/th-1/telemetry";

struct Bus {
    stack: Stack,
    addr: SocketAddr,
}

/// Agent (and hub) with a bus on loopback; `extra` goes into `[mqtt]`.
/// Users: `sensor` publishes telemetry; `hmi` subscribes to everything and
/// may publish its own status (not retained); `panel` may retain on its own
/// topics.
async fn bus(gateway: &str, extra: &str, with_hub: bool) -> Result<Bus> {
    let mut stack = if with_hub {
        let mut s = Stack::new().await?;
        s.start_hub().await?;
        s
    } else {
        Stack::edge_only()?
    };
    stack.start_sim(false).await?;
    let cfg = bus_config(&stack, gateway, extra)?;
    stack.start_agent(&cfg.1).await?;
    Ok(Bus { stack, addr: cfg.0 })
}

fn bus_config(
    stack: &Stack,
    gateway: &str,
    extra: &str,
) -> Result<(SocketAddr, std::path::PathBuf)> {
    let (port, cfg) = stack.write_bus_config(
        gateway,
        extra,
        &[
            ("sensor", "publish = [\"site/s1/+/+/telemetry\"]"),
            (
                "hmi",
                "subscribe = [\"site/#\"]\npublish = [\"hmi/%u/status\"]",
            ),
            ("panel", "publish = [\"panel/%u/#\"]\nretain = true"),
        ],
        PW,
    )?;
    Ok((SocketAddr::from(([127, 0, 0, 1], port)), cfg))
}

fn login<'a>(user: &'a str, client_id: &'a str) -> Connect<'a> {
    Connect {
        client_id,
        login: Some((user, PW)),
        ..Connect::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wills_are_held_to_the_users_publish_rules() -> Result<()> {
    let b = bus("gw-door-will", "", false).await?;
    let will = |topic, retain| Will {
        topic,
        qos: 1,
        retain,
        message: b"offline",
    };
    // Planting a retained message on a device's health topic, as a user
    // without rights on it; telemetry through a Will; a Will outside the
    // user's rules; a retained Will from a user who may not retain.
    for (user, w) in [
        ("hmi", will("site/s1/eastron-sdm630/meter-1/health", true)),
        ("hmi", will(TELEMETRY, false)),
        ("sensor", will(TELEMETRY, false)),
        ("hmi", will("hmi/sensor/status", false)),
        ("hmi", will("hmi/hmi/status", true)),
        ("hmi", will("hmi/+/status", false)),
    ] {
        let c = Connect {
            will: Some(w),
            ..login(user, "will-1")
        };
        let (_, code) = Raw::login(b.addr, &c).await?;
        assert_eq!(
            code,
            5,
            "{user}: a Will on {:?} must be refused",
            c.will.as_ref().map(|w| w.topic)
        );
    }
    // Within the rules: accepted.
    for (user, w) in [
        ("hmi", will("hmi/hmi/status", false)),
        ("panel", will("panel/panel/state", true)),
    ] {
        let c = Connect {
            will: Some(w),
            ..login(user, "will-2")
        };
        assert_eq!(Raw::login(b.addr, &c).await?.1, 0, "{user}");
    }
    assert_eq!(
        b.stack
            .agent_metric("edge_mqtt_denied_total", &["what=\"will\""])
            .await?,
        6.0
    );
    // Retained publishes need the retain right too.
    let (mut hmi, code) = Raw::login(b.addr, &login("hmi", "ret-1")).await?;
    assert_eq!(code, 0);
    hmi.send(&mqtt_raw::publish(
        "hmi/hmi/status",
        1,
        1,
        false,
        true,
        b"up",
    ))
    .await?;
    assert_eq!(
        hmi.next(Duration::from_secs(5)).await?.map(|p| p.kind()),
        Some(4)
    );
    assert_eq!(
        b.stack
            .agent_metric("edge_mqtt_denied_total", &["what=\"retain\""])
            .await?,
        1.0
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_id_cannot_be_taken_over_by_another_user() -> Result<()> {
    let b = bus("gw-door-session", "", false).await?;
    // hmi creates a persistent session subscribed to everything, and leaves.
    let persistent = |user| Connect {
        clean_session: false,
        ..login(user, "hmi-panel-1")
    };
    let (mut hmi, code) = Raw::login(b.addr, &persistent("hmi")).await?;
    assert_eq!(code, 0);
    hmi.send(&mqtt_raw::subscribe(1, "site/#", 0)).await?;
    let suback = hmi.next(Duration::from_secs(5)).await?.context("SUBACK")?;
    assert_eq!((suback.kind(), suback.body[2]), (9, 0));
    hmi.send(&mqtt_raw::DISCONNECT).await?;
    hmi.closed_within(Duration::from_secs(5)).await?;
    // sensor may not subscribe to site/#: presenting hmi's client id, with
    // or without a clean session, must not resume or replace that session.
    for clean in [false, true] {
        let c = Connect {
            clean_session: clean,
            ..persistent("sensor")
        };
        let (_, code) = Raw::login(b.addr, &c)
            .await
            .with_context(|| b.stack.logs())?;
        assert_eq!(code, 2, "identifier rejected (clean session {clean})");
    }
    assert_eq!(
        b.stack
            .agent_metric(
                "edge_mqtt_connections_total",
                &["result=\"client_id_of_another_user\""]
            )
            .await?,
        2.0
    );
    // The owner comes back and resumes; a second connection of the same
    // user takes the session over and the first socket is closed at once.
    let (mut first, code) = Raw::login(b.addr, &persistent("hmi"))
        .await
        .with_context(|| b.stack.logs())?;
    assert_eq!(code, 0);
    let (_second, code) = Raw::login(b.addr, &persistent("hmi"))
        .await
        .with_context(|| b.stack.logs())?;
    assert_eq!(code, 0);
    let took = first.closed_within(Duration::from_secs(2)).await?;
    assert!(took < Duration::from_secs(2), "{took:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_sockets_cannot_lock_the_bus_out() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = TestCa::new(dir.path(), "mqtt")?;
    let server = ca.issue(dir.path(), "gateway", &["localhost", "127.0.0.1"])?;
    let (tls_port, ws_port) = (free_port(), free_port());
    let extra = format!(
        "tls_listen = \"127.0.0.1:{tls_port}\"\nws_listen = \"127.0.0.1:{ws_port}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n\
         max_connections = 20\nmax_pending_connections = 30\nmax_connections_per_address = 10\nconnect_timeout_ms = 1500",
        server.cert.display(),
        server.key.display(),
    );
    let b = bus("gw-door-silent", &extra, false).await?;
    let tls = SocketAddr::from(([127, 0, 0, 1], tls_port));
    let ws = SocketAddr::from(([127, 0, 0, 1], ws_port));
    // 40 silent sockets from 127.0.0.1 on the TLS port, more than
    // max_connections; 5 on the WebSocket port that never send a request.
    let mut silent = Vec::new();
    for _ in 0..40 {
        silent.push(Raw::open(tls, None).await?);
    }
    for _ in 0..5 {
        silent.push(Raw::open(ws, Some([127, 0, 0, 3])).await?);
    }
    // Another source address still gets in, on every listener's budget.
    let mut other = Raw::open(b.addr, Some([127, 0, 0, 2])).await?;
    other
        .send(&mqtt_raw::connect(&login("sensor", "other")))
        .await?;
    let connack = other
        .next(Duration::from_secs(1))
        .await?
        .context("CONNACK")?;
    assert_eq!(
        connack.body,
        vec![0, 0],
        "a client from another address is let in at once"
    );
    // Only max_connections_per_address of the silent ones were even held,
    // and each is closed at the deadline.
    let start = std::time::Instant::now();
    let mut closed = 0;
    for s in &mut silent {
        s.closed_within(Duration::from_secs(5)).await?;
        closed += 1;
    }
    assert_eq!(closed, 45);
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "{:?}",
        start.elapsed()
    );
    let refused = b
        .stack
        .agent_metric(
            "edge_mqtt_connections_total",
            &["result=\"too_many_from_address\""],
        )
        .await?;
    assert!(refused >= 30.0, "refused {refused}");
    assert!(
        b.stack
            .agent_metric("edge_mqtt_timeouts_total", &["phase=\"tls_handshake\""])
            .await?
            >= 5.0
    );
    assert!(
        b.stack
            .agent_metric("edge_mqtt_timeouts_total", &["phase=\"websocket_upgrade\""])
            .await?
            >= 1.0
    );
    // The address's places are free again once its sockets are gone.
    let (_c, code) = Raw::login(b.addr, &login("sensor", "after")).await?;
    assert_eq!(code, 0);
    // A CONNECT that never comes on the plain port is cut at the deadline too.
    let mut mute = Raw::open(b.addr, None).await?;
    mute.closed_within(Duration::from_secs(4)).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_silent_past_their_keep_alive_are_disconnected() -> Result<()> {
    let b = bus("gw-door-keepalive", "max_keep_alive_s = 3", false).await?;
    // Keep-alive 1 s: closed after 1.5 s of silence.
    let (mut c, code) = Raw::login(
        b.addr,
        &Connect {
            keep_alive: 1,
            ..login("sensor", "ka-1")
        },
    )
    .await
    .with_context(|| b.stack.logs())?;
    assert_eq!(code, 0);
    let took = c
        .closed_within(Duration::from_secs(5))
        .await
        .with_context(|| b.stack.logs())?;
    assert!(took >= Duration::from_millis(1400), "{took:?}");
    // Asking for no keep-alive gets mqtt.max_keep_alive_s (3 s -> 4.5 s).
    let (mut c, _) = Raw::login(
        b.addr,
        &Connect {
            keep_alive: 0,
            ..login("sensor", "ka-0")
        },
    )
    .await?;
    let took = c.closed_within(Duration::from_secs(8)).await?;
    assert!(took >= Duration::from_secs(4), "{took:?}");
    // A client that pings stays.
    let (mut c, _) = Raw::login(
        b.addr,
        &Connect {
            keep_alive: 1,
            ..login("sensor", "ka-ping")
        },
    )
    .await?;
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        c.send(&[0xC0, 0]).await?;
        let pong = c.next(Duration::from_secs(2)).await?.context("PINGRESP")?;
        assert_eq!(pong.kind(), 13);
    }
    assert!(
        b.stack
            .agent_metric("edge_mqtt_timeouts_total", &["phase=\"keep_alive\""])
            .await?
            >= 2.0
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_qos2_publish_is_stored_once() -> Result<()> {
    let b = bus("gw-door-qos2", "", true).await?;
    let persistent = Connect {
        clean_session: false,
        ..login("sensor", "th-1-q2")
    };
    let (mut c, _) = Raw::login(b.addr, &persistent).await?;
    let kind = |p: Option<mqtt_raw::Packet>| p.map(|p| (p.kind(), p.body));
    // Sent, then resent with DUP before PUBREL: PUBREC both times.
    c.send(&mqtt_raw::publish(TELEMETRY, 2, 5, false, false, b"q2=1"))
        .await?;
    assert_eq!(
        kind(c.next(Duration::from_secs(5)).await?),
        Some((5, vec![0, 5]))
    );
    c.send(&mqtt_raw::publish(TELEMETRY, 2, 5, true, false, b"q2=1"))
        .await?;
    assert_eq!(
        kind(c.next(Duration::from_secs(5)).await?),
        Some((5, vec![0, 5]))
    );
    c.send(&mqtt_raw::pubrel(5)).await?;
    assert_eq!(
        kind(c.next(Duration::from_secs(5)).await?),
        Some((7, vec![0, 5]))
    );
    // A connection lost between PUBREC and PUBREL: the client reconnects
    // to its session and resends.
    c.send(&mqtt_raw::publish(TELEMETRY, 2, 6, false, false, b"q2=2"))
        .await?;
    assert_eq!(
        kind(c.next(Duration::from_secs(5)).await?),
        Some((5, vec![0, 6]))
    );
    drop(c);
    let (mut c, code) = Raw::login(b.addr, &persistent).await?;
    assert_eq!(code, 0);
    c.send(&mqtt_raw::publish(TELEMETRY, 2, 6, true, false, b"q2=2"))
        .await?;
    assert_eq!(
        kind(c.next(Duration::from_secs(5)).await?),
        Some((5, vec![0, 6]))
    );
    c.send(&mqtt_raw::pubrel(6)).await?;
    assert_eq!(
        kind(c.next(Duration::from_secs(5)).await?),
        Some((7, vec![0, 6]))
    );
    // After PUBREL the id is free: the same id is a new message.
    c.send(&mqtt_raw::publish(TELEMETRY, 2, 5, false, false, b"q2=3"))
        .await?;
    assert_eq!(
        kind(c.next(Duration::from_secs(5)).await?),
        Some((5, vec![0, 5]))
    );
    c.send(&mqtt_raw::pubrel(5)).await?;
    c.next(Duration::from_secs(5)).await?;
    let pool = b.stack.db().await?;
    let values: Vec<f64> = wait_for(
        "3 QoS 2 readings at the hub",
        Duration::from_secs(20),
        || async {
            let v: Vec<f64> = sqlx::query_scalar(
            "SELECT value FROM readings WHERE device_id = 'th-1' AND metric = 'q2' ORDER BY value",
        )
        .fetch_all(&pool)
        .await?;
            Ok((v.len() >= 3).then_some(v))
        },
    )
    .await?;
    // Give a duplicate time to arrive, then check there is none.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let again: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM readings WHERE device_id = 'th-1' AND metric = 'q2'",
    )
    .fetch_one(&pool)
    .await?;
    assert_eq!((values, again), (vec![1.0, 2.0, 3.0], 3));
    assert_eq!(
        b.stack
            .agent_metric("edge_mqtt_duplicates_total", &[])
            .await?,
        2.0
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_names_with_wildcards_are_refused() -> Result<()> {
    let b = bus("gw-door-wild", "", false).await?;
    let (mut c, _) = Raw::login(b.addr, &login("sensor", "wild")).await?;
    // sensor's rule is site/s1/+/+/telemetry: a literal '+' level matched it.
    for (i, topic) in ["site/s1/+/th-1/telemetry", "site/s1/thermo/#/telemetry"]
        .iter()
        .enumerate()
    {
        c.send(&mqtt_raw::publish(
            topic,
            1,
            i as u16 + 1,
            false,
            false,
            b"w=1",
        ))
        .await?;
        let ack = c.next(Duration::from_secs(5)).await?.context("PUBACK")?;
        assert_eq!(ack.kind(), 4);
    }
    assert_eq!(
        b.stack
            .agent_metric("edge_mqtt_rejected_total", &["reason=\"bad_topic\""])
            .await?,
        2.0
    );
    assert_eq!(
        b.stack
            .agent_metric("edge_mqtt_readings_total", &[])
            .await?,
        0.0
    );
    // A proper topic on the same connection still works.
    c.send(&mqtt_raw::publish(TELEMETRY, 1, 9, false, false, b"w=1"))
        .await?;
    assert_eq!(
        c.next(Duration::from_secs(5)).await?.map(|p| p.kind()),
        Some(4)
    );
    assert_eq!(
        b.stack
            .agent_metric("edge_mqtt_readings_total", &[])
            .await?,
        1.0
    );
    Ok(())
}

/// Under a low open-file limit the agent fits its connection budgets into
/// it, refuses what does not fit, keeps answering /health and does not
/// flood its log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_short_of_descriptors_refuses_clients_not_the_agent() -> Result<()> {
    let mut stack = Stack::edge_only()?;
    stack.start_sim(false).await?;
    let (addr, cfg) = bus_config(&stack, "gw-door-fds", "max_connections_per_address = 1000")?;
    e2e_tests::agent_auth::add_user(
        &cfg,
        e2e_tests::agent_auth::USER,
        "operator",
        e2e_tests::agent_auth::PASSWORD,
    )?;
    let mut cmd = std::process::Command::new("prlimit");
    cmd.args(["--nofile=512:512", "--"])
        .arg(bin("edge-agent")?)
        .arg("--config")
        .arg(&cfg);
    let log = stack.log_path("agent");
    stack.agent = Some(e2e_tests::Proc::spawn_cmd("edge-agent", &mut cmd, &log)?);
    let health = format!("{}/health", stack.agent_url());
    wait_for("agent /health", Duration::from_secs(20), || async {
        Ok(get_json(&health).await.ok().map(|_| ()))
    })
    .await
    .with_context(|| stack.logs())?;
    e2e_tests::agent_auth::login_and_remember(&stack.agent_url()).await?;
    // 512 descriptors: 256 kept aside, 64 pending, (512-256-64)/3 = 64 clients.
    assert_eq!(
        stack.agent_metric("edge_mqtt_max_connections", &[]).await?,
        64.0
    );
    let mut clients = Vec::new();
    let mut refused = 0;
    for i in 0..300 {
        let id = format!("c{i}");
        match Raw::login(addr, &login("sensor", &id)).await {
            Ok((c, 0)) => clients.push(c),
            Ok(_) | Err(_) => refused += 1,
        }
    }
    assert_eq!(clients.len(), 64, "refused {refused}");
    let (status, _) = get_json(&health).await?;
    assert_eq!(status, 200);
    // Logged-in clients still work.
    let c = &mut clients[0];
    c.send(&mqtt_raw::publish(TELEMETRY, 1, 1, false, false, b"fd=1"))
        .await?;
    assert_eq!(
        c.next(Duration::from_secs(5)).await?.map(|p| p.kind()),
        Some(4)
    );
    let log_size = std::fs::metadata(&log)?.len();
    assert!(log_size < 1 << 20, "agent log grew to {log_size} bytes");
    Ok(())
}

/// MQTT telemetry takes the same acceptance path as polled readings: a
/// reading marked `"priority": "high"` goes to the high-priority lane.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_can_ask_for_the_high_priority_lane() -> Result<()> {
    let b = bus("gw-door-priority", "", false).await?;
    let high = || async {
        Ok::<_, anyhow::Error>(b.stack.agent_health().await?["buffer"]["backlog_high"].as_u64())
    };
    let before = high().await?.context("backlog_high in /health")?;
    let (mut c, _) = Raw::login(b.addr, &login("sensor", "prio")).await?;
    let body =
        br#"[{"metric":"door_open","value":1,"priority":"high"},{"metric":"temp","value":21.5}]"#;
    c.send(&mqtt_raw::publish(TELEMETRY, 1, 1, false, false, body))
        .await?;
    assert_eq!(
        c.next(Duration::from_secs(5)).await?.map(|p| p.kind()),
        Some(4)
    );
    assert_eq!(high().await?, Some(before + 1));
    Ok(())
}
