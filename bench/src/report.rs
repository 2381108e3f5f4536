//! The benchmark's output: one table of scenarios (throughput, latency percentiles, ratio to
//! the baseline of the same run, goal) and one of single measurements, as Markdown.

use crate::load::Summary;
use std::fmt::Write as _;

/// One measured scenario.
#[derive(Debug, Clone)]
pub struct Row {
    pub scenario: String,
    pub summary: Summary,
    /// Against this run's baseline (see the scenario for which one).
    pub ratio: Option<f64>,
    pub goal: String,
    /// `None` when the row is a baseline or has no goal.
    pub met: Option<bool>,
}

/// One single measurement (memory, times, derived costs).
#[derive(Debug, Clone)]
pub struct Fact {
    pub what: String,
    pub value: String,
    pub goal: String,
    pub met: Option<bool>,
}

/// Everything measured, in the order it was measured.
#[derive(Debug, Default)]
pub struct Report {
    pub rows: Vec<Row>,
    pub facts: Vec<Fact>,
}

impl Report {
    pub fn row(&mut self, row: Row) {
        eprintln!("  {}", row_line(&row));
        self.rows.push(row);
    }

    pub fn fact(&mut self, what: impl Into<String>, value: impl Into<String>) {
        self.fact_with_goal(what, value, "", None);
    }

    pub fn fact_with_goal(
        &mut self,
        what: impl Into<String>,
        value: impl Into<String>,
        goal: impl Into<String>,
        met: Option<bool>,
    ) {
        let fact = Fact {
            what: what.into(),
            value: value.into(),
            goal: goal.into(),
            met,
        };
        eprintln!("  {}", fact_line(&fact));
        self.facts.push(fact);
    }

    /// Both tables and the count of goals met.
    pub fn markdown(&self, header: &str) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{header}\n");
        let _ = writeln!(
            out,
            "| scenario | ops/s | p50 ms | p99 ms | p99.9 ms | ratio | goal | met |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---|---|");
        for row in &self.rows {
            let _ = writeln!(out, "{}", row_line(row));
        }
        let _ = writeln!(out, "\n| measure | value | goal | met |");
        let _ = writeln!(out, "|---|---:|---|---|");
        for fact in &self.facts {
            let _ = writeln!(out, "{}", fact_line(fact));
        }
        let verdicts = self
            .rows
            .iter()
            .map(|row| row.met)
            .chain(self.facts.iter().map(|fact| fact.met))
            .flatten();
        let (met, total) = verdicts.fold((0, 0), |(met, total), ok| {
            (met + usize::from(ok), total + 1)
        });
        let _ = writeln!(out, "\nGoals met: {met} of {total}.");
        out
    }
}

fn verdict(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "yes",
        Some(false) => "**no**",
        None => "",
    }
}

fn row_line(row: &Row) -> String {
    let ratio = row.ratio.map(|r| format!("{r:.3}")).unwrap_or_default();
    format!(
        "| {} | {:.1} | {:.3} | {:.3} | {:.3} | {} | {} | {} |",
        row.scenario,
        row.summary.per_second,
        row.summary.p50_ms,
        row.summary.p99_ms,
        row.summary.p999_ms,
        ratio,
        row.goal,
        verdict(row.met)
    )
}

fn fact_line(fact: &Fact) -> String {
    format!(
        "| {} | {} | {} | {} |",
        fact.what,
        fact.value,
        fact.goal,
        verdict(fact.met)
    )
}

/// The machine, as BENCHMARKS.md records it: cores, CPU model, memory, kernel.
pub fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .and_then(|rest| rest.split_once(':'))
        .map_or("unknown", |(_, model)| model.trim())
        .to_owned();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_mib = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse::<u64>().ok())
        .map_or(0, |kib| kib / 1024);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "Machine: {cores} cores (nproc), CPU {model}, {memory_mib} MiB memory, Linux {}",
        kernel.trim()
    )
}

/// MiB from KiB, one decimal.
pub fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}
