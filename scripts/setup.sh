#!/usr/bin/env bash
# Installs what building and testing playhouse needs beyond the Rust toolchain:
# rustfmt and clippy, and schemathesis (in .venv) for the API conformance run.
# Safe to run again. CI (.ci/run) runs it first.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup component add rustfmt clippy >/dev/null 2>&1 || echo "setup: rustup unavailable; assuming rustfmt and clippy are installed"

if [ ! -x .venv/bin/st ]; then
    python3 -m venv .venv
    .venv/bin/pip install --quiet --disable-pip-version-check "schemathesis==4.32.5"
fi

echo "setup: done"
