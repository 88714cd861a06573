//! One run's figures: a human-readable summary and one JSON line.

use std::fmt::Write as _;

enum Value {
    Int(u64),
    Float(f64),
    Text(String),
}

/// Named figures in the order they were added, plus whether the run failed.
pub struct Report {
    scenario: &'static str,
    fields: Vec<(&'static str, Value)>,
    failures: Vec<String>,
}

impl Report {
    pub fn new(scenario: &'static str) -> Report {
        Report { scenario, fields: Vec::new(), failures: Vec::new() }
    }

    pub fn int(&mut self, key: &'static str, value: u64) {
        self.fields.push((key, Value::Int(value)));
    }

    pub fn float(&mut self, key: &'static str, value: f64) {
        self.fields.push((key, Value::Float(value)));
    }

    pub fn text(&mut self, key: &'static str, value: &str) {
        self.fields.push((key, Value::Text(value.to_owned())));
    }

    /// Records RSS samples (each: seconds into the run, and each server
    /// process's RSS) and fails the run if any process's memory drifts.
    ///
    /// Flat means no trend: after the first fifth (warm-up) each process's
    /// samples are cut into five spells, and the medians of those spells must
    /// lie within 10% of each other. A median, not the extremes, because
    /// output queued for clients during a latency spike is memory in use,
    /// given back once they catch up, while a leak moves every later spell.
    pub fn rss_samples(&mut self, samples: &[(f64, Vec<(i32, u64)>)]) {
        let warm = &samples[samples.len() / 5..];
        let totals: Vec<u64> =
            warm.iter().map(|(_, procs)| procs.iter().map(|&(_, rss)| rss).sum()).collect();
        let (Some(&lo), Some(&hi)) = (totals.iter().min(), totals.iter().max()) else { return };
        let mean = totals.iter().sum::<u64>() as f64 / totals.len() as f64;
        self.int("rss_min_kib", lo / 1024);
        self.int("rss_max_kib", hi / 1024);
        self.float("rss_spread_pct", (hi - lo) as f64 * 100.0 / mean.max(1.0));
        let pids: Vec<i32> = warm[0].1.iter().map(|&(pid, _)| pid).collect();
        let mut worst = 0.0f64;
        let mut ended = false;
        for pid in pids {
            let series: Vec<u64> =
                warm.iter().filter_map(|(_, procs)| procs.iter().find(|p| p.0 == pid).map(|p| p.1)).collect();
            ended |= series.len() < warm.len();
            worst = worst.max(drift(&series));
        }
        self.fail_if(ended, "a server process ended during the run");
        self.int("rss_processes", warm[0].1.len() as u64);
        self.float("rss_drift_pct", worst * 100.0);
        self.fail_if(worst > 0.10, "a server process's RSS drifted by more than 10% after warm-up");
    }

    pub fn fail_if(&mut self, failed: bool, why: &str) {
        if failed {
            self.failures.push(why.to_owned());
        }
    }

    pub fn failed(&self) -> bool {
        !self.failures.is_empty()
    }

    /// The human-readable summary, one figure per line.
    pub fn summary(&self) -> String {
        let mut out = format!("{}:\n", self.scenario);
        for (key, value) in &self.fields {
            let shown = match value {
                Value::Int(v) => v.to_string(),
                Value::Float(v) if v.abs() >= 100.0 => format!("{v:.0}"),
                Value::Float(v) => format!("{v:.3}"),
                Value::Text(t) => t.clone(),
            };
            let _ = writeln!(out, "  {key:<28} {shown}");
        }
        for failure in &self.failures {
            let _ = writeln!(out, "  FAILED: {failure}");
        }
        out
    }

    /// The same figures as one JSON object on one line.
    pub fn json(&self) -> String {
        let mut out = format!("{{\"scenario\":\"{}\"", self.scenario);
        for (key, value) in &self.fields {
            let _ = match value {
                Value::Int(v) => write!(out, ",\"{key}\":{v}"),
                Value::Float(v) if v.is_finite() => write!(out, ",\"{key}\":{v:.3}"),
                Value::Float(_) => write!(out, ",\"{key}\":null"),
                Value::Text(t) => {
                    write!(out, ",\"{key}\":\"{}\"", t.replace('\\', "\\\\").replace('"', "\\\""))
                }
            };
        }
        let _ = write!(out, ",\"ok\":{}}}", self.failures.is_empty());
        out
    }
}

/// How far apart the medians of five consecutive spells of `series` lie,
/// relative to the median of the whole.
fn drift(series: &[u64]) -> f64 {
    let spells = series.len().min(5);
    let size = series.len().div_ceil(spells.max(1)).max(1);
    let medians: Vec<u64> = series.chunks(size).map(median).collect();
    let (Some(&lo), Some(&hi)) = (medians.iter().min(), medians.iter().max()) else { return 0.0 };
    (hi - lo) as f64 / median(series).max(1) as f64
}

fn median(values: &[u64]) -> u64 {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    sorted.get(sorted.len() / 2).copied().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn soak(series: &[u64]) -> Report {
        let samples: Vec<(f64, Vec<(i32, u64)>)> =
            series.iter().enumerate().map(|(i, &rss)| (i as f64, vec![(1, 8 << 20), (2, rss)])).collect();
        let mut report = Report::new("soak");
        report.rss_samples(&samples);
        report
    }

    #[test]
    fn steady_memory_with_spikes_is_flat() {
        let mut series = vec![4 << 20; 60];
        series[30] = 6 << 20;
        series[41] = 7 << 20;
        assert!(!soak(&series).failed());
    }

    #[test]
    fn memory_that_keeps_growing_is_a_drift() {
        let series: Vec<u64> = (0..60).map(|i| (4 << 20) + i * (16 << 10)).collect();
        assert!(soak(&series).failed());
    }

    #[test]
    fn warm_up_growth_is_not_a_drift() {
        let series: Vec<u64> =
            (0..60u64).map(|i| if i < 12 { (1 << 20) + i * (256 << 10) } else { 4 << 20 }).collect();
        assert!(!soak(&series).failed());
    }

    #[test]
    fn a_process_that_ends_fails_the_run() {
        let mut samples: Vec<(f64, Vec<(i32, u64)>)> =
            (0..20).map(|i| (i as f64, vec![(1, 1 << 20)])).collect();
        samples[19].1.clear();
        let mut report = Report::new("soak");
        report.rss_samples(&samples);
        assert!(report.failed());
    }
}
