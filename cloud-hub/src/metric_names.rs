//! Every metric the hub exposes, named once: code uses these constants,
//! docs/metrics.md lists the same names with their meaning, and the e2e test
//! `metrics_docs` holds the three together. Names are part of the interface
//! (dashboards and alerts use them): rename only with a migration note.

qi_common::metric_names! {
    HUB_GATEWAYS_CONNECTED = Gauge "hub_gateways_connected" []
        "Gateways with an open uplink stream now.";
    HUB_INGEST_BATCHES_TOTAL = Counter "hub_ingest_batches_total" []
        "Batches committed to the database and acknowledged.";
    HUB_INGEST_READINGS_TOTAL = Counter "hub_ingest_readings_total" []
        "Readings newly stored.";
    HUB_INGEST_DUPLICATES_TOTAL = Counter "hub_ingest_duplicates_total" []
        "Redelivered readings ignored because the hub already holds them.";
    HUB_INGEST_DUPLICATE_BATCHES_TOTAL = Counter "hub_ingest_duplicate_batches_total" []
        "Batches whose bulk copy hit readings already stored and were written again row by row.";
    HUB_INGEST_DEADLOCK_RETRIES_TOTAL = Counter "hub_ingest_deadlock_retries_total" []
        "Batch transactions the database cancelled as a deadlock and the hub wrote again (tier citus: a redelivery racing its original).";
    HUB_INGEST_COMMIT_SECONDS = Histogram "hub_ingest_commit_seconds" []
        "Time to write one batch to the database, insert to commit.";
    HUB_INGEST_REJECTED_TOTAL = Counter "hub_ingest_rejected_total" ["reason"]
        "Uplink streams refused as invalid, by reason.";
    HUB_INGEST_DB_ERRORS_TOTAL = Counter "hub_ingest_db_errors_total" []
        "Database writes that failed; the gateway resends.";
    HUB_GRPC_WIRE_BYTES_RECEIVED_TOTAL = Counter "hub_grpc_wire_bytes_received_total" []
        "Bytes received on gRPC connections, below TLS (compressed, as on the wire).";
    HUB_GRPC_WIRE_BYTES_SENT_TOTAL = Counter "hub_grpc_wire_bytes_sent_total" []
        "Bytes sent on gRPC connections, below TLS.";
    HUB_GRPC_MESSAGE_BYTES_RECEIVED_TOTAL = Counter "hub_grpc_message_bytes_received_total" []
        "Protobuf size of received batches before compression (set against wire bytes).";
    HUB_GRPC_TLS_HANDSHAKE_FAILURES_TOTAL = Counter "hub_grpc_tls_handshake_failures_total" ["reason"]
        "gRPC TLS handshakes that failed, by reason (timeout, certificate problems, ...).";
    HUB_AUTH_FAILURES_TOTAL = Counter "hub_auth_failures_total" ["reason"]
        "Gateways refused by authentication, by reason.";
    HUB_COMMANDS_SENT_TOTAL = Counter "hub_commands_sent_total" []
        "Commands sent to gateways.";
    HUB_COMMAND_RESULTS_TOTAL = Counter "hub_command_results_total" ["ok"]
        "Command results received from gateways, by outcome (true, false).";
    HUB_DB_CONNECT_FAILURES_TOTAL = Counter "hub_db_connect_failures_total" ["reason"]
        "Failed attempts to connect to PostgreSQL, by reason.";
    HUB_LEADER = Gauge "hub_leader" []
        "1 while this hub leads (runs the singleton background jobs), else 0.";
    HUB_LEADER_CHANGES_TOTAL = Counter "hub_leader_changes_total" ["change"]
        "Leadership gained or lost by this hub (change: gained, lost).";
    HUB_REPLICA_UP = Gauge "hub_replica_up" []
        "1 while the read replica (database.read_url) answers its probe, else 0.";
    HUB_REPLICA_LAG_SECONDS = Gauge "hub_replica_lag_seconds" []
        "The read replica's replay lag at its last probe.";
    HUB_REPLICA_FALLBACKS_TOTAL = Counter "hub_replica_fallbacks_total" []
        "Analytics reads served by the primary because the read replica was unavailable.";
    HUB_MAINTENANCE_ERRORS_TOTAL = Counter "hub_maintenance_errors_total" []
        "Storage maintenance passes (partitions, retention) that failed; retried in an hour.";
    HUB_PARTITIONS_DROPPED_TOTAL = Counter "hub_partitions_dropped_total" []
        "Partitions or chunks dropped by raw-data retention.";
    HUB_ROLLUP_BUCKETS_TOTAL = Counter "hub_rollup_buckets_total" []
        "Rollup buckets written.";
    HUB_ROLLUP_SECONDS = Histogram "hub_rollup_seconds" []
        "Duration of one rollup pass (every chunk until caught up).";
    HUB_ROLLUP_CHUNKS_TOTAL = Counter "hub_rollup_chunks_total" []
        "Rollup chunks committed (one window of received time each; a catch-up takes many).";
    HUB_ROLLUP_LAG_SECONDS = Gauge "hub_rollup_lag_seconds" []
        "How far the rollup watermark is behind the database clock after the last chunk (on the leader).";
    HUB_ROLLUP_ERRORS_TOTAL = Counter "hub_rollup_errors_total" []
        "Rollup passes that failed; retried next interval.";
    HUB_TRANSLOG_APPENDS_TOTAL = Counter "hub_translog_appends_total" []
        "Entries appended to the transparency log.";
    HUB_TRANSLOG_HEADS_SIGNED_TOTAL = Counter "hub_translog_heads_signed_total" []
        "Tree heads the transparency log signed (one per tree size served).";
    HUB_TRANSLOG_PROOFS_TOTAL = Counter "hub_translog_proofs_total" ["kind"]
        "Proofs the transparency log served, by kind (inclusion, consistency).";
    HUB_API_ERRORS_TOTAL = Counter "hub_api_errors_total" ["kind"]
        "Error answers of the REST API, by error kind.";
    HUB_API_AUTH_FAILURES_TOTAL = Counter "hub_api_auth_failures_total" ["reason"]
        "REST requests refused by authentication or authorization, by reason.";
    HUB_AUDIT_ENTRIES_TOTAL = Counter "hub_audit_entries_total" ["actor_kind"]
        "Entries appended to the audit trail, by kind of actor.";
    HUB_DESIRED_COMMANDS_TOTAL = Counter "hub_desired_commands_total" ["why"]
        "Commands queued to carry desired values to devices, by why (set by a person, resend after a gateway came back).";
    HUB_ANALYTICS_QUERIES_TOTAL = Counter "hub_analytics_queries_total" ["kind"]
        "Analytics queries served, by kind.";
    HUB_TWIN_WRITES_TOTAL = Counter "hub_twin_writes_total" ["action"]
        "Changes to the twin registry committed, by action (twin.create, relation.end, ...).";
    HUB_TWIN_WRITES_REFUSED_TOTAL = Counter "hub_twin_writes_refused_total" ["reason"]
        "Changes to the twin registry refused, by reason (invalid, conflict, stale).";
    HUB_LAB_WRITES_TOTAL = Counter "hub_lab_writes_total" ["action"]
        "Changes to the lab's work flow committed (service_request.create, inspection.add_photo, ...), by action.";
    HUB_LAB_REFUSED_TOTAL = Counter "hub_lab_refused_total" ["reason"]
        "Lab work-flow requests refused, by reason (invalid, not_found, conflict, stale, too_large, unsupported).";
    HUB_GATEWAY_HEALTH_CHANGES_TOTAL = Counter "hub_gateway_health_changes_total" ["online"]
        "Gateways going online or offline (their uplink stream opened or ended), by new state.";
    HUB_LIVE_SUBSCRIBERS = Gauge "hub_live_subscribers" []
        "Open live streams (GET /api/v1/twins/stream).";
    HUB_LIVE_EVENTS_SENT_TOTAL = Counter "hub_live_events_sent_total" []
        "Server-sent events queued for live-stream clients.";
    HUB_LIVE_SKIPPED_EVENTS_TOTAL = Counter "hub_live_skipped_events_total" []
        "Fan-out events slow live-stream subscribers were skipped past (each got a `lagged` event).";
    HUB_LIVE_DROPPED_TOTAL = Counter "hub_live_dropped_total" []
        "Live-stream connections dropped because the client did not read (live.send_timeout_s).";
    HUB_LIVE_REFUSED_TOTAL = Counter "hub_live_refused_total" []
        "Live streams refused with 503 because live.max_subscribers were open.";
    HUB_ALARMS_CHANGES_TOTAL = Counter "hub_alarms_changes_total" ["change"]
        "Alarm state changes, by change (raised, cleared, acknowledged).";
    HUB_ALARM_EVALUATION_ERRORS_TOTAL = Counter "hub_alarm_evaluation_errors_total" []
        "Alarm evaluations that could not be stored (database failed); the condition is evaluated again.";
    HUB_ALARM_WEBHOOK_ATTEMPTS_TOTAL = Counter "hub_alarm_webhook_attempts_total" ["result"]
        "Webhook delivery attempts, by result (ok, http_error, timeout, unreachable).";
    HUB_ALARM_WEBHOOK_FAILED_TOTAL = Counter "hub_alarm_webhook_failed_total" []
        "Alarm notifications given up after alarms.webhook_attempts attempts.";
    HUB_ALARM_WEBHOOK_DROPPED_TOTAL = Counter "hub_alarm_webhook_dropped_total" []
        "Alarm notifications dropped because a webhook's queue was full (alarms.webhook_queue).";
    HUB_RUN_EVENTS_TOTAL = Counter "hub_run_events_total" ["kind"]
        "Protocol run events stored (new, not redelivered), by kind (started, step_started, completed, ...).";
    HUB_BENCHES_RECORDED_TOTAL = Counter "hub_benches_recorded_total" []
        "Bench twins created or updated from the gateways' Hello.benches.";
    HUB_RUN_EVALUATIONS_TOTAL = Counter "hub_run_evaluations_total" ["verdict"]
        "Protocol run evaluations stored, by verdict (pass, fail, no_verdict, provisional).";
    HUB_RUN_EVALUATION_SECONDS = Histogram "hub_run_evaluation_seconds" []
        "Time to evaluate one run: gather its inputs from the database, evaluate, store.";
    HUB_RUN_EVALUATION_ERRORS_TOTAL = Counter "hub_run_evaluation_errors_total" []
        "Automatic run evaluations that failed (database, or a stored template that no longer parses); POST /api/v1/runs/{id}/evaluate retries.";
    HUB_RUN_APPROVALS_TOTAL = Counter "hub_run_approvals_total" ["decision"]
        "Engineer decisions on provisional run verdicts, by decision (approve, reject).";
    HUB_CERTIFICATES_ISSUED_TOTAL = Counter "hub_certificates_issued_total" ["kind", "simulated"]
        "Certificates issued, by kind (test, calibration) and whether marked SIMULATED (true, false).";
    HUB_CERTIFICATE_ISSUE_SECONDS = Histogram "hub_certificate_issue_seconds" []
        "Time to issue one certificate: read the runs, render, sign twice, store, log, audit.";
    HUB_CERTIFICATES_REVOKED_TOTAL = Counter "hub_certificates_revoked_total" ["state"]
        "Certificates taken out of force, by their new state (revoked, superseded).";
    HUB_CERTIFICATES_REFUSED_TOTAL = Counter "hub_certificates_refused_total" ["reason"]
        "Certificate operations refused, by reason (not_configured, refused, invalid, not_found, key, storage).";
    HUB_CERTIFICATE_VERIFICATIONS_TOTAL = Counter "hub_certificate_verifications_total" ["status"]
        "Answers of the public verification endpoint, by status (valid, revoked, superseded, expired, unknown, bad_id).";
    HUB_REPORTS_RENDERED_TOTAL = Counter "hub_reports_rendered_total" ["kind"]
        "PDF reports rendered, by kind (certificate, run).";
    HUB_REPORT_RENDER_SECONDS = Histogram "hub_report_render_seconds" ["kind"]
        "Time to render one PDF report from its data (after the database reads), by kind (certificate, run).";
    HUB_REPORTS_FAILED_TOTAL = Counter "hub_reports_failed_total" ["kind", "reason"]
        "PDF reports and QR codes not produced, by kind (certificate, run, qr) and reason (not_found, invalid, storage).";
    HUB_WEBHOOK_ATTEMPTS_TOTAL = Counter "hub_webhook_attempts_total" ["result"]
        "Lab webhook delivery attempts, by result (ok, http_error, timeout, unreachable, refused).";
    HUB_WEBHOOK_DELIVERIES_TOTAL = Counter "hub_webhook_deliveries_total" ["outcome"]
        "Lab webhook attempts recorded, by what became of the delivery (delivered, retry, dead).";
    HUB_WEBHOOK_QUEUE_DEPTH = Gauge "hub_webhook_queue_depth" []
        "Lab webhook deliveries pending (waiting, in flight or backing off), as of the worker's last look.";
    HUB_WEBHOOK_OLDEST_PENDING_SECONDS = Gauge "hub_webhook_oldest_pending_seconds" []
        "Age of the oldest pending lab webhook delivery (0 when none).";
    HUB_WEBHOOK_REPLAYS_TOTAL = Counter "hub_webhook_replays_total" []
        "Dead letters an admin queued again.";
    HUB_WEBHOOK_WORKER_ERRORS_TOTAL = Counter "hub_webhook_worker_errors_total" []
        "Database failures of the webhook worker (claiming, recording); the delivery is retried when its lease ends.";
    HUB_WEBHOOKS_REFUSED_TOTAL = Counter "hub_webhooks_refused_total" ["reason"]
        "Webhook and non-conformance API requests refused, by reason (invalid, not_found, conflict, storage).";
    HUB_EXPORTS_TOTAL = Counter "hub_exports_total" ["kind", "format", "outcome"]
        "Data exports (run, service_request) by format (csv, xlsx, json) and outcome (complete, failed, abandoned, refused).";
    HUB_EXPORT_ROWS_TOTAL = Counter "hub_export_rows_total" ["format"]
        "Rows written into data exports, by format (csv, xlsx, json).";
    HUB_IDEMPOTENT_REQUESTS_TOTAL = Counter "hub_idempotent_requests_total" ["outcome"]
        "Creates sent with an Idempotency-Key, by outcome (created, replayed, reused: the key came with a different body and was refused).";
    HUB_CALIBRATIONS_RECORDED_TOTAL = Counter "hub_calibrations_recorded_total" []
        "Instrument calibrations recorded.";
    HUB_CALIBRATION_REFUSED_TOTAL = Counter "hub_calibration_refused_total" ["reason"]
        "Calibration requests refused, by reason (invalid, refused, not_found, storage).";
    HUB_CALIBRATION_CHECKS_TOTAL = Counter "hub_calibration_checks_total" ["result"]
        "Looks of the calibration watch for due calibrations and expiring certificates, by result (ok, error).";
    HUB_CALIBRATION_DUE = Gauge "hub_calibration_due" ["kind", "status"]
        "Instrument calibrations (kind calibration) and valid certificates (kind certificate) due within calibration.warn_days (status due_soon) or past (expired), at the watch's last look.";
    HUB_CALIBRATION_STATUS_SENT_TOTAL = Counter "hub_calibration_status_sent_total" []
        "Calibration status lists sent to gateways (after Welcome, and when a calibration of theirs changed).";
    HUB_RUN_VERDICTS_SENT_TOTAL = Counter "hub_run_verdicts_sent_total" []
        "Lists of run verdicts and certificates sent to gateways (after Welcome, and when an evaluation, approval or certificate of one of their runs changed).";
}

/// Registers help texts and creates the unlabelled counters at zero (see
/// [`qi_common::metric_names::describe`]).
pub fn describe() {
    qi_common::metric_names::describe(ALL);
    qi_common::metric_names::describe(qi_common::metric_names::COMMON);
}
