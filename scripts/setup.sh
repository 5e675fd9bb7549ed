#!/usr/bin/env bash
# Installs what building and testing playhouse needs beyond the Rust toolchain:
# rustfmt and clippy, schemathesis (in .venv) for the API conformance run, and wrk (Debian)
# for the load benchmark.
# Safe to run again. CI (.ci/run) runs it first.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup component add rustfmt clippy >/dev/null 2>&1 || echo "setup: rustup unavailable; assuming rustfmt and clippy are installed"

if [ ! -x .venv/bin/st ]; then
    python3 -m venv .venv
    .venv/bin/pip install --quiet --disable-pip-version-check "schemathesis==4.32.5"
fi

if ! command -v wrk >/dev/null 2>&1; then
    as_root=""
    [ "$(id -u)" -eq 0 ] || as_root="sudo"
    if $as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null \
        && $as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; then
        echo "setup: installed wrk"
    else
        # Only `cargo bench --bench edge` needs it; tests and CI do not.
        echo "setup: could not install wrk (apt-get install wrk); the edge benchmark needs it" >&2
    fi
fi

echo "setup: done"
