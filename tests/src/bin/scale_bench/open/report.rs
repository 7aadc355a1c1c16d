//! The open loop's tables, markdown ready to paste into BENCHMARKS.md.

use super::engine::{crossing, quantile};
use super::{Args, GOAL_P99_MS, Step};
use crate::cores;
use crate::load::machine;

/// A latency cell: "timeout" when the quantile falls among the timeouts,
/// "-" without any answer.
fn ms(v: f64) -> String {
    if v.is_nan() {
        "-".into()
    } else if v.is_infinite() {
        "timeout".into()
    } else {
        format!("{v:.1}")
    }
}

fn get(cores: &[(String, f64)], name: &str) -> f64 {
    cores
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, c)| *c)
        .sum()
}

pub fn print(steps: &[Step], routes: &[&str], args: &Args, broken: u64) {
    println!(
        "\n### REST open loop: fixed arrival rates (constant spacing), {} s per rate, latency from each request's scheduled send, up to {} connections, {} s timeout, API key, routes in turn: {}\n",
        args.seconds,
        args.max_connections,
        args.timeout_s,
        routes.join(", ")
    );
    println!(
        "| phase | offered req/s | achieved req/s | p50 ms | p95 ms | p99 ms | p99.9 ms | max ms | p99 from send ms | late starts | max start delay ms | peak connections | errors | timeouts | ingest rows/s | hub CPU | PostgreSQL CPU | bench client CPU | machine busy |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for s in steps {
        let o = &s.outcome;
        let mut all = o.latencies();
        let mut send = o.service_ms.clone();
        println!(
            "| {} | {:.0} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {:.1} | {} | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} of {} |",
            s.phase,
            s.rate,
            o.achieved_per_s,
            ms(quantile(&mut all, 0.5)),
            ms(quantile(&mut all, 0.95)),
            ms(quantile(&mut all, 0.99)),
            ms(quantile(&mut all, 0.999)),
            ms(quantile(&mut all, 1.0)),
            ms(quantile(&mut send, 0.99)),
            o.late_starts,
            o.max_start_delay_ms,
            o.peak_in_flight,
            o.errors,
            o.timeouts,
            s.ingest_rows_per_s,
            get(&s.cores, "hub"),
            get(&s.cores, "PostgreSQL"),
            get(&s.cores, "bench client"),
            machine(&s.cores),
            cores(),
        );
    }

    let mut phases: Vec<&str> = Vec::new();
    for s in steps {
        if !phases.contains(&s.phase.as_str()) {
            phases.push(&s.phase);
        }
    }
    println!("\nPer route, p99 ms from the scheduled send, by offered rate:\n");
    for phase in &phases {
        let of: Vec<&Step> = steps.iter().filter(|s| s.phase == *phase).collect();
        println!(
            "| {phase} | {} |",
            of.iter()
                .map(|s| format!("{:.0} req/s", s.rate))
                .collect::<Vec<_>>()
                .join(" | ")
        );
        println!("|---|{}", "---|".repeat(of.len()));
        for (k, route) in routes.iter().enumerate() {
            let cells: Vec<String> = of
                .iter()
                .map(|s| {
                    let mut l = s.outcome.by_route[k].clone();
                    ms(quantile(&mut l, 0.99))
                })
                .collect();
            println!("| {route} | {} |", cells.join(" | "));
        }
        println!();
    }

    for phase in &phases {
        let points: Vec<(f64, f64)> = steps
            .iter()
            .filter(|s| s.phase == *phase)
            .map(|s| {
                let mut all = s.outcome.latencies();
                // Errors count against the goal: a rate that fails is not met.
                let failed = s.outcome.errors > 0 || s.outcome.timeouts > 0;
                let p99 = quantile(&mut all, 0.99);
                (
                    s.rate,
                    if failed && p99 <= GOAL_P99_MS {
                        f64::INFINITY
                    } else {
                        p99
                    },
                )
            })
            .collect();
        let met = points
            .iter()
            .filter(|(_, p)| *p <= GOAL_P99_MS)
            .map(|(r, _)| *r)
            .fold(f64::NAN, f64::max);
        match crossing(&points, GOAL_P99_MS) {
            Some(r) => println!(
                "Capacity ({phase}): p99 crosses {GOAL_P99_MS:.0} ms (or requests fail) at {r:.0} req/s offered; the highest rate that met it: {}.",
                if met.is_nan() {
                    "none of those tried".to_string()
                } else {
                    format!("{met:.0} req/s")
                }
            ),
            None => println!(
                "Capacity ({phase}): p99 stayed under {GOAL_P99_MS:.0} ms without errors up to {met:.0} req/s offered, the highest rate tried: raise --rates to find the crossing."
            ),
        }
    }
    for s in steps {
        if let Some(e) = &s.outcome.first_error {
            println!("\n{} at {:.0} req/s: first error: {e}", s.phase, s.rate);
        }
    }
    if broken > 0 {
        println!("\nbackground ingest: {broken} broken streams (resent from their last ack)");
    }
}
