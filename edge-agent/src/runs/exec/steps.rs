//! What each kind of step does in one tick (`act`), and the IV sweep.

use super::{End, Exec, Progress, RAMP_EVERY_S, RAMP_MIN_WALL, now_us};
use crate::fleet::FleetView;
use crate::runs::timing::{self, Wait};
use crate::runs::{iv, m, plan};
use crate::sources::command::WriteError;
use qi_protocol::Step;
use std::sync::Arc;
use std::time::Duration;

impl Exec {
    pub(super) async fn act(
        &mut self,
        step: &Step,
        dt: f64,
        fleet: &FleetView,
    ) -> Result<Progress, End> {
        let p = Arc::clone(&self.protocol);
        let params = self.cp.parameters.clone();
        let missing = |what: &str| End::Failed(format!("{what} has no value"));
        match step {
            Step::Setpoint {
                point,
                value,
                ramp_per_h,
                ..
            } => {
                let to = plan::value(value, &params).ok_or_else(|| missing("setpoint value"))?;
                let Some(rate) = ramp_per_h.as_ref().and_then(|r| plan::value(r, &params)) else {
                    return self.write(fleet, point, to).await;
                };
                let from = match self.cp.step.ramp_from {
                    Some(f) => f,
                    None => {
                        let start = self
                            .cp
                            .last_setpoints
                            .get(point)
                            .copied()
                            .or_else(|| self.read(fleet, point));
                        let Some(start) = start else {
                            // Nothing to ramp from: a step change.
                            return self.write(fleet, point, to).await;
                        };
                        self.cp.step.ramp_from = Some(start);
                        start
                    }
                };
                let v = timing::ramp_value(from, to, rate, self.cp.step.elapsed_s);
                let every = RAMP_EVERY_S.max(RAMP_MIN_WALL.as_secs_f64() * self.cp.time_scale);
                if !timing::ramp_due(&self.cp.step, v, to, every) {
                    return Ok(Progress::Continue);
                }
                match self.write(fleet, point, v).await? {
                    Progress::Done => {
                        self.cp.step.last_write_s = Some(self.cp.step.elapsed_s);
                        Ok(if v == to {
                            Progress::Done
                        } else {
                            Progress::Continue
                        })
                    }
                    other => Ok(other),
                }
            }
            Step::WaitUntil {
                condition,
                hold,
                timeout,
                ..
            } => {
                let hold_s = plan::seconds(&p, hold, &params).ok_or_else(|| missing("hold"))?;
                let timeout_s =
                    plan::seconds(&p, timeout, &params).ok_or_else(|| missing("timeout"))?;
                let e = qi_protocol::expr::parse(condition)
                    .map_err(|e| End::Failed(format!("condition: {e}")))?;
                let mut values = params.clone();
                for n in e.names() {
                    if n.contains('.')
                        && let Some(v) = self.read(fleet, n)
                    {
                        values.insert(n.to_string(), v);
                    }
                }
                let holds = matches!(
                    qi_protocol::expr::evaluate(&e, &values),
                    Ok(qi_protocol::expr::Value::Bool(true))
                );
                match timing::wait_tick(&mut self.cp.step, dt, holds, hold_s, timeout_s) {
                    Wait::Continue => Ok(Progress::Continue),
                    Wait::Done => Ok(Progress::Done),
                    Wait::TimedOut => Err(End::Failed(format!(
                        "`{condition}` did not hold for {hold} within {timeout}"
                    ))),
                }
            }
            Step::Dwell { duration, .. } => {
                let d = plan::seconds(&p, duration, &params).ok_or_else(|| missing("duration"))?;
                Ok(if self.cp.step.elapsed_s >= d {
                    Progress::Done
                } else {
                    Progress::Continue
                })
            }
            Step::Repeat { .. } => Ok(Progress::Done),
            Step::Measure { label, points, .. } => {
                let ts = now_us();
                let mut out = Vec::new();
                for mp in points {
                    let bp = &self.cp.bench.points[&mp.point];
                    let Some(v) = self.read(fleet, &mp.point) else {
                        if self.offline_device(fleet).is_some() {
                            return Ok(Progress::Offline(bp.device.clone()));
                        }
                        return Err(End::Failed(format!(
                            "measure {label}: no current value of {} ({}.{})",
                            mp.point,
                            bp.device,
                            bp.read.as_deref().unwrap_or("")
                        )));
                    };
                    let metric = bp.read.clone().unwrap_or_default();
                    out.push(self.reading(
                        &bp.device,
                        &metric,
                        &mp.unit,
                        v,
                        format!("{label}.{}", mp.name),
                        ts,
                    ));
                }
                for r in &out {
                    self.cp.values.insert(r.run_series.clone(), r.value);
                }
                self.commit(Vec::new(), out, true).await?;
                Ok(Progress::Done)
            }
            Step::IvSweep {
                label,
                instrument,
                start_v,
                stop_v,
                points,
                ..
            } => {
                let a = plan::value(start_v, &params).ok_or_else(|| missing("start_v"))?;
                let b = plan::value(stop_v, &params).ok_or_else(|| missing("stop_v"))?;
                self.sweep(fleet, label, instrument, a, b, *points).await
            }
            Step::ApplyBias {
                point,
                voltage,
                duration,
                ..
            } => {
                let v = plan::value(voltage, &params).ok_or_else(|| missing("voltage"))?;
                let d = plan::seconds(&p, duration, &params).ok_or_else(|| missing("duration"))?;
                if !self.cp.step.bias_on {
                    match self.write(fleet, point, v).await? {
                        Progress::Done => {
                            self.cp.step.bias_on = true;
                            // A restart must know the bias is on.
                            self.save().await;
                        }
                        other => return Ok(other),
                    }
                }
                if self.cp.step.elapsed_s < d {
                    return Ok(Progress::Continue);
                }
                self.write(fleet, point, 0.0).await
            }
        }
    }

