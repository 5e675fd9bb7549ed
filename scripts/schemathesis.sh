#!/usr/bin/env bash
# Runs schemathesis (installed in .venv by scripts/setup.sh) with every check against a live
# node built from this checkout: no 5xx, and no response outside the OpenAPI spec.
# Usage: scripts/schemathesis.sh [extra `st run` arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

binary=target/debug/playhouse
[ -x "$binary" ] || cargo build --locked --quiet
st=.venv/bin/st
[ -x "$st" ] || { echo "schemathesis missing: run scripts/setup.sh first" >&2; exit 1; }

work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat > "$work/node.toml" <<TOML
environment = "development"
node_name = "schemathesis"
data_dir = "$work/data"

[edge]
listen = "127.0.0.1:$port"

[auth]
issuer = "playhouse"
audience = "playhouse-api"
key_env = "PLAYHOUSE_SCHEMATHESIS_UNSET"
dev_key = "schemathesis-key-0123456789abcdef"

[rate_limit]
requests_per_second = 100000
burst = 100000
TOML

"$binary" node --config "$work/node.toml" 2>"$work/node.log" &
node=$!
cleanup() { kill "$node" 2>/dev/null || true; wait "$node" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

python3 - "$port" <<'PY'
import sys, time, urllib.request
url = f"http://127.0.0.1:{sys.argv[1]}/health/live"
for _ in range(300):
    try:
        urllib.request.urlopen(url, timeout=1)
        sys.exit(0)
    except Exception:
        time.sleep(0.1)
sys.exit("the node did not answer within 30 s")
PY
token=$("$binary" token --config "$work/node.toml" --sub schemathesis --role admin --ttl 1h)

status=0
"$st" run "http://127.0.0.1:$port/openapi.json" \
    --checks all \
    --header "Authorization: Bearer $token" \
    --max-examples "${SCHEMATHESIS_MAX_EXAMPLES:-50}" \
    --seed "${SCHEMATHESIS_SEED:-1}" \
    --no-color \
    "$@" || status=$?
if [ "$status" -ne 0 ]; then
    echo "--- node log (last 40 lines) ---" >&2
    tail -n 40 "$work/node.log" >&2
fi
exit "$status"
