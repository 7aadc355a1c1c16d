//! The numeric side of the analytics API, on plain slices: downsampling,
//! window statistics, trends, anomalies and gap filling.

/// Largest-Triangle-Three-Buckets: `threshold` points that keep the shape of
/// `points` (sorted by time) for a chart. Fewer points than that come back as is.
pub fn lttb(points: &[(f64, f64)], threshold: usize) -> Vec<(f64, f64)> {
    let n = points.len();
    if threshold >= n || threshold < 3 {
        return points.to_vec();
    }
    let mut out = Vec::with_capacity(threshold);
    out.push(points[0]);
    let every = (n - 2) as f64 / (threshold - 2) as f64;
    let mut a = 0usize;
    for i in 0..threshold - 2 {
        // Average of the next bucket: the third triangle corner.
        let next_start = ((i + 1) as f64 * every) as usize + 1;
        let next_end = (((i + 2) as f64 * every) as usize + 1).min(n);
        let span = &points[next_start..next_end.max(next_start + 1).min(n)];
        let (avg_x, avg_y) = span.iter().fold((0.0, 0.0), |(x, y), p| (x + p.0, y + p.1));
        let (avg_x, avg_y) = (avg_x / span.len() as f64, avg_y / span.len() as f64);
        let start = (i as f64 * every) as usize + 1;
        let end = (((i + 1) as f64 * every) as usize + 1).min(n - 1);
        let (ax, ay) = points[a];
        let mut best = start;
        let mut best_area = -1.0;
        for (j, p) in points
            .iter()
            .enumerate()
            .take(end.max(start + 1))
            .skip(start)
        {
            let area = ((ax - avg_x) * (p.1 - ay) - (ax - p.0) * (avg_y - ay)).abs();
            if area > best_area {
                best_area = area;
                best = j;
            }
        }
        out.push(points[best]);
        a = best;
    }
    out.push(points[n - 1]);
    out
}

/// Percentile by linear interpolation between closest ranks (like
/// PostgreSQL's `percentile_cont`), `p` in 0..=1, over sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = p * (sorted.len() - 1) as f64;
    let lo = rank.floor() as usize;
    let hi = rank.ceil() as usize;
    Some(sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo as f64))
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Stats {
    pub count: usize,
    pub mean: f64,
    pub stddev: f64,
    pub min: f64,
    pub max: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
}

