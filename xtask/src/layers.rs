//! The layer check: lower crates never depend on higher ones.
//!
//! The allowed edges between procpool crates (normal and build dependencies):
//! `procpool-ipc` and `procpool-sched` depend on no procpool crate; `procpool-worker`
//! may use ipc and macros; the facade may use everything below it.

use crate::util::{Result, cargo, output};

/// Each crate with the procpool crates it may (transitively) depend on.
const ALLOWED: &[(&str, &[&str])] = &[
    ("procpool-ipc", &[]),
    ("procpool-sched", &[]),
    ("procpool-macros", &[]),
    ("procpool-worker", &["procpool-ipc", "procpool-macros"]),
    (
        "procpool",
        &[
            "procpool-ipc",
            "procpool-sched",
            "procpool-macros",
            "procpool-worker",
        ],
    ),
];

/// Runs `cargo tree` for each layer and fails on any procpool dependency not listed above.
pub(crate) fn run() -> Result {
    let mut problems = Vec::new();
    for (krate, allowed) in ALLOWED {
        let tree = output(cargo().args([
            "tree",
            "--quiet",
            "--package",
            krate,
            "--edges",
            "normal,build",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ]))?;
        for dep in tree
            .lines()
            .filter_map(|line| line.split_whitespace().next())
        {
            let is_ours = dep == "procpool" || dep.starts_with("procpool-");
            if is_ours && dep != *krate && !allowed.contains(&dep) {
                problems.push(format!("{krate} must not depend on {dep}"));
            }
        }
    }
    problems.sort();
    problems.dedup();
    if problems.is_empty() {
        eprintln!("layers: dependency direction holds");
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}
