//! Line charts drawn as vector paths: axes with "nice" ticks and labels
//! with units, one path per series, an optional marked point (Pmax).
//! Long series are downsampled to the plot's width first: per pixel
//! column the first, lowest, highest and last point, in x order, so peaks
//! and dips survive and a path never has more than 4 points per column.

use super::layout::{Doc, MARGIN, WIDTH};
use super::pdf::{BLACK, Font, GREY, LIGHT, Rgb};

pub const BLUE: Rgb = Rgb(0.05, 0.25, 0.8);
pub const ORANGE: Rgb = Rgb(0.9, 0.45, 0.0);

/// One line of a chart.
#[derive(Debug, Clone)]
pub struct Line {
    pub name: String,
    pub color: Rgb,
    /// In x order.
    pub points: Vec<(f64, f64)>,
}

#[derive(Debug, Clone)]
pub struct Chart {
    pub title: String,
    /// With the unit, e.g. `voltage [V]`.
    pub x_label: String,
    pub y_label: String,
    pub lines: Vec<Line>,
    /// A point to mark, with its label.
    pub mark: Option<(f64, f64, String)>,
    /// A note under the chart (how it was downsampled, what is missing).
    pub note: Option<String>,
}

/// At most 4 points per column of `columns` over the x range, keeping
/// each column's first, minimum, maximum and last in x order. Points
/// must be in x order; non-finite ones are left out.
pub fn downsample(points: &[(f64, f64)], columns: usize) -> Vec<(f64, f64)> {
    let pts: Vec<(f64, f64)> = points
        .iter()
        .copied()
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect();
    if pts.len() <= 4 * columns.max(1) {
        return pts;
    }
    let (x0, x1) = (pts[0].0, pts[pts.len() - 1].0);
    let span = (x1 - x0).max(f64::MIN_POSITIVE);
    let col = |x: f64| (((x - x0) / span * columns as f64) as usize).min(columns - 1);
    let mut out = Vec::with_capacity(4 * columns);
    let mut i = 0;
    while i < pts.len() {
        let c = col(pts[i].0);
        let mut j = i;
        let (mut lo, mut hi) = (i, i);
        while j < pts.len() && col(pts[j].0) == c {
            if pts[j].1 < pts[lo].1 {
                lo = j;
            }
            if pts[j].1 > pts[hi].1 {
                hi = j;
            }
            j += 1;
        }
        let mut keep = [i, lo, hi, j - 1];
        keep.sort_unstable();
        let mut last = usize::MAX;
        for k in keep {
            if k != last {
                out.push(pts[k]);
                last = k;
            }
        }
        i = j;
    }
    out
}

/// Ticks at 1, 2 or 5 times a power of ten, about `n` of them.
pub fn ticks(lo: f64, hi: f64, n: usize) -> (f64, f64, Vec<f64>) {
    let (lo, hi) = if (hi - lo).abs() < 1e-12 {
        (lo - 1.0, hi + 1.0)
    } else {
        (lo.min(hi), lo.max(hi))
    };
    let raw = (hi - lo) / n.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let start = (lo / step).floor() * step;
    let end = (hi / step).ceil() * step;
    let mut t = Vec::new();
    let mut v = start;
    while v <= end + step * 1e-9 && t.len() < 50 {
        t.push(if v.abs() < step * 1e-9 { 0.0 } else { v });
        v += step;
    }
    (start, end, t)
}

/// A tick label with no more digits than the step needs.
fn label(v: f64, step: f64) -> String {
    let decimals = if step >= 1.0 {
        0
    } else {
        (-step.log10().floor()) as usize
    };
    format!("{v:.decimals$}")
}

/// The plot area's width in points: also the downsampling's columns.
pub const PLOT_W: f32 = WIDTH - 60.0;
const PLOT_H: f32 = 170.0;

