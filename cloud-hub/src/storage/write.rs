//! The ingest write path: series ids first, then a batch's samples in one
//! transaction by binary COPY, falling back to INSERT .. ON CONFLICT DO
//! NOTHING when the batch holds readings already stored (a redelivery after
//! a reconnect).

use super::{Store, StoreError};
use chrono::{DateTime, Utc};
use qi_proto::v1::{AuditEvent, Reading, RunEvent};
use std::collections::HashMap;
use std::sync::Mutex;

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01).
const PG_EPOCH_OFFSET_US: i64 = 946_684_800_000_000;

const COPY_SQL: &str =
    "COPY samples (ts, series_id, seq, value, quality) FROM STDIN (FORMAT binary)";

/// A batch in PostgreSQL's binary COPY format (header, one tuple per reading, trailer).
fn encode_copy(readings: &[Reading], ids: &[i32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(21 + readings.len() * 52);
    out.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
    out.extend_from_slice(&0i32.to_be_bytes()); // flags
    out.extend_from_slice(&0i32.to_be_bytes()); // header extension length
    for (r, id) in readings.iter().zip(ids) {
        out.extend_from_slice(&5i16.to_be_bytes());
        out.extend_from_slice(&8i32.to_be_bytes());
        out.extend_from_slice(&(r.timestamp_us - PG_EPOCH_OFFSET_US).to_be_bytes());
        out.extend_from_slice(&4i32.to_be_bytes());
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&8i32.to_be_bytes());
        out.extend_from_slice(&i64::try_from(r.seq).unwrap_or(i64::MAX).to_be_bytes());
        out.extend_from_slice(&8i32.to_be_bytes());
        out.extend_from_slice(&r.value.to_be_bytes());
        out.extend_from_slice(&2i32.to_be_bytes());
        out.extend_from_slice(&i16::try_from(r.quality).unwrap_or(0).to_be_bytes());
    }
    out.extend_from_slice(&(-1i16).to_be_bytes());
    out
}

/// Series ids known to this process: (gateway, device, metric, unit, run
/// id, run series) -> id.
/// Ids never change once assigned, so the cache needs no invalidation.
#[derive(Default)]
pub(super) struct SeriesCache {
    ids: Mutex<HashMap<String, i32>>,
}

fn series_key(gateway: &str, r: &Reading) -> String {
    let parts = [
        gateway,
        &r.device_id,
        &r.metric,
        &r.unit,
        &r.run_id,
        &r.run_series,
    ];
    let mut k = String::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    for (i, part) in parts.into_iter().enumerate() {
        if i > 0 {
            k.push('\0');
        }
        k.push_str(part);
    }
    k
}

/// A series row as the id lookup returns it: id, device, metric, unit, run
/// id and run series (NULL for polled readings).
type SeriesIdentity = (i32, String, String, String, Option<String>, Option<String>);

/// A batch as column arrays, the shape UNNEST binds fastest.
struct Columns {
    ts: Vec<DateTime<Utc>>,
    seq: Vec<i64>,
    value: Vec<f64>,
    quality: Vec<i16>,
}

impl Columns {
    fn of(readings: &[Reading]) -> Columns {
        Columns {
            ts: readings
                .iter()
                .map(|r| DateTime::<Utc>::from_timestamp_micros(r.timestamp_us).unwrap_or_default())
                .collect(),
            seq: readings
                .iter()
                .map(|r| i64::try_from(r.seq).unwrap_or(i64::MAX))
                .collect(),
            value: readings.iter().map(|r| r.value).collect(),
            quality: readings
                .iter()
                .map(|r| i16::try_from(r.quality).unwrap_or(0))
                .collect(),
        }
    }
}

/// Tries of one batch's transaction when the database cancels it as a deadlock.
const DEADLOCK_TRIES: u32 = 3;

