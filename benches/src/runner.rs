//! The interleaved run: every workload, round by round, every system once per round.

use std::collections::HashSet;
use std::ops::Range;

use indicatif::ProgressBar;
use serde_json::Value;

use crate::BenchError;
use crate::busy::Calibration;
use crate::collect::{Collector, Lang, Row, Sample};
use crate::digest::Tree;
use crate::python::PythonBaseline;
use crate::reference::{self, ProbeSample, Reference};
use crate::systems::{
    self, Backend, FutexPair, ProcpoolSystem, RayonSystem, RoundCtx, SerialSystem, Sha512,
    SpinOracle,
};
use crate::workload::{Params, Workload};

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Worker processes (and rayon threads, and Python workers).
    pub workers: usize,
    /// Smaller sizes, fewer rounds: under two minutes.
    pub quick: bool,
    /// Rounds per workload.
    pub repeat: usize,
    /// The workloads, in order.
    pub workloads: Vec<Workload>,
    /// Whether to run the Python baselines.
    pub python: bool,
    /// The interpreter that runs them (`python3`).
    pub python_interpreter: String,
}

/// Everything a run produced.
#[derive(Debug)]
pub struct Outcome {
    /// The configuration it ran with.
    pub config: Config,
    /// The sizes it ran with.
    pub params: Params,
    /// One row per (workload, system).
    pub rows: Vec<Row>,
    /// Skipped systems, failures and other remarks, in order.
    pub notes: Vec<String>,
    /// The Rust loop calibration.
    pub rust_calibration: Calibration,
    /// The Python loop calibration of the last Python round (each round calibrates anew).
    pub python_calibration: Option<Value>,
    /// The digest tree's size, when `digest` ran: (files, MiB).
    pub tree: Option<(usize, f64)>,
    /// Wall time spent on each workload, all systems and rounds, in seconds.
    pub durations: Vec<(Workload, f64)>,
}

