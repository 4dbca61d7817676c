//! Latency samples (µs) and their summaries.

use std::time::Duration;

use serde_json::{json, Value};

#[derive(Default)]
pub struct Stats {
    v: Vec<u32>,
    sorted: bool,
}

impl Stats {
    pub fn extend(&mut self, s: &[u32]) {
        self.v.extend_from_slice(s);
        self.sorted = false;
    }
    pub fn push(&mut self, s: u32) {
        self.v.push(s);
        self.sorted = false;
    }
    pub fn len(&self) -> usize {
        self.v.len()
    }
    fn sort(&mut self) {
        if !self.sorted {
            self.v.sort_unstable();
            self.sorted = true;
        }
    }
    /// The `p` quantile (0..=1), µs; NaN without samples.
    pub fn quantile(&mut self, p: f64) -> f64 {
        self.sort();
        if self.v.is_empty() {
            return f64::NAN;
        }
        let i = ((self.v.len() - 1) as f64 * p).round() as usize;
        f64::from(self.v[i])
    }
}

pub fn latency_json(s: &mut Stats) -> Value {
    json!({
        "samples": s.len(),
        "p50": s.quantile(0.5),
        "p90": s.quantile(0.9),
        "p99": s.quantile(0.99),
        "p999": s.quantile(0.999),
        "max": s.quantile(1.0),
    })
}

/// `points` (latency µs, fraction) pairs of the distribution for plotting,
/// denser in the tail.
pub fn cdf(s: &mut Stats, points: usize) -> Value {
    if s.len() == 0 {
        return json!([]);
    }
    let mut out = Vec::new();
    for i in 0..=points {
        // 1 - 10^(-3x): spreads points up to p99.9.
        let x = i as f64 / points as f64;
        let q = 1.0 - 10f64.powf(-3.0 * x);
        out.push(json!([s.quantile(q), q]));
    }
    json!(out)
}

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

/// A named run: count, rate and latency percentiles (µs), printed as a
/// table row and returned as JSON.
pub fn summary(name: &str, count: usize, elapsed: Duration, mut lat_us: Vec<f64>) -> Value {
    lat_us.sort_by(f64::total_cmp);
    let rate = count as f64 / elapsed.as_secs_f64();
    let v = json!({
        "name": name,
        "count": count,
        "seconds": elapsed.as_secs_f64(),
        "per_second": rate,
        "latency_us": {
            "p50": percentile(&lat_us, 0.5),
            "p90": percentile(&lat_us, 0.9),
            "p99": percentile(&lat_us, 0.99),
            "p999": percentile(&lat_us, 0.999),
        }
    });
    println!(
        "{:<44} {:>9} ops {:>10.0}/s   p50 {:>8.1} µs  p99 {:>8.1} µs  p99.9 {:>8.1} µs",
        name,
        count,
        rate,
        percentile(&lat_us, 0.5),
        percentile(&lat_us, 0.99),
        percentile(&lat_us, 0.999)
    );
    v
}
