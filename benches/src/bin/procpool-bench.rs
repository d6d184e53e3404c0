//! `procpool-bench`: procpool side by side with rayon, a serial loop and Python's pools.
//!
//! Started by `cargo xtask bench [args]`. See benches/README.md for the workloads.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};

use procpool_benches::compare::{self, Results};
use procpool_benches::machine::MachineInfo;
use procpool_benches::plot;
use procpool_benches::report;
use procpool_benches::runner::{self, Config};
use procpool_benches::workload::Workload;

/// Runs the issue-7 workloads on procpool and its peers and writes a report.
#[derive(Debug, Parser)]
#[command(name = "procpool-bench", version)]
struct Args {
    /// Worker processes (and rayon threads, and Python workers).
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Smaller sizes and 3 rounds: the whole run stays under two minutes.
    #[arg(long)]
    quick: bool,
    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// Rounds per workload (default 5, or 3 with --quick).
    #[arg(long)]
    repeat: Option<usize>,
    /// Only these workloads, comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "WORKLOAD,...")]
    only: Vec<String>,
    /// Skip the Python baselines.
    #[arg(long)]
    no_python: bool,
    /// Where report.md, results.json and the charts go (default: `<workspace>/target/procpool-bench`).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Also keep this run's results as `<out>/saved/NAME.json`, for a later `--compare NAME`.
    #[arg(long, value_name = "NAME")]
    save: Option<String>,
    /// Print (and add to the report) the change from a saved run: `NAME` from `--save`, or
    /// the path of any results.json (e.g. one under docs/bench/).
    #[arg(long, value_name = "NAME|PATH")]
    compare: Option<String>,
    /// The Python interpreter for the baselines; if it does not start, the Python rows are
    /// skipped with a note.
    #[arg(long, value_name = "PROGRAM", default_value = "python3")]
    python: String,
    /// Workloads to run (the same as `--only`; both lists add up).
    #[arg(value_name = "WORKLOAD")]
    filter: Vec<String>,
}

