//! `cargo xtask bench [args]`: the procpool-vs-peers comparison, or the criterion benches.
//!
//! - `cargo xtask bench [ARGS]` runs `cargo run --release -p procpool-benches --bin
//!   procpool-bench -- [ARGS]` (see `benches/README.md`; `--help` lists the flags);
//! - `cargo xtask bench --criterion [ARGS]` runs `cargo bench --workspace [ARGS]`: every
//!   crate's criterion benches (arguments after `--` reach each bench binary).

use crate::util::{Result, cargo, run as run_cmd};

/// Dispatches to the comparison runner or to criterion.
pub(crate) fn run(args: &[String]) -> Result {
    if let Some(pos) = args.iter().position(|arg| arg == "--criterion") {
        let rest: Vec<&String> = args
            .iter()
            .enumerate()
            .filter(|&(idx, _)| idx != pos)
            .map(|(_, arg)| arg)
            .collect();
        return run_cmd(cargo().args(["bench", "--workspace"]).args(rest));
    }
    run_cmd(
        cargo()
            .args([
                "run",
                "--release",
                "-p",
                "procpool-benches",
                "--bin",
                "procpool-bench",
                "--",
            ])
            .args(args),
    )
}
