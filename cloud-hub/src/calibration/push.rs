//! What a gateway is told of its instruments' calibration
//! (`HubMessage.calibrations`), and the signal that one changed: each
//! uplink stream sends the list after Welcome and again when the
//! generation moves (a calibration was recorded or certified), if its
//! gateway's list differs from what it sent last.

use crate::push::Signal;
use qi_proto::v1::{CalibrationStatus, InstrumentCalibration};
use sqlx::PgPool;

/// Moves on every change of a calibration record in this hub; also wakes
/// the watch (alarms).
pub static SIGNAL: Signal = Signal::new();

/// A calibration was recorded or certified: streams and the watch look again.
pub fn changed() {
    SIGNAL.changed();
}

/// Resolves after the next `changed`.
pub(super) async fn notified() {
    SIGNAL.notified().await;
}

/// The standing calibration of each device of `gateway` that has one
/// (instrument twins not deleted), by device id.
pub async fn of_gateway(pool: &PgPool, gateway: &str) -> Result<CalibrationStatus, sqlx::Error> {
    type Row = (String, i64, i64, i64, Option<String>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT DISTINCT ON (c.device_id) c.device_id, c.calibration_id,
                (extract(epoch FROM c.calibrated_at) * 1000)::bigint,
                (extract(epoch FROM c.due_at) * 1000)::bigint, c.certificate_id
           FROM calibrations c JOIN twins t USING (twin_id)
          WHERE c.gateway_id = $1 AND t.deleted_at IS NULL
          ORDER BY c.device_id, c.calibrated_at DESC, c.calibration_id DESC",
    )
    .bind(gateway)
    .fetch_all(pool)
    .await?;
    Ok(CalibrationStatus {
        instruments: rows
            .into_iter()
            .map(|(device_id, id, at, due, cert)| InstrumentCalibration {
                device_id,
                calibration_id: id,
                calibrated_unix_ms: at,
                due_unix_ms: due,
                certificate_id: cert.unwrap_or_default(),
            })
            .collect(),
    })
}
