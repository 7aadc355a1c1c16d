//! Alarms on twins: rules on a twin's metric (thresholds with hysteresis
//! and minimum duration, rate of change, stale data, anomalies), evaluated
//! as data arrives, with a lifecycle (active/cleared x acknowledged or not),
//! notifications on the live stream and to webhooks.
//!
//! The evaluator is one task subscribed to the live fan-out: it sees each
//! committed batch once, finds the rules of the batch's twins in memory
//! (reloaded when a rule changes) and stores each state change, audited,
//! before announcing it. One active alarm per rule (a partial unique index);
//! after a restart, alarms that were active stay active and are not raised
//! again.
//!
//! Rooms: `rules` (what a rule says, its table), `eval` (a condition over
//! readings), `store` (the alarms table), `webhook` (signed notifications).

pub mod eval;
pub mod rules;
pub mod store;
pub mod webhook;

use crate::audit::ActorKind;
use crate::live::index::TwinIndex;
use crate::live::{Event, EventBody, Fanout};
use crate::metric_names as m;
use eval::{State, Verdict};
use rules::Rule;
use sqlx::PgPool;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Notify, broadcast};

/// How often stale-data rules are checked.
const STALE_CHECK: Duration = Duration::from_secs(1);

/// The alarms of this hub: what the API and the evaluator share.
pub struct Alarms {
    pool: PgPool,
    live: Arc<Fanout>,
    webhooks: Arc<webhook::Webhooks>,
    reload: Notify,
}

impl Alarms {
    pub fn new(
        pool: PgPool,
        live: Arc<Fanout>,
        cfg: &crate::config::live::AlarmsConfig,
    ) -> Result<Arc<Alarms>, String> {
        Ok(Arc::new(Alarms {
            pool,
            live,
            webhooks: webhook::Webhooks::start(cfg)?,
            reload: Notify::new(),
        }))
    }

    /// A rule was created, changed or deleted: the evaluator reloads.
    pub fn rules_changed(&self) {
        self.reload.notify_one();
    }

    /// Tells the live stream and the webhooks about an alarm change
    /// (`raised`, `acknowledged`, `cleared`), after it was committed.
    pub fn announce(&self, change: &'static str, alarm: &store::Alarm) {
        metrics::counter!(m::HUB_ALARMS_CHANGES_TOTAL, "change" => change).increment(1);
        tracing::info!(alarm = alarm.alarm_id, rule = alarm.rule_id, twin = %alarm.twin_id,
            severity = %alarm.severity, change, "alarm");
        let mut body = serde_json::json!(alarm);
        body["change"] = serde_json::json!(change);
        self.webhooks.notify(&body);
        self.live.publish(EventBody::Alarm(body));
    }

    /// Evaluates rules as batches arrive until `stop`.
    pub async fn run(self: Arc<Self>, index: Arc<TwinIndex>, mut stop: qi_common::shutdown::Stop) {
        let mut rx = self.live.subscribe();
        let mut ev = Evaluator {
            alarms: Arc::clone(&self),
            index,
            rules: HashMap::new(),
            by_twin: HashMap::new(),
        };
        while let Err(e) = ev.load().await {
            tracing::warn!(error = %e, "cannot load alarm rules; retrying");
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(2)) => {}
                () = stop.wait() => return,
            }
        }
        let mut tick = tokio::time::interval(STALE_CHECK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                r = rx.recv() => match r {
                    Ok(event) => ev.event(&event).await,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        metrics::counter!(m::HUB_ALARM_EVALUATION_ERRORS_TOTAL).increment(1);
                        tracing::warn!(skipped = n, "alarm evaluator fell behind the live fan-out (live.fanout_capacity); readings skipped");
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                () = self.reload.notified() => {
                    if let Err(e) = ev.load().await {
                        tracing::warn!(error = %e, "cannot reload alarm rules; keeping the old ones");
                        self.reload.notify_one();
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
                _ = tick.tick() => ev.tick().await,
                () = stop.wait() => return,
            }
        }
    }
}

struct Loaded {
    rule: Rule,
    state: State,
}

struct Evaluator {
    alarms: Arc<Alarms>,
    index: Arc<TwinIndex>,
    rules: HashMap<i64, Loaded>,
    by_twin: HashMap<String, Vec<i64>>,
}

