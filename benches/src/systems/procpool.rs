//! procpool with default settings: the system under test.

use std::path::PathBuf;

use super::{Backend, Sha512};
use crate::BenchError;
use crate::workload::Workload;

/// A `procpool::Pool` with default settings and `workers` worker processes.
#[derive(Debug, Default)]
pub struct ProcpoolSystem {
    _private: (),
}

fn not_ready() -> BenchError {
    BenchError::Procpool(
        "the procpool facade (Pool, submit, map) is not available in crates/procpool yet".into(),
    )
}

impl Backend for ProcpoolSystem {
    fn name(&self) -> &'static str {
        "procpool"
    }

    fn supports(&self, _workload: Workload) -> bool {
        true
    }

    fn startup_once(&mut self, _workers: usize) -> Result<(), BenchError> {
        Err(not_ready())
    }

    fn warm_up(&mut self, _workers: usize) -> Result<(), BenchError> {
        Err(not_ready())
    }

    fn round_trip(&mut self, _x: u64) -> Result<u64, BenchError> {
        Err(not_ready())
    }

    fn submit_many(&mut self, _n: u64) -> Result<u64, BenchError> {
        Err(not_ready())
    }

    fn map_add_one(&mut self, _n: u64) -> Result<Vec<u64>, BenchError> {
        Err(not_ready())
    }

    fn map_spin(&mut self, _items: &[u64]) -> Result<Vec<u64>, BenchError> {
        Err(not_ready())
    }

    fn identity(&mut self, _data: Vec<u8>) -> Result<Vec<u8>, BenchError> {
        Err(not_ready())
    }

    fn digest(&mut self, _files: &[PathBuf]) -> Result<Vec<Sha512>, BenchError> {
        Err(not_ready())
    }
}
