//! Repository hygiene checks, run by `cargo xtask tidy` and as a `#[test]`.
//!
//! - every Rust file opens with a `//!` module doc;
//! - every `unsafe` block or `unsafe impl` has a `// SAFETY:` comment right above it
//!   (or on the same line);
//! - no `dbg!` is left behind.

use std::fs;
use std::path::{Path, PathBuf};

use crate::util::{Result, project_root};

/// Runs every check over the tracked source folders and reports all findings at once.
pub(crate) fn run() -> Result {
    let root = project_root();
    let mut files = Vec::new();
    for dir in ["crates", "xtask", "tests", "benches"] {
        collect_rust_files(&root.join(dir), &mut files);
    }
    let mut problems = Vec::new();
    for file in &files {
        let text = match fs::read_to_string(file) {
            Ok(text) => text,
            Err(err) => {
                problems.push(format!("{}: unreadable: {err}", file.display()));
                continue;
            }
        };
        let shown = file
            .strip_prefix(&root)
            .unwrap_or(file)
            .display()
            .to_string();
        problems.extend(check_file(&shown, &text));
    }
    if problems.is_empty() {
        eprintln!("tidy: {} files checked, all clean", files.len());
        Ok(())
    } else {
        Err(format!(
            "tidy found {} problem(s):\n{}",
            problems.len(),
            problems.join("\n")
        ))
    }
}

fn collect_rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if name == "target" || name.to_string_lossy().starts_with('.') {
            continue;
        }
        if path.is_dir() {
            collect_rust_files(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            out.push(path);
        }
    }
}

/// Checks one file's text; returns one line per problem, prefixed with `name:line`.
fn check_file(name: &str, text: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let first_code = text.lines().map(str::trim).find(|line| !line.is_empty());
    if !first_code.is_some_and(|line| line.starts_with("//!")) {
        problems.push(format!("{name}: does not start with a `//!` module doc"));
    }
    let lines: Vec<&str> = text.lines().collect();
    for (idx, line) in lines.iter().enumerate() {
        let code = strip_line_comment(line);
        if code.contains(concat!("dbg", "!(")) {
            problems.push(format!("{name}:{}: leftover dbg!", idx + 1));
        }
        if opens_unsafe(code) && !has_safety_comment(&lines, idx) {
            problems.push(format!(
                "{name}:{}: `unsafe` without a `// SAFETY:` comment above it",
                idx + 1
            ));
        }
    }
    problems
}

/// The part of a line before a `//` comment (string literals containing `//` are rare
/// enough in this code base that the simple split is fine).
fn strip_line_comment(line: &str) -> &str {
    line.find("//").map_or(line, |pos| &line[..pos])
}

/// Whether this line opens an `unsafe` block or an `unsafe impl` (not an `unsafe fn`
/// or `unsafe trait`, which carry a `# Safety` doc section instead).
fn opens_unsafe(code: &str) -> bool {
    let mut rest = code;
    while let Some(pos) = rest.find("unsafe") {
        let before = &rest[..pos];
        let after = rest[pos + "unsafe".len()..].trim_start();
        let word_start = before
            .chars()
            .last()
            .is_none_or(|ch| !(ch.is_alphanumeric() || ch == '_'));
        let in_string = before.matches('"').count() % 2 == 1;
        if word_start && !in_string && (after.starts_with('{') || after.starts_with("impl")) {
            return true;
        }
        rest = &rest[pos + "unsafe".len()..];
    }
    false
}

/// A `SAFETY:` comment on the same line, or in the comment/attribute lines right above the
/// statement the `unsafe` belongs to (a statement may start on an earlier line, as in
/// `let fd =` followed by `unsafe { .. }` on the next).
fn has_safety_comment(lines: &[&str], idx: usize) -> bool {
    if lines[idx].contains("SAFETY:") {
        return true;
    }
    for line in lines[..idx].iter().rev().take(30) {
        let trimmed = line.trim();
        if trimmed.contains("SAFETY:") {
            return true;
        }
        let is_comment = trimmed.starts_with("//");
        let is_attr = trimmed.starts_with("#[");
        let ends_statement = trimmed.is_empty()
            || trimmed.ends_with(';')
            || trimmed.ends_with('{')
            || trimmed.ends_with('}');
        if !(is_comment || is_attr) && ends_statement {
            return false;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::{check_file, run};

    #[test]
    fn tidy() {
        if let Err(msg) = run() {
            panic!("{msg}");
        }
    }

    #[track_caller]
    fn check(text: &str, expect_problems: usize) {
        let found = check_file("t.rs", text);
        assert_eq!(found.len(), expect_problems, "{found:?}");
    }

    #[test]
    fn module_doc_required() {
        check("//! Doc.\nfn main() {}\n", 0);
        check("fn main() {}\n", 1);
        check("\n\n//! Doc after blank lines.\n", 0);
    }

    #[test]
    fn unsafe_needs_safety_comment() {
        check(
            "//! D.\nfn f() {\n    // SAFETY: fine.\n    unsafe { g() }\n}\n",
            0,
        );
        check("//! D.\nfn f() {\n    unsafe { g() }\n}\n", 1);
        check(
            "//! D.\n// SAFETY: no fields.\nunsafe impl Send for X {}\n",
            0,
        );
        check("//! D.\nunsafe impl Send for X {}\n", 1);
        check(
            "//! D.\n/// # Safety\n/// Caller checks.\nunsafe fn f() {}\n",
            0,
        );
        check("//! D.\nlet s = \"unsafe {\";\n", 0);
        check(
            "//! D.\nfn f() {\n    // SAFETY: fine.\n    let x =\n        unsafe { g() };\n}\n",
            0,
        );
        check(
            "//! D.\nfn f() {\n    x();\n    let x =\n        unsafe { g() };\n}\n",
            1,
        );
        check("//! D.\nlet x = /* SAFETY: ok */ unsafe { y };\n", 0);
    }

    #[test]
    fn dbg_is_flagged() {
        check(concat!("//! D.\nfn f() { ", "dbg", "!(1); }\n"), 1);
    }
}
