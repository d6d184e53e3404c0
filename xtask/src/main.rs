//! `cargo xtask`: project automation that needs nothing but cargo. See docs/ARCHITECTURE.md.
//!
//! `main` only dispatches; each task lives in its own module.

mod bench;
mod ci;
mod layers;
mod tidy;
mod util;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (task, rest) = args
        .split_first()
        .map_or(("help", &[][..]), |(task, rest)| (task.as_str(), rest));
    let res = match task {
        "ci" => ci::run(rest),
        "bench" => bench::run(rest),
        "tidy" => tidy::run(),
        "layers" => layers::run(),
        "loom" => ci::loom(rest),
        _ => {
            eprintln!(
                "usage: cargo xtask <task>\n\n\
                 tasks:\n  \
                 ci [--no-release] [--no-clippy]  fmt, tidy, layers, clippy -D warnings, fuzz check, loom, tests (debug and release), docs\n  \
                 bench [--quick] [--save NAME] [--compare NAME] [WORKLOAD...]\n                               \
                 procpool vs rayon, serial and Python pools (report in target/procpool-bench)\n  \
                 bench --criterion [-- ARGS]   the criterion benches of every crate\n  \
                 tidy                          repository hygiene checks (also a #[test])\n  \
                 layers                        prove the crate dependency direction\n  \
                 loom [--debug]                run the procpool-ipc loom models (release unless --debug)"
            );
            return ExitCode::from(2);
        }
    };
    util::report(res)
}
