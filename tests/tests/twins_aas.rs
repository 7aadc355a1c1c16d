//! Asset Administration Shell: the read API (shells, submodels, paging,
//! base64url ids, site scoping) and a site's export, verified by
//! aas-core3.0 (the aas-core-works SDK, run in the peers' venv).

use anyhow::{Context, Result};
use cloud_hub::identity::Role;
use e2e_tests::hub_auth::{B64, admin_token, call, new_key};
use e2e_tests::peers::{peer_script, python};
use e2e_tests::{HubLaunch, Stack, bin, wait_for};
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;

const PUBLIC: &str = "https://hub.example.test/qi";

fn enc(id: &str) -> String {
    base64::Engine::encode(&B64, id.as_bytes())
}

/// Every item of a paged list, following the cursors; also the page count.
async fn all_pages(url: &str, token: &str, limit: usize) -> Result<(Vec<Value>, usize)> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut u = format!("{url}?limit={limit}");
        if let Some(c) = &cursor {
            u.push_str(&format!("&cursor={c}"));
        }
        let (s, v) = call(Method::GET, &u, Some(token), None).await?;
        anyhow::ensure!(s == 200, "{u}: {s} {v}");
        let page = v["result"].as_array().context("result")?;
        anyhow::ensure!(page.len() <= limit, "page over the limit: {v}");
        items.extend(page.iter().cloned());
        pages += 1;
        match v["paging_metadata"]["cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return Ok((items, pages)),
        }
        anyhow::ensure!(pages < 100, "paging does not end");
    }
}