impl Evaluator {
    async fn load(&mut self) -> Result<(), sqlx::Error> {
        let pool = &self.alarms.pool;
        let fresh = rules::enabled(pool).await?;
        let active: HashSet<i64> = store::active_rules(pool).await?.into_iter().collect();
        let mut old = std::mem::take(&mut self.rules);
        self.by_twin.clear();
        let now = Instant::now();
        for rule in fresh {
            let Ok(condition) = rules::condition(&rule.kind, &rule.params) else {
                tracing::error!(
                    rule = rule.rule_id,
                    "stored alarm rule does not parse; skipped"
                );
                continue;
            };
            let id = rule.rule_id;
            // An unchanged rule keeps what it learnt (window, durations).
            let state = match old.remove(&id) {
                Some(l) if l.rule.version == rule.version => l.state,
                _ => State::new(condition, active.contains(&id), now),
            };
            self.by_twin
                .entry(rule.twin_id.clone())
                .or_default()
                .push(id);
            self.rules.insert(id, Loaded { rule, state });
        }
        tracing::info!(rules = self.rules.len(), "alarm rules loaded");
        Ok(())
    }

    async fn event(&mut self, ev: &Event) {
        if let EventBody::Twin { .. } = ev.body {
            self.index.invalidate(ev.id);
            return;
        }
        let EventBody::Readings { readings, .. } = &ev.body else {
            return;
        };
        if self.by_twin.is_empty() {
            return;
        }
        let grouped = match self.index.grouped(ev).await {
            Ok(Some(g)) => g,
            Ok(None) => return,
            Err(e) => {
                metrics::counter!(m::HUB_ALARM_EVALUATION_ERRORS_TOTAL).increment(1);
                tracing::warn!(error = %e, "cannot resolve the twins of a batch; not evaluated");
                return;
            }
        };
        let now = Instant::now();
        for (twin, idx) in &grouped.twins {
            let Some(ids) = self.by_twin.get(&twin.twin_id).cloned() else {
                continue;
            };
            for id in ids {
                for &i in idx {
                    let r = &readings[i];
                    let Some(l) = self.rules.get_mut(&id) else {
                        continue;
                    };
                    if l.rule.metric != r.metric {
                        continue;
                    }
                    let v = l.state.reading(r.ts, r.value, now);
                    self.apply(id, v).await;
                }
            }
        }
    }

    async fn tick(&mut self) {
        let now = Instant::now();
        let due: Vec<(i64, Verdict)> = self
            .rules
            .iter()
            .map(|(id, l)| (*id, l.state.tick(now)))
            .filter(|(_, v)| *v != Verdict::Hold)
            .collect();
        for (id, v) in due {
            self.apply(id, v).await;
        }
    }

    async fn apply(&mut self, id: i64, v: Verdict) {
        let Some(l) = self.rules.get_mut(&id) else {
            return;
        };
        let pool = &self.alarms.pool;
        let stored = match v {
            Verdict::Hold => return,
            Verdict::Raise(details) => {
                let r = store::Raising {
                    rule_id: id,
                    twin_id: &l.rule.twin_id,
                    metric: &l.rule.metric,
                    severity: &l.rule.severity,
                };
                store::raise(pool, &r, details).await.map(|a| (true, a))
            }
            Verdict::Clear(details) => {
                async {
                    let mut tx = pool.begin().await?;
                    let a = store::clear(&mut tx, id, details, (ActorKind::System, "alarms"), None)
                        .await?;
                    tx.commit().await?;
                    Ok::<_, store::StoreError>((false, a))
                }
                .await
            }
        };
        match stored {
            Ok((raised, alarm)) => {
                // None: the database already agreed (raised by an earlier
                // run, or cleared by a person).
                l.state.active = raised;
                if let Some(a) = alarm {
                    self.alarms
                        .announce(if raised { "raised" } else { "cleared" }, &a);
                }
            }
            Err(e) => {
                // The state stays: the next reading evaluates again.
                metrics::counter!(m::HUB_ALARM_EVALUATION_ERRORS_TOTAL).increment(1);
                tracing::error!(rule = id, error = %e, "cannot store an alarm change");
            }
        }
    }
}
