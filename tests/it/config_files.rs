//! Every shipped config parses and validates; a misspelt key fails naming it; the CLI's
//! `config check` and `token` work on them.

use std::path::Path;
use std::process::Command;

use playhouse_runtime::config::NodeConfig;

/// What a production deployment provides through the environment.
fn deployment_env() -> Vec<(String, String)> {
    vec![
        ("PLAYHOUSE_JWT_KEY".into(), "k".repeat(48)),
        ("PLAYHOUSE_CLUSTER_COOKIE".into(), "cookie-for-tests".into()),
    ]
}

fn config_files(dir: &Path, found: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            config_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "toml") {
            found.push(path);
        }
    }
}

#[test]
fn every_file_in_config_parses_and_validates() {
    let mut files = Vec::new();
    config_files(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("config")
            .as_path(),
        &mut files,
    );
    files.sort();
    assert!(
        files.len() >= 5,
        "expected the shipped configs, found {files:?}"
    );
    for file in &files {
        let config = NodeConfig::load_with_env(file, deployment_env())
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        // Lists left out mean every service of the build.
        let config = playhouse_runtime::node::prepare(config, playhouse_actors::SERVICES)
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert_eq!(
            config.services.len(),
            playhouse_actors::SERVICES.len(),
            "{}",
            file.display()
        );
        let output = Command::new(env!("CARGO_BIN_EXE_playhouse"))
            .args(["config", "check"])
            .arg(file)
            .envs(deployment_env())
            .output()
            .unwrap();
        let printed = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{}: {}",
            file.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(printed.contains("valid"), "{printed}");
        assert!(
            !printed.contains(&"k".repeat(48)),
            "the key leaked: {printed}"
        );
        assert!(
            !printed.contains("playhouse-development-key"),
            "the dev key leaked: {printed}"
        );
    }
}

#[test]
fn a_misspelt_key_fails_naming_the_key_and_the_file() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/fixtures/misspelt_key.toml");
    let error = NodeConfig::load_with_env(&fixture, Vec::new())
        .unwrap_err()
        .to_string();
    assert!(error.contains("misspelt_key.toml"), "{error}");
    assert!(error.contains("unknown field `listn`"), "{error}");

    let output = Command::new(env!("CARGO_BIN_EXE_playhouse"))
        .args(["config", "check"])
        .arg(&fixture)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unknown field `listn`"), "{stderr}");
}

#[test]
fn the_token_command_prints_a_token_and_refuses_unknown_roles() {
    let output = Command::new(env!("CARGO_BIN_EXE_playhouse"))
        .args([
            "token", "--sub", "alice", "--role", "writer", "--ttl", "10m",
        ])
        .env_remove("PLAYHOUSE_JWT_KEY")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let token = String::from_utf8(output.stdout).unwrap();
    assert_eq!(token.trim().split('.').count(), 3, "{token}");

    let output = Command::new(env!("CARGO_BIN_EXE_playhouse"))
        .args(["token", "--sub", "alice", "--role", "superuser"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--role `superuser`"));
}