    async fn sweep(
        &mut self,
        fleet: &FleetView,
        label: &str,
        instrument: &str,
        start: f64,
        stop: f64,
        points: u32,
    ) -> Result<Progress, End> {
        let Some(device) = self.cp.bench.instruments.get(instrument).cloned() else {
            return Err(End::Failed(format!("bench has no instrument {instrument}")));
        };
        let sweep = fleet
            .models
            .iter()
            .find(|(d, _)| *d == device)
            .and_then(|(_, p)| p.iv_sweep.clone());
        let (Some(sweep), Some(handle)) = (sweep, fleet.handles.get(&device)) else {
            return Err(End::Failed(format!(
                "device {device} cannot sweep (its profile has no [iv_sweep], or it is not polled)"
            )));
        };
        let (commands, query) = sweep.render(start, stop, points);
        let timeout = Duration::from_millis(sweep.timeout_ms);
        let reply = match handle.transaction(commands, query, timeout).await {
            Ok(r) => r,
            Err(
                WriteError::Unreachable(_) | WriteError::Timeout(_) | WriteError::NotRunning(_),
            ) => {
                m::sweep("failed");
                return Ok(Progress::Offline(device));
            }
            Err(e) => {
                m::sweep("failed");
                return Err(End::Failed(format!("IV sweep {label} on {device}: {e}")));
            }
        };
        let curve = match iv::parse_reply(&reply, points as usize) {
            Ok(c) => iv::orient(c),
            Err(e) => {
                m::sweep("unparsable");
                return Err(End::Failed(format!("IV sweep {label} on {device}: {e}")));
            }
        };
        let Some(fig) = iv::figures(&curve) else {
            m::sweep("unparsable");
            return Err(End::Failed(format!(
                "IV sweep {label} on {device}: the curve does not cross V = 0 and I = 0 (sweep {start}..{stop} V)"
            )));
        };
        m::sweep("ok");
        let ts = now_us();
        let units: std::collections::BTreeMap<&str, &str> =
            qi_protocol::IV_METRICS.into_iter().collect();
        let mut out = Vec::with_capacity(6 + 2 * curve.len());
        for (name, v) in fig.named() {
            let series = format!("{label}.{name}");
            self.cp.values.insert(series.clone(), v);
            out.push(self.reading(
                &device,
                name,
                units.get(name).copied().unwrap_or(""),
                v,
                series,
                ts,
            ));
        }
        let series = format!("{label}.curve");
        for (v, i) in &curve {
            out.push(self.reading(&device, "voltage", "V", *v, series.clone(), ts));
            out.push(self.reading(&device, "current", "A", *i, series.clone(), ts));
        }
        tracing::info!(run = %self.cp.run_id, %label, pmax = fig.pmax, voc = fig.voc, isc = fig.isc, "IV sweep");
        self.view
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .latest_iv = Some(crate::runs::view::CurveView::of(label, &curve));
        self.commit(Vec::new(), out, true).await?;
        Ok(Progress::Done)
    }
}