/// 40P01: the database broke a deadlock by cancelling this transaction.
fn is_deadlock(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.code().as_deref() == Some("40P01"))
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => {
            d.code().as_deref() == Some("23505")
                // Citus (tier citus) relays a worker's unique violation in a
                // distributed COPY as an internal error with the worker's message.
                || (d.code().as_deref() == Some("XX000")
                    && d.message().starts_with("duplicate key value violates unique constraint"))
        }
        _ => false,
    }
}

impl Store {
    /// The series id of every reading, creating series seen for the first time.
    async fn series_ids(
        &self,
        gateway: &str,
        readings: &[Reading],
    ) -> Result<Vec<i32>, StoreError> {
        let mut ids = Vec::with_capacity(readings.len());
        let mut missing: HashMap<String, &Reading> = HashMap::new();
        {
            let cache = self
                .series
                .ids
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            for r in readings {
                let key = series_key(gateway, r);
                match cache.get(&key) {
                    Some(id) => ids.push(*id),
                    None => {
                        ids.push(0);
                        missing.insert(key, r);
                    }
                }
            }
        }
        if missing.is_empty() {
            return Ok(ids);
        }
        // Two tries: a concurrent stream may create a series between our
        // INSERT (which then skips it) and our snapshot.
        for _ in 0..2 {
            let mut dev = Vec::new();
            let mut met = Vec::new();
            let mut unit = Vec::new();
            // Untagged readings have no run: NULL, not '', in the series row.
            let mut run: Vec<Option<&str>> = Vec::new();
            let mut run_series: Vec<Option<&str>> = Vec::new();
            // Sorted, so two batches of one gateway creating the same series
            // at once take the unique index's entries in one order: in hash
            // order they deadlocked (seen in CI, 40P01).
            let mut todo: Vec<(&String, &&Reading)> = missing.iter().collect();
            todo.sort_unstable_by(|a, b| a.0.cmp(b.0));
            for (_, r) in todo {
                dev.push(r.device_id.as_str());
                met.push(r.metric.as_str());
                unit.push(r.unit.as_str());
                let tagged = !r.run_id.is_empty();
                run.push(tagged.then_some(r.run_id.as_str()));
                run_series.push(tagged.then_some(r.run_series.as_str()));
            }
            let rows: Vec<SeriesIdentity> = sqlx::query_as(
                "WITH input AS (
                    SELECT * FROM UNNEST($2::text[], $3::text[], $4::text[], $5::uuid[], $6::text[])
                        AS t(device_id, metric, unit, run_id, run_series)),
                 ins AS (
                    INSERT INTO series (gateway_id, device_id, metric, unit, run_id, run_series)
                    SELECT $1, device_id, metric, unit, run_id, run_series FROM input
                    ON CONFLICT DO NOTHING
                    RETURNING series_id, device_id, metric, unit, run_id, run_series)
                 SELECT series_id, device_id, metric, unit, run_id::text, run_series FROM ins
                 UNION ALL
                 SELECT s.series_id, s.device_id, s.metric, s.unit, s.run_id::text, s.run_series
                 FROM series s JOIN input i
                   ON s.device_id = i.device_id AND s.metric = i.metric AND s.unit = i.unit
                  AND s.run_id IS NOT DISTINCT FROM i.run_id
                  AND s.run_series IS NOT DISTINCT FROM i.run_series
                 WHERE s.gateway_id = $1",
            )
            .bind(gateway)
            .bind(&dev)
            .bind(&met)
            .bind(&unit)
            .bind(&run)
            .bind(&run_series)
            .fetch_all(&self.pool)
            .await?;
            let mut cache = self
                .series
                .ids
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            for (id, d, m, u, run, rs) in rows {
                let key = series_key(
                    gateway,
                    &Reading {
                        device_id: d,
                        metric: m,
                        unit: u,
                        run_id: run.unwrap_or_default(),
                        run_series: rs.unwrap_or_default(),
                        ..Default::default()
                    },
                );
                missing.remove(&key);
                cache.insert(key, id);
            }
            if missing.is_empty() {
                for (slot, r) in ids.iter_mut().zip(readings) {
                    if *slot == 0 {
                        let key = series_key(gateway, r);
                        *slot = cache.get(&key).copied().unwrap_or(0);
                    }
                }
                return Ok(ids);
            }
        }
        Err(StoreError::Db(sqlx::Error::Protocol(format!(
            "{} series could not be created for gateway {gateway}",
            missing.len()
        ))))
    }

    /// Writes one batch in one transaction; readings already stored (same
    /// series, time and sequence) are skipped. Returns how many were new.
    /// When this returns `Ok`, the batch is committed and may be acknowledged.
    pub async fn insert_batch(
        &self,
        gateway_id: &str,
        readings: &[Reading],
    ) -> Result<u64, StoreError> {
        self.insert_batch_with_events(gateway_id, readings, &[], &[])
            .await
            .map(|b| b.readings)
    }

    /// Stores a batch's readings, appends its audit events to the audit
    /// trail (see [`super::gateway_events`]) and stores its run events
    /// (see [`super::run_events`]), all in one transaction.
    pub async fn insert_batch_with_events(
        &self,
        gateway_id: &str,
        readings: &[Reading],
        events: &[AuditEvent],
        run_events: &[RunEvent],
    ) -> Result<BatchStored, StoreError> {
        if readings.is_empty() {
            let mut tx = self.pool.begin().await?;
            let new = super::gateway_events::record(&mut tx, gateway_id, events).await?;
            let runs =
                super::run_events::record(&mut tx, gateway_id, run_events, &[], false).await?;
            tx.commit().await?;
            return Ok(BatchStored {
                readings: 0,
                events: new,
                series_ids: Vec::new(),
                runs,
            });
        }
        let ids = self.series_ids(gateway_id, readings).await?;
        let mut attempt = 1;
        loop {
            match self
                .write_batch(gateway_id, readings, &ids, events, run_events)
                .await
            {
                // PostgreSQL rolled the whole transaction back: running it
                // again is safe. On tier citus two transactions writing the
                // same readings at once (a redelivery racing the original)
                // take the shards' rows in different orders over parallel
                // connections, and Citus cancels one as a distributed
                // deadlock; its retry then finds the rows stored.
                Err(StoreError::Db(e)) if is_deadlock(&e) && attempt < DEADLOCK_TRIES => {
                    metrics::counter!(crate::metric_names::HUB_INGEST_DEADLOCK_RETRIES_TOTAL)
                        .increment(1);
                    tracing::warn!(gateway = gateway_id, attempt, error = %e, "batch deadlocked; writing it again");
                    attempt += 1;
                }
                done => return done,
            }
        }
    }

    /// A batch's transaction. Tier citus: over one connection per worker
    /// (Citus' sequential mode). In parallel mode a COPY spread over the
    /// shards opens a connection per shard, and the worker forks a backend
    /// for each one Citus does not keep cached: a 20-reading batch took
    /// 17 ms instead of 1.9 ms (5,000 readings: 38 ms instead of 25 ms) on
    /// a coordinator and two workers on this 2-core machine.
    async fn begin_batch(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, StoreError> {
        let mut tx = self.pool.begin().await?;
        if self.tier == super::StorageTier::Citus {
            sqlx::query("SET LOCAL citus.multi_shard_modify_mode TO 'sequential'")
                .execute(&mut *tx)
                .await?;
        }
        Ok(tx)
    }

    /// One try at [`Store::insert_batch_with_events`]' transaction.
    async fn write_batch(
        &self,
        gateway_id: &str,
        readings: &[Reading],
        ids: &[i32],
        events: &[AuditEvent],
        run_events: &[RunEvent],
    ) -> Result<BatchStored, StoreError> {
        // Fast path: a batch the hub has never seen goes in by binary COPY
        // (TCP_NODELAY is set on the connections, see `nodelay`). A duplicate
        // makes the COPY fail as a whole; the slow path then skips exactly
        // the readings already stored.
        let mut tx = self.begin_batch().await?;
        if self.ingest == super::IngestMethod::Insert {
            let inserted = self
                .insert_skipping_duplicates(&mut tx, &Columns::of(readings), ids)
                .await?;
            self.note_devices(&mut tx, gateway_id, readings).await?;
            note_latest(&mut tx, readings, ids).await?;
            let new = super::gateway_events::record(&mut tx, gateway_id, events).await?;
            let runs =
                super::run_events::record(&mut tx, gateway_id, run_events, readings, inserted > 0)
                    .await?;
            tx.commit().await?;
            return Ok(BatchStored {
                readings: inserted,
                events: new,
                series_ids: ids.to_vec(),
                runs,
            });
        }
        let copied = {
            let data = encode_copy(readings, ids);
            match tx.copy_in_raw(COPY_SQL).await {
                Ok(mut copy) => match copy.send(data).await {
                    Ok(_) => copy.finish().await,
                    Err(e) => {
                        let _ = copy.abort("send failed").await;
                        Err(e)
                    }
                },
                Err(e) => Err(e),
            }
        };
        let inserted = match copied {
            Ok(n) => n,
            Err(e) if is_unique_violation(&e) => {
                tx.rollback().await?;
                metrics::counter!(crate::metric_names::HUB_INGEST_DUPLICATE_BATCHES_TOTAL)
                    .increment(1);
                tx = self.begin_batch().await?;
                let cols = Columns::of(readings);
                self.insert_skipping_duplicates(&mut tx, &cols, ids).await?
            }
            Err(e) => return Err(e.into()),
        };
        self.note_devices(&mut tx, gateway_id, readings).await?;
        note_latest(&mut tx, readings, ids).await?;
        let new = super::gateway_events::record(&mut tx, gateway_id, events).await?;
        let runs =
            super::run_events::record(&mut tx, gateway_id, run_events, readings, inserted > 0)
                .await?;
        tx.commit().await?;
        Ok(BatchStored {
            readings: inserted,
            events: new,
            series_ids: ids.to_vec(),
            runs,
        })
    }

    async fn insert_skipping_duplicates(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
        cols: &Columns,
        ids: &[i32],
    ) -> Result<u64, StoreError> {
        let inserted: i64 = sqlx::query_scalar(
            "WITH ins AS (
                INSERT INTO samples (ts, series_id, seq, value, quality)
                SELECT * FROM UNNEST($1::timestamptz[], $2::int4[], $3::int8[], $4::float8[], $5::int2[])
                ON CONFLICT DO NOTHING
                RETURNING 1)
             SELECT count(*) FROM ins",
        )
        .bind(&cols.ts)
        .bind(ids)
        .bind(&cols.seq)
        .bind(&cols.value)
        .bind(&cols.quality)
        .fetch_one(&mut **tx)
        .await?;
        Ok(u64::try_from(inserted).unwrap_or(0))
    }

    /// Keeps the gateway's highest sequence and each device's first/last
    /// acquisition time current, in the batch's transaction.
    async fn note_devices(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
        gateway_id: &str,
        readings: &[Reading],
    ) -> Result<(), StoreError> {
        let mut span: HashMap<&str, (i64, i64)> = HashMap::new();
        let mut max_seq = 0u64;
        for r in readings {
            let e = span
                .entry(r.device_id.as_str())
                .or_insert((r.timestamp_us, r.timestamp_us));
            e.0 = e.0.min(r.timestamp_us);
            e.1 = e.1.max(r.timestamp_us);
            max_seq = max_seq.max(r.seq);
        }
        // Sorted, so concurrent batches lock device rows in one order (no deadlock).
        let mut span: Vec<(&str, (i64, i64))> = span.into_iter().collect();
        span.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut device = Vec::with_capacity(span.len());
        let mut first = Vec::with_capacity(span.len());
        let mut last = Vec::with_capacity(span.len());
        for (d, (a, b)) in span {
            device.push(d);
            first.push(DateTime::<Utc>::from_timestamp_micros(a).unwrap_or_default());
            last.push(DateTime::<Utc>::from_timestamp_micros(b).unwrap_or_default());
        }
        sqlx::query(
            "WITH d AS (
                INSERT INTO devices (gateway_id, device_id, first_seen, last_seen)
                SELECT $1, * FROM UNNEST($2::text[], $3::timestamptz[], $4::timestamptz[])
                ON CONFLICT (gateway_id, device_id) DO UPDATE
                   SET first_seen = LEAST(devices.first_seen, EXCLUDED.first_seen),
                       last_seen = GREATEST(devices.last_seen, EXCLUDED.last_seen))
             UPDATE gateways SET highest_seq = GREATEST(highest_seq, $5), last_seen = now()
             WHERE gateway_id = $1",
        )
        .bind(gateway_id)
        .bind(&device)
        .bind(&first)
        .bind(&last)
        .bind(i64::try_from(max_seq).unwrap_or(i64::MAX))
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
}

