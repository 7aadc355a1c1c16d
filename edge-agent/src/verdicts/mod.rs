//! What the hub said of this gateway's runs (`HubMessage.run_verdicts`,
//! issue #16): the verdict that stands at the hub and the newest
//! certificate covering each run, kept in the buffer's database so the
//! operators' page shows them across agent restarts and hub outages.
//! Each entry the hub sends replaces what was kept of that run; at most
//! [`MAX_KEPT`] runs are kept (the ones that ended last). docs/runs.md
//! ("What the gateway learns from the hub") is the user's account of it.

use crate::buffer::{Buffer, BufferError};
use qi_proto::limits::{MAX_RUN_VERDICTS, RUN_ID_LEN, valid_text};
use qi_proto::v1::{RunVerdict, RunVerdicts};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

/// Most runs whose hub verdict is kept (the newest by end time).
pub const MAX_KEPT: usize = 1000;

/// One run as the hub last described it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HubVerdict {
    pub run_id: String,
    pub final_verdict: String,
    pub computed: String,
    pub evaluation_id: i64,
    pub evaluated_at_unix_ms: i64,
    pub decided_by: Option<String>,
    pub certificate_id: Option<String>,
    pub certificate_state: Option<String>,
    pub verification_url: Option<String>,
    pub protocol_id: String,
    pub bench_id: String,
    pub sample_id: String,
    pub run_state: String,
    pub ended_at_unix_ms: i64,
    /// When this gateway heard it (Unix ms).
    pub received_unix_ms: i64,
}

fn date(ms: i64) -> Option<String> {
    chrono::DateTime::from_timestamp_millis(ms).map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
}

impl HubVerdict {
    /// The `hub` object of the local API's runs.
    pub fn view(&self) -> Value {
        json!({
            "final_verdict": self.final_verdict,
            "computed": self.computed,
            "evaluation_id": self.evaluation_id,
            "evaluated_at": date(self.evaluated_at_unix_ms),
            "decided_by": self.decided_by,
            "certificate_id": self.certificate_id,
            "certificate_state": self.certificate_state,
            "verification_url": self.verification_url,
            "received_at": date(self.received_unix_ms),
        })
    }

    /// A run this agent process does not hold (it ended before a restart),
    /// shaped like the engine's run view so the page shows it.
    pub fn run_view(&self) -> Value {
        json!({
            "id": self.run_id, "protocol": self.protocol_id, "protocol_version": "",
            "bench": self.bench_id, "sample_id": self.sample_id, "operator": "",
            "time_scale": 1.0, "parameters": {}, "state": self.run_state,
            "started_at": date(self.ended_at_unix_ms), "ended_at": date(self.ended_at_unix_ms),
            "step": "", "step_kind": "", "steps_done": 0, "executed_steps": 0, "elapsed_s": 0.0,
            "message": "A run of an earlier agent process: what the hub said of it.",
            "paused_by": null, "values": {}, "events": [], "latest_iv": null,
            "verdicts": [], "known_from": "hub", "hub": self.view(),
        })
    }
}

fn one_of(s: &str, allowed: &[&str]) -> bool {
    allowed.contains(&s)
}

fn valid_run_id(s: &str) -> bool {
    s.len() == RUN_ID_LEN && s.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}

