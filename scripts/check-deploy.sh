#!/usr/bin/env bash
# Checks deploy/ with real tools (scripts/setup.sh installs them in .venv): hadolint on the
# Dockerfile, the Compose specification's schema on docker-compose.yml (check-jsonschema),
# Kubernetes' own schemas on the manifests (kubernetes-validate, strict: unknown fields fail),
# and `playhouse config check` on the config each of those files gives every node.
set -euo pipefail
cd "$(dirname "$0")/.."

binary=${PLAYHOUSE_BIN:-target/debug/playhouse}
unset PLAYHOUSE_BIN
[ -x "$binary" ] || cargo build --locked --quiet

echo "hadolint deploy/Dockerfile deploy/Dockerfile.prebuilt"
.venv/bin/hadolint deploy/Dockerfile deploy/Dockerfile.prebuilt
echo "check-jsonschema (Compose specification) deploy/docker-compose.yml"
.venv/bin/check-jsonschema --builtin-schema vendor.compose-spec deploy/docker-compose.yml
echo "kubernetes-validate --strict deploy/kubernetes/*.yaml"
.venv/bin/kubernetes-validate --strict deploy/kubernetes/*.yaml
echo "playhouse config check, for every node of each deployment"
.venv/bin/python scripts/deploy_configs.py "$binary"
echo "deploy checks: all passed"
