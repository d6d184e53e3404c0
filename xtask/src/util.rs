//! Small helpers shared by the tasks: the project root and a `run` that echoes each command.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// What a task returns: `Err` carries a message for the user.
pub(crate) type Result<T = ()> = std::result::Result<T, String>;

/// The workspace root, worked out from this crate's manifest directory.
pub(crate) fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// A `cargo` command rooted at the workspace, using the cargo that runs us.
pub(crate) fn cargo() -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(project_root());
    cmd
}

/// Prints `cmd` and runs it to completion; a non-zero exit becomes an error.
pub(crate) fn run(cmd: &mut Command) -> Result {
    eprintln!("$ {}", describe(cmd));
    let status = cmd
        .status()
        .map_err(|err| format!("could not start `{}`: {err}", describe(cmd)))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{}` failed: {status}", describe(cmd)))
    }
}

/// Runs `cmd` and returns its standard output.
pub(crate) fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .map_err(|err| format!("could not start `{}`: {err}", describe(cmd)))?;
    if !out.status.success() {
        return Err(format!(
            "`{}` failed: {}\n{}",
            describe(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    String::from_utf8(out.stdout).map_err(|err| format!("non-UTF-8 output: {err}"))
}

fn describe(cmd: &Command) -> String {
    let mut text = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}

/// Turns a task result into the process exit code, printing the error.
pub(crate) fn report(res: Result) -> ExitCode {
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("error: {msg}");
            ExitCode::FAILURE
        }
    }
}