impl Chart {
    /// Draws the chart at the cursor (title, plot, legend, note).
    pub fn draw(&self, doc: &mut Doc) {
        let h = PLOT_H + 70.0 + if self.note.is_some() { 12.0 } else { 0.0 };
        let Some(top) = doc.take(h) else { return };
        let all: Vec<(f64, f64)> = self
            .lines
            .iter()
            .flat_map(|l| l.points.iter().copied())
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .collect();
        let p = doc.page();
        p.text(MARGIN, top - 11.0, Font::Bold, 10.0, &self.title);
        let (px, py) = (MARGIN + 50.0, top - 22.0 - PLOT_H);
        p.stroke_rect(px, py, PLOT_W, PLOT_H, 0.6, BLACK);
        if all.is_empty() {
            p.text_center(
                px + PLOT_W / 2.0,
                py + PLOT_H / 2.0,
                Font::Regular,
                9.0,
                "no readings",
            );
            return;
        }
        let fold = |f: fn(f64, f64) -> f64, init: f64, sel: fn(&(f64, f64)) -> f64| {
            all.iter().map(sel).fold(init, f)
        };
        let (x0, x1, xt) = ticks(
            fold(f64::min, f64::INFINITY, |p| p.0),
            fold(f64::max, f64::NEG_INFINITY, |p| p.0),
            8,
        );
        let (y0, y1, yt) = ticks(
            fold(f64::min, f64::INFINITY, |p| p.1),
            fold(f64::max, f64::NEG_INFINITY, |p| p.1),
            6,
        );
        let sx = |x: f64| px + ((x - x0) / (x1 - x0)) as f32 * PLOT_W;
        let sy = |y: f64| py + ((y - y0) / (y1 - y0)) as f32 * PLOT_H;
        let xstep = xt.get(1).zip(xt.first()).map_or(1.0, |(b, a)| b - a);
        let ystep = yt.get(1).zip(yt.first()).map_or(1.0, |(b, a)| b - a);
        for t in &xt {
            let x = sx(*t);
            p.line(x, py, x, py + PLOT_H, 0.3, LIGHT);
            p.line(x, py - 3.0, x, py, 0.6, BLACK);
            p.text_center(x, py - 12.0, Font::Regular, 7.5, &label(*t, xstep));
        }
        for t in &yt {
            let y = sy(*t);
            p.line(px, y, px + PLOT_W, y, 0.3, LIGHT);
            p.line(px - 3.0, y, px, y, 0.6, BLACK);
            p.text_right(px - 5.0, y - 2.5, Font::Regular, 7.5, &label(*t, ystep));
        }
        p.text_center(
            px + PLOT_W / 2.0,
            py - 24.0,
            Font::Regular,
            8.5,
            &self.x_label,
        );
        p.text_vertical(
            MARGIN + 8.0,
            py + PLOT_H / 2.0,
            Font::Regular,
            8.5,
            &self.y_label,
        );
        let clip = (px, py, PLOT_W, PLOT_H);
        for l in &self.lines {
            let pts: Vec<(f32, f32)> = downsample(&l.points, PLOT_W as usize)
                .into_iter()
                .map(|(x, y)| (sx(x), sy(y)))
                .collect();
            p.polyline(&pts, 1.2, l.color, clip);
        }
        if let Some((mx, my, text)) = &self.mark {
            let (x, y) = (sx(*mx), sy(*my));
            p.fill_rect(x - 3.0, y - 3.0, 6.0, 6.0, super::layout::RED);
            let w = super::pdf::text::width(Font::Bold, 8.0, text);
            let tx = if x + 6.0 + w > px + PLOT_W {
                x - 6.0 - w
            } else {
                x + 6.0
            };
            p.text_colored(tx, y + 5.0, Font::Bold, 8.0, super::layout::RED, text);
        }
        // The legend, under the axis label.
        let mut lx = px;
        for l in &self.lines {
            p.line(lx, py - 36.0, lx + 14.0, py - 36.0, 2.0, l.color);
            p.text(lx + 18.0, py - 39.0, Font::Regular, 8.0, &l.name);
            lx += 30.0 + super::pdf::text::width(Font::Regular, 8.0, &l.name);
        }
        if let Some(note) = &self.note {
            p.text_colored(MARGIN, py - 52.0, Font::Regular, 7.5, GREY, note);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downsampling_keeps_the_peaks_and_bounds_the_points() {
        let mut pts: Vec<(f64, f64)> = (0..86_400)
            .map(|i| (i as f64, (i as f64 / 3600.0).sin() * 10.0 + 25.0))
            .collect();
        pts[40_000].1 = 99.0;
        pts[60_001].1 = -40.0;
        let d = downsample(&pts, 485);
        assert!(d.len() <= 4 * 485, "{}", d.len());
        assert!(d.contains(&(40_000.0, 99.0)));
        assert!(d.contains(&(60_001.0, -40.0)));
        assert_eq!(d.first(), pts.first());
        assert_eq!(d.last(), pts.last());
        assert!(d.windows(2).all(|w| w[0].0 < w[1].0), "x order kept");
        // Short series are left alone, non-finite points dropped.
        assert_eq!(
            downsample(&[(0.0, 1.0), (1.0, f64::NAN)], 10),
            vec![(0.0, 1.0)]
        );
    }

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        let (lo, hi, t) = ticks(-0.4, 49.6, 8);
        assert_eq!((lo, hi), (-10.0, 50.0));
        assert_eq!(t.first(), Some(&-10.0));
        assert_eq!(t.last(), Some(&50.0));
        let (_, _, t) = ticks(25.0, 25.0, 6);
        assert!(t.len() >= 2);
        assert_eq!(label(0.25, 0.05), "0.25");
        assert_eq!(label(85.0, 5.0), "85");
    }
}
