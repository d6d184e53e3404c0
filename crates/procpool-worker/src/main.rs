//! The `procpool-worker` binary: a worker started by a pool, or a tool started by a person.
//!
//! Started by a pool (the `PROCPOOL_*` environment is set), the first line runs the worker loop
//! and never returns. Started by a person, it parses a subcommand with clap.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// A procpool worker: runs the tasks compiled into it for a pool.
#[derive(Debug, Parser)]
#[command(
    name = "procpool-worker",
    version,
    about,
    long_about = "A procpool worker: runs the tasks compiled into it for a pool.\n\n\
                  A pool starts it by itself when told to use it as its worker program. \
                  By hand, it lists its tasks or attaches to a pool that listens on a Unix socket."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print every task this binary carries: id, name and signature, one per line.
    List,
    /// Join the pool listening on this Unix socket and work for it until it lets go.
    Attach {
        /// The socket the pool listens on (`Pool::listen`).
        socket: PathBuf,
    },
}

fn main() -> ExitCode {
    procpool_worker::enter_worker_mode_if_requested();
    match Cli::parse().command {
        Command::List => {
            print!("{}", procpool_worker::describe_all());
            ExitCode::SUCCESS
        }
        Command::Attach { socket } => match procpool_worker::attach(&socket) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("procpool-worker: {err}");
                match err {
                    procpool_worker::AttachError::Worker(code) => {
                        ExitCode::from(u8::try_from(code).unwrap_or(1))
                    }
                    _ => ExitCode::FAILURE,
                }
            }
        },
    }
}