/// Runs every workload of `config`, advancing `progress` by one per system-round.
pub fn run(config: Config, progress: &ProgressBar) -> Result<Outcome, BenchError> {
    let params = Params::new(config.quick);
    let mut notes = Vec::new();
    progress.set_message("calibrating the busy loop");
    let cal = Calibration::measure();

    let python = if config.python {
        let found = PythonBaseline::find(&config.python_interpreter);
        if found.is_none() {
            notes.push(format!(
                "`{}` does not start: the Python rows are skipped",
                config.python_interpreter
            ));
        }
        found
    } else {
        notes.push("--no-python: the Python rows are skipped".to_owned());
        None
    };

    let mut serial = SerialSystem;
    let tree = if config.workloads.contains(&Workload::Digest) {
        progress.set_message("generating the digest tree");
        let tree = Tree::generate(params.digest_files, params.digest_mib)?;
        // The serial pass gives the expected fingerprint and warms the page cache.
        let digests = serial.digest(&tree.files)?;
        let fingerprint = systems::xor_digests(&digests);
        Some((tree, fingerprint))
    } else {
        None
    };

    let mut procpool = ProcpoolSystem::default();
    let mut rayon = RayonSystem::default();
    let mut futex = FutexPair::default();
    let oracle = SpinOracle::default();
    let mut collector = Collector::default();
    let mut python_calibration = None;

    let per_round = |w: Workload| {
        let rust = [&serial as &dyn Backend, &procpool, &rayon, &futex]
            .iter()
            .filter(|s| s.supports(w))
            .count();
        (rust + usize::from(python.is_some() && w.has_python())) as u64
    };
    progress.set_length(
        config
            .workloads
            .iter()
            .map(|&w| per_round(w) * config.repeat as u64)
            .sum(),
    );

    let mut durations = Vec::new();
    for &workload in &config.workloads {
        let workload_start = std::time::Instant::now();
        // Systems that failed on this workload sit out its remaining rounds.
        let mut failed: HashSet<&'static str> = HashSet::new();
        for round in 0..config.repeat {
            let ctx = RoundCtx {
                workers: config.workers,
                params: &params,
                cal: &cal,
                tree: tree.as_ref().map(|(tree, fp): &(Tree, Sha512)| (tree, *fp)),
                oracle: &oracle,
            };
            let tag = format!("{workload} round {}/{}", round + 1, config.repeat);
            // The busy workloads' serial reference: a slice of its batches (half a pass,
            // even and odd batches in turn) right before and right after each Rust pool, so
            // each pool's reference brackets its own run (S P S R S), and the round's serial
            // row folds every slice.
            let mut probe = if workload.needs_serial_reference() && serial.supports(workload) {
                Some(Probe::new(workload, &ctx))
            } else {
                None
            };
            // The Rust pools' samples of this round; busy workloads convert them once the
            // reference is complete.
            let mut pending: Vec<(&'static str, Sample, Range<usize>)> = Vec::new();
            if probe.is_none() && serial.supports(workload) {
                progress.set_message(format!("{tag}: serial"));
                if !failed.contains("serial") {
                    match systems::measure(&mut serial, workload, &ctx) {
                        Ok(sample) => pending.push(("serial", sample, 0..0)),
                        Err(err) => {
                            failed.insert("serial");
                            notes.push(format!("{workload}: serial failed: {err}"));
                        }
                    }
                }
                progress.inc(1);
            }
            // A B A B …, and the order of the pools rotates each round.
            let mut order: Vec<usize> = vec![0, 1, 2, 3];
            order.rotate_left(round % 4);
            for idx in order {
                match idx {
                    0 | 1 | 3 => {
                        let system: &mut dyn Backend = match idx {
                            0 => &mut procpool,
                            1 => &mut rayon,
                            _ => &mut futex,
                        };
                        if !system.supports(workload) {
                            continue;
                        }
                        let name = system.name();
                        if let Some(probe) = probe.as_mut().filter(|p| !p.just_sliced) {
                            progress.set_message(format!("{tag}: serial reference"));
                            probe.run_slice(&mut serial, &oracle, &mut failed, &mut notes);
                        }
                        progress.set_message(format!("{tag}: {name}"));
                        let no_reference = probe.as_ref().is_some_and(|p| p.failed);
                        if !failed.contains(name) && !no_reference {
                            let before = probe.as_ref().map_or(0, |p| p.slices.len());
                            let res = systems::measure(system, workload, &ctx);
                            if let Some(probe) = probe.as_mut() {
                                progress.set_message(format!("{tag}: serial reference"));
                                probe.run_slice(&mut serial, &oracle, &mut failed, &mut notes);
                            }
                            // The slices right before and right after this pool's run.
                            let slices = before.saturating_sub(1)..before + 1;
                            match res {
                                Ok(sample) => pending.push((name, sample, slices)),
                                Err(err) => {
                                    failed.insert(name);
                                    notes.push(format!("{workload}: {name} failed: {err}"));
                                }
                            }
                        }
                        progress.inc(1);
                    }
                    _ => {
                        let Some(py) = python.as_ref().filter(|_| workload.has_python()) else {
                            continue;
                        };
                        progress.set_message(format!("{tag}: python"));
                        if let Some(probe) = probe.as_mut() {
                            probe.just_sliced = false;
                        }
                        if !failed.contains("python") {
                            let tree_path = ctx.tree.map(|(tree, _)| tree.path());
                            match py.run_round(workload, config.workers, config.quick, tree_path) {
                                Ok(round_out) => {
                                    for (system, sample) in round_out.samples {
                                        let system = if system == "python serial" {
                                            system
                                        } else {
                                            format!("py {system}")
                                        };
                                        collector.add(
                                            workload.name(),
                                            &system,
                                            Lang::Python,
                                            sample,
                                        );
                                    }
                                    python_calibration = Some(round_out.calibration);
                                }
                                Err(err) => {
                                    failed.insert("python");
                                    notes.push(format!("{workload}: python failed: {err}"));
                                }
                            }
                        }
                        progress.inc(1);
                    }
                }
            }
            match probe {
                None => {
                    for (name, sample, _) in pending {
                        collector.add(workload.name(), name, Lang::Rust, sample);
                    }
                }
                Some(mut probe) => {
                    // At least one full pass per round, even if no pool ran.
                    while probe.slices.len() < 2 && !probe.failed {
                        progress.set_message(format!("{tag}: serial reference"));
                        probe.run_slice(&mut serial, &oracle, &mut failed, &mut notes);
                    }
                    progress.inc(1);
                    match probe.reference(0..probe.slices.len()) {
                        Ok(reference) => {
                            collector.add(
                                workload.name(),
                                "serial",
                                Lang::Rust,
                                reference.serial_sample(),
                            );
                            for (name, raw, slices) in pending {
                                let wall = raw.value / 1e3;
                                let inside = raw_extra(&raw, "inside_work_ms").map(|work| {
                                    reference::Inside {
                                        work: work / 1e3,
                                        longest: raw_extra(&raw, "inside_longest_ms")
                                            .unwrap_or(0.0)
                                            / 1e3,
                                    }
                                });
                                // This pool's own bracketing slices; the round's whole
                                // reference should they not form one (cannot happen).
                                let own = probe.reference(slices);
                                let sample = own.as_ref().unwrap_or(&reference).pool_sample(
                                    workload == Workload::Skewed,
                                    config.workers,
                                    wall,
                                    probe.items.len(),
                                    inside,
                                );
                                collector.add(workload.name(), name, Lang::Rust, sample);
                            }
                        }
                        Err(err) => {
                            if failed.insert("serial reference") {
                                notes.push(format!(
                                    "{workload}: no serial reference ({err}): the Rust pools' \
                                     figures of that round are left out"
                                ));
                            }
                        }
                    }
                }
            }
        }
        durations.push((workload, workload_start.elapsed().as_secs_f64()));
    }
    progress.finish_with_message("done");
    let mut rows = collector.rows();
    crate::collect::sort_rows(&mut rows);
    Ok(Outcome {
        config,
        params,
        rows,
        notes,
        rust_calibration: cal,
        python_calibration,
        tree: tree
            .as_ref()
            .map(|(tree, _)| (tree.files.len(), tree.mib())),
        durations,
    })
}

/// A named extra of a raw sample.
fn raw_extra(sample: &Sample, key: &str) -> Option<f64> {
    sample
        .extra
        .iter()
        .find(|(name, _)| name == key)
        .map(|&(_, value)| value)
}

/// The serial reference of one round of a busy workload: its items, the two halves of its
/// batches, and the slices timed so far (each one half, even and odd in turn).
#[derive(Debug)]
struct Probe {
    workload: Workload,
    items: Vec<u64>,
    halves: [Vec<Range<usize>>; 2],
    /// The timed batches of each slice, in the order they ran.
    slices: Vec<Vec<ProbeSample>>,
    /// Whether the last thing the round ran was a slice (so the next pool needs no slice
    /// before it: that one brackets both).
    just_sliced: bool,
    failed: bool,
}

impl Probe {
    fn new(workload: Workload, ctx: &RoundCtx<'_>) -> Self {
        let items = systems::spin_items(workload, ctx);
        let (first, second) =
            reference::halves(reference::batches(&items, ctx.cal, reference::MIN_BATCH));
        Self {
            workload,
            items,
            halves: [first, second],
            slices: Vec::new(),
            just_sliced: false,
            failed: false,
        }
    }

    /// Times the next slice (the other half of the batches than the last one) serially.
    fn run_slice(
        &mut self,
        serial: &mut SerialSystem,
        oracle: &SpinOracle,
        failed: &mut HashSet<&'static str>,
        notes: &mut Vec<String>,
    ) {
        self.just_sliced = true;
        if self.failed || failed.contains("serial") {
            self.failed = true;
            return;
        }
        let half = &self.halves[self.slices.len() % 2];
        match systems::probe_serial(serial, self.workload, &self.items, half, oracle) {
            Ok(samples) => self.slices.push(samples),
            Err(err) => {
                self.failed = true;
                if failed.insert("serial") {
                    notes.push(format!("{}: serial failed: {err}", self.workload));
                }
            }
        }
    }

    /// The reference from the slices in `range` (two adjacent slices make one full pass).
    fn reference(&self, range: Range<usize>) -> Result<Reference, String> {
        if self.failed {
            return Err("the serial loop failed".into());
        }
        let samples: Vec<ProbeSample> = self
            .slices
            .get(range)
            .unwrap_or_default()
            .iter()
            .flatten()
            .copied()
            .collect();
        Reference::new(&self.items, &samples).map_err(|err| err.to_string())
    }
}
