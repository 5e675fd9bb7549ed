//! The `playhouse` binary: parses the command line and hands over to the node, the token
//! issuer or the config checker. With no arguments it runs a single development node.

mod cli;
mod node;
mod services;
mod shutdown;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match cli::run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("playhouse: {error:#}");
            ExitCode::FAILURE
        }
    }
}
