//! The `digest` workload's file tree and its SHA-512 task body.
//!
//! The runner generates the tree once in a temporary directory and passes its path to the
//! Python script, so both sides hash the same bytes from a warm page cache. The size pattern
//! is the one `generate_tree` in `baselines/python_pools.py` uses for stand-alone runs.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha512};

use crate::BenchError;
use crate::busy::{LCG_ADD, LCG_MUL};

/// A generated tree of files; removed on drop.
#[derive(Debug)]
pub struct Tree {
    dir: tempfile::TempDir,
    /// Every file, sorted.
    pub files: Vec<PathBuf>,
    /// Sum of the file sizes.
    pub total_bytes: u64,
}

impl Tree {
    /// Writes `files` files of pseudo-random bytes, `mib` MiB in all, 100 per directory.
    pub fn generate(files: usize, mib: usize) -> Result<Self, BenchError> {
        let dir = tempfile::Builder::new()
            .prefix("procpool-bench-tree-")
            .tempdir()
            .map_err(|err| BenchError::io("creating the digest tree", err))?;
        let sizes = file_sizes(files, (mib as u64) << 20);
        let mut block = vec![0u8; 1 << 20];
        let mut state: u64 = 0x1234_5678_9ABC_DEF1;
        for chunk in block.chunks_exact_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes());
        }
        let mut paths = Vec::with_capacity(files);
        for (idx, &size) in sizes.iter().enumerate() {
            let sub = dir.path().join(format!("d{:03}", idx / 100));
            fs::create_dir_all(&sub)
                .map_err(|err| BenchError::io("creating a tree folder", err))?;
            let path = sub.join(format!("f{idx:05}.bin"));
            let mut file = fs::File::create(&path)
                .map_err(|err| BenchError::io(format!("creating {}", path.display()), err))?;
            let mut left = size as usize;
            // Vary the start so files differ from each other.
            let mut offset = idx * 4099 % block.len();
            while left > 0 {
                let take = left.min(block.len() - offset);
                file.write_all(&block[offset..offset + take])
                    .map_err(|err| BenchError::io(format!("writing {}", path.display()), err))?;
                left -= take;
                offset = 0;
            }
            paths.push(path);
        }
        paths.sort();
        Ok(Self {
            dir,
            files: paths,
            total_bytes: sizes.iter().sum(),
        })
    }

    /// The root folder.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Total size in MiB.
    pub fn mib(&self) -> f64 {
        self.total_bytes as f64 / f64::from(1u32 << 20)
    }
}

/// Sizes between about a quarter and 1.75 times the average, summing exactly to `total`.
pub fn file_sizes(files: usize, total: u64) -> Vec<u64> {
    if files == 0 {
        return Vec::new();
    }
    let avg = total / files as u64;
    let mut state: u64 = 0x243F_6A88_85A3_08D3;
    let mut sizes: Vec<u64> = (0..files)
        .map(|_| {
            state = state.wrapping_mul(LCG_MUL).wrapping_add(LCG_ADD);
            avg / 4 + (state >> 11) % (avg * 3 / 2).max(1)
        })
        .collect();
    // Scale to the exact total; the rounding remainder goes to the last file.
    let raw_sum: u64 = sizes.iter().sum::<u64>().max(1);
    for size in &mut sizes {
        *size = (u128::from(*size) * u128::from(total) / u128::from(raw_sum)) as u64;
    }
    let sum: u64 = sizes.iter().sum();
    let last = sizes.len() - 1;
    sizes[last] += total - sum;
    sizes
}

/// SHA-512 of a whole file (read at once, as the Python side does).
pub fn sha512_file(path: &Path) -> std::io::Result<[u8; 64]> {
    let data = fs::read(path)?;
    Ok(Sha512::digest(&data).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_sum_to_the_total_and_vary() {
        let sizes = file_sizes(2000, 256 << 20);
        assert_eq!(sizes.len(), 2000);
        assert_eq!(sizes.iter().sum::<u64>(), 256 << 20);
        let avg = (256u64 << 20) / 2000;
        assert!(sizes[..1999].iter().all(|&s| s >= avg / 5 && s < avg * 2));
        assert_ne!(sizes[0], sizes[1]);
    }

    #[test]
    fn generated_tree_matches_its_description() {
        let tree = Tree::generate(12, 1).unwrap();
        assert_eq!(tree.files.len(), 12);
        let on_disk: u64 = tree
            .files
            .iter()
            .map(|p| fs::metadata(p).unwrap().len())
            .sum();
        assert_eq!(on_disk, tree.total_bytes);
        assert_eq!(tree.total_bytes, 1 << 20);
        let a = sha512_file(&tree.files[0]).unwrap();
        let b = sha512_file(&tree.files[1]).unwrap();
        assert_ne!(a, b);
    }
}
