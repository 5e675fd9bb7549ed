#!/usr/bin/env bash
# Builds playhouse as the build of the previous cluster format (cargo feature
# `previous-format`: reads and writes format 1 only) and copies it to
# target/previous/playhouse, for the rolling-upgrade test (scripts/compose-test.py starts its
# cluster on it and upgrades it to today's build). Prints the copy's path.
#   scripts/build-previous.sh
set -euo pipefail
cd "$(dirname "$0")/.."

mkdir -p target/previous
# Both builds share target/: only the crates the feature changes are built again (the
# runtime at opt-level 0: about 50 s instead of 3 min at the 1 the simulations want), but
# the binary's usual path is taken by whichever was built last, so today's is kept aside and
# put back (built again only when there was none).
today=target/previous/today
rm -f "$today"
[ -x target/debug/playhouse ] && cp target/debug/playhouse "$today"
cargo build --locked --quiet --bin playhouse --features previous-format \
    --config 'profile.dev.package.playhouse-runtime.opt-level=0'
cp target/debug/playhouse target/previous/playhouse
if [ -x "$today" ]; then
    mv "$today" target/debug/playhouse
else
    cargo build --locked --quiet --bin playhouse
fi
echo target/previous/playhouse
