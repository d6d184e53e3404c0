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
    self, Backend, ProcpoolSystem, RayonSystem, RoundCtx, SerialSystem, Sha512, SpinOracle,
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
    let oracle = SpinOracle::default();
    let mut collector = Collector::default();
    let mut python_calibration = None;

    let per_round = |w: Workload| {
        let rust = [&serial as &dyn Backend, &procpool, &rayon]
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
            // The busy workloads' serial reference: half of its batches before the pools,
            // half after (A B A), so the reference brackets the pools' runs.
            let mut probe = if workload.needs_serial_reference() && serial.supports(workload) {
                Some(Probe::new(workload, &ctx))
            } else {
                None
            };
            // The Rust pools' samples of this round; busy workloads convert them once the
            // reference is complete.
            let mut pending: Vec<(&'static str, Sample)> = Vec::new();
            if let Some(probe) = &mut probe {
                progress.set_message(format!("{tag}: serial reference"));
                probe.run_half(&mut serial, &oracle, &mut failed, &mut notes);
            } else if serial.supports(workload) {
                progress.set_message(format!("{tag}: serial"));
                if !failed.contains("serial") {
                    match systems::measure(&mut serial, workload, &ctx) {
                        Ok(sample) => pending.push(("serial", sample)),
                        Err(err) => {
                            failed.insert("serial");
                            notes.push(format!("{workload}: serial failed: {err}"));
                        }
                    }
                }
                progress.inc(1);
            }
            // A B A B …, and the order of the pools rotates each round.
            let mut order: Vec<usize> = vec![0, 1, 2];
            order.rotate_left(round % 3);
            for idx in order {
                match idx {
                    0 | 1 => {
                        let system: &mut dyn Backend =
                            if idx == 0 { &mut procpool } else { &mut rayon };
                        if !system.supports(workload) {
                            continue;
                        }
                        let name = system.name();
                        progress.set_message(format!("{tag}: {name}"));
                        let no_reference = probe.as_ref().is_some_and(|p| p.failed);
                        if !failed.contains(name) && !no_reference {
                            match systems::measure(system, workload, &ctx) {
                                Ok(sample) => pending.push((name, sample)),
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
                    for (name, sample) in pending {
                        collector.add(workload.name(), name, Lang::Rust, sample);
                    }
                }
                Some(mut probe) => {
                    progress.set_message(format!("{tag}: serial reference"));
                    probe.run_half(&mut serial, &oracle, &mut failed, &mut notes);
                    progress.inc(1);
                    match probe.reference() {
                        Ok(reference) => {
                            collector.add(
                                workload.name(),
                                "serial",
                                Lang::Rust,
                                reference.serial_sample(),
                            );
                            for (name, raw) in pending {
                                let wall = raw.value / 1e3;
                                let sample = reference.pool_sample(
                                    workload == Workload::Skewed,
                                    config.workers,
                                    wall,
                                    probe.items.len(),
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

/// The serial reference of one round of a busy workload: its items, the two halves of its
/// batches, and the timed batches so far.
#[derive(Debug)]
struct Probe {
    workload: Workload,
    items: Vec<u64>,
    halves: [Vec<Range<usize>>; 2],
    next_half: usize,
    samples: Vec<ProbeSample>,
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
            next_half: 0,
            samples: Vec::new(),
            failed: false,
        }
    }

    /// Times the next half of the batches on the serial loop.
    fn run_half(
        &mut self,
        serial: &mut SerialSystem,
        oracle: &SpinOracle,
        failed: &mut HashSet<&'static str>,
        notes: &mut Vec<String>,
    ) {
        let half = std::mem::take(&mut self.halves[self.next_half.min(1)]);
        self.next_half += 1;
        if self.failed || failed.contains("serial") {
            self.failed = true;
            return;
        }
        match systems::probe_serial(serial, self.workload, &self.items, &half, oracle) {
            Ok(samples) => self.samples.extend(samples),
            Err(err) => {
                self.failed = true;
                if failed.insert("serial") {
                    notes.push(format!("{}: serial failed: {err}", self.workload));
                }
            }
        }
    }

    /// The round's reference, once both halves ran.
    fn reference(&self) -> Result<Reference, String> {
        if self.failed {
            return Err("the serial loop failed".into());
        }
        Reference::new(&self.items, &self.samples).map_err(|err| err.to_string())
    }
}
