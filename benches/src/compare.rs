//! `--save NAME` and `--compare NAME`: keep a run's results, and put a later run beside them.
//!
//! A saved run is the run's `results.json`, copied to `<out>/saved/NAME.json`. A comparison
//! matches rows by workload, system and unit and gives, per row, new median ÷ old median and
//! whether the change is outside the noise: the two runs' min–max ranges do not overlap. On
//! this shared machine a change whose ranges overlap is not evidence of anything.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::report::fmt_value;
use crate::workload::lower_is_better;

/// One row of a results document: what a comparison needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    /// Workload name.
    pub workload: String,
    /// System name.
    pub system: String,
    /// Unit of the figures.
    pub unit: String,
    /// Median of the rounds.
    pub value: f64,
    /// Smallest round.
    pub min: f64,
    /// Largest round.
    pub max: f64,
}

/// A results document read back: its rows and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Results {
    /// The rows, in document order.
    pub rows: Vec<Figure>,
    /// `machine.git_commit`, or `"unknown"`.
    pub commit: String,
    /// `machine.date`, or `"unknown"`.
    pub date: String,
    /// `config`: how the run was made (`quick`, `workers`, `repeat`), when recorded.
    pub config: Option<RunConfig>,
}

/// The settings that decide whether two runs are comparable at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunConfig {
    /// `--quick` (smaller sizes).
    pub quick: bool,
    /// `--workers`.
    pub workers: u64,
    /// Rounds per workload.
    pub repeat: u64,
}

impl RunConfig {
    /// "--quick, 2 workers, 3 rounds".
    pub fn describe(&self) -> String {
        format!(
            "{}{} workers, {} rounds",
            if self.quick { "--quick, " } else { "" },
            self.workers,
            self.repeat
        )
    }
}

/// A warning when two runs were made with different sizes or worker counts: their rows
/// then measure different things, and the change table says little.
pub fn mismatch(old: Option<RunConfig>, new: Option<RunConfig>) -> Option<String> {
    let (old, new) = (old?, new?);
    (old.quick != new.quick || old.workers != new.workers).then(|| {
        format!(
            "the runs differ in size or workers (old: {}; new: {}): compare with care",
            old.describe(),
            new.describe()
        )
    })
}

impl Results {
    /// Reads the rows of a `results.json` document (`rows: [{workload, system, value, unit,
    /// min, max}]`); rows without a finite value are skipped.
    pub fn from_json(doc: &Value) -> Result<Self, String> {
        let rows = doc
            .get("rows")
            .and_then(Value::as_array)
            .ok_or("not a procpool-bench results document: no `rows` array")?;
        let text = |row: &Value, key: &str| -> Result<String, String> {
            row.get(key)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| format!("row without `{key}`: {row}"))
        };
        let mut figures = Vec::with_capacity(rows.len());
        for row in rows {
            let number = |key: &str| row.get(key).and_then(Value::as_f64).unwrap_or(f64::NAN);
            let value = number("value");
            if !value.is_finite() {
                continue;
            }
            let (min, max) = (number("min"), number("max"));
            figures.push(Figure {
                workload: text(row, "workload")?,
                system: text(row, "system")?,
                unit: text(row, "unit")?,
                value,
                min: if min.is_finite() { min } else { value },
                max: if max.is_finite() { max } else { value },
            });
        }
        let machine = |key: &str| {
            doc.pointer(&format!("/machine/{key}"))
                .and_then(Value::as_str)
                .unwrap_or("unknown")
                .to_owned()
        };
        let config = doc.get("config").and_then(|c| {
            Some(RunConfig {
                quick: c.get("quick")?.as_bool()?,
                workers: c.get("workers")?.as_u64()?,
                repeat: c.get("repeat")?.as_u64()?,
            })
        });
        Ok(Self {
            rows: figures,
            commit: machine("git_commit"),
            date: machine("date"),
            config,
        })
    }

    /// Reads a results file.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|err| format!("reading {}: {err}", path.display()))?;
        let doc: Value = serde_json::from_str(&text)
            .map_err(|err| format!("{} is not JSON: {err}", path.display()))?;
        Self::from_json(&doc).map_err(|err| format!("{}: {err}", path.display()))
    }
}

/// Checks a `--save`/`--compare` name: letters, digits, `.`, `_` and `-`, not starting with
/// a dot, so it can only name a file inside the `saved` directory.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a run name (use letters, digits, `.`, `_`, `-`)"
        ))
    }
}

