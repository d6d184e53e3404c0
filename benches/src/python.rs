//! Runs `baselines/python_pools.py` with `python3` and reads its JSON back.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::BenchError;
use crate::collect::Sample;
use crate::workload::Workload;

/// The Python baseline script and the interpreter that runs it.
#[derive(Debug, Clone)]
pub struct PythonBaseline {
    /// The interpreter (`python3`).
    pub interpreter: String,
    /// Path of `python_pools.py`.
    pub script: PathBuf,
}

/// What one invocation of the script returned.
#[derive(Debug, Clone)]
pub struct PythonRound {
    /// `(system, sample)` in the order the script ran them.
    pub samples: Vec<(String, Sample)>,
    /// The script's loop calibration (`calibration` object), kept verbatim.
    pub calibration: Value,
    /// The whole JSON document, for the record.
    pub raw: Value,
}

impl PythonBaseline {
    /// The script shipped in this package, run with `interpreter` (`python3`); `None` when
    /// the interpreter does not start (the caller skips the Python rows with a note).
    pub fn find(interpreter: &str) -> Option<Self> {
        let ok = Command::new(interpreter)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        ok.then(|| Self {
            interpreter: interpreter.into(),
            script: Path::new(env!("CARGO_MANIFEST_DIR")).join("baselines/python_pools.py"),
        })
    }

