//! The serial loop: the reference for efficiencies, and the floor any pool must beat.

use std::path::PathBuf;

use super::{Backend, Sha512, unsupported};
use crate::BenchError;
use crate::busy::{spin, spin_timed};
use crate::digest::sha512_file;
use crate::workload::Workload;

/// Runs everything on the calling thread.
#[derive(Debug, Default)]
pub struct SerialSystem;

/// The trivial task of `map_tiny`, `latency` and `submit`.
#[inline(never)]
fn add_one(x: u64) -> u64 {
    x + 1
}

impl Backend for SerialSystem {
    fn name(&self) -> &'static str {
        "serial"
    }

    fn supports(&self, workload: Workload) -> bool {
        matches!(
            workload,
            Workload::MapTiny
                | Workload::Map1us
                | Workload::CpuScaling
                | Workload::Skewed
                | Workload::Digest
        )
    }

    fn startup_once(&mut self, _workers: usize) -> Result<(), BenchError> {
        Err(unsupported(self.name(), "startup"))
    }

    fn warm_up(&mut self, _workers: usize) -> Result<(), BenchError> {
        Ok(())
    }

    fn round_trip(&mut self, _x: u64) -> Result<u64, BenchError> {
        Err(unsupported(self.name(), "latency"))
    }

    fn submit_many(&mut self, _n: u64) -> Result<u64, BenchError> {
        Err(unsupported(self.name(), "submit"))
    }

    fn map_add_one(&mut self, n: u64) -> Result<Vec<u64>, BenchError> {
        Ok((0..n).map(add_one).collect())
    }

    fn map_spin(&mut self, items: &[u64]) -> Result<Vec<u64>, BenchError> {
        Ok(items.iter().map(|&loops| spin(loops)).collect())
    }

    fn map_spin_timed(&mut self, items: &[u64]) -> Result<Vec<(u64, u64)>, BenchError> {
        Ok(items.iter().map(|&loops| spin_timed(loops)).collect())
    }

    fn identity(&mut self, _data: Vec<u8>) -> Result<Vec<u8>, BenchError> {
        Err(unsupported(self.name(), "payload"))
    }

    fn digest(&mut self, files: &[PathBuf]) -> Result<Vec<Sha512>, BenchError> {
        files
            .iter()
            .map(|path| {
                sha512_file(path)
                    .map_err(|err| BenchError::io(format!("hashing {}", path.display()), err))
            })
            .collect()
    }
}
