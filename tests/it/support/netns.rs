//! Network partitions for tests: a test re-runs itself inside its own network namespace
//! (`unshare -rn`: a user namespace maps the caller to root there, so no real root is needed),
//! where iptables rules on loopback ports cut node links without touching the machine's own
//! network.

use std::process::Command;

/// Set in the re-run test's environment: it is inside its own namespace. (Not `PLAYHOUSE_*`:
/// nodes refuse overrides that name no config key.)
const INSIDE: &str = "TEST_IN_OWN_NETWORK_NAMESPACE";

/// Whether this process runs inside the namespace [`rerun_inside`] made.
pub fn inside() -> bool {
    std::env::var_os(INSIDE).is_some()
}

/// Runs the test `name` of this binary again inside a new network namespace with loopback up,
/// prints what it printed, and panics if it failed.
pub fn rerun_inside(name: &str) {
    // The re-run starts its own cluster: it takes this binary's turn.
    let _turn = super::cluster::one_at_a_time();
    rerun(
        name,
        "-rn",
        "ip link set lo up",
        &[(INSIDE, "1".into())],
        "user and network namespaces (`unshare -rn`), `ip` and `iptables` (scripts/setup.sh installs them)",
    );
}

/// Runs the test `name` of this binary again under `unshare FLAGS --kill-child`, after the
/// shell command `setup` succeeded there, with `env` set; prints what it printed, and panics
/// if it failed or did not run (what it `needs` is named in the message).
pub fn rerun(name: &str, flags: &str, setup: &str, env: &[(&str, String)], needs: &str) {
    let binary = std::env::current_exe().unwrap();
    let output = Command::new("unshare")
        // --kill-child: if this test is killed, the re-run and its nodes go with it.
        .args([
            flags,
            "--kill-child",
            "sh",
            "-c",
            &format!("{setup} && exec \"$0\" \"$@\""),
        ])
        .arg(&binary)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .envs(env.iter().map(|(key, value)| (*key, value)))
        .output()
        .unwrap_or_else(|error| {
            panic!("cannot run `unshare` ({error}): `{name}` needs util-linux's unshare")
        });
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        output.status.success(),
        "`{name}` failed inside its namespace ({}); it needs {needs}",
        output.status
    );
    // A namespace that could not be made never ran the test: say so rather than pass.
    assert!(
        stdout.contains("1 passed"),
        "`{name}` did not run inside its namespace"
    );
}

/// A rule dropping every TCP packet to or from `port`, applied while it lives.
#[derive(Debug)]
pub struct CutOff {
    port: u16,
}

impl CutOff {
    /// Drops TCP to and from `port` on loopback: every connection to the process listening
    /// there goes silent, the way a pulled cable looks to both ends (no reset, no FIN). Links
    /// that process dialled itself (from an ephemeral port) are not cut: to cut a node off
    /// entirely, cut the member whose name sorts last, which dials no one.
    pub fn port(port: u16) -> CutOff {
        assert!(
            inside(),
            "cut links only inside a test's own network namespace"
        );
        for direction in ["--dport", "--sport"] {
            iptables("-A", direction, port);
        }
        CutOff { port }
    }

    /// Removes the rules (also done when dropped).
    pub fn heal(self) {}
}

impl Drop for CutOff {
    fn drop(&mut self) {
        for direction in ["--dport", "--sport"] {
            iptables("-D", direction, self.port);
        }
    }
}

fn iptables(action: &str, direction: &str, port: u16) {
    let status = Command::new("iptables")
        .args([
            action,
            "INPUT",
            "-p",
            "tcp",
            direction,
            &port.to_string(),
            "-j",
            "DROP",
        ])
        .status()
        .expect("iptables is needed for partition tests (scripts/setup.sh installs it)");
    assert!(
        status.success(),
        "iptables {action} {direction} {port} failed"
    );
}