/// Where `--save NAME` writes and `--compare NAME` reads: `<out>/saved/NAME.json`. A
/// `--compare` argument that contains a `/` or ends in `.json` is a path to any results file
/// instead (a published `docs/bench/*/results.json`, say).
pub fn resolve(out_dir: &Path, name: &str) -> Result<PathBuf, String> {
    if name.contains('/') || name.ends_with(".json") {
        return Ok(PathBuf::from(name));
    }
    check_name(name)?;
    Ok(saved_path(out_dir, name))
}

/// `<out>/saved/NAME.json`.
pub fn saved_path(out_dir: &Path, name: &str) -> PathBuf {
    out_dir.join("saved").join(format!("{name}.json"))
}

/// Whether a change stands out from the noise of the two runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Noise {
    /// The min–max ranges overlap: no evidence of a change.
    Within,
    /// Every new round beat every old one.
    Better,
    /// Every new round was worse than every old one.
    Worse,
}

/// One row present in both runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// The old run's figure.
    pub old: Figure,
    /// The new run's figure.
    pub new: Figure,
    /// New median ÷ old median, as the figures are.
    pub ratio: f64,
    /// How many times better the new run is (> 1: better), the unit's direction applied.
    pub better: f64,
    /// Whether the ranges separate.
    pub noise: Noise,
}

/// Two runs side by side.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// Rows in both runs, in the new run's order.
    pub changes: Vec<Change>,
    /// Rows only the new run has (workload, system).
    pub only_new: Vec<(String, String)>,
    /// Rows only the old run has (workload, system), in workloads the new run ran.
    pub only_old: Vec<(String, String)>,
    /// Workloads of the old run the new one did not run.
    pub not_run: Vec<String>,
}

fn same(a: &Figure, b: &Figure) -> bool {
    a.workload == b.workload && a.system == b.system && a.unit == b.unit
}

/// Matches the rows of two runs and measures each change.
pub fn compare(old: &[Figure], new: &[Figure]) -> Comparison {
    let mut changes = Vec::new();
    let mut only_new = Vec::new();
    for n in new {
        match old.iter().find(|o| same(o, n)) {
            Some(o) => {
                let ratio = n.value / o.value;
                let lower = lower_is_better(&n.unit);
                let better = if lower { 1.0 / ratio } else { ratio };
                let noise = if n.min > o.max {
                    if lower { Noise::Worse } else { Noise::Better }
                } else if n.max < o.min {
                    if lower { Noise::Better } else { Noise::Worse }
                } else {
                    Noise::Within
                };
                changes.push(Change {
                    old: o.clone(),
                    new: n.clone(),
                    ratio,
                    better,
                    noise,
                });
            }
            None => only_new.push((n.workload.clone(), n.system.clone())),
        }
    }
    let ran = |workload: &str| new.iter().any(|n| n.workload == workload);
    let only_old = old
        .iter()
        .filter(|o| ran(&o.workload) && !new.iter().any(|n| same(o, n)))
        .map(|o| (o.workload.clone(), o.system.clone()))
        .collect();
    let mut not_run: Vec<String> = Vec::new();
    for o in old {
        if !ran(&o.workload) && !not_run.contains(&o.workload) {
            not_run.push(o.workload.clone());
        }
    }
    Comparison {
        changes,
        only_new,
        only_old,
        not_run,
    }
}

const HEADER: [&str; 7] = [
    "workload",
    "system",
    "unit",
    "old: median [min–max]",
    "new: median [min–max]",
    "new ÷ old",
    "change",
];

fn spread(f: &Figure) -> String {
    format!(
        "{} [{}–{}]",
        fmt_value(f.value),
        fmt_value(f.min),
        fmt_value(f.max)
    )
}

/// The verdict of one change: "1.25× better, outside the noise", "1.03× worse, within noise".
pub fn describe(change: &Change) -> String {
    let size = if change.better >= 1.0 {
        format!("{}× better", fmt_value(change.better))
    } else {
        format!("{}× worse", fmt_value(1.0 / change.better))
    };
    match change.noise {
        Noise::Within => format!("{size}, within noise"),
        Noise::Better | Noise::Worse => format!("{size}, outside the noise"),
    }
}

/// The comparison as table cells.
pub fn cells(cmp: &Comparison) -> Vec<[String; 7]> {
    cmp.changes
        .iter()
        .map(|c| {
            [
                c.new.workload.clone(),
                c.new.system.clone(),
                c.new.unit.clone(),
                spread(&c.old),
                spread(&c.new),
                fmt_value(c.ratio),
                describe(c),
            ]
        })
        .collect()
}

