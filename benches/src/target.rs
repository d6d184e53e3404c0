//! The targets of issue 7 (and issue 5's idle round trip), checked against a run: met or missed,
//! and by how much.
//!
//! The benchmark is never tuned to these; they are only read off the medians.

use crate::collect::{Lang, Row};

/// One target and what the run measured for it.
#[derive(Debug, Clone)]
pub struct TargetCheck {
    /// The workload it concerns.
    pub workload: &'static str,
    /// The target as text.
    pub target: &'static str,
    /// The measured figure as text.
    pub measured: String,
    /// Whether it was met; `None` when the run lacks a row it needs.
    pub met: Option<bool>,
    /// How far from the target, as a factor of the required figure (1.0 = exactly met).
    pub fraction_of_target: Option<f64>,
    /// Why the figure cannot be taken at face value (an efficiency above 1, a makespan below
    /// the ideal): the check is then neither met nor missed.
    pub anomaly: Option<String>,
}

fn find<'a>(rows: &'a [Row], workload: &str, system: &str) -> Option<&'a Row> {
    rows.iter()
        .find(|r| r.workload == workload && r.system == system)
}

fn best_python_pool<'a>(rows: &'a [Row], workload: &str, higher_better: bool) -> Option<&'a Row> {
    rows.iter()
        .filter(|r| r.workload == workload && r.lang == Lang::Python && r.system != "python serial")
        .max_by(|a, b| {
            let (x, y) = if higher_better {
                (a.value, b.value)
            } else {
                (b.value, a.value)
            };
            x.total_cmp(&y)
        })
}

/// Builds one check from the figure, the required figure and whether larger is better.
fn check(
    workload: &'static str,
    target: &'static str,
    measured: Option<(f64, String)>,
    required: f64,
    larger_is_better: bool,
) -> TargetCheck {
    match measured {
        Some((value, text)) if value.is_finite() => {
            let fraction = if larger_is_better {
                value / required
            } else {
                required / value
            };
            TargetCheck {
                workload,
                target,
                measured: text,
                met: Some(fraction >= 1.0),
                fraction_of_target: Some(fraction),
                anomaly: None,
            }
        }
        _ => TargetCheck {
            workload,
            target,
            measured: "not measured".into(),
            met: None,
            fraction_of_target: None,
            anomaly: None,
        },
    }
}

/// Why a row's median cannot be true, if it cannot: an efficiency above 1 or a makespan
/// below the ideal means the pool did the work faster than one core does it alone, which
/// only a disturbed measurement produces (see `crate::reference`).
pub fn impossible(row: &Row) -> Option<String> {
    match row.unit.as_str() {
        "efficiency" if row.value > 1.0 => {
            Some(format!("{} efficiency {:.3} > 1", row.system, row.value))
        }
        "x ideal" if row.value < 1.0 => Some(format!(
            "{} makespan {:.3} × ideal < 1",
            row.system, row.value
        )),
        _ => None,
    }
}

/// How many of a row's rounds gave an impossible figure (see [`impossible`]).
pub fn impossible_rounds(row: &Row) -> usize {
    row.samples
        .iter()
        .filter(|&&v| match row.unit.as_str() {
            "efficiency" => v > 1.0,
            "x ideal" => v < 1.0,
            _ => false,
        })
        .count()
}

/// Every row with impossible rounds, as lines for the report: the figures of those rounds
/// are measurement anomalies, not results.
pub fn anomalies(rows: &[Row]) -> Vec<String> {
    rows.iter()
        .filter_map(|row| {
            let bad = impossible_rounds(row);
            (bad > 0).then(|| {
                let (what, extreme) = if row.unit == "efficiency" {
                    ("efficiency above 1", row.max)
                } else {
                    ("makespan below the ideal", row.min)
                };
                format!(
                    "`{}` {}: {what} in {bad} of {} rounds (extreme {extreme:.3}, median {:.3})",
                    row.workload,
                    row.system,
                    row.samples.len(),
                    row.value
                )
            })
        })
        .collect()
}

