//! User-level benchmarks of procpool and the library behind the `procpool-bench` runner.
//!
//! The runner (`src/bin/procpool-bench.rs`, started by `cargo xtask bench`) runs the
//! workloads of [`workload::Workload`] on procpool, rayon, a serial loop and Python's pools
//! (`baselines/python_pools.py`), interleaved round by round, and writes a table, a JSON
//! file and a Markdown report with SVG charts. The criterion benches live in `benches/`.
//! `benches/README.md` says what every scenario measures and how to read it.
#![deny(missing_docs)]

pub mod busy;
pub mod collect;
pub mod compare;
pub mod digest;
pub mod machine;
pub mod plot;
pub mod python;
pub mod reference;
pub mod report;
pub mod runner;
pub mod shared_table;
pub mod systems;
pub mod target;
pub mod tasks;
pub mod workload;

/// Why a benchmark step could not produce a figure.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The Python baseline script failed or printed something that is not its JSON.
    #[error("python baseline: {0}")]
    Python(String),
    /// The procpool system could not run the workload.
    #[error("procpool: {0}")]
    Procpool(String),
    /// A result did not match the serial reference: the figure would be meaningless.
    #[error("wrong result from {system} on {workload}: {detail}")]
    WrongResult {
        /// The system that produced it.
        system: String,
        /// The workload it ran.
        workload: &'static str,
        /// What differed.
        detail: String,
    },
    /// Reading or writing a file failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Drawing a chart failed.
    #[error("chart {path}: {message}")]
    Plot {
        /// The chart file.
        path: String,
        /// The plotters error, as text.
        message: String,
    },
}

impl BenchError {
    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}