fn opt(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// One entry checked; the error says what is wrong with it.
fn check(v: RunVerdict, now: i64) -> Result<HubVerdict, String> {
    let id = &v.run_id;
    if !valid_run_id(id) {
        return Err(format!("run id {id:?} is not a UUID"));
    }
    if !one_of(
        &v.final_verdict,
        &["pass", "fail", "provisional", "no_verdict"],
    ) || !one_of(&v.computed, &["pass", "fail", "no_verdict"])
    {
        return Err(format!(
            "run {id}: verdict {:?} / computed {:?} unknown",
            v.final_verdict, v.computed
        ));
    }
    if !one_of(&v.run_state, &["completed", "aborted", "failed"]) {
        return Err(format!("run {id}: state {:?} is not an end", v.run_state));
    }
    let texts = [
        &v.decided_by,
        &v.certificate_id,
        &v.verification_url,
        &v.protocol_id,
        &v.bench_id,
        &v.sample_id,
    ];
    if texts.iter().any(|t| !valid_text(t)) {
        return Err(format!(
            "run {id}: a text is too long or has control characters"
        ));
    }
    let certified = !v.certificate_id.is_empty();
    let state_ok = if certified {
        one_of(&v.certificate_state, &["valid", "revoked", "superseded"])
    } else {
        v.certificate_state.is_empty() && v.verification_url.is_empty()
    };
    // Shown as a link: only a web address, never a script.
    let url_ok = v.verification_url.is_empty()
        || v.verification_url.starts_with("https://")
        || v.verification_url.starts_with("http://");
    if !state_ok || !url_ok {
        return Err(format!(
            "run {id}: certificate {:?} state {:?} or its link not valid",
            v.certificate_id, v.certificate_state
        ));
    }
    Ok(HubVerdict {
        run_id: v.run_id,
        final_verdict: v.final_verdict,
        computed: v.computed,
        evaluation_id: v.evaluation_id,
        evaluated_at_unix_ms: v.evaluated_at_unix_ms,
        decided_by: opt(v.decided_by),
        certificate_id: opt(v.certificate_id),
        certificate_state: opt(v.certificate_state),
        verification_url: opt(v.verification_url),
        protocol_id: v.protocol_id,
        bench_id: v.bench_id,
        sample_id: v.sample_id,
        run_state: v.run_state,
        ended_at_unix_ms: v.ended_at_unix_ms,
        received_unix_ms: now,
    })
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("run verdicts from the hub refused: {0}")]
    Invalid(String),
    #[error(transparent)]
    Buffer(#[from] BufferError),
}

pub struct HubVerdicts {
    buffer: Arc<Buffer>,
    known: RwLock<BTreeMap<String, HubVerdict>>,
}

impl HubVerdicts {
    /// What the buffer kept; an entry that does not decode is logged and
    /// left out (the hub sends it again on the next connect).
    pub fn load(buffer: Arc<Buffer>) -> Result<Arc<HubVerdicts>, BufferError> {
        let mut known = BTreeMap::new();
        for (k, v) in buffer.hub_verdicts()? {
            match serde_json::from_slice::<HubVerdict>(&v) {
                Ok(h) => {
                    known.insert(k, h);
                }
                Err(e) => tracing::warn!(run = %k, error = %e,
                    "kept hub verdict does not decode; left out until the hub sends it again"),
            }
        }
        tracing::info!(runs = known.len(), "hub verdicts loaded");
        metrics::gauge!(crate::metric_names::EDGE_HUB_VERDICTS_KNOWN).set(known.len() as f64);
        Ok(Arc::new(HubVerdicts {
            buffer,
            known: RwLock::new(known),
        }))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, HubVerdict>> {
        self.known.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes the hub's list: checked whole (a bad entry refuses all of it
    /// and what was kept stays), merged, bounded, made durable, then used.
    /// Returns how many runs are known.
    pub async fn apply(&self, msg: RunVerdicts) -> Result<usize, ApplyError> {
        if msg.runs.len() > MAX_RUN_VERDICTS {
            return Err(ApplyError::Invalid(format!(
                "{} runs, more than {MAX_RUN_VERDICTS}",
                msg.runs.len()
            )));
        }
        let now = chrono::Utc::now().timestamp_millis();
        let fresh = msg
            .runs
            .into_iter()
            .map(|v| check(v, now))
            .collect::<Result<Vec<_>, _>>()
            .map_err(ApplyError::Invalid)?;
        let mut next = self.read().clone();
        let mut put = Vec::new();
        for h in fresh {
            if next.get(&h.run_id).is_some_and(|k| same(k, &h)) {
                continue;
            }
            put.push((h.run_id.clone(), serde_json::to_vec(&h).unwrap_or_default()));
            next.insert(h.run_id.clone(), h);
        }
        let remove = oldest_beyond(&next, MAX_KEPT);
        for k in &remove {
            next.remove(k);
        }
        put.retain(|(k, _)| next.contains_key(k));
        if !put.is_empty() || !remove.is_empty() {
            self.buffer.update_hub_verdicts(&put, &remove).await?;
        }
        let n = next.len();
        metrics::gauge!(crate::metric_names::EDGE_HUB_VERDICTS_KNOWN).set(n as f64);
        *self.known.write().unwrap_or_else(|p| p.into_inner()) = next;
        Ok(n)
    }

    pub fn of(&self, run_id: &str) -> Option<HubVerdict> {
        self.read().get(run_id).cloned()
    }

    /// Every kept run, the one that ended last first.
    pub fn all(&self) -> Vec<HubVerdict> {
        let mut v: Vec<HubVerdict> = self.read().values().cloned().collect();
        v.sort_by_key(|h| std::cmp::Reverse(h.ended_at_unix_ms));
        v
    }
}

/// The same word from the hub (when it was heard aside).
fn same(a: &HubVerdict, b: &HubVerdict) -> bool {
    HubVerdict {
        received_unix_ms: 0,
        ..a.clone()
    } == HubVerdict {
        received_unix_ms: 0,
        ..b.clone()
    }
}

/// The runs beyond the `max` that ended last.
fn oldest_beyond(known: &BTreeMap<String, HubVerdict>, max: usize) -> Vec<String> {
    if known.len() <= max {
        return Vec::new();
    }
    let mut by_end: Vec<(&i64, &String)> = known
        .values()
        .map(|h| (&h.ended_at_unix_ms, &h.run_id))
        .collect();
    by_end.sort();
    by_end
        .into_iter()
        .take(known.len() - max)
        .map(|(_, k)| k.clone())
        .collect()
}

#[cfg(test)]
mod tests;
