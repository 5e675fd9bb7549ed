#!/usr/bin/env bash
# Runs the "Try it" commands of README.md, as written, against a fresh node, and checks that
# they print what the README says. The node and the commands use this checkout's binary (debug
# build unless PLAYHOUSE_BIN is set) and a free port in place of 8080.
set -euo pipefail
cd "$(dirname "$0")/.."

binary=${PLAYHOUSE_BIN:-target/debug/playhouse}
# The node reads every PLAYHOUSE_ variable as a config override and refuses unknown ones:
# this one is the script's own, not the node's.
unset PLAYHOUSE_BIN
[ -x "$binary" ] || cargo build --locked --quiet
binary=$(realpath "$binary")

work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# The commands of the README's "Try it" block, with the port and binary of this run.
awk '/^## Try it/{f=1} f && /^```sh/{c=1; next} c && /^```/{exit} c' README.md \
    | sed -e "s#127.0.0.1:8080#127.0.0.1:$port#g" -e "s#./target/release/playhouse#$binary#g" \
    > "$work/walkthrough.sh"

# exec: the background job is the node itself, so the trap below stops the node.
(cd "$work" && PLAYHOUSE_EDGE__LISTEN="127.0.0.1:$port" exec "$binary" >"$work/node.log" 2>&1) &
node=$!
cleanup() { kill "$node" 2>/dev/null || true; wait "$node" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
node_failed() {
    echo "README walkthrough: $1; the node's log:" >&2
    cat "$work/node.log" >&2
    exit 1
}
for attempt in $(seq 1 300); do
    curl -fs "http://127.0.0.1:$port/health/live" >/dev/null 2>&1 && break
    kill -0 "$node" 2>/dev/null || node_failed "the node exited before answering"
    [ "$attempt" -lt 300 ] || node_failed "the node did not answer within 30 s"
    sleep 0.1
done

# Twice: the walkthrough must also work when pasted a second time.
for run in 1 2; do
    output=$(bash -euo pipefail "$work/walkthrough.sh")
    # The store check, not the overall status: that one also reflects this machine's free disk.
    for expected in '"name":"store","status":"healthy"' '"balance":12500,"version":2' '"balance":8500,"version":3' \
        'urn:playhouse:problem:insufficient-funds' 'HTTP 409' '"type":"AccountDebited"' '401 Unauthorized'; do
        if ! grep -qF "$expected" <<<"$output"; then
            echo "README walkthrough, run $run: expected $expected in:" >&2
            echo "$output" >&2
            exit 1
        fi
    done
done
echo "README walkthrough: every step printed what the README says (2 runs)"