fn main() -> ExitCode {
    // A pool starts its workers by running this program again: here they turn into workers.
    procpool::init();
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("error: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), String> {
    let names: Vec<&String> = args.only.iter().chain(&args.filter).collect();
    let workloads = if names.is_empty() {
        Workload::ALL.to_vec()
    } else {
        names
            .into_iter()
            .map(|name| {
                Workload::from_name(name.trim()).ok_or_else(|| {
                    let known: Vec<_> = Workload::ALL.iter().map(|w| w.name()).collect();
                    format!("unknown workload `{name}` (known: {})", known.join(", "))
                })
            })
            .collect::<Result<Vec<_>, _>>()?
    };
    if args.workers == 0 {
        return Err("--workers must be at least 1".into());
    }
    let config = Config {
        workers: args.workers,
        quick: args.quick,
        repeat: args.repeat.unwrap_or(if args.quick { 3 } else { 5 }).max(1),
        workloads,
        python: !args.no_python,
        python_interpreter: args.python.clone(),
    };
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("benches/ lives one level below the workspace root")
        .to_path_buf();
    let out_dir = args
        .out
        .unwrap_or_else(|| workspace.join("target/procpool-bench"));
    std::fs::create_dir_all(&out_dir)
        .map_err(|err| format!("creating {}: {err}", out_dir.display()))?;
    if let Some(name) = &args.save {
        compare::check_name(name).map_err(|err| format!("--save: {err}"))?;
    }
    // Read the old run first: a bad name fails before minutes of measuring.
    let baseline = match &args.compare {
        Some(name) => {
            let path =
                compare::resolve(&out_dir, name).map_err(|err| format!("--compare: {err}"))?;
            let old = Results::load(&path).map_err(|err| format!("--compare: {err}"))?;
            Some((name.clone(), old))
        }
        None => None,
    };

    let mut machine = MachineInfo::gather(&workspace);
    let progress = ProgressBar::new(0);
    progress.set_style(
        ProgressStyle::with_template(
            "{elapsed_precise:.dim} [{bar:30.cyan/blue}] {pos}/{len} {msg}",
        )
        .expect("the template is valid")
        .progress_chars("=> "),
    );
    let outcome = runner::run(config, &progress).map_err(|err| err.to_string())?;
    machine.load_end = procpool_benches::machine::loadavg();

    println!("{}", report::terminal_table(&outcome.rows));
    for check in procpool_benches::target::checks(&outcome.rows) {
        println!(
            "target {:<12} {:<48} {:<44} {}",
            check.workload,
            check.target,
            check.measured,
            procpool_benches::target::verdict(&check)
        );
    }
    if let Some(warning) = procpool_benches::target::contention_warning(&outcome.rows) {
        println!("caution: {warning}");
    }
    for line in procpool_benches::target::anomalies(&outcome.rows) {
        println!("measurement anomaly: {line}");
    }
    for [workload, system, unit, serial, inside, cores] in report::inside_table(&outcome.rows) {
        println!(
            "inside {workload:<12} {system:<9} {unit}: {serial} against the serial reference, \
             {inside} against the items' CPU time inside the workers (cores vs serial {cores})"
        );
    }
    for note in &outcome.notes {
        println!("note: {note}");
    }
    let times: Vec<String> = outcome
        .durations
        .iter()
        .map(|(workload, secs)| format!("{workload} {secs:.1}s"))
        .collect();
    println!("time per workload: {}", times.join(", "));

    let mut charts = Vec::new();
    for &workload in &outcome.config.workloads {
        let bars = plot::workload_bars(&outcome.rows, workload.name(), workload.unit());
        if bars.is_empty() {
            continue;
        }
        let file = format!("{workload}.svg");
        let title = format!("{workload}: {}", workload.measures());
        match plot::bar_chart(&out_dir.join(&file), &title, workload.unit(), &bars) {
            Ok(()) => charts.push((workload.name().to_owned(), file)),
            Err(err) => eprintln!("warning: {err}"),
        }
        if workload == Workload::Skewed {
            let bars = plot::makespan_bars(&outcome.rows);
            let file = "skewed_makespan.svg".to_owned();
            if !bars.is_empty() {
                match plot::bar_chart(
                    &out_dir.join(&file),
                    "skewed: makespan vs ideal",
                    "ms",
                    &bars,
                ) {
                    Ok(()) => charts.push(("skewed makespan".to_owned(), file)),
                    Err(err) => eprintln!("warning: {err}"),
                }
            }
        }
    }

    let doc = report::json(&outcome, &machine);
    let json_text = serde_json::to_string_pretty(&doc).map_err(|err| err.to_string())?;
    let results = out_dir.join("results.json");
    std::fs::write(&results, &json_text)
        .map_err(|err| format!("writing {}: {err}", results.display()))?;
    if let Some(path) = &args.json {
        std::fs::write(path, &json_text)
            .map_err(|err| format!("writing {}: {err}", path.display()))?;
    }
    let mut md = report::markdown(&outcome, &machine, &charts);
    if let Some((name, old)) = &baseline {
        let new = Results::from_json(&doc)?;
        let cmp = compare::compare(&old.rows, &new.rows);
        let made = old
            .config
            .map(|c| format!(", {}", c.describe()))
            .unwrap_or_default();
        let title = format!(
            "compared with `{name}` (commit {}, {}{made})",
            short(&old.commit),
            old.date
        );
        println!("\n{}", compare::terminal(&cmp, &title));
        md.push('\n');
        md.push_str(&compare::markdown(&cmp, &format!("Change since `{name}`")));
        md.push_str(&format!(
            "\nThe old run: commit {}, {}{made}.\n",
            old.commit, old.date
        ));
        if let Some(warning) = compare::mismatch(old.config, new.config) {
            println!("caution: {warning}");
            md.push_str(&format!("\n**Caution:** {warning}.\n"));
        }
    }
    let report_path = out_dir.join("report.md");
    std::fs::write(&report_path, md)
        .map_err(|err| format!("writing {}: {err}", report_path.display()))?;
    println!("report: {}", report_path.display());
    if let Some(name) = &args.save {
        let path = compare::saved_path(&out_dir, name);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|err| format!("creating {}: {err}", dir.display()))?;
        }
        std::fs::write(&path, &json_text)
            .map_err(|err| format!("writing {}: {err}", path.display()))?;
        println!("saved as `{name}`: {}", path.display());
    }
    Ok(())
}

/// The first 12 characters of a commit hash (and any `-dirty`), for titles.
fn short(commit: &str) -> String {
    match commit.split_once('-') {
        Some((hash, rest)) => format!("{}-{rest}", &hash[..hash.len().min(12)]),
        None => commit[..commit.len().min(12)].to_owned(),
    }
}
