//! procpool with default settings: the system under test.

use std::path::PathBuf;

use procpool::{Pool, builtin};

use super::{Backend, Sha512};
use crate::BenchError;
use crate::collect::Sample;
use crate::tasks::{busy_loops, busy_loops_timed, sha512_path, task_cpu};
use crate::workload::{Params, Workload};

/// A `procpool::Pool` with default settings and `workers` worker processes, started once
/// and kept warm across workloads (the `startup` workload starts its own pools).
#[derive(Debug, Default)]
pub struct ProcpoolSystem {
    pool: Option<Pool>,
}

fn failed(what: &str, err: impl std::fmt::Display) -> BenchError {
    BenchError::Procpool(format!("{what}: {err}"))
}

fn build(workers: usize) -> Result<Pool, BenchError> {
    Pool::builder()
        .workers(workers)
        .build()
        .map_err(|err| failed("starting the pool", err))
}

impl ProcpoolSystem {
    fn pool(&self) -> &Pool {
        self.pool
            .as_ref()
            .expect("warm_up runs before every workload")
    }
}

impl Backend for ProcpoolSystem {
    fn name(&self) -> &'static str {
        "procpool"
    }

    fn supports(&self, _workload: Workload) -> bool {
        true
    }

    fn startup_once(&mut self, workers: usize) -> Result<(), BenchError> {
        let pool = build(workers)?;
        let got = pool
            .call(builtin::add_one, 1)
            .map_err(|err| failed("first task", err))?;
        pool.shutdown();
        drop(pool);
        if got == 2 {
            Ok(())
        } else {
            Err(failed("first task", format!("add_one(1) = {got}")))
        }
    }

    fn warm_up(&mut self, workers: usize) -> Result<(), BenchError> {
        if self.pool.is_none() {
            let pool = build(workers)?;
            for outcome in pool.map(builtin::add_one, 0..(workers as u64 * 64)) {
                outcome.map_err(|err| failed("warm-up", err))?;
            }
            self.pool = Some(pool);
        }
        Ok(())
    }

    fn round_trip(&mut self, x: u64) -> Result<u64, BenchError> {
        self.pool()
            .call(builtin::add_one, x)
            .map_err(|err| failed("call", err))
    }

    fn task_cpu(&mut self) -> Result<Option<u32>, BenchError> {
        self.pool()
            .call(task_cpu, 0)
            .map_err(|err| failed("placement probe", err))
    }

    fn submit_many(&mut self, n: u64) -> Result<u64, BenchError> {
        let pool = self.pool();
        let handles: Vec<_> = (0..n).map(|i| pool.submit(builtin::add_one, i)).collect();
        let mut sum = 0_u64;
        for handle in handles {
            sum += handle.result().map_err(|err| failed("submit", err))?;
        }
        Ok(sum)
    }

    fn map_add_one(&mut self, n: u64) -> Result<Vec<u64>, BenchError> {
        self.pool()
            .map(builtin::add_one, 0..n)
            .collect::<Result<_, _>>()
            .map_err(|err| failed("map", err))
    }

    fn map_spin(&mut self, items: &[u64]) -> Result<Vec<u64>, BenchError> {
        self.pool()
            .map(busy_loops, items.iter().copied())
            .collect::<Result<_, _>>()
            .map_err(|err| failed("map", err))
    }

    fn map_spin_timed(&mut self, items: &[u64]) -> Result<Vec<(u64, u64)>, BenchError> {
        self.pool()
            .map(busy_loops_timed, items.iter().copied())
            .collect::<Result<_, _>>()
            .map_err(|err| failed("map", err))
    }

    fn identity(&mut self, data: Vec<u8>) -> Result<Vec<u8>, BenchError> {
        self.pool()
            .call(builtin::echo_bytes, data)
            .map_err(|err| failed("echo_bytes", err))
    }

    fn shared_table(&mut self, params: &Params) -> Result<Sample, BenchError> {
        crate::shared_table::run(self.pool(), params)
    }

    fn digest(&mut self, files: &[PathBuf]) -> Result<Vec<Sha512>, BenchError> {
        let paths = files.iter().map(|path| path.to_string_lossy().into_owned());
        self.pool()
            .map_unordered(sha512_path, paths)
            .map(|(_, outcome)| outcome.map_err(|err| failed("map_unordered", err)))
            .collect()
    }
}
