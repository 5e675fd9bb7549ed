#!/usr/bin/env bash
# What other tools read from a live node built from this checkout: the served OpenAPI document
# validates (openapi-spec-validator), a client generated from it (openapi-python-client) runs
# the README's "Try it" steps, and /metrics carries the process series. Both tools are
# installed in .venv by scripts/setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

binary=target/debug/playhouse
[ -x "$binary" ] || cargo build --locked --quiet
for tool in openapi-spec-validator openapi-python-client; do
    [ -x ".venv/bin/$tool" ] || { echo "$tool missing: run scripts/setup.sh first" >&2; exit 1; }
done

work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat > "$work/node.toml" <<TOML
environment = "development"
node_name = "openapi-check"
data_dir = "$work/data"

[edge]
listen = "127.0.0.1:$port"

[auth]
issuer = "playhouse"
audience = "playhouse-api"
key_env = "PLAYHOUSE_OPENAPI_CHECK_UNSET"
dev_key = "openapi-check-key-0123456789abcdef"
TOML

"$binary" node --config "$work/node.toml" 2>"$work/node.log" &
node=$!
cleanup() { kill "$node" 2>/dev/null || true; wait "$node" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
fail() { echo "openapi-check: $*" >&2; echo "--- node log (last 40 lines) ---" >&2; tail -n 40 "$work/node.log" >&2; exit 1; }

base="http://127.0.0.1:$port"
for _ in $(seq 300); do curl -sf "$base/health/live" >/dev/null && break; sleep 0.1; done
curl -sf "$base/openapi.json" -o "$work/openapi.json" || fail "no /openapi.json"

.venv/bin/openapi-spec-validator "$work/openapi.json" || fail "the OpenAPI document does not validate"

echo "post_hooks: []" > "$work/generator.yaml"
.venv/bin/openapi-python-client generate --path "$work/openapi.json" --output-path "$work/client" \
    --meta none --config "$work/generator.yaml" >"$work/generate.log" 2>&1 \
    || { cat "$work/generate.log" >&2; fail "openapi-python-client could not generate a client"; }
if grep -q "Unable to\|Cannot parse" "$work/generate.log"; then
    cat "$work/generate.log" >&2
    fail "openapi-python-client left parts of the API out"
fi

token=$("$binary" token --config "$work/node.toml" --sub alice --role writer --ttl 1h)
PYTHONPATH="$work" .venv/bin/python scripts/openapi-client-try-it.py "$base" "$token" \
    || fail "the generated client did not get through the README's steps"

metrics=$(curl -sf "$base/metrics") || fail "no /metrics"
for series in process_cpu_seconds_total process_resident_memory_bytes process_open_fds process_threads; do
    grep -q "^$series" <<<"$metrics" || fail "/metrics lacks $series"
done
echo "openapi-check: the document validates, a generated client ran the README's steps, /metrics has the process series"
