//! `host-sim`: safegrad's command-line tool on the host.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// safegrad on the host: reference cases, training and simulation.
#[derive(Parser)]
#[command(name = "host-sim", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Reproduce the BugZoo cases (masked division and friends) and print forward values and
    /// gradients, next to what the IEEE chain rule gives.
    Bugzoo {
        /// Print one JSON array, one object per case.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Bugzoo { json } => match host_sim::bugzoo::all() {
            Ok(cases) => {
                if json {
                    let array: Vec<_> = cases.iter().map(|c| c.to_json()).collect();
                    println!("{}", serde_json::Value::Array(array));
                } else {
                    print!("{}", host_sim::bugzoo::table(&cases));
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: bugzoo: {e}");
                ExitCode::FAILURE
            }
        },
    }
}
