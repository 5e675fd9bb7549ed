#!/usr/bin/env bash
# Builds playhouse as the build of the previous cluster format (cargo feature
# `previous-format`: reads and writes format 1 only) and copies it to
# target/previous/playhouse, for the rolling-upgrade test (scripts/compose-test.py starts its
# cluster on it and upgrades it to today's build). Prints the copy's path.
#   scripts/build-previous.sh
set -euo pipefail
cd "$(dirname "$0")/.."

mkdir -p target/previous
# Both builds share target/: only the crates the feature changes are built again, but the
# binary's usual path is taken by whichever was built last, so the previous one is copied
# away and today's linked back there.
cargo build --locked --quiet --bin playhouse --features previous-format
cp target/debug/playhouse target/previous/playhouse
cargo build --locked --quiet --bin playhouse
echo target/previous/playhouse
