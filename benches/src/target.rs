//! The targets of issue 7, checked against a run: met or missed, and by how much.
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
            }
        }
        _ => TargetCheck {
            workload,
            target,
            measured: "not measured".into(),
            met: None,
            fraction_of_target: None,
        },
    }
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
    out.push(check(
        "map_1us",
        "efficiency within 5% of rayon",
        procpool("map_1us")
            .zip(find(rows, "map_1us", "rayon"))
            .map(|(ours, rayon)| {
                let ratio = ours.value / rayon.value;
                (
                    ratio,
                    format!(
                        "{:.3} vs rayon {:.3} ({ratio:.2}×)",
                        ours.value, rayon.value
                    ),
                )
            }),
        0.95,
        true,
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
    out.push(check(
        "cpu_scaling",
        "efficiency ≥ 0.985",
        procpool("cpu_scaling").map(|r| (r.value, format!("{:.3}", r.value))),
        0.985,
        true,
    ));
    out.push(check(
        "skewed",
        "makespan ≤ 1.03 × ideal",
        procpool("skewed").map(|r| (r.value, format!("{:.2} × ideal", r.value))),
        1.03,
        false,
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
    out.retain(|c| rows.iter().any(|r| r.workload == c.workload));
    out
}

/// A warning when the machine visibly lacked free cores: rayon (in-process threads, no
/// transport at all) is the yardstick; below 0.9 efficiency on `cpu_scaling`, every parallel
/// figure of the run is depressed by whatever else was running.
pub fn contention_warning(rows: &[Row]) -> Option<String> {
    let rayon = find(rows, "cpu_scaling", "rayon")?;
    (rayon.value < 0.9).then(|| {
        format!(
            "the machine was busy: rayon reached only {:.2} efficiency on `cpu_scaling` \
             (about 1.0 on an idle machine), so parallel figures and targets that need free \
             cores (efficiency, makespan, throughput) are depressed for every system; compare \
             systems within a round rather than with the absolute targets",
            rayon.value
        )
    })
}

/// "met", or "missed: at 40% of the target".
pub fn verdict(check: &TargetCheck) -> String {
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
    use std::collections::BTreeMap;

    use super::*;

    fn row(workload: &str, system: &str, lang: Lang, value: f64, unit: &str) -> Row {
        Row {
            workload: workload.into(),
            system: system.into(),
            lang,
            value,
            unit: unit.into(),
            min: value,
            max: value,
            samples: vec![value],
            extra: BTreeMap::new(),
        }
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
    fn contention_is_flagged_from_rayons_efficiency() {
        let busy = vec![row("cpu_scaling", "rayon", Lang::Rust, 0.5, "efficiency")];
        assert!(contention_warning(&busy).unwrap().contains("0.50"));
        let idle = vec![row("cpu_scaling", "rayon", Lang::Rust, 0.99, "efficiency")];
        assert_eq!(contention_warning(&idle), None);
        assert_eq!(contention_warning(&[]), None);
    }

    #[test]
    fn a_missing_peer_is_not_measured_rather_than_met() {
        let rows = vec![row("latency", "procpool", Lang::Rust, 5.0, "us")];
        let checks = checks(&rows);
        assert_eq!(checks[0].met, None);
        assert_eq!(verdict(&checks[0]), "not measured");
    }
}
