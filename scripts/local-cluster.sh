#!/usr/bin/env bash
# Starts the three-node local cluster of config/local-cluster/ on this machine in one command:
# builds the release binary, starts node-1, node-2 and node-3 (edges on 127.0.0.1:8081-8083,
# node links on 4601-4603, data in ./data/node-N, logs in ./data/node-N.log), waits until every
# node sees the other two up, and prints what to try. Ctrl-C stops the nodes it started. A node
# that exits (or is killed, to see the others notice) is reported, and the others keep running;
# start it again by hand with the command printed.
#
#   scripts/local-cluster.sh            start (or restart) the cluster on its existing data
#   scripts/local-cluster.sh --fresh    delete ./data/node-1..3 first
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--fresh" ]; then
    rm -rf data/node-1 data/node-2 data/node-3
elif [ -n "${1:-}" ]; then
    echo "usage: scripts/local-cluster.sh [--fresh]" >&2
    exit 2
fi

cargo build --release --quiet
binary=./target/release/playhouse
mkdir -p data

pids=()
stop() {
    if [ "${#pids[@]}" -gt 0 ]; then
        kill -TERM "${pids[@]}" 2>/dev/null || true
        wait "${pids[@]}" 2>/dev/null || true
    fi
    echo "local cluster stopped"
}
trap stop EXIT
trap 'exit 130' INT TERM

for n in 1 2 3; do
    "$binary" node --config "config/local-cluster/node-$n.toml" >>"data/node-$n.log" 2>&1 &
    pids+=("$!")
done

admin=$("$binary" token --config config/local-cluster/node-1.toml --sub ops --role admin)
# How many members node $1 lists up, itself included (it is "up" once it serves).
up_count() {
    curl -s -H "Authorization: Bearer $admin" "http://127.0.0.1:808$1/admin/cluster" \
        | grep -o '"status":"up"' | wc -l
}
for _ in $(seq 1 150); do
    all=1
    for n in 1 2 3; do
        if ! kill -0 "${pids[$((n - 1))]}" 2>/dev/null; then
            echo "node-$n exited; the end of its log (data/node-$n.log):" >&2
            tail -n 20 "data/node-$n.log" >&2
            exit 1
        fi
        [ "$(up_count "$n")" -eq 3 ] || all=0
    done
    [ "$all" -eq 1 ] && break
    sleep 0.2
done
if [ "$all" -ne 1 ]; then
    echo "the nodes did not all see each other up within 30 s; see data/node-*.log" >&2
    exit 1
fi

cat <<MSG
local cluster up: node-1 http://127.0.0.1:8081, node-2 http://127.0.0.1:8082, node-3 http://127.0.0.1:8083
logs: data/node-1.log data/node-2.log data/node-3.log (Ctrl-C stops all three)

  TOKEN=\$($binary token --config config/local-cluster/node-1.toml --sub alice --role writer --role admin)
  curl -s -H "Authorization: Bearer \$TOKEN" http://127.0.0.1:8082/admin/cluster
MSG

# Until Ctrl-C: report nodes that exit.
reported=(0 0 0)
while sleep 1; do
    for i in 0 1 2; do
        if [ "${reported[$i]}" -eq 0 ] && ! kill -0 "${pids[$i]}" 2>/dev/null; then
            reported[$i]=1
            echo "node-$((i + 1)) exited (data/node-$((i + 1)).log); start it again with:" >&2
            echo "  $binary node --config config/local-cluster/node-$((i + 1)).toml" >&2
        fi
    done
done
