//! Every metric the agent exposes, named once: code uses these constants,
//! docs/metrics.md lists the same names with their meaning, and the e2e test
//! `metrics_docs` holds the three together. Names are part of the interface
//! (dashboards and alerts use them): rename only with a migration note.

qi_common::metric_names! {
    // Pollers (one series per configured device).
    EDGE_MODBUS_POLLS_TOTAL = Counter "edge_modbus_polls_total" ["device"]
        "Completed poll cycles of a Modbus device.";
    EDGE_SCPI_POLLS_TOTAL = Counter "edge_scpi_polls_total" ["device"]
        "Completed poll cycles of an SCPI / line-protocol device.";
    EDGE_READINGS_TOTAL = Counter "edge_readings_total" ["device"]
        "Readings a poller appended to the buffer (after dead-bands).";
    EDGE_POLL_FAILURES_TOTAL = Counter "edge_poll_failures_total" ["device"]
        "Poll cycles that failed (device down, timeout, I/O error); the poller backs off and retries.";
    EDGE_WRITES_TOTAL = Counter "edge_writes_total" ["device", "result"]
        "Writes to writable points through the local API, by result (ok, error).";
    EDGE_MODBUS_REQUEST_SECONDS = Histogram "edge_modbus_request_seconds" ["device"]
        "Round trip of one Modbus request.";
    EDGE_MODBUS_DECODE_ERRORS_TOTAL = Counter "edge_modbus_decode_errors_total" ["device"]
        "Register values read but not decodable by the profile (e.g. NaN, out of range).";
    EDGE_MODBUS_EXCEPTIONS_TOTAL = Counter "edge_modbus_exceptions_total" ["device"]
        "Modbus exception responses from a device.";
    EDGE_MODBUS_BAD_POINTS_TOTAL = Counter "edge_modbus_bad_points_total" ["device"]
        "Points a device newly refuses; they are skipped and retried later.";
    EDGE_MODBUS_REFUSED_REGISTERS_TOTAL = Counter "edge_modbus_refused_registers_total" ["device"]
        "Gap registers between points a device newly refuses; reads are planned around them.";
    EDGE_MODBUS_PIPELINE_REQUESTS_TOTAL = Counter "edge_modbus_pipeline_requests_total" ["endpoint"]
        "Requests sent on a pipelined Modbus TCP connection (profiles with modbus.max_in_flight > 1).";
    EDGE_MODBUS_PIPELINE_IN_FLIGHT = Gauge "edge_modbus_pipeline_in_flight" ["endpoint"]
        "Requests outstanding on a pipelined Modbus TCP connection (at most the address's max_in_flight).";
    EDGE_MODBUS_PIPELINE_BAD_FRAMES_TOTAL = Counter "edge_modbus_pipeline_bad_frames_total" ["endpoint", "reason"]
        "Frames on a pipelined connection not delivered to any request, by reason: unknown_transaction, mismatch (unit id or function), short (size does not fit the request), garbage (MBAP header), late (answer to a request that timed out). All but late drop the connection.";
    EDGE_SCPI_RESYNCS_TOTAL = Counter "edge_scpi_resyncs_total" ["device"]
        "Times an SCPI line was resynchronised after a garbled or unexpected reply.";
    EDGE_DEVICES_DISABLED_TOTAL = Counter "edge_devices_disabled_total" []
        "Configured devices that cannot be polled (bad profile, conflicting bus settings).";
    EDGE_CONFIG_RELOADS_TOTAL = Counter "edge_config_reloads_total" []
        "Configuration reloads applied.";

    // Buffer.
    EDGE_BUFFER_APPENDED_TOTAL = Counter "edge_buffer_appended_total" []
        "Readings appended to the buffer and fsynced (all sources).";
    EDGE_BUFFER_FSYNCS_TOTAL = Counter "edge_buffer_fsyncs_total" []
        "Buffer flushes to disk.";
    EDGE_BUFFER_APPEND_ERRORS_TOTAL = Counter "edge_buffer_append_errors_total" []
        "Appends that failed to reach the disk.";
    EDGE_BUFFER_BACKLOG = Gauge "edge_buffer_backlog" []
        "Readings in the buffer not yet acknowledged by the hub.";
    EDGE_BUFFER_LAST_SEQ = Gauge "edge_buffer_last_seq" []
        "Highest sequence number the buffer has assigned.";
    EDGE_BUFFER_OLDEST_PENDING_SECONDS = Gauge "edge_buffer_oldest_pending_seconds" []
        "Age of the oldest reading not yet acknowledged by the hub (0 with an empty backlog): the gateway's ingest lag.";
    EDGE_BUFFER_DISK_BYTES = Gauge "edge_buffer_disk_bytes" []
        "Size of the buffer's files on disk.";
    EDGE_BUFFER_REJECTED_TOTAL = Counter "edge_buffer_rejected_total" []
        "New readings refused because the buffer is full (full_policy = reject_newest).";
    EDGE_BUFFER_DROPPED_TOTAL = Counter "edge_buffer_dropped_total" []
        "Readings dropped unsent to bound the buffer (oldest first, bulk before high priority).";
    EDGE_BUFFER_EXPIRED_TOTAL = Counter "edge_buffer_expired_total" []
        "Readings dropped unsent because they were older than buffer.ttl_s.";
    EDGE_BUFFER_CORRUPT_RECORDS_TOTAL = Counter "edge_buffer_corrupt_records_total" []
        "Undecodable buffer records quarantined.";
    EDGE_BUFFER_QUARANTINED_TOTAL = Counter "edge_buffer_quarantined_total" []
        "Unreadable buffers moved aside and replaced by an empty one.";
    EDGE_BUFFER_RENUMBERED_TOTAL = Counter "edge_buffer_renumbered_total" []
        "Readings renumbered because their sequence numbers were implausibly high.";
    EDGE_BUFFER_RECYCLES_TOTAL = Counter "edge_buffer_recycles_total" []
        "Buffer database reopens to return memory (buffer.recycle_after_mib).";
    EDGE_BUFFER_RECYCLE_ERRORS_TOTAL = Counter "edge_buffer_recycle_errors_total" []
        "Buffer database reopens that failed (retried on next use).";

    // Uplink.
    EDGE_UPLINK_BATCHES_SENT_TOTAL = Counter "edge_uplink_batches_sent_total" []
        "Batches sent to the hub (resends included).";
    EDGE_UPLINK_READINGS_SENT_TOTAL = Counter "edge_uplink_readings_sent_total" []
        "Readings sent to the hub (resends included).";
    EDGE_UPLINK_ACKS_TOTAL = Counter "edge_uplink_acks_total" []
        "Batch acknowledgements received from the hub.";
    EDGE_UPLINK_FAILURES_TOTAL = Counter "edge_uplink_failures_total" []
        "Uplink sessions that ended in an error; the agent reconnects with backoff.";
    EDGE_UPLINK_HUB_SWITCHES_TOTAL = Counter "edge_uplink_hub_switches_total" []
        "Times the uplink moved on to the next hub of uplink.hub_urls after a failure.";
    EDGE_UPLINK_STALLS_TOTAL = Counter "edge_uplink_stalls_total" []
        "Uplink sessions abandoned because the hub did not acknowledge in time.";
    EDGE_UPLINK_CONNECTED = Gauge "edge_uplink_connected" []
        "1 while the uplink stream to the hub is open, else 0 (at scrape time).";
    EDGE_DEVICE_ONLINE = Gauge "edge_device_online" ["device"]
        "1 while the device answers its polls (online or degraded), 0 while connecting, offline or disabled (at scrape time).";
    EDGE_UPLINK_IMPLAUSIBLE_HUB_SEQ_TOTAL = Counter "edge_uplink_implausible_hub_seq_total" []
        "Hub sequence numbers above the plausible maximum, not taken.";
    EDGE_COMMANDS_TOTAL = Counter "edge_commands_total" ["ok"]
        "Hub commands executed, by outcome (true, false).";

    // Local API.
    EDGE_HTTP_ERRORS_TOTAL = Counter "edge_http_errors_total" ["kind"]
        "Error answers of the local API, by error kind.";
    EDGE_AUTH_LOGINS_TOTAL = Counter "edge_auth_logins_total" ["result"]
        "Local API login attempts, by result (ok, bad_credentials, rate_limited, bad_request, no_users).";
    EDGE_AUTH_REFUSED_TOTAL = Counter "edge_auth_refused_total" ["reason"]
        "Local API requests refused by authentication or authorization, by reason (no_credentials, unknown_session, expired_session, user_gone, bad_csrf, forbidden, bad_metrics_token, no_users).";
    EDGE_AUTH_SESSIONS = Gauge "edge_auth_sessions" []
        "Local API login sessions held (updated at each login and logout; expired ones are pruned at the next login).";
    EDGE_AUTH_USERS_FILE_ERRORS_TOTAL = Counter "edge_auth_users_file_errors_total" []
        "Times the users file could not be read or parsed (no local user can log in meanwhile).";
    EDGE_AUDIT_EVENTS_TOTAL = Counter "edge_audit_events_total" ["action"]
        "Local audit events (logins, logouts, device writes) made durable for the hub, by action.";
    EDGE_AUDIT_ERRORS_TOTAL = Counter "edge_audit_errors_total" []
        "Local audit events that could not be buffered (buffer error or full); the action itself was still refused or done as logged.";
    // Protocol runs (runs/).
    EDGE_RUNS_ACTIVE = Gauge "edge_runs_active" []
        "Protocol runs running or paused on this gateway.";
    EDGE_RUNS_STARTED_TOTAL = Counter "edge_runs_started_total" []
        "Protocol runs started through the local API.";
    EDGE_RUNS_REFUSED_TOTAL = Counter "edge_runs_refused_total" ["reason"]
        "Run starts refused (unknown protocol or bench, parameter, binding, limit, bench_busy, sample_busy, calibration, ...).";
    EDGE_CALIBRATIONS_KNOWN = Gauge "edge_calibrations_known" []
        "Instruments whose calibration the hub told this gateway (kept across restarts).";
    EDGE_CALIBRATION_UPDATES_TOTAL = Counter "edge_calibration_updates_total" ["result"]
        "Calibration status lists received from the hub, by result (stored, invalid, storage).";
    EDGE_HUB_VERDICTS_KNOWN = Gauge "edge_hub_verdicts_known" []
        "Runs whose verdict (and certificate) the hub told this gateway (kept across restarts, at most verdicts::MAX_KEPT).";
    EDGE_HUB_VERDICT_UPDATES_TOTAL = Counter "edge_hub_verdict_updates_total" ["result"]
        "Run verdict lists received from the hub, by result (stored, invalid: refused whole, storage).";
    EDGE_RUN_OUTCOMES_TOTAL = Counter "edge_run_outcomes_total" ["outcome"]
        "Runs ended, by outcome (completed, aborted, failed).";
    EDGE_RUN_STEPS_TOTAL = Counter "edge_run_steps_total" []
        "Run steps finished (repeats and their passes' steps each count).";
    EDGE_RUN_SETPOINTS_TOTAL = Counter "edge_run_setpoints_total" ["result"]
        "Setpoints a run wrote, by result (written, refused: a bench limit or the device refused, failed: device unreachable).";
    EDGE_RUN_RECORD_MISSED_TOTAL = Counter "edge_run_record_missed_total" []
        "Record ticks that got no reading: the point had no current value, or the run fell more than an interval behind (a busy machine at a high time scale) and the ticks in between were skipped.";
    EDGE_RUN_IV_SWEEPS_TOTAL = Counter "edge_run_iv_sweeps_total" ["result"]
        "IV sweeps, by result (ok, failed: the instrument did not answer or refused, unparsable: the reply was not a usable curve).";
    EDGE_RUN_STORAGE_ERRORS_TOTAL = Counter "edge_run_storage_errors_total" []
        "Run events, readings or checkpoints the buffer could not store.";
    EDGE_RUN_RECOVERED_TOTAL = Counter "edge_run_recovered_total" ["action"]
        "Runs found interrupted at start, by what their on_restart policy did (resume, abort, unreadable).";
    // The local web page (local_api/web/).
    EDGE_WEB_STREAMS = Gauge "edge_web_streams" []
        "Live-update streams (Server-Sent Events, GET /api/v1/live) of the local web page open now.";
    EDGE_WEB_STREAMS_REFUSED_TOTAL = Counter "edge_web_streams_refused_total" ["reason"]
        "Live-update streams refused, by reason (total: http.max_live_streams reached, per_session: http.max_live_streams_per_session reached).";
    EDGE_WEB_SNAPSHOTS_TOTAL = Counter "edge_web_snapshots_total" []
        "Live snapshots built (once a second while a stream is open, shared by all streams).";
    EDGE_WEB_EVENTS_TOTAL = Counter "edge_web_events_total" ["event"]
        "Events sent on live-update streams, by event (snapshot, session_end).";
    EDGE_WEB_HISTORY_SERIES = Gauge "edge_web_history_series" []
        "Point series whose last hour the agent keeps in memory for the page's charts.";
    EDGE_WEB_HISTORY_SKIPPED_TOTAL = Counter "edge_web_history_skipped_total" []
        "Samples not kept because the chart history holds its most series already.";
    EDGE_HTTP_TLS_HANDSHAKE_FAILURES_TOTAL = Counter "edge_http_tls_handshake_failures_total" []
        "TLS handshakes on the local API that failed or timed out.";

    // Site MQTT bus.
    EDGE_MQTT_CONNECTIONS_TOTAL = Counter "edge_mqtt_connections_total" ["result"]
        "MQTT connection attempts, by result (accepted, refused reasons, tls_failed, ...).";
    EDGE_MQTT_CLIENTS = Gauge "edge_mqtt_clients" []
        "MQTT clients connected now.";
    EDGE_MQTT_PENDING_CONNECTIONS = Gauge "edge_mqtt_pending_connections" []
        "MQTT connections accepted but not yet past CONNECT.";
    EDGE_MQTT_MAX_CONNECTIONS = Gauge "edge_mqtt_max_connections" []
        "MQTT connection limit in effect (mqtt.max_connections fitted to the descriptor limit).";
    EDGE_MQTT_ACCEPT_ERRORS_TOTAL = Counter "edge_mqtt_accept_errors_total" []
        "Failed accept() calls on the MQTT listeners.";
    EDGE_MQTT_TIMEOUTS_TOTAL = Counter "edge_mqtt_timeouts_total" ["phase"]
        "MQTT connections closed for silence, by phase (tls_handshake, websocket_upgrade, connect, keep_alive).";
    EDGE_MQTT_REJECTED_TOTAL = Counter "edge_mqtt_rejected_total" ["reason"]
        "MQTT messages or packets rejected as bad input, by reason.";
    EDGE_MQTT_DENIED_TOTAL = Counter "edge_mqtt_denied_total" ["what"]
        "MQTT actions refused by the user's permissions (publish, subscribe, retain, will).";
    EDGE_MQTT_MESSAGES_TOTAL = Counter "edge_mqtt_messages_total" []
        "MQTT PUBLISH packets received from clients.";
    EDGE_MQTT_DUPLICATES_TOTAL = Counter "edge_mqtt_duplicates_total" []
        "Resent QoS 2 messages answered without storing them again.";
    EDGE_MQTT_READINGS_TOTAL = Counter "edge_mqtt_readings_total" []
        "Readings from MQTT telemetry appended to the buffer.";
    EDGE_MQTT_BUS_DROPPED_TOTAL = Counter "edge_mqtt_bus_dropped_total" []
        "Messages the agent could not hand to the embedded broker (queue full).";
}

/// Registers the help text of the agent's metrics and of qi-common's, and
/// creates the unlabelled counters at zero (see [`qi_common::metric_names::describe`]).
pub fn describe() {
    qi_common::metric_names::describe(ALL);
    qi_common::metric_names::describe(qi_common::metric_names::COMMON);
}
