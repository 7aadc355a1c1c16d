//! Wires the hub together and owns its lifecycle.

use crate::api::{self, ApiState};
use crate::auth::Authenticator;
use crate::config::{Config, GatewayAuth};
use crate::ingest::IngestService;
use crate::storage::{Store, StoreOptions};
use anyhow::{Context, Result};
use qi_proto::v1::uplink_server::UplinkServer;
use std::sync::Arc;
use std::time::Duration;

pub async fn run(
    cfg: Config,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    crate::metric_names::describe();
    if cfg.database.url.is_empty() {
        anyhow::bail!(
            "no database URL: set database.url in the config file, QI_HUB_DATABASE_URL, or --database-url"
        );
    }
    let store = Store::open(&StoreOptions {
        url: cfg.database.url.clone(),
        max_connections: cfg.database.max_connections,
        connect_timeout: Duration::from_secs(cfg.database.connect_timeout_s),
        tier: cfg.database.tier,
        ingest: cfg.database.ingest,
        retention: cfg.retention,
    })
    .await
    .context("cannot open the database")?;
    let store = match cfg.database.read_url.as_str() {
        "" => store,
        url => store
            .with_replica(
                url,
                cfg.database.max_connections,
                Duration::from_secs(cfg.database.connect_timeout_s),
            )
            .context("database.read_url")?,
    };
    tracing::info!(tier = %store.tier(), "database ready, migrations applied");

    let (stop_trigger, stop) = qi_common::shutdown::channel();

    let grpc_listener = tokio::net::TcpListener::bind(cfg.grpc.listen)
        .await
        .with_context(|| format!("cannot listen on grpc.listen = {}", cfg.grpc.listen))?;
    tracing::info!(listen = %grpc_listener.local_addr()?, "gRPC ingest listening");
    let tls = match (&cfg.grpc.tls_cert, &cfg.grpc.tls_key) {
        (Some(cert), Some(key)) => {
            let client_ca = match cfg.grpc.auth {
                GatewayAuth::Mtls => cfg.grpc.client_ca.as_deref(),
                _ => None,
            };
            Some(crate::tls::acceptor(cert, key, client_ca)?)
        }
        _ => None,
    };
    if cfg.grpc.auth == GatewayAuth::None {
        tracing::warn!(
            "grpc.auth = \"none\": any client may claim any gateway id (development only)"
        );
    }
    let certificates =
        crate::certificates::Issuer::from_config(&cfg.certificates, &cfg.http.public_url())
            .map_err(anyhow::Error::msg)
            .context("cannot load the certificate issuing key")?;
    let auth = Arc::new(Authenticator::new(&cfg.grpc));
    let live = crate::live::Fanout::new(cfg.live.fanout_capacity, cfg.live.resume_events);
    let health = crate::live::health::HealthTracker::new(store.pool().clone(), Arc::clone(&live));
    tracing::info!(auth = ?cfg.grpc.auth, tls = tls.is_some(), "gateway authentication");
    let router = tonic::transport::Server::builder().add_service(
        // Gateways choose whether to compress (uplink.compression); the hub
        // accepts gzip, zstd or nothing, and answers in kind.
        UplinkServer::new(IngestService::new(
            store.clone(),
            Arc::clone(&live),
            Arc::clone(&health),
            auth,
            cfg.grpc.max_future_skew_s,
            Arc::new(certificates.clone()),
        ))
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
        .accept_compressed(tonic::codec::CompressionEncoding::Zstd)
        .send_compressed(tonic::codec::CompressionEncoding::Gzip)
        .send_compressed(tonic::codec::CompressionEncoding::Zstd)
        .max_decoding_message_size(qi_proto::limits::MAX_BATCH_BYTES),
    );
    let mut grpc_stop = stop.clone();
    let grpc_done = async move { grpc_stop.wait().await };
    let grpc = match tls {
        Some(acceptor) => tokio::spawn(router.serve_with_incoming_shutdown(
            crate::tls::incoming(grpc_listener, acceptor, stop.clone()),
            grpc_done,
        )),
        None => tokio::spawn(router.serve_with_incoming_shutdown(
            tokio_stream::StreamExt::map(
                tokio_stream::wrappers::TcpListenerStream::new(grpc_listener),
                |s| s.map(crate::wire::Counted::new),
            ),
            grpc_done,
        )),
    };

    let http_listener = tokio::net::TcpListener::bind(cfg.http.listen)
        .await
        .with_context(|| format!("cannot listen on http.listen = {}", cfg.http.listen))?;
    tracing::info!(listen = %http_listener.local_addr()?, "REST API listening");
    // Singleton background work runs on the leader only (crate::leader);
    // the webhook worker (claims rows FOR UPDATE SKIP LOCKED), key rotation
    // (its own advisory lock, reload on every hub) and alarm evaluation (fed
    // by this hub's own ingest) run on every hub.
    let leader = crate::leader::Leadership::new(cfg.database.leader_election);
    tokio::spawn(Arc::clone(&leader).campaign(cfg.database.url.clone(), stop.clone()));
    tokio::spawn(store.clone().run_replica_probe(stop.clone()));
    let (s, retention) = (store.clone(), cfg.retention);
    leader.spawn_while_leader("maintenance", stop.clone(), move |halt| {
        s.clone().run_maintenance(retention, halt)
    });
    let (s, every) = (
        store.clone(),
        Duration::from_secs(cfg.analytics.rollup_interval_s.max(1)),
    );
    leader.spawn_while_leader("rollups", stop.clone(), move |halt| {
        s.clone().run_rollups(every, halt)
    });
    let identity = Arc::new(
        crate::identity::Identity::open(store.pool().clone(), &cfg.auth)
            .await
            .context("cannot load the token signing keys")?,
    );
    tokio::spawn(identity.clone().run_rotation(stop.clone()));
    let translog = Arc::new(
        crate::translog::LogSigner::load(store.pool())
            .await
            .context("cannot load the transparency log's signing key")?,
    );
    let index = crate::live::index::TwinIndex::new(store.pool().clone());
    let alarms = crate::alarms::Alarms::new(store.pool().clone(), Arc::clone(&live), &cfg.alarms)
        .map_err(anyhow::Error::msg)
        .context("cannot start alarm webhooks")?;
    tokio::spawn(Arc::clone(&alarms).run(Arc::clone(&index), stop.clone()));
    let (pool, watch_alarms, calibration) =
        (store.pool().clone(), Arc::clone(&alarms), cfg.calibration);
    leader.spawn_while_leader("calibration watch", stop.clone(), move |halt| {
        crate::calibration::watch::run(pool.clone(), Arc::clone(&watch_alarms), calibration, halt)
    });
    let streams = crate::live::sse::Streams::new(cfg.live.clone(), Arc::clone(&live), index);
    let closing = Arc::clone(&streams);
    match &certificates.key {
        Some(k) => tracing::info!(issuer = k.fingerprint(), "certificates are issued"),
        None => tracing::warn!(
            "no [certificates] key_file: certificates are not issued (docs/certificates.md)"
        ),
    }
    let webhooks = crate::webhooks::worker::Worker::new(store.pool().clone(), cfg.webhooks)
        .map_err(anyhow::Error::msg)
        .context("cannot start the webhook worker")?;
    tokio::spawn(webhooks.run(stop.clone()));
    let app = api::router(ApiState {
        store,
        max_page_size: cfg.http.max_page_size,
        metrics,
        analytics: cfg.analytics.clone(),
        identity,
        live,
        public_url: cfg.http.public_url(),
        streams,
        alarms,
        lab: cfg.lab,
        exports: cfg.exports,
        calibration: cfg.calibration,
        certificates: Arc::new(certificates),
        translog,
        webhooks: cfg.webhooks,
        leader: Arc::clone(&leader),
        stop: stop.clone(),
    });
    let mut http_stop = stop.clone();
    let http = tokio::spawn(async move {
        axum::serve(
            http_listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown(async move { http_stop.wait().await })
        .await
    });

    // Ready only now: database migrated, gRPC and REST listeners bound,
    // background loops started.
    let service = qi_common::service::Service::from_env();
    let status = move || format!("{}, {}", crate::ingest::status(), leader.role());
    service.ready(&status());
    tokio::spawn(service.clone().supervise(status, stop.clone()));

    shutdown.await;
    service.stopping();
    stop_trigger.fire();
    closing.close_all();
    // Streams end when their gateways notice; don't wait for them forever.
    let _ = tokio::time::timeout(Duration::from_secs(5), grpc).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), http).await;
    // Streams still open end with the process: their gateways go offline now.
    health.shutdown().await;
    tracing::info!("cloud-hub stopped");
    Ok(())
}
