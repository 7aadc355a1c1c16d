//! Which twin a reading belongs to, without a query per reading: the
//! instrument twin bound to (gateway, device) and the gateway twin bound to
//! a gateway, with the site each lies in, cached in memory. The cache is
//! emptied when a `Twin` event arrives (a twin was created, changed, placed
//! or deleted) and filled again on misses, one query per batch.
//!
//! Every subscriber of a batch needs the same grouping of its readings by
//! twin; the first one to ask computes it and the others share it.

use super::{Event, EventBody, LiveReading};
use sqlx::PgPool;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::OnceCell;

/// A twin as the live stream and the alarm evaluator see it.
#[derive(Debug, Clone, PartialEq)]
pub struct TwinRef {
    pub twin_id: String,
    pub kind: String,
    /// `twin_site` (migration 0008); None when it lies in no site.
    pub site: Option<String>,
}

/// A batch's readings grouped by the twin they belong to (readings of
/// devices bound to no twin are left out).
#[derive(Debug, Default)]
pub struct Grouped {
    pub twins: Vec<(Arc<TwinRef>, Vec<usize>)>,
    by_id: HashMap<String, usize>,
}

impl Grouped {
    /// The readings (indexes into the batch) of one twin.
    pub fn of(&self, twin_id: &str) -> Option<&(Arc<TwinRef>, Vec<usize>)> {
        self.by_id.get(twin_id).map(|&i| &self.twins[i])
    }
}

type Slot = (u64, Arc<OnceCell<Arc<Grouped>>>);

/// Groupings kept for batches subscribers are still working through.
const GROUPS_KEPT: usize = 1024;

pub struct TwinIndex {
    pool: PgPool,
    instruments: RwLock<HashMap<Binding, Option<Arc<TwinRef>>>>,
    gateways: RwLock<HashMap<String, Option<Arc<TwinRef>>>>,
    by_id: RwLock<HashMap<String, Option<Arc<TwinRef>>>>,
    groups: Mutex<VecDeque<Slot>>,
    /// Id of the last `Twin` event that emptied the cache.
    invalidated: AtomicU64,
    /// Bumped each time the cache is emptied: holders of derived state
    /// (a subtree's members) refresh it when it changes.
    generation: AtomicU64,
}

type RefRow = (String, String, Option<String>);
/// (gateway, device): what binds an instrument twin to ingest data.
type Binding = (String, String);