/// What a committed batch added.
#[derive(Debug)]
pub struct BatchStored {
    /// Readings new to the database (a redelivery adds none).
    pub readings: u64,
    /// Audit events new to the audit trail.
    pub events: u64,
    /// The series id of each reading of the batch, in order.
    pub series_ids: Vec<i32>,
    /// Its protocol run events.
    pub runs: super::run_events::RunsStored,
}

/// Keeps each series' latest reading (`series_latest`, the twins' reported
/// state) current in the batch's transaction. A redelivered or late reading
/// older than the stored one leaves it alone.
async fn note_latest(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    readings: &[Reading],
    ids: &[i32],
) -> Result<(), StoreError> {
    let mut latest: HashMap<i32, &Reading> = HashMap::new();
    for (r, &id) in readings.iter().zip(ids) {
        let e = latest.entry(id).or_insert(r);
        if (r.timestamp_us, r.seq) > (e.timestamp_us, e.seq) {
            *e = r;
        }
    }
    // Sorted, so concurrent batches lock rows in one order (no deadlock).
    let mut latest: Vec<(i32, &Reading)> = latest.into_iter().collect();
    latest.sort_unstable_by_key(|(id, _)| *id);
    let n = latest.len();
    let (mut id, mut ts, mut value, mut quality, mut seq) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for (i, r) in latest {
        id.push(i);
        ts.push(DateTime::<Utc>::from_timestamp_micros(r.timestamp_us).unwrap_or_default());
        value.push(r.value);
        quality.push(i16::try_from(r.quality).unwrap_or(0));
        seq.push(i64::try_from(r.seq).unwrap_or(i64::MAX));
    }
    sqlx::query(
        "INSERT INTO series_latest AS l (series_id, ts, value, quality, seq)
         SELECT * FROM UNNEST($1::int4[], $2::timestamptz[], $3::float8[], $4::int2[], $5::int8[])
         ON CONFLICT (series_id) DO UPDATE
            SET ts = EXCLUDED.ts, value = EXCLUDED.value, quality = EXCLUDED.quality, seq = EXCLUDED.seq
          WHERE (l.ts, l.seq) < (EXCLUDED.ts, EXCLUDED.seq)",
    )
    .bind(&id)
    .bind(&ts)
    .bind(&value)
    .bind(&quality)
    .bind(&seq)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_encoding_has_header_tuples_and_trailer() {
        let r = Reading {
            seq: 7,
            device_id: "d".into(),
            metric: "m".into(),
            timestamp_us: PG_EPOCH_OFFSET_US + 1,
            value: 1.5,
            unit: "V".into(),
            quality: 1,
            ..Default::default()
        };
        let b = encode_copy(&[r], &[42]);
        assert_eq!(&b[..11], b"PGCOPY\n\xff\r\n\0");
        // header 19 bytes, tuple 2 + 5 lengths (20) + 8+4+8+8+2 (30), trailer 2
        assert_eq!(b.len(), 19 + 2 + 20 + 30 + 2);
        assert_eq!(&b[19..21], &5i16.to_be_bytes());
        assert_eq!(&b[25..33], &1i64.to_be_bytes());
        assert_eq!(&b[37..41], &42i32.to_be_bytes());
        assert_eq!(&b[b.len() - 2..], &(-1i16).to_be_bytes());
    }
}