/// Marks `check` anomalous when one of `rows` has an impossible median, and notes rounds
/// that were impossible even when the median is not.
fn with_anomalies(mut check: TargetCheck, rows: &[Option<&Row>]) -> TargetCheck {
    let rows: Vec<&Row> = rows.iter().flatten().copied().collect();
    let reasons: Vec<String> = rows.iter().filter_map(|r| impossible(r)).collect();
    if !reasons.is_empty() {
        check.anomaly = Some(reasons.join("; "));
        check.met = None;
    }
    let bad: Vec<String> = rows
        .iter()
        .filter(|r| impossible_rounds(r) > 0)
        .map(|r| {
            format!(
                "{}: {} of {} rounds impossible",
                r.system,
                impossible_rounds(r),
                r.samples.len()
            )
        })
        .collect();
    if !bad.is_empty() && check.met.is_some() {
        check.measured = format!("{} ({})", check.measured, bad.join(", "));
    }
    check
}

/// Speed-up of procpool over `peer` on `workload`, direction of the unit applied.
fn times_better(
    rows: &[Row],
    workload: &str,
    peer: Option<&Row>,
    lower_better: bool,
) -> Option<(f64, String)> {
    let ours = find(rows, workload, "procpool")?;
    let peer = peer?;
    let factor = if lower_better {
        peer.value / ours.value
    } else {
        ours.value / peer.value
    };
    Some((factor, format!("{factor:.1}× ({})", peer.system)))
}

/// procpool's figure on `workload` divided by `peer`'s, with `describe(ours, peer)` and the
/// ratio as its text.
fn ratio_to(
    rows: &[Row],
    workload: &str,
    peer: &str,
    describe: impl Fn(f64, f64) -> String,
) -> Option<(f64, String)> {
    let ours = find(rows, workload, "procpool")?;
    let peer = find(rows, workload, peer)?;
    let ratio = ours.value / peer.value;
    Some((
        ratio,
        format!("{} ({ratio:.2}×)", describe(ours.value, peer.value)),
    ))
}

/// Every issue-7 target this run has figures for.
pub fn checks(rows: &[Row]) -> Vec<TargetCheck> {
    let procpool = |workload: &str| find(rows, workload, "procpool");
    let mut out = Vec::new();
    out.push(check(
        "latency",
        "≥ 50× better than ProcessPoolExecutor",
        times_better(
            rows,
            "latency",
            find(rows, "latency", "py ProcessPoolExecutor"),
            true,
        ),
        50.0,
        true,
    ));
    out.push(check(
        "latency_idle",
        "≤ 1.2× the machine's futex wake-up round trip after the same idle time (issue 5)",
        ratio_to(rows, "latency_idle", "futex pair", |ours, peer| {
            format!("{ours:.1} µs vs futex pair {peer:.1} µs")
        }),
        1.2,
        false,
    ));
    out.push(check(
        "submit",
        "≥ 50× ProcessPoolExecutor",
        times_better(
            rows,
            "submit",
            find(rows, "submit", "py ProcessPoolExecutor"),
            false,
        ),
        50.0,
        true,
    ));
    out.push(check(
        "map_tiny",
        "≥ 10× the best Python pool",
        times_better(
            rows,
            "map_tiny",
            best_python_pool(rows, "map_tiny", true),
            false,
        ),
        10.0,
        true,
    ));
    out.push(with_anomalies(
        check(
            "map_1us",
            "efficiency within 5% of rayon",
            ratio_to(rows, "map_1us", "rayon", |ours, peer| {
                format!("{ours:.3} vs rayon {peer:.3}")
            }),
            0.95,
            true,
        ),
        &[procpool("map_1us"), find(rows, "map_1us", "rayon")],
    ));
    out.push(check(
        "startup",
        "≥ 10× faster than ProcessPoolExecutor with spawn",
        times_better(
            rows,
            "startup",
            find(rows, "startup", "py ProcessPoolExecutor spawn"),
            true,
        ),
        10.0,
        true,
    ));
    out.push(with_anomalies(
        check(
            "cpu_scaling",
            "efficiency ≥ 0.985",
            procpool("cpu_scaling").map(|r| (r.value, format!("{:.3}", r.value))),
            0.985,
            true,
        ),
        &[procpool("cpu_scaling")],
    ));
    out.push(with_anomalies(
        check(
            "skewed",
            "makespan ≤ 1.03 × ideal",
            procpool("skewed").map(|r| (r.value, format!("{:.2} × ideal", r.value))),
            1.03,
            false,
        ),
        &[procpool("skewed")],
    ));
    out.push(check(
        "payload",
        "≥ 25× the best Python pool",
        times_better(
            rows,
            "payload",
            best_python_pool(rows, "payload", true),
            false,
        ),
        25.0,
        true,
    ));
    out.push(check(
        "shared_table",
        "shared ≥ 100× faster than passing the table per call (issue 8)",
        procpool("shared_table").map(|r| (r.value, format!("{:.0}×", r.value))),
        100.0,
        true,
    ));
    out.retain(|c| rows.iter().any(|r| r.workload == c.workload));
    out
}

