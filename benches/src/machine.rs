//! What the numbers were measured on: machine, toolchain and commit.

use std::path::Path;
use std::process::Command;

/// Facts recorded with every result (STYLE.md section 7).
#[derive(Debug, Clone)]
pub struct MachineInfo {
    /// Logical CPUs the OS reports.
    pub cores: usize,
    /// `model name` from /proc/cpuinfo.
    pub cpu_model: String,
    /// `uname -srm`.
    pub kernel: String,
    /// `rustc -V`.
    pub rustc: String,
    /// `python3 --version`, if there is one.
    pub python: Option<String>,
    /// `git rev-parse HEAD` (with `-dirty` when the tree has changes).
    pub git_commit: String,
    /// UTC time of the run, ISO 8601.
    pub date: String,
    /// `/proc/loadavg` (1, 5, 15 minutes) when the run started.
    pub load_start: String,
    /// `/proc/loadavg` when the run ended (set by the caller).
    pub load_end: String,
}

/// The 1, 5 and 15 minute load averages from `/proc/loadavg`, or `"unknown"`.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|| "unknown".into())
}

impl MachineInfo {
    /// Gathers the facts; anything unknown becomes `"unknown"`.
    pub fn gather(repo: &Path) -> Self {
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|text| {
                text.lines()
                    .find(|line| line.starts_with("model name"))
                    .and_then(|line| line.split_once(':'))
                    .map(|(_, model)| model.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".to_owned());
        let commit = command_line("git", &["-C", &repo.to_string_lossy(), "rev-parse", "HEAD"]);
        let dirty = command_line(
            "git",
            &[
                "-C",
                &repo.to_string_lossy(),
                "status",
                "--porcelain",
                "--untracked-files=no",
            ],
        )
        .is_some_and(|out| !out.is_empty());
        Self {
            cores: std::thread::available_parallelism().map_or(1, usize::from),
            cpu_model,
            kernel: command_line("uname", &["-srm"]).unwrap_or_else(|| "unknown".into()),
            rustc: command_line("rustc", &["-V"]).unwrap_or_else(|| "unknown".into()),
            python: command_line("python3", &["--version"]),
            git_commit: match commit {
                Some(hash) if dirty => format!("{hash}-dirty"),
                Some(hash) => hash,
                None => "unknown".into(),
            },
            date: command_line("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"])
                .unwrap_or_else(|| "unknown".into()),
            load_start: loadavg(),
            load_end: "unknown".into(),
        }
    }

    /// The facts as `(label, value)` pairs, for tables.
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        vec![
            ("date", self.date.clone()),
            ("cores", self.cores.to_string()),
            ("cpu", self.cpu_model.clone()),
            ("kernel", self.kernel.clone()),
            ("rustc", self.rustc.clone()),
            (
                "python",
                self.python.clone().unwrap_or_else(|| "not found".into()),
            ),
            ("commit", self.git_commit.clone()),
            ("load average at start", self.load_start.clone()),
            ("load average at end", self.load_end.clone()),
        ]
    }
}

/// Runs a command and returns its trimmed standard output (stdout + stderr for tools such
/// as old Pythons that print their version on stderr), or `None` if it failed.
fn command_line(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let mut text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if text.is_empty() {
        text = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    }
    Some(text)
}