fn left_out(cmp: &Comparison) -> Vec<String> {
    let list = |rows: &[(String, String)]| {
        rows.iter()
            .map(|(w, s)| format!("{w}/{s}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut lines = Vec::new();
    if !cmp.only_new.is_empty() {
        lines.push(format!("only in the new run: {}", list(&cmp.only_new)));
    }
    if !cmp.only_old.is_empty() {
        lines.push(format!("only in the old run: {}", list(&cmp.only_old)));
    }
    if !cmp.not_run.is_empty() {
        lines.push(format!(
            "workloads of the old run not run this time: {}",
            cmp.not_run.join(", ")
        ));
    }
    lines
}

/// The aligned plain-text change table, with a title naming the old run.
pub fn terminal(cmp: &Comparison, title: &str) -> String {
    let body = cells(cmp);
    let mut widths = HEADER.map(|h| h.chars().count());
    for line in &body {
        for (width, cell) in widths.iter_mut().zip(line) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = format!("{title}\n");
    let mut push = |line: &[String]| {
        let mut text = String::new();
        for (idx, (cell, width)) in line.iter().zip(widths).enumerate() {
            let pad = " ".repeat(width - cell.chars().count());
            if (3..=5).contains(&idx) {
                text.push_str(&pad);
                text.push_str(cell);
            } else {
                text.push_str(cell);
                text.push_str(&pad);
            }
            text.push_str("  ");
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    push(&HEADER.map(String::from));
    push(&widths.map(|w| "-".repeat(w)));
    for line in &body {
        push(line);
    }
    for line in left_out(cmp) {
        let _ = writeln!(out, "{line}");
    }
    out
}

/// The change table as a Markdown section for the report.
pub fn markdown(cmp: &Comparison, title: &str) -> String {
    let mut md = format!("## {title}\n\n");
    let _ = writeln!(
        md,
        "new ÷ old divides the medians; a change is *outside the noise* only when the two \
         runs' min–max ranges do not overlap.\n"
    );
    let _ = writeln!(md, "| {} |", HEADER.join(" | "));
    let _ = writeln!(md, "|{}", "---|".repeat(HEADER.len()));
    for line in cells(cmp) {
        let _ = writeln!(md, "| {} |", line.join(" | "));
    }
    for line in left_out(cmp) {
        let _ = writeln!(md, "\n{line}.");
    }
    md
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn fig(workload: &str, system: &str, unit: &str, value: f64, min: f64, max: f64) -> Figure {
        Figure {
            workload: workload.into(),
            system: system.into(),
            unit: unit.into(),
            value,
            min,
            max,
        }
    }

    #[test]
    fn changes_take_the_units_direction_and_the_noise_into_account() {
        let old = vec![
            fig("latency", "procpool", "us", 20.0, 18.0, 22.0),
            fig("map_tiny", "procpool", "items/s", 30e6, 28e6, 33e6),
            fig("skewed", "procpool", "x ideal", 1.10, 1.05, 1.20),
            fig("payload", "procpool", "MiB/s", 200.0, 150.0, 260.0),
            fig("payload", "rayon", "MiB/s", 300.0, 290.0, 310.0),
            fig("digest", "rayon", "MiB/s", 300.0, 290.0, 310.0),
        ];
        let new = vec![
            fig("latency", "procpool", "us", 10.0, 9.0, 12.0),
            fig("map_tiny", "procpool", "items/s", 25e6, 20e6, 27e6),
            fig("skewed", "procpool", "x ideal", 1.15, 1.02, 1.30),
            fig("payload", "procpool", "MiB/s", 250.0, 240.0, 400.0),
            fig("shared_table", "procpool", "items/s", 1.0, 1.0, 1.0),
        ];
        let cmp = compare(&old, &new);
        assert_eq!(cmp.changes.len(), 4);
        let lat = &cmp.changes[0];
        assert_eq!(
            (lat.ratio, lat.better, lat.noise),
            (0.5, 2.0, Noise::Better)
        );
        assert_eq!(describe(lat), "2.00× better, outside the noise");
        let map = &cmp.changes[1];
        assert_eq!(
            map.noise,
            Noise::Worse,
            "27 M < 28 M: every new round slower"
        );
        assert_eq!(describe(map), "1.20× worse, outside the noise");
        assert_eq!(cmp.changes[2].noise, Noise::Within);
        assert!(describe(&cmp.changes[2]).ends_with("worse, within noise"));
        assert_eq!(cmp.changes[3].noise, Noise::Within, "240 < 260: overlap");
        assert_eq!(
            cmp.only_new,
            vec![("shared_table".to_owned(), "procpool".to_owned())]
        );
        assert_eq!(
            cmp.only_old,
            vec![("payload".to_owned(), "rayon".to_owned())]
        );
        assert_eq!(cmp.not_run, vec!["digest".to_owned()]);
    }

    #[test]
    fn rows_match_on_the_unit_too() {
        // The serial row of a busy workload changed meaning (ms) but kept its name: a row
        // in another unit is a different row, not a change.
        let old = vec![fig("skewed", "serial", "ms", 700.0, 690.0, 710.0)];
        let new = vec![fig("skewed", "serial", "s", 0.7, 0.69, 0.71)];
        let cmp = compare(&old, &new);
        assert!(cmp.changes.is_empty());
        assert_eq!(cmp.only_new.len(), 1);
        assert_eq!(cmp.only_old.len(), 1);
    }

    #[test]
    fn results_documents_are_read_back() {
        let doc = json!({
            "machine": {"git_commit": "abc123", "date": "2026-11-22T03:00:00Z"},
            "rows": [
                {"workload": "latency", "system": "procpool", "value": 20.0, "unit": "us",
                 "min": 18.0, "max": 25.0, "extra": {}},
                {"workload": "latency", "system": "rayon", "value": null, "unit": "us"},
                {"workload": "submit", "system": "procpool", "value": 1e6, "unit": "tasks/s"}
            ]
        });
        let results = Results::from_json(&doc).unwrap();
        assert_eq!(results.commit, "abc123");
        assert_eq!(results.config, None);
        assert_eq!(results.rows.len(), 2, "the row without a value is skipped");
        assert_eq!(
            results.rows[0],
            fig("latency", "procpool", "us", 20.0, 18.0, 25.0)
        );
        assert_eq!(
            (results.rows[1].min, results.rows[1].max),
            (1e6, 1e6),
            "a missing range is the median itself"
        );
        assert!(Results::from_json(&json!({"nope": 1})).is_err());
        assert!(Results::from_json(&json!({"rows": [{"value": 1.0}]})).is_err());
    }

    #[test]
    fn runs_of_other_sizes_are_flagged() {
        let doc = |quick: bool, workers: u64| json!({"config": {"quick": quick, "workers": workers, "repeat": 3}, "rows": []});
        let quick2 = Results::from_json(&doc(true, 2)).unwrap().config;
        assert_eq!(
            quick2,
            Some(RunConfig {
                quick: true,
                workers: 2,
                repeat: 3
            })
        );
        let full2 = Results::from_json(&doc(false, 2)).unwrap().config;
        let quick4 = Results::from_json(&doc(true, 4)).unwrap().config;
        assert_eq!(mismatch(quick2, quick2), None);
        let warning = mismatch(quick2, full2).unwrap();
        assert!(
            warning.contains("old: --quick, 2 workers, 3 rounds; new: 2 workers, 3 rounds"),
            "{warning}"
        );
        assert!(mismatch(quick2, quick4).is_some());
        assert_eq!(
            mismatch(None, quick2),
            None,
            "an old document without config"
        );
    }

    #[test]
    fn names_stay_inside_the_saved_directory() {
        let out = Path::new("/o");
        assert_eq!(
            resolve(out, "before-fix").unwrap(),
            Path::new("/o/saved/before-fix.json")
        );
        assert_eq!(
            resolve(out, "docs/bench/x/results.json").unwrap(),
            Path::new("docs/bench/x/results.json")
        );
        for bad in ["", ".hidden", "a b", "x*"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_name("v1.2_run-3").is_ok());
    }

    #[test]
    fn tables_show_both_ranges_and_the_rows_left_out() {
        let old = vec![
            fig("latency", "procpool", "us", 20.0, 18.0, 22.0),
            fig("digest", "procpool", "MiB/s", 300.0, 290.0, 310.0),
        ];
        let new = vec![
            fig("latency", "procpool", "us", 10.0, 9.0, 12.0),
            fig("startup", "procpool", "ms", 5.0, 4.0, 6.0),
        ];
        let cmp = compare(&old, &new);
        let text = terminal(&cmp, "compared with saved run `a`");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "compared with saved run `a`");
        assert!(lines[3].contains("20.0 [18.0–22.0]"), "{text}");
        assert!(lines[3].contains("10.0 [9.00–12.0]"), "{text}");
        assert!(
            lines[3].ends_with("2.00× better, outside the noise"),
            "{text}"
        );
        assert_eq!(lines[4], "only in the new run: startup/procpool");
        assert_eq!(
            lines[5],
            "workloads of the old run not run this time: digest"
        );
        let md = markdown(&cmp, "Change since `a`");
        assert!(md.starts_with("## Change since `a`"));
        assert!(
            md.contains("| latency | procpool | us | 20.0 [18.0–22.0] |"),
            "{md}"
        );
    }
}