/// A warning when the machine visibly lacked free cores. Two witnesses: rayon (in-process
/// threads, no transport at all) below 0.9 efficiency on `cpu_scaling`, and a serial
/// reference whose thread was off the CPU for more than a tenth of its pass (`disturbed`,
/// see `crate::reference`). Either way every parallel figure of the run is depressed by
/// whatever else was running.
pub fn contention_warning(rows: &[Row]) -> Option<String> {
    let mut seen = Vec::new();
    if let Some(rayon) = find(rows, "cpu_scaling", "rayon").filter(|r| r.value < 0.9) {
        seen.push(format!(
            "rayon reached only {:.2} efficiency on `cpu_scaling` (about 1.0 on an idle machine)",
            rayon.value
        ));
    }
    let disturbed: Vec<String> = rows
        .iter()
        .filter_map(|r| Some((r, *r.extra.get("disturbed")?)))
        .filter(|&(_, d)| d > 0.1)
        .map(|(r, d)| format!("`{}` {} {:.0}%", r.workload, r.system, d * 100.0))
        .collect();
    if !disturbed.is_empty() {
        seen.push(format!(
            "the serial reference thread was off the CPU for part of its pass ({})",
            disturbed.join(", ")
        ));
    }
    (!seen.is_empty()).then(|| {
        format!(
            "the machine was busy: {}; parallel figures and targets that need free cores \
             (efficiency, makespan, throughput) are depressed for every system; compare \
             systems within a round rather than with the absolute targets",
            seen.join("; ")
        )
    })
}

