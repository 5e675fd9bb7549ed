//! The `playhouse` binary: parses the command line and hands over to the node, the token
//! issuer or the config checker. With no arguments it runs a single development node.

mod backup;
mod cli;

use std::process::ExitCode;

use clap::Parser;

/// jemalloc, tuned in `.cargo/config.toml` to hand freed memory back to the system within
/// about two seconds. With glibc's allocator, a burst of 8,000 connections left the node at
/// 45 MiB once they had all closed (10.5 MiB before), and it stayed there; with jemalloc it
/// went back to 16 MiB (BENCHMARKS.md, `cargo bench --bench connections`).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
