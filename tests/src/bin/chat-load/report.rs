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

    /// Records RSS samples and fails the run if, after the first fifth (warm-up),
    /// they spread by more than 10% around their mean.
    pub fn rss_samples(&mut self, samples: Vec<(f64, u64)>) {
        let warm: Vec<u64> = samples.iter().skip(samples.len() / 5).map(|&(_, rss)| rss).collect();
        if let (Some(&lo), Some(&hi)) = (warm.iter().min(), warm.iter().max()) {
            let mean = warm.iter().sum::<u64>() as f64 / warm.len() as f64;
            let spread = (hi - lo) as f64 / mean.max(1.0);
            self.int("rss_min_kib", lo / 1024);
            self.int("rss_max_kib", hi / 1024);
            self.float("rss_spread_pct", spread * 100.0);
            self.fail_if(spread > 0.10, "server RSS not flat within 10% after warm-up");
        }
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
