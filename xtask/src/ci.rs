//! `cargo xtask ci`: everything CI checks, so a local run and a CI run are the same thing.

use crate::util::{self, Result, cargo};

/// Runs the checks in order of cost: the cheapest failure is reported first.
pub(crate) fn run(args: &[String]) -> Result {
    let release = !args.iter().any(|arg| arg == "--no-release");
    let clippy = !args.iter().any(|arg| arg == "--no-clippy");

    util::run(cargo().args(["fmt", "--all", "--check"]))?;
    crate::tidy::run()?;
    crate::layers::run()?;
    if clippy {
        util::run(cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))?;
    }
    fuzz_check()?;
    loom(&["--debug".to_owned()])?;
    util::run(cargo().args(["test", "--workspace"]))?;
    if release {
        util::run(cargo().args(["test", "--workspace", "--release"]))?;
    }
    util::run(
        cargo()
            .args(["doc", "--workspace", "--no-deps"])
            .env("RUSTDOCFLAGS", "-D warnings"),
    )?;
    // The internals' docs too (module docs, invariants, `# Safety` sections link to private
    // items): a broken link there went unnoticed for two sessions.
    util::run(
        cargo()
            .args([
                "doc",
                "--workspace",
                "--no-deps",
                "--document-private-items",
            ])
            .env("RUSTDOCFLAGS", "-D warnings"),
    )?;
    eprintln!("xtask ci: all checks passed");
    Ok(())
}

/// Type-checks the fuzz harnesses (`fuzz/`, outside the workspace), which track the ipc and
/// worker APIs and otherwise break silently (docs/FUZZING.md). libfuzzer-sys's build script
/// compiles libFuzzer with a C++ compiler, which CI lacks; pointing `CUSTOM_LIBFUZZER_PATH` at
/// a library makes it skip that, and `check` never links, so the library need not exist.
/// Shares the workspace's target dir, so dependencies checked for clippy are reused.
fn fuzz_check() -> Result {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| crate::util::project_root().join("target"));
    util::run(
        cargo()
            .args(["check", "--manifest-path", "fuzz/Cargo.toml", "--bins"])
            .env("CUSTOM_LIBFUZZER_PATH", "/nonexistent/libfuzzer.a")
            .env("CUSTOM_LIBFUZZER_STD_CXX", "none")
            .env("CARGO_TARGET_DIR", target),
    )
}

/// Runs the loom models of the ring with the preemption bound CI uses: in release by default,
/// in debug with `--debug`, which is what CI runs (a `--cfg procpool_loom` build shares no
/// artifacts with the normal one, and the debug rebuild costs about half the CPU of the
/// release one while the models still take under a second; timings in docs/ARCHITECTURE.md).
pub(crate) fn loom(args: &[String]) -> Result {
    let debug = args.iter().any(|arg| arg == "--debug");
    let mut command = cargo();
    command.args(["test", "-p", "procpool-ipc", "--lib"]);
    if !debug {
        command.arg("--release");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| crate::util::project_root().join("target"));
    util::run(
        command
            .arg("loom")
            .env("RUSTFLAGS", "--cfg procpool_loom")
            .env("LOOM_MAX_PREEMPTIONS", "2")
            .env("CARGO_TARGET_DIR", target.join("loom")),
    )
}