pub fn stats(values: &[f64]) -> Option<Stats> {
    let n = values.len();
    if n == 0 {
        return None;
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    let var = if n > 1 {
        values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64
    } else {
        0.0
    };
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    Some(Stats {
        count: n,
        mean,
        stddev: var.sqrt(),
        min: sorted[0],
        max: sorted[n - 1],
        p50: percentile(&sorted, 0.5)?,
        p90: percentile(&sorted, 0.9)?,
        p99: percentile(&sorted, 0.99)?,
    })
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Trend {
    pub slope_per_hour: f64,
    pub slope_per_day: f64,
    pub intercept: f64,
    pub r_squared: f64,
}

/// Least-squares line through (seconds, value) points.
pub fn trend(points: &[(f64, f64)]) -> Option<Trend> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let syy: f64 = points.iter().map(|p| (p.1 - my).powi(2)).sum();
    if sxx == 0.0 {
        return None;
    }
    let slope = sxy / sxx;
    let r_squared = if syy == 0.0 {
        1.0
    } else {
        (sxy * sxy) / (sxx * syy)
    };
    Some(Trend {
        slope_per_hour: slope * 3600.0,
        slope_per_day: slope * 86_400.0,
        intercept: my - slope * mx,
        r_squared,
    })
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Anomaly {
    pub index: usize,
    pub value: f64,
    /// How far from expected, in standard deviations.
    pub score: f64,
    pub expected: f64,
}

/// Rolling z-score: a point is anomalous when it lies more than `threshold`
/// standard deviations from the mean of the `window` points before it.
pub fn rolling_zscore(values: &[f64], window: usize, threshold: f64) -> Vec<Anomaly> {
    let mut out = Vec::new();
    if window < 2 {
        return out;
    }
    for i in window..values.len() {
        let w = &values[i - window..i];
        let mean = w.iter().sum::<f64>() / window as f64;
        let sd = (w.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (window - 1) as f64).sqrt();
        if sd > 0.0 {
            let z = (values[i] - mean) / sd;
            if z.abs() > threshold {
                out.push(Anomaly {
                    index: i,
                    value: values[i],
                    score: z,
                    expected: mean,
                });
            }
        }
    }
    out
}

/// EWMA control chart: exponentially weighted mean and variance with
/// smoothing `alpha`; a point more than `threshold` EW standard deviations
/// from the EW mean so far is anomalous (and does not update the baseline).
pub fn ewma(values: &[f64], alpha: f64, threshold: f64, warmup: usize) -> Vec<Anomaly> {
    let mut out = Vec::new();
    let Some(&first) = values.first() else {
        return out;
    };
    let (mut mean, mut var) = (first, 0.0f64);
    for (i, &v) in values.iter().enumerate().skip(1) {
        let sd = var.sqrt();
        if i >= warmup && sd > 0.0 && ((v - mean) / sd).abs() > threshold {
            out.push(Anomaly {
                index: i,
                value: v,
                score: (v - mean) / sd,
                expected: mean,
            });
            continue;
        }
        let diff = v - mean;
        mean += alpha * diff;
        var = (1.0 - alpha) * (var + alpha * diff * diff);
    }
    out
}

/// How to fill buckets with no data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fill {
    Null,
    Previous,
    Linear,
}

/// Fills `None`s in a bucket series: leaves them, repeats the previous value,
/// or interpolates linearly between the neighbours (edges stay empty).
pub fn fill(values: &mut [Option<f64>], how: Fill) {
    match how {
        Fill::Null => {}
        Fill::Previous => {
            let mut prev = None;
            for v in values.iter_mut() {
                match v {
                    Some(x) => prev = Some(*x),
                    None => *v = prev,
                }
            }
        }
        Fill::Linear => {
            let known: Vec<usize> = (0..values.len()).filter(|i| values[*i].is_some()).collect();
            for w in known.windows(2) {
                let (a, b) = (w[0], w[1]);
                let (va, vb) = (values[a].unwrap_or(0.0), values[b].unwrap_or(0.0));
                for (k, slot) in values.iter_mut().enumerate().take(b).skip(a + 1) {
                    *slot = Some(va + (vb - va) * (k - a) as f64 / (b - a) as f64);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lttb_keeps_ends_count_and_peaks() {
        let pts: Vec<(f64, f64)> = (0..1000)
            .map(|i| (i as f64, if i == 500 { 100.0 } else { (i % 7) as f64 }))
            .collect();
        let d = lttb(&pts, 50);
        assert_eq!(d.len(), 50);
        assert_eq!(d[0], pts[0]);
        assert_eq!(d[49], pts[999]);
        assert!(d.iter().any(|p| p.1 == 100.0), "the spike survives");
        assert!(d.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(lttb(&pts[..10], 50).len(), 10);
    }

    #[test]
    fn stats_trend_and_percentiles() {
        let s = stats(&[1.0, 2.0, 3.0, 4.0, 5.0]).unwrap();
        assert_eq!(
            (s.count, s.mean, s.min, s.max, s.p50),
            (5, 3.0, 1.0, 5.0, 3.0)
        );
        assert!((s.stddev - 2.5f64.sqrt()).abs() < 1e-12);
        assert!((s.p90 - 4.6).abs() < 1e-12);
        // 2 units per hour, exactly linear.
        let pts: Vec<(f64, f64)> = (0..10)
            .map(|i| (i as f64 * 3600.0, 5.0 + 2.0 * i as f64))
            .collect();
        let t = trend(&pts).unwrap();
        assert!((t.slope_per_hour - 2.0).abs() < 1e-9);
        assert!((t.slope_per_day - 48.0).abs() < 1e-9);
        assert!((t.r_squared - 1.0).abs() < 1e-12);
        assert!(trend(&pts[..1]).is_none());
    }

    #[test]
    fn anomalies_find_the_spike_and_only_it() {
        let mut v: Vec<f64> = (0..200)
            .map(|i| 20.0 + ((i * 37) % 11) as f64 * 0.1)
            .collect();
        v[150] = 35.0;
        let z = rolling_zscore(&v, 30, 4.0);
        assert_eq!(z.iter().map(|a| a.index).collect::<Vec<_>>(), vec![150]);
        let e = ewma(&v, 0.1, 5.0, 30);
        assert_eq!(e.iter().map(|a| a.index).collect::<Vec<_>>(), vec![150]);
    }

    #[test]
    fn gap_fill_modes() {
        let base = vec![Some(1.0), None, None, Some(4.0), None];
        let mut p = base.clone();
        fill(&mut p, Fill::Previous);
        assert_eq!(
            p,
            vec![Some(1.0), Some(1.0), Some(1.0), Some(4.0), Some(4.0)]
        );
        let mut l = base.clone();
        fill(&mut l, Fill::Linear);
        assert_eq!(l, vec![Some(1.0), Some(2.0), Some(3.0), Some(4.0), None]);
        let mut n = base.clone();
        fill(&mut n, Fill::Null);
        assert_eq!(n, base);
    }
}
