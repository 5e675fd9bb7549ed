#!/usr/bin/env bash
# Installs what building and testing playhouse needs beyond the Rust toolchain.
# Safe to run again; CI (.ci/run) runs it before the tests.
set -euo pipefail

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# Rust components used by CI's checks.
rustup component add rustfmt clippy >/dev/null 2>&1 || true

echo "setup: done"
