//! `straitctl`: talks to a running `straitd` over its control socket.
//!
//! ```text
//! straitctl [--socket PATH] show interfaces|routes|counters|drops|workers [--json]
//! straitctl [--socket PATH] show nat [rules|sessions] [--json]
//! straitctl [--socket PATH] reload
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use strait_dataplane::control::{self, DEFAULT_SOCKET};

/// Control a running Strait daemon.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Control socket of the daemon.
    #[arg(long, short, default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// The command, e.g. `show drops --json`.
    #[arg(required = true, num_args = 1.., allow_hyphen_values = true)]
    command: Vec<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match control::request(&args.socket, &args.command.join(" ")) {
        Ok(answer) => {
            print!("{answer}");
            if answer.starts_with("error:") {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("straitctl: {}: {e}", args.socket.display());
            ExitCode::FAILURE
        }
    }
}
