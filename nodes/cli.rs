//! Command-line interface: `node`, `token`, `config check`, `projections rebuild` and `probe`,
//! each a call into `playhouse_runtime` (`node::run_process` for a node).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use playhouse_actors::SERVICES;
use playhouse_runtime::config::NodeConfig;
use playhouse_runtime::edge::JwtAuth;
use playhouse_runtime::node;

/// The default config, compiled in so that `playhouse` runs from any directory.
const EMBEDDED_DEFAULT: &str = include_str!("../config/single.toml");
const EMBEDDED_NAME: &str = "config/single.toml (embedded)";

#[derive(Debug, Parser)]
#[command(
    name = "playhouse",
    version,
    about = "An actor-based cluster runtime for event-sourced services"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a node (the default, on the embedded config/single.toml).
    Node {
        /// The node's config file; the embedded single-node default when omitted.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Print a JWT signed with the configured key, for trying the API by hand.
    Token {
        /// The token's subject (who is calling).
        #[arg(long)]
        sub: String,
        /// A role: reader, writer or admin (repeat for several).
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
        /// How long the token is valid, like 30m, 1h or 7d.
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// The config whose auth section signs the token; the embedded default when omitted.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Validate a config file and print it as the node would run it, secrets redacted.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Work with read models (projections).
    #[command(subcommand)]
    Projections(ProjectionsCommand),
    /// GET a node's health route and exit 0 if it answers 200: a container health check that
    /// needs no curl in the image.
    Probe {
        /// The edge's address.
        #[arg(long, default_value = "127.0.0.1:8080")]
        address: String,
        /// The route to ask.
        #[arg(long, default_value = "/health/live")]
        path: String,
    },
}

#[derive(Debug, Subcommand)]
enum ProjectionsCommand {
    /// Empty a projection's tables and apply the whole log again. Stop the node first (or use
    /// `POST /admin/projections/{name}/rebuild` on a running one).
    Rebuild {
        /// The projection: products, orders_by_customer or notifications.
        name: String,
        /// The node's config file; the embedded single-node default when omitted.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validate a config file and print it as the node would run it, secrets redacted.
    Check { file: PathBuf },
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command.unwrap_or(Command::Node { config: None }) {
        Command::Node { config } => {
            let ran = runtime()?.block_on(node::run_process(load(config.as_deref())?, SERVICES));
            ran.map_err(anyhow::Error::msg)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Token {
            sub,
            roles,
            ttl,
            config,
        } => {
            let auth = JwtAuth::new(&load(config.as_deref())?.auth);
            println!(
                "{}",
                auth.issue_typed(&sub, &roles, &ttl)
                    .map_err(anyhow::Error::msg)?
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Projections(ProjectionsCommand::Rebuild { name, config }) => {
            let (config, started) = (load(config.as_deref())?, std::time::Instant::now());
            let rebuilt = node::rebuild_projection(&config, SERVICES, &name);
            let events = runtime()?.block_on(rebuilt).map_err(anyhow::Error::msg)?;
            let seconds = started.elapsed().as_secs_f64();
            println!("{name}: rebuilt from {events} log events in {seconds:.1} s");
            Ok(ExitCode::SUCCESS)
        }
        Command::Probe { address, path } => {
            match node::probe::get_status(&address, &path) {
                Ok(200) => return Ok(ExitCode::SUCCESS),
                Ok(status) => eprintln!("playhouse probe: {address}{path} answered {status}"),
                Err(error) => eprintln!("playhouse probe: {address}{path}: {error}"),
            }
            Ok(ExitCode::FAILURE)
        }
        Command::Config(ConfigCommand::Check { file }) => {
            let config = load(Some(&file))?;
            println!(
                "# {}: valid\n# auth key: from {}",
                file.display(),
                config.auth.key_source
            );
            print!(
                "{}",
                toml::to_string_pretty(&config.file).context("printing the config")?
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Loads `path`, or the embedded default, and checks its services against this build's.
fn load(path: Option<&Path>) -> anyhow::Result<NodeConfig> {
    let config = match path {
        Some(path) => NodeConfig::load(path)?,
        None => NodeConfig::parse(
            Path::new(EMBEDDED_NAME),
            EMBEDDED_DEFAULT,
            std::env::vars().collect(),
        )?,
    };
    node::prepare(config, SERVICES).map_err(anyhow::Error::msg)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build();
    runtime.context("starting the async runtime")
}