/// "met", "missed: at 40% of the target", or "anomaly: …" (neither met nor missed).
pub fn verdict(check: &TargetCheck) -> String {
    if let Some(why) = &check.anomaly {
        return format!("measurement anomaly ({why}): not counted");
    }
    match (check.met, check.fraction_of_target) {
        (Some(true), _) => "met".into(),
        (Some(false), Some(fraction)) => {
            format!("missed: at {:.0}% of the target", fraction * 100.0)
        }
        _ => "not measured".into(),
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    fn row(workload: &str, system: &str, lang: Lang, value: f64, unit: &str) -> Row {
        Row::single(workload, system, lang, value, unit)
    }

    #[test]
    fn targets_are_met_or_missed_by_the_right_amount() {
        let rows = vec![
            row("latency", "procpool", Lang::Rust, 5.0, "us"),
            row(
                "latency",
                "py ProcessPoolExecutor",
                Lang::Python,
                300.0,
                "us",
            ),
            row("map_tiny", "procpool", Lang::Rust, 4e6, "items/s"),
            row("map_tiny", "python serial", Lang::Python, 9e6, "items/s"),
            row(
                "map_tiny",
                "py multiprocessing.Pool",
                Lang::Python,
                2e6,
                "items/s",
            ),
            row(
                "map_tiny",
                "py ProcessPoolExecutor cs=1",
                Lang::Python,
                4e3,
                "items/s",
            ),
            row("skewed", "procpool", Lang::Rust, 1.5, "x ideal"),
        ];
        let checks = checks(&rows);
        assert_eq!(checks.len(), 3, "only workloads that ran");
        assert_eq!(checks[0].met, Some(true), "300/5 = 60× ≥ 50×");
        let map = &checks[1];
        assert_eq!(map.met, Some(false));
        assert!(
            map.measured.contains("multiprocessing.Pool"),
            "best pool, not the serial loop"
        );
        assert!(
            (map.fraction_of_target.unwrap() - 0.2).abs() < 1e-9,
            "2× of the 10× asked"
        );
        assert_eq!(verdict(map), "missed: at 20% of the target");
        let skewed = &checks[2];
        assert!((skewed.fraction_of_target.unwrap() - 1.03 / 1.5).abs() < 1e-9);
    }

    #[test]
    fn the_idle_round_trip_is_judged_against_the_futex_pair() {
        let rows = |ours: f64| {
            vec![
                row("latency_idle", "procpool", Lang::Rust, ours, "us"),
                row("latency_idle", "futex pair", Lang::Rust, 100.0, "us"),
                row("latency_idle", "rayon", Lang::Rust, 20.0, "us"),
            ]
        };
        let met = &checks(&rows(115.0))[0];
        assert_eq!(met.workload, "latency_idle");
        assert_eq!(met.met, Some(true), "1.15× ≤ 1.2×: {met:?}");
        assert!(met.measured.contains("(1.15×)"), "{met:?}");
        let missed = &checks(&rows(150.0))[0];
        assert_eq!(missed.met, Some(false));
        assert_eq!(verdict(missed), "missed: at 80% of the target");
        let alone = vec![row("latency_idle", "procpool", Lang::Rust, 90.0, "us")];
        assert_eq!(checks(&alone)[0].met, None, "no futex pair, no verdict");
    }

    #[test]
    fn contention_is_flagged_from_rayons_efficiency() {
        let busy = vec![row("cpu_scaling", "rayon", Lang::Rust, 0.5, "efficiency")];
        assert!(contention_warning(&busy).unwrap().contains("0.50"));
        let idle = vec![row("cpu_scaling", "rayon", Lang::Rust, 0.99, "efficiency")];
        assert_eq!(contention_warning(&idle), None);
        assert_eq!(contention_warning(&[]), None);
        let mut serial = row("skewed", "serial", Lang::Rust, 700.0, "ms");
        serial.extra.insert("disturbed".into(), 0.02);
        assert_eq!(contention_warning(std::slice::from_ref(&serial)), None);
        serial.extra.insert("disturbed".into(), 0.35);
        let warning = contention_warning(&[serial]).unwrap();
        assert!(warning.contains("`skewed` serial 35%"), "{warning}");
    }

    #[test]
    fn an_impossible_median_is_an_anomaly_not_a_pass() {
        let mut eff = row("cpu_scaling", "procpool", Lang::Rust, 1.06, "efficiency");
        eff.samples = vec![1.06, 0.99, 1.2];
        let mut skew = row("skewed", "procpool", Lang::Rust, 0.91, "x ideal");
        skew.samples = vec![0.91, 0.88, 1.2];
        let checks = checks(&[eff.clone(), skew.clone()]);
        for check in &checks {
            assert_eq!(check.met, None, "{check:?}");
            assert!(check.anomaly.is_some());
            assert!(verdict(check).starts_with("measurement anomaly"));
        }
        assert!(checks[0].anomaly.as_ref().unwrap().contains("1.060 > 1"));
        let lines = anomalies(&[eff, skew]);
        assert_eq!(lines.len(), 2);
        assert!(
            lines[0].contains("efficiency above 1 in 2 of 3 rounds"),
            "{lines:?}"
        );
        assert!(
            lines[1].contains("makespan below the ideal in 2 of 3 rounds"),
            "{lines:?}"
        );
    }

    #[test]
    fn impossible_rounds_are_counted_beside_a_possible_median() {
        let mut eff = row("cpu_scaling", "procpool", Lang::Rust, 0.99, "efficiency");
        eff.samples = vec![0.97, 0.99, 1.01];
        let checks = checks(std::slice::from_ref(&eff));
        assert_eq!(checks[0].met, Some(true), "0.99 ≥ 0.985");
        assert!(
            checks[0].measured.contains("1 of 3 rounds impossible"),
            "{:?}",
            checks[0]
        );
        // map_1us: rayon's impossible median spoils the comparison too.
        let rows = vec![
            row("map_1us", "procpool", Lang::Rust, 0.9, "efficiency"),
            row("map_1us", "rayon", Lang::Rust, 1.1, "efficiency"),
        ];
        assert!(checks_anomaly(&rows, "map_1us"));
        let odd = row("latency", "procpool", Lang::Rust, 1e6, "efficiency");
        assert!(impossible(&odd).is_some(), "units decide, not workloads");
        assert_eq!(impossible(&row("x", "y", Lang::Rust, 2.0, "ms")), None);
    }

    fn checks_anomaly(rows: &[Row], workload: &str) -> bool {
        checks(rows)
            .iter()
            .any(|c| c.workload == workload && c.anomaly.is_some())
    }

    #[test]
    fn a_missing_peer_is_not_measured_rather_than_met() {
        let rows = vec![row("latency", "procpool", Lang::Rust, 5.0, "us")];
        let checks = checks(&rows);
        assert_eq!(checks[0].met, None);
        assert_eq!(verdict(&checks[0]), "not measured");
    }
}