    /// Runs one round of `workload` on every Python system.
    pub fn run_round(
        &self,
        workload: Workload,
        workers: usize,
        quick: bool,
        tree: Option<&Path>,
    ) -> Result<PythonRound, BenchError> {
        let mut cmd = Command::new(&self.interpreter);
        cmd.arg(&self.script)
            .args(["--workers", &workers.to_string()])
            .args(["--workload", workload.name()])
            .args(["--repeat", "1"]);
        if quick {
            cmd.arg("--quick");
        }
        if let Some(tree) = tree {
            cmd.arg("--tree").arg(tree);
        }
        let out = cmd.stdin(Stdio::null()).output().map_err(|err| {
            BenchError::Python(format!("could not start {}: {err}", self.interpreter))
        })?;
        if !out.status.success() {
            return Err(BenchError::Python(format!(
                "{} exited with {}: {}",
                self.script.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        parse_round(&String::from_utf8_lossy(&out.stdout))
    }
}

/// Parses the script's JSON into samples.
pub fn parse_round(text: &str) -> Result<PythonRound, BenchError> {
    let raw: Value = serde_json::from_str(text.trim())
        .map_err(|err| BenchError::Python(format!("output is not JSON: {err}")))?;
    let rows = raw
        .get("rows")
        .and_then(Value::as_array)
        .ok_or_else(|| BenchError::Python("output has no `rows` array".into()))?;
    let mut samples = Vec::with_capacity(rows.len());
    for row in rows {
        let field = |name: &str| {
            row.get(name)
                .ok_or_else(|| BenchError::Python(format!("row without `{name}`: {row}")))
        };
        let system = field("system")?.as_str().unwrap_or_default().to_owned();
        let value = field("value")?
            .as_f64()
            .ok_or_else(|| BenchError::Python(format!("non-numeric value in {row}")))?;
        let unit = field("unit")?.as_str().unwrap_or_default();
        let mut sample = Sample::new(value, unit);
        if let Some(extra) = row.get("extra").and_then(Value::as_object) {
            for (key, value) in extra {
                if let Some(value) = value.as_f64() {
                    sample = sample.with(key, value);
                }
            }
        }
        samples.push((system, sample));
    }
    Ok(PythonRound {
        samples,
        calibration: raw.get("calibration").cloned().unwrap_or(Value::Null),
        raw,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rows_and_extras() {
        let text = r#"{"calibration": {"ns_per_iter": 100.0}, "rows": [
            {"workload": "skewed", "system": "ProcessPoolExecutor cs=1", "value": 1.4,
             "unit": "x ideal", "min": 1.4, "max": 1.4, "samples": [1.4],
             "extra": {"makespan_ms": 411.5, "ideal_ms": 290.0}}]}"#;
        let round = parse_round(text).unwrap();
        assert_eq!(round.samples.len(), 1);
        let (system, sample) = &round.samples[0];
        assert_eq!(system, "ProcessPoolExecutor cs=1");
        assert_eq!(sample.unit, "x ideal");
        assert_eq!(sample.value, 1.4);
        assert!(sample.extra.contains(&("makespan_ms".to_owned(), 411.5)));
        assert_eq!(round.calibration["ns_per_iter"], 100.0);
    }

    /// Runs the real script (CI has Python 3.11) on its cheapest workload and reads it back.
    #[test]
    fn the_script_runs_and_its_output_parses() {
        let py = PythonBaseline::find("python3")
            .expect("python3 is on every development and CI machine");
        let round = py
            .run_round(Workload::Startup, 1, true, None)
            .expect("the script runs");
        let systems: Vec<&str> = round.samples.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(
            systems,
            [
                "ProcessPoolExecutor fork",
                "ProcessPoolExecutor spawn",
                "multiprocessing.Pool fork"
            ]
        );
        assert!(
            round
                .samples
                .iter()
                .all(|(_, s)| s.unit == "ms" && s.value > 0.0)
        );
        assert!(round.calibration["ns_per_iter"].as_f64().unwrap() > 0.0);
        assert_eq!(round.raw["workers"], 1);
    }

    /// The script's serial reference: the serial row carries the per-item costs on both
    /// clocks, every pool row an efficiency on each basis and on the inside reference
    /// (values are not judged: no speed is asserted).
    #[test]
    fn the_scripts_busy_rows_carry_the_serial_reference() {
        let py = PythonBaseline::find("python3")
            .expect("python3 is on every development and CI machine");
        let round = py
            .run_round(Workload::CpuScaling, 1, true, None)
            .expect("the script runs");
        let (system, serial) = &round.samples[0];
        assert_eq!(system, "python serial");
        assert_eq!(serial.unit, "ms");
        let extra = |s: &Sample, key: &str| {
            s.extra
                .iter()
                .find(|(k, _)| k == key)
                .map(|&(_, v)| v)
                .unwrap_or_else(|| panic!("no `{key}` in {s:?}"))
        };
        assert_eq!(extra(serial, "n"), 16.0);
        // One batch per task; three slices of half a pass each: before the first pool,
        // between the two, after the second.
        assert_eq!(
            extra(serial, "item0_batches"),
            24.0,
            "one batch per task, 1.5 passes"
        );
        assert!(extra(serial, "item0_cpu_us") > 0.0);
        assert!(extra(serial, "item0_wall_us") > 0.0);
        let pools = &round.samples[1..];
        assert_eq!(
            pools.len(),
            2,
            "ProcessPoolExecutor cs=1 and multiprocessing.Pool"
        );
        for (system, sample) in pools {
            assert_eq!(sample.unit, "efficiency", "{system}");
            assert!(sample.value > 0.0, "{system}");
            assert!(extra(sample, "efficiency_wall") > 0.0, "{system}");
            // The items' CPU time inside the one worker fits in the pool's wall time.
            let inside = extra(sample, "efficiency_inside");
            assert!(inside > 0.0 && inside <= 1.0 + 1e-9, "{system}: {inside}");
            assert!(extra(sample, "inside_over_serial") > 0.0, "{system}");
        }
    }

    #[test]
    fn a_missing_interpreter_is_not_found() {
        assert!(PythonBaseline::find("/nonexistent/python3").is_none());
        assert!(
            PythonBaseline::find("false").is_none(),
            "one that fails `--version`"
        );
    }

    #[test]
    fn rejects_output_that_is_not_the_scripts() {
        assert!(parse_round("Traceback (most recent call last):").is_err());
        assert!(parse_round(r#"{"rows": [{"system": "x"}]}"#).is_err());
    }
}
