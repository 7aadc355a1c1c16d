//! What the storage suite looks at beneath the hub's `Store`: the tables,
//! partitions and shards a tier laid out, TimescaleDB's jobs, and rollups
//! compared with a recomputation from raw samples.

use anyhow::{Context, Result, ensure};
use chrono::{DateTime, Duration as Days, Utc};
use cloud_hub::storage::{BucketRow, Source, Store};

use crate::PgServer;

pub async fn scalar_i64(store: &Store, sql: &'static str) -> Result<i64> {
    Ok(sqlx::query_scalar::<_, i64>(sql)
        .fetch_one(store.pool())
        .await?)
}

/// Tier citus: samples and both rollups distributed by series_id in one
/// co-location group, shards on every worker, day partitions distributed too.
pub async fn citus_layout(pool: &sqlx::PgPool) -> Result<()> {
    let tables: Vec<(String, String, i32)> = sqlx::query_as(
        "SELECT logicalrelid::regclass::text, column_to_column_name(logicalrelid, partkey), colocationid
         FROM pg_dist_partition
         WHERE logicalrelid IN ('samples'::regclass, 'rollup_1m'::regclass, 'rollup_1h'::regclass)
         ORDER BY 1",
    )
    .fetch_all(pool)
    .await?;
    assert_eq!(tables.len(), 3, "{tables:?}");
    ensure!(
        tables
            .iter()
            .all(|t| t.1 == "series_id" && t.2 == tables[0].2),
        "distributed by series_id, co-located: {tables:?}"
    );
    // The first day partition is tomorrow's (samples_before covers today):
    // created by the upkeep after the table was distributed.
    let tomorrow = format!("samples_{}", (Utc::now() + Days::days(1)).format("%Y%m%d"));
    let distributed: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_dist_partition WHERE logicalrelid::text = $1)",
    )
    .bind(&tomorrow)
    .fetch_one(pool)
    .await?;
    ensure!(distributed, "{tomorrow} is distributed");
    let workers: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT nodename || ':' || nodeport) FROM citus_shards
         WHERE table_name = 'samples'::regclass AND nodeport <> (SELECT setting::int FROM pg_settings WHERE name = 'port')",
    )
    .fetch_one(pool)
    .await?;
    assert_eq!(
        workers as usize,
        crate::pg::citus_workers()?,
        "samples' shards on every worker"
    );
    Ok(())
}

/// `samples_YYYYMMDD` of the day of `t`.
pub fn day_table(t: DateTime<Utc>) -> String {
    format!("samples_{}", t.format("%Y%m%d"))
}

pub async fn partitions(store: &Store) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = 'samples'::regclass ORDER BY 1",
    )
    .fetch_all(store.pool())
    .await?)
}

/// Rewrites the layout the first start made (everything before tomorrow in
/// `samples_before`) into the one 400 days of upkeep would have left: an
/// empty `samples_before` up to the oldest day, then one partition per day
/// holding rows (gaps are immaterial to the upkeep). The same DDL the hub
/// runs; on tier citus the new partitions are distributed like the hub's.
pub async fn age_day_partitions(
    store: &Store,
    t0: DateTime<Utc>,
    d40: DateTime<Utc>,
    d400: DateTime<Utc>,
) -> Result<()> {
    let today = Utc::now().date_naive();
    let mut days = vec![d400.date_naive(), d40.date_naive()];
    days.extend(t0.date_naive().iter_days().take_while(|d| *d <= today));
    let mut stmts = vec![
        "CREATE TABLE samples_aside AS SELECT * FROM samples_before".to_string(),
        "DROP TABLE samples_before".into(),
        format!(
            "CREATE TABLE samples_before PARTITION OF samples FOR VALUES FROM (MINVALUE) TO ('{}')",
            days[0]
        ),
    ];
    for d in &days {
        stmts.push(format!(
            "CREATE TABLE samples_{} PARTITION OF samples FOR VALUES FROM ('{d}') TO ('{}')",
            d.format("%Y%m%d"),
            *d + Days::days(1)
        ));
    }
    stmts.push("INSERT INTO samples SELECT * FROM samples_aside".into());
    stmts.push("DROP TABLE samples_aside".into());
    for stmt in stmts {
        sqlx::query(sqlx::AssertSqlSafe(stmt.clone()))
            .execute(store.pool())
            .await
            .with_context(|| stmt)?;
    }
    let waiting = scalar_i64(store, "SELECT count(*) FROM samples_default").await?;
    ensure!(
        waiting == 0,
        "every aged row has its day: {waiting} in default"
    );
    Ok(())
}

