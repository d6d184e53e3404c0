//! rayon: in-process threads, the speed a process pool aims to come close to.

use std::path::PathBuf;
use std::sync::mpsc;

use rayon::prelude::*;

use super::{Backend, Sha512, unsupported};
use crate::BenchError;
use crate::busy::{spin, spin_timed};
use crate::digest::sha512_file;
use crate::workload::Workload;

/// A dedicated `rayon::ThreadPool` with as many threads as the pool has workers.
#[derive(Debug, Default)]
pub struct RayonSystem {
    pool: Option<rayon::ThreadPool>,
}

#[inline(never)]
fn add_one(x: u64) -> u64 {
    x + 1
}

fn build(workers: usize) -> Result<rayon::ThreadPool, BenchError> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(workers)
        .build()
        .map_err(|err| BenchError::Procpool(format!("rayon pool: {err}")))
}

impl RayonSystem {
    fn pool(&self) -> &rayon::ThreadPool {
        self.pool
            .as_ref()
            .expect("warm_up runs before every workload")
    }
}

impl Backend for RayonSystem {
    fn name(&self) -> &'static str {
        "rayon"
    }

    fn supports(&self, workload: Workload) -> bool {
        // A buffer handed to a thread is moved, not copied: `payload` would measure nothing.
        workload != Workload::Payload && workload != Workload::SharedTable
    }

    fn startup_once(&mut self, workers: usize) -> Result<(), BenchError> {
        let pool = build(workers)?;
        let got = pool.install(|| add_one(std::hint::black_box(1)));
        drop(pool);
        assert_eq!(got, 2);
        Ok(())
    }

    fn warm_up(&mut self, workers: usize) -> Result<(), BenchError> {
        if self.pool.is_none() {
            let pool = build(workers)?;
            pool.install(|| {
                (0..workers * 64)
                    .into_par_iter()
                    .map(|i| add_one(i as u64))
                    .sum::<u64>()
            });
            self.pool = Some(pool);
        }
        Ok(())
    }

    fn round_trip(&mut self, x: u64) -> Result<u64, BenchError> {
        Ok(self.pool().install(|| add_one(x)))
    }

    fn task_cpu(&mut self) -> Result<Option<u32>, BenchError> {
        Ok(self.pool().install(super::current_cpu))
    }

    fn submit_many(&mut self, n: u64) -> Result<u64, BenchError> {
        let (tx, rx) = mpsc::channel();
        for i in 0..n {
            let tx = tx.clone();
            self.pool().spawn(move || {
                // The receiver outlives every sender: it is drained below.
                let _ = tx.send(add_one(i));
            });
        }
        drop(tx);
        Ok(rx.iter().sum())
    }

    fn map_add_one(&mut self, n: u64) -> Result<Vec<u64>, BenchError> {
        Ok(self
            .pool()
            .install(|| (0..n).into_par_iter().map(add_one).collect()))
    }

    fn map_spin(&mut self, items: &[u64]) -> Result<Vec<u64>, BenchError> {
        Ok(self
            .pool()
            .install(|| items.par_iter().map(|&loops| spin(loops)).collect()))
    }

    fn map_spin_timed(&mut self, items: &[u64]) -> Result<Vec<(u64, u64)>, BenchError> {
        Ok(self
            .pool()
            .install(|| items.par_iter().map(|&loops| spin_timed(loops)).collect()))
    }

    fn identity(&mut self, _data: Vec<u8>) -> Result<Vec<u8>, BenchError> {
        Err(unsupported(self.name(), "payload"))
    }

    fn digest(&mut self, files: &[PathBuf]) -> Result<Vec<Sha512>, BenchError> {
        self.pool().install(|| {
            files
                .par_iter()
                .map(|path| {
                    sha512_file(path)
                        .map_err(|err| BenchError::io(format!("hashing {}", path.display()), err))
                })
                .collect()
        })
    }
}