fn ids(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .filter_map(|i| i["id"].as_str().map(String::from))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instruments_are_served_as_shells_and_a_site_exports_as_a_verified_environment()
-> Result<()> {
    let mut stack = Stack::new().await?;
    let database = if e2e_tests::pg::test_tier() == "timescale" {
        "max_connections = 1\ningest = \"insert\"\n"
    } else {
        ""
    };
    stack.hub = Some(
        HubLaunch {
            binary: bin("cloud-hub")?,
            pg_url: &stack.pg_url()?,
            grpc_port: stack.grpc_port,
            http_port: stack.hub_http_port,
            database,
            grpc: "",
            // Inside [http]: the base URL links in the documents are made from.
            after: &format!("public_url = \"{PUBLIC}/\"\n"),
            args: &[],
            dir: stack.dir.path(),
            log: &stack.log_path("hub"),
        }
        .start()
        .await?,
    );
    stack.start_sim(true).await?;
    let cfg = stack.write_agent_config("gw-aas", 500, "")?;
    let mut text = std::fs::read_to_string(&cfg)?;
    for dev in ["meter-2", "meter-3"] {
        text.push_str(&format!(
            "\n[[devices]]\nid = \"{dev}\"\nprofile = \"eastron-sdm630\"\ntransport = {{ tcp = \"127.0.0.1:{}\" }}\npoll_interval_ms = 500\n",
            stack.sim_port
        ));
    }
    std::fs::write(&cfg, text)?;
    stack.start_agent(&cfg).await?;
    let pool = stack.db().await?;
    wait_for(
        "three typed instruments with readings",
        Duration::from_secs(30),
        || async {
            let n: i64 = sqlx::query_scalar(
                "SELECT count(DISTINCT t.twin_id) FROM twins t JOIN series s
                ON s.gateway_id = t.gateway_id AND s.device_id = t.device_id
              WHERE t.kind = 'instrument' AND t.type_id = 'profile:eastron-sdm630'",
            )
            .fetch_one(&pool)
            .await?;
            Ok((n == 3).then_some(()))
        },
    )
    .await
    .with_context(|| stack.logs())?;
    sqlx::query(
        "UPDATE twins SET serial_number = 'SN-0001' WHERE twin_id = 'instrument:gw-aas:meter-1'",
    )
    .execute(&pool)
    .await?;

    let url = stack.hub_url();
    let admin = admin_token(&stack);
    let (s, v) = call(
        Method::PUT,
        &format!("{url}/api/v1/gateways/gw-aas/site"),
        Some(&admin),
        Some(&json!({"site": "site-a"})),
    )
    .await?;
    assert_eq!(s, 200, "{v}");
    let viewer = new_key(&stack, Role::Viewer, None).await?;

    // The export, checked by aas-core3.0.
    let (s, env) = call(
        Method::GET,
        &format!("{url}/api/v1/aas/export?site=site-a"),
        Some(&viewer),
        None,
    )
    .await?;
    assert_eq!(s, 200, "{env}");
    let path = stack.dir.path().join("site-a.aas.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&env)?)?;
    let out = std::process::Command::new(python()?)
        .arg(peer_script("aas/verify_environment.py"))
        .arg(&path)
        .output()?;
    let report = String::from_utf8_lossy(&out.stdout);
    println!("aas-core3.0: {report}");
    assert!(
        out.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        report.contains("0 errors; 3 shells, 9 submodels"),
        "{report}"
    );

    // What the documents say.
    let subs = env["submodels"].as_array().context("submodels")?;
    let sm = |suffix: &str| {
        subs.iter()
            .find(|s| s["id"] == format!("urn:qi:twin:instrument:gw-aas:meter-1:sm:{suffix}"))
            .cloned()
            .unwrap_or_default()
    };
    let nameplate = sm("nameplate");
    let el = |sm: &Value, id: &str| {
        sm["submodelElements"]
            .as_array()
            .and_then(|a| a.iter().find(|e| e["idShort"] == id))
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(
        el(&nameplate, "ManufacturerName")["value"][0]["text"],
        "Eastron",
        "{nameplate}"
    );
    assert_eq!(
        el(&nameplate, "SerialNumber")["value"],
        "SN-0001",
        "{nameplate}"
    );
    assert_eq!(
        nameplate["semanticId"]["keys"][0]["value"],
        "https://admin-shell.io/zvei/nameplate/2/0/Nameplate"
    );
    let tech = sm("technical-data");
    let props = el(&tech, "TechnicalProperties")["value"].clone();
    let v1 = props
        .as_array()
        .and_then(|a| a.iter().find(|p| p["idShort"] == "voltage_l1"))
        .context("voltage_l1 in TechnicalData")?;
    assert_eq!(
        v1["embeddedDataSpecifications"][0]["dataSpecificationContent"]["unit"],
        "V"
    );
    let ts = sm("time-series");
    let segments = el(&ts, "Segments")["value"].clone();
    let seg = segments
        .as_array()
        .and_then(|a| a.iter().find(|s| s["idShort"] == "voltage_l1"))
        .context("a LinkedSegment for voltage_l1")?;
    let endpoint = seg["value"]
        .as_array()
        .and_then(|a| a.iter().find(|e| e["idShort"] == "Endpoint"))
        .and_then(|e| e["value"].as_str())
        .context("Endpoint")?;
    // Made from http.public_url; the same path on the hub answers.
    let path_part = endpoint
        .strip_prefix(PUBLIC)
        .with_context(|| format!("{endpoint} does not start with http.public_url"))?;
    let (s, d) = call(
        Method::GET,
        &format!("{url}{path_part}"),
        Some(&viewer),
        None,
    )
    .await?;
    assert_eq!(s, 200, "{endpoint}: {d}");
    assert!(d["source_points"].as_i64() > Some(0), "{d}");

    // Paging: every shell and submodel once, across pages.
    let (shells, pages) = all_pages(&format!("{url}/api/v1/aas/shells"), &viewer, 1).await?;
    assert_eq!((shells.len(), pages), (3, 3));
    let shell_ids = ids(&shells);
    let (subs_paged, pages) = all_pages(&format!("{url}/api/v1/aas/submodels"), &viewer, 2).await?;
    assert_eq!((subs_paged.len(), pages), (9, 5));
    let mut sub_ids = ids(&subs_paged);
    sub_ids.sort();
    sub_ids.dedup();
    assert_eq!(sub_ids.len(), 9);
    let (one_page, pages) = all_pages(&format!("{url}/api/v1/aas/submodels"), &viewer, 100).await?;
    assert_eq!((ids(&one_page), pages), (ids(&subs_paged), 1));

    // Ids round trip through base64url; unknown ids are 404, bad ones 400.
    let (s, shell) = call(
        Method::GET,
        &format!("{url}/api/v1/aas/shells/{}", enc(&shell_ids[0])),
        Some(&viewer),
        None,
    )
    .await?;
    assert_eq!(
        (s, shell["id"].as_str()),
        (200, Some(shell_ids[0].as_str())),
        "{shell}"
    );
    let sm_id = shell["submodels"][1]["keys"][0]["value"]
        .as_str()
        .context("submodel ref")?;
    let (s, sub) = call(
        Method::GET,
        &format!("{url}/api/v1/aas/submodels/{}", enc(sm_id)),
        Some(&viewer),
        None,
    )
    .await?;
    assert_eq!(
        (s, sub["idShort"].as_str()),
        (200, Some("TechnicalData")),
        "{sub}"
    );
    for unknown in [
        "urn:qi:twin:instrument:gw-aas:nope:aas",
        "https://example.com/other-shell",
        "urn:qi:twin:site-a:aas",
    ] {
        let (s, v) = call(
            Method::GET,
            &format!("{url}/api/v1/aas/shells/{}", enc(unknown)),
            Some(&viewer),
            None,
        )
        .await?;
        assert_eq!(s, 404, "{unknown}: {v}");
    }
    let (s, _) = call(
        Method::GET,
        &format!(
            "{url}/api/v1/aas/submodels/{}",
            enc("urn:qi:twin:x:sm:nameplate")
        ),
        Some(&viewer),
        None,
    )
    .await?;
    assert_eq!(s, 404);
    // Not base64url (a stray character, stray bits, an impossible length): 400.
    for bad in ["not*base64", "%2F%2F%2F", "00", "A"] {
        let (s, v) = call(
            Method::GET,
            &format!("{url}/api/v1/aas/shells/{bad}"),
            Some(&viewer),
            None,
        )
        .await?;
        assert_eq!(s, 400, "{bad}: {v}");
    }
    // Base64url of bytes that are not UTF-8 names no shell of ours: 404.
    let (s, v) = call(
        Method::GET,
        &format!("{url}/api/v1/aas/shells/_w"),
        Some(&viewer),
        None,
    )
    .await?;
    assert_eq!(s, 404, "{v}");
    let (s, _) = call(
        Method::GET,
        &format!("{url}/api/v1/aas/export"),
        Some(&viewer),
        None,
    )
    .await?;
    assert_eq!(s, 400);
    let (s, _) = call(
        Method::GET,
        &format!("{url}/api/v1/aas/export?site=nowhere"),
        Some(&viewer),
        None,
    )
    .await?;
    assert_eq!(s, 404);

    // Sites: a caller of another site sees nothing, and is not told what exists.
    let other = new_key(&stack, Role::Viewer, Some(vec!["site-b"])).await?;
    let (s, v) = call(
        Method::GET,
        &format!("{url}/api/v1/aas/shells"),
        Some(&other),
        None,
    )
    .await?;
    assert_eq!(
        (s, v["result"].as_array().map(Vec::len)),
        (200, Some(0)),
        "{v}"
    );
    let (s, _) = call(
        Method::GET,
        &format!("{url}/api/v1/aas/shells/{}", enc(&shell_ids[0])),
        Some(&other),
        None,
    )
    .await?;
    assert_eq!(s, 404);
    let (s, _) = call(
        Method::GET,
        &format!("{url}/api/v1/aas/export?site=site-a"),
        Some(&other),
        None,
    )
    .await?;
    assert_eq!(s, 404);
    let mine = new_key(&stack, Role::Viewer, Some(vec!["site-a"])).await?;
    let (shells_a, _) = all_pages(&format!("{url}/api/v1/aas/shells"), &mine, 10).await?;
    assert_eq!(ids(&shells_a), shell_ids);
    let (s, _) = call(Method::GET, &format!("{url}/api/v1/aas/shells"), None, None).await?;
    assert_eq!(s, 401);
    Ok(())
}