/// Tier citus: shard tables of partition `table` on all workers (Citus names
/// them `<table>_<shard id>`; the workers' metadata copy of the table itself
/// is not counted). Tier none: 1 if the table exists (the setting below is
/// then a harmless placeholder).
pub async fn shards_on_workers(pg: &PgServer, table: &str) -> Result<i64> {
    use sqlx::Connection;
    let (urls, pattern) = match pg.worker_urls() {
        urls if urls.is_empty() => (vec![pg.url()], table.to_string()),
        urls => (urls, format!("{table}\\_%")),
    };
    let mut n = 0;
    for url in urls {
        let mut conn = sqlx::PgConnection::connect(&url).await?;
        // Citus hides shards from pg_class unless told otherwise.
        sqlx::query("SET citus.override_table_visibility TO off")
            .execute(&mut conn)
            .await?;
        n += sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pg_class WHERE relkind = 'r' AND relname LIKE $1",
        )
        .bind(&pattern)
        .fetch_one(&mut conn)
        .await?;
    }
    Ok(n)
}

pub async fn one_hour(store: &Store, id: i32, t: DateTime<Utc>) -> Result<Vec<BucketRow>> {
    Ok(store
        .aggregate(Source::Hour, &[id], t, t + Days::hours(1), 3600, &[])
        .await?)
}

/// Runs the TimescaleDB jobs of one kind (`policy_compression`, ...) now.
pub async fn run_jobs(store: &Store, proc_name: &str) -> Result<()> {
    let ids: Vec<i32> =
        sqlx::query_scalar("SELECT job_id FROM timescaledb_information.jobs WHERE proc_name = $1")
            .bind(proc_name)
            .fetch_all(store.pool())
            .await?;
    ensure!(!ids.is_empty(), "no {proc_name} job");
    for id in ids {
        sqlx::query("CALL run_job($1)")
            .bind(id)
            .execute(store.pool())
            .await
            .with_context(|| format!("run_job({id}) of {proc_name}"))?;
    }
    Ok(())
}

/// Buckets of `table` that differ from the same buckets computed from raw
/// samples now (missing on either side, or any column off).
pub async fn rollups_off_raw(store: &Store, table: &str, unit: &str) -> Result<i64> {
    let sql = format!(
        "WITH raw AS (
            SELECT series_id, date_trunc('{unit}', ts) AS bucket, count(*) AS n, sum(value) AS sum,
                   sum(value * value) AS sum_sq, min(value) AS min, max(value) AS max,
                   min(ts) AS first_ts, (array_agg(value ORDER BY ts))[1] AS first,
                   max(ts) AS last_ts, (array_agg(value ORDER BY ts DESC))[1] AS last
            FROM samples GROUP BY 1, 2)
         SELECT count(*) FROM raw FULL JOIN {table} r USING (series_id, bucket)
         WHERE raw.n IS DISTINCT FROM r.n OR abs(raw.sum - r.sum) > 1e-6
            OR abs(raw.sum_sq - r.sum_sq) > 1e-3 OR raw.min <> r.min OR raw.max <> r.max
            OR raw.first_ts <> r.first_ts OR raw.first <> r.first
            OR raw.last_ts <> r.last_ts OR raw.last <> r.last"
    );
    // `table` and `unit` are literals of the caller.
    Ok(sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql))
        .fetch_one(store.pool())
        .await?)
}
