#!/usr/bin/env bash
# Builds the playhouse image without pulling anything: a base image holding only what the
# binary needs from the host (its shared libraries, as ldd lists them, and a passwd file with
# the unprivileged user), imported with `docker import`, then deploy/Dockerfile.prebuilt on
# it with the binary and the deployment config.
#   scripts/docker-images.sh [BINARY] [TAG]     (defaults: target/debug/playhouse, playhouse:latest)
set -euo pipefail
cd "$(dirname "$0")/.."

binary=${1:-target/debug/playhouse}
tag=${2:-playhouse:latest}
[ -x "$binary" ] || { echo "no binary at $binary: run cargo build first" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

rootfs=$work/rootfs
mkdir -p "$rootfs"/{etc,tmp,usr/local/bin,var/lib/playhouse,etc/playhouse}
chmod 1777 "$rootfs/tmp"
# The loader and every library the binary links (glibc's name service for `files` and `dns`
# is inside libc since 2.34, so node names resolve through Docker's /etc/hosts and DNS).
ldd "$binary" | awk '/=> \// { print $3 } /ld-linux/ && !/=>/ { print $1 }' | while read -r lib; do
    cp --parents -L "$lib" "$rootfs"
done
cat >"$rootfs/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/usr/sbin/nologin
playhouse:x:10001:10001:playhouse:/var/lib/playhouse:/usr/sbin/nologin
PASSWD
printf 'root:x:0:\nplayhouse:x:10001:\n' >"$rootfs/etc/group"
printf 'hosts: files dns\n' >"$rootfs/etc/nsswitch.conf"
chown 10001:10001 "$rootfs/var/lib/playhouse"
tar --numeric-owner -C "$rootfs" -c . | docker import --message "playhouse base: $(basename "$binary")'s libraries" - playhouse-base:local >/dev/null
echo "imported playhouse-base:local ($(du -sh "$rootfs" | cut -f1))"

context=$work/context
mkdir -p "$context"
# Debug information is for the host's backtraces; the image only runs the binary.
objcopy --strip-debug "$binary" "$context/playhouse"
cp deploy/config/node.toml "$context/node.toml"
# (The legacy builder: BuildKit is not installed here. Its deprecation notice is shown only if
# the build fails.)
docker build --quiet -f deploy/Dockerfile.prebuilt -t "$tag" "$context" >/dev/null 2>"$work/build.log" ||
    { cat "$work/build.log" >&2; exit 1; }
echo "built $tag ($(docker image inspect -f '{{.Size}}' "$tag" | awk '{ printf "%.0f MB", $1 / 1e6 }'))"
