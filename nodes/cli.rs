//! Command-line interface: `node`, `token`, `config check`, `projections rebuild`, `cluster`,
//! `backup`, `restore` and `probe`,
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
    /// Grow, shrink and look at a replicated cluster through a member's edge (an admin token
    /// signed with the config's key).
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Take a backup of a running cluster through a member's edge (GET /admin/backup) into a
    /// file: every partition at a Raft index at or past now. Kept only once checked whole.
    Backup {
        /// The file to write.
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        to: EdgeArgs,
    },
    /// Restore a backup file into a new cluster (one that has taken no writes, with the same
    /// `cluster.partitions`) through one of its members' edges. It never rejoins the old
    /// cluster: see the README.
    Restore {
        /// The backup file.
        #[arg(long)]
        from: PathBuf,
        #[command(flatten)]
        to: EdgeArgs,
    },
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

/// Where a `cluster` command goes, and what signs its token.
#[derive(Debug, clap::Args)]
struct EdgeArgs {
    /// The edge of any member (`host:port`); this config's `edge.listen` when omitted.
    #[arg(long)]
    edge: Option<String>,
    /// The config whose auth section signs the admin token; the embedded default when omitted.
    #[arg(long, short)]
    config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum ClusterCommand {
    /// Print the cluster as the member sees it (GET /admin/cluster).
    Status {
        #[command(flatten)]
        to: EdgeArgs,
    },
    /// Admit a node that asks to join (POST /admin/cluster/members): partitions move to it.
    Add {
        /// The node's `node_name`.
        name: String,
        /// Its cluster address (`host:port`); may be left out when it has asked to join within
        /// the last minute.
        #[arg(long)]
        address: Option<String>,
        /// Its edge (`host:port`), for tools.
        #[arg(long = "node-edge")]
        node_edge: Option<String>,
        #[command(flatten)]
        to: EdgeArgs,
    },
    /// Drain a member: its replicas and leads move away, then it leaves and may be stopped.
    Drain {
        name: String,
        #[command(flatten)]
        to: EdgeArgs,
    },
    /// Remove a member lost for good, by force: its replicas are made again from the others.
    Remove {
        name: String,
        #[command(flatten)]
        to: EdgeArgs,
    },
    /// The worst day: on a survivor (`--edge`), restart the groups that lost a majority of
    /// their voters with members lost for good, from what the survivor holds (POST
    /// /admin/cluster/recover). Entries only the lost members held are gone; the answer says
    /// per group the last entry kept. Admit new members afterwards.
    Recover {
        /// The members lost for good, comma-separated; none may be running.
        #[arg(long, value_delimiter = ',', required = true)]
        lost: Vec<String>,
        #[command(flatten)]
        to: EdgeArgs,
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
        Command::Cluster(command) => cluster(command),
        Command::Backup { out, to } => {
            let (edge, token) = admin_edge(to, "12h")?;
            crate::backup::backup(&edge, &token, &out)
        }
        Command::Restore { from, to } => {
            let (edge, token) = admin_edge(to, "12h")?;
            crate::backup::restore(&edge, &token, &from)
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

/// The edge a command goes to and an admin token for it, signed with the config's key.
/// It lives `ttl`: a backup or restore of a large cluster uses one token throughout.
fn admin_edge(to: EdgeArgs, ttl: &str) -> anyhow::Result<(String, String)> {
    let config = load(to.config.as_deref())?;
    let edge = to.edge.unwrap_or_else(|| config.edge.listen.to_string());
    let token = JwtAuth::new(&config.auth)
        .issue_typed("playhouse-cli", &["admin".to_owned()], ttl)
        .map_err(anyhow::Error::msg)?;
    Ok((edge, token))
}

/// Runs a `cluster` command against a member's edge: prints the answer, and fails (exit 1)
/// with the problem's detail when it is not a success.
fn cluster(command: ClusterCommand) -> anyhow::Result<ExitCode> {
    let quote = |text: &str| format!("{text:?}");
    let (method, path, body, to) = match command {
        ClusterCommand::Status { to } => ("GET", "/admin/cluster".to_owned(), None, to),
        ClusterCommand::Add {
            name,
            address,
            node_edge,
            to,
        } => {
            let mut fields = vec![format!("\"name\":{}", quote(&name))];
            fields.extend(address.map(|a| format!("\"address\":{}", quote(&a))));
            fields.extend(node_edge.map(|e| format!("\"edge\":{}", quote(&e))));
            let body = format!("{{{}}}", fields.join(","));
            ("POST", "/admin/cluster/members".to_owned(), Some(body), to)
        }
        ClusterCommand::Drain { name, to } => (
            "POST",
            format!("/admin/cluster/members/{name}/drain"),
            Some("{}".to_owned()),
            to,
        ),
        ClusterCommand::Remove { name, to } => {
            ("DELETE", format!("/admin/cluster/members/{name}"), None, to)
        }
        ClusterCommand::Recover { lost, to } => {
            let names: Vec<String> = lost.iter().map(|name| quote(name)).collect();
            let body = format!("{{\"lost\":[{}]}}", names.join(","));
            ("POST", "/admin/cluster/recover".to_owned(), Some(body), to)
        }
    };
    let (edge, token) = admin_edge(to, "5m")?;
    let (status, answer) = node::probe::call(
        &edge,
        method,
        &path,
        &token,
        body.as_deref(),
        // A recovery restarts every group of the survivor and waits for each to elect.
        std::time::Duration::from_secs(120),
    )
    .with_context(|| format!("{method} {path} on {edge}"))?;
    println!("{answer}");
    if (200..300).contains(&status) {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("playhouse cluster: {method} {path} on {edge} answered {status}");
        Ok(ExitCode::FAILURE)
    }
}