impl TwinIndex {
    pub fn new(pool: PgPool) -> Arc<TwinIndex> {
        Arc::new(TwinIndex {
            pool,
            instruments: RwLock::default(),
            gateways: RwLock::default(),
            by_id: RwLock::default(),
            groups: Mutex::default(),
            invalidated: AtomicU64::new(0),
            generation: AtomicU64::new(0),
        })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Empties the cache for `Twin` event `event_id` (once per event,
    /// however many subscribers report it).
    pub fn invalidate(&self, event_id: u64) {
        if self.invalidated.fetch_max(event_id, Ordering::AcqRel) >= event_id {
            return;
        }
        write(&self.instruments).clear();
        write(&self.gateways).clear();
        write(&self.by_id).clear();
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// The readings of a `Readings` event grouped by twin (None for other events).
    pub async fn grouped(&self, ev: &Event) -> Result<Option<Arc<Grouped>>, sqlx::Error> {
        let EventBody::Readings { gateway, readings } = &ev.body else {
            return Ok(None);
        };
        let cell = {
            let mut groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
            // Ids grow: the batch asked about is nearly always among the newest.
            match groups.iter().rev().find(|(id, _)| *id == ev.id) {
                Some((_, c)) => Arc::clone(c),
                None => {
                    if groups.len() == GROUPS_KEPT {
                        groups.pop_front();
                    }
                    let c = Arc::new(OnceCell::new());
                    groups.push_back((ev.id, Arc::clone(&c)));
                    c
                }
            }
        };
        let g = cell
            .get_or_try_init(|| async { self.group(gateway, readings).await.map(Arc::new) })
            .await?;
        Ok(Some(Arc::clone(g)))
    }

    async fn group(&self, gateway: &str, readings: &[LiveReading]) -> Result<Grouped, sqlx::Error> {
        let mut missing: Vec<String> = Vec::new();
        {
            let known = read(&self.instruments);
            for r in readings {
                if !known.contains_key(&(gateway.to_string(), r.device.clone()))
                    && !missing.contains(&r.device)
                {
                    missing.push(r.device.clone());
                }
            }
        }
        if !missing.is_empty() {
            let rows: Vec<(String, String, String, Option<String>)> = sqlx::query_as(
                "SELECT device_id, twin_id, kind, twin_site(twin_id) FROM twins
                 WHERE kind = 'instrument' AND deleted_at IS NULL
                   AND gateway_id = $1 AND device_id = ANY($2)",
            )
            .bind(gateway)
            .bind(&missing)
            .fetch_all(&self.pool)
            .await?;
            let mut known = write(&self.instruments);
            for d in &missing {
                known.insert((gateway.to_string(), d.clone()), None);
            }
            for (device, twin_id, kind, site) in rows {
                known.insert(
                    (gateway.to_string(), device),
                    Some(Arc::new(TwinRef {
                        twin_id,
                        kind,
                        site,
                    })),
                );
            }
        }
        let known = read(&self.instruments);
        let mut out = Grouped::default();
        let mut key = (gateway.to_string(), String::new());
        for (i, r) in readings.iter().enumerate() {
            key.1.clone_from(&r.device);
            let Some(Some(t)) = known.get(&key) else {
                continue;
            };
            let slot = *out.by_id.entry(t.twin_id.clone()).or_insert_with(|| {
                out.twins.push((Arc::clone(t), Vec::new()));
                out.twins.len() - 1
            });
            out.twins[slot].1.push(i);
        }
        Ok(out)
    }

    /// The gateway twin bound to `gateway`.
    pub async fn gateway(&self, gateway: &str) -> Result<Option<Arc<TwinRef>>, sqlx::Error> {
        if let Some(t) = read(&self.gateways).get(gateway) {
            return Ok(t.clone());
        }
        let row: Option<RefRow> = sqlx::query_as(
            "SELECT twin_id, kind, twin_site(twin_id) FROM twins
             WHERE kind = 'gateway' AND deleted_at IS NULL AND gateway_id = $1",
        )
        .bind(gateway)
        .fetch_optional(&self.pool)
        .await?;
        let t = row.map(to_ref);
        write(&self.gateways).insert(gateway.to_string(), t.clone());
        Ok(t)
    }

    /// A twin by id (deleted ones too: their deletion is news).
    pub async fn twin(&self, twin_id: &str) -> Result<Option<Arc<TwinRef>>, sqlx::Error> {
        if let Some(t) = read(&self.by_id).get(twin_id) {
            return Ok(t.clone());
        }
        let row: Option<RefRow> = sqlx::query_as(
            "SELECT twin_id, kind, twin_site(twin_id) FROM twins WHERE twin_id = $1",
        )
        .bind(twin_id)
        .fetch_optional(&self.pool)
        .await?;
        let t = row.map(to_ref);
        write(&self.by_id).insert(twin_id.to_string(), t.clone());
        Ok(t)
    }
}

#[cfg(test)]
impl TwinIndex {
    /// Binds a gateway to a twin without the database (unit tests of the
    /// streams, which need no other lookup for `Health` events).
    pub(crate) fn prime_gateway(&self, gateway: &str, twin: TwinRef) {
        write(&self.gateways).insert(gateway.to_string(), Some(Arc::new(twin)));
    }
}

fn to_ref((twin_id, kind, site): RefRow) -> Arc<TwinRef> {
    Arc::new(TwinRef {
        twin_id,
        kind,
        site,
    })
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}
