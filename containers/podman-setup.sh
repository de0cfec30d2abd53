#!/usr/bin/env bash
# Podman as a Docker-compatible engine on a Debian 12 machine with no image registry: install it, configure it
# for this kind of host, make a local Debian base image, and serve the Docker Engine API on a socket.
#
#   containers/podman-setup.sh            # idempotent; prints `export CONTAINERS_CONF=...` and the socket
#
# Environment:
#   HAET_PODMAN_DIR   where the config, socket and service log live (default: ~/.cache/haet-podman)
#   HAET_BASE_IMAGE   the local base image to create (default: localhost/debian-min:bookworm)
#
# Why each setting: crun fails on hybrid cgroups ("cgroups in hybrid mode not supported"), so runc; Podman's
# default ulimits exceed what a container may set here (setrlimit RLIMIT_NPROC), so the container limits are
# this machine's own hard limits (nproc at most the kernel's pid_max); no registry answers, so the base image is
# made with debootstrap.
set -euo pipefail

STATE_DIR="${HAET_PODMAN_DIR:-$HOME/.cache/haet-podman}"
BASE_IMAGE="${HAET_BASE_IMAGE:-localhost/debian-min:bookworm}"
SOCKET="$STATE_DIR/podman.sock"
mkdir -p "$STATE_DIR"

say() { echo "podman-setup: $*" >&2; }

if ! command -v podman >/dev/null || ! command -v runc >/dev/null || ! command -v debootstrap >/dev/null; then
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
        say "podman, runc and debootstrap are missing and this is not a root Debian shell to apt-get them"
        exit 1
    fi
    say "installing podman, runc, debootstrap (apt-get)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc debootstrap catatonit >/dev/null
fi

# Podman caps its own process limit at the kernel's pid_max, and a container may not ask for more than that.
nofile="$(ulimit -Hn)"
nproc="$(ulimit -Hu)"
pid_max="$(cat /proc/sys/kernel/pid_max)"
[ "$nofile" = unlimited ] && nofile=1048576
{ [ "$nproc" = unlimited ] || [ "$nproc" -gt "$pid_max" ]; } && nproc="$pid_max"
cat > "$STATE_DIR/containers.conf.tmp" <<EOF
# Written by containers/podman-setup.sh for $(hostname); the limits are this machine's hard limits.
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]
pids_limit = 0

[engine]
runtime = "runc"
EOF
mv "$STATE_DIR/containers.conf.tmp" "$STATE_DIR/containers.conf"
export CONTAINERS_CONF="$STATE_DIR/containers.conf"

if ! podman image exists "$BASE_IMAGE"; then
    say "making $BASE_IMAGE with debootstrap (about 30 s)"
    rootfs="$(mktemp -d)"
    trap 'rm -rf "$rootfs"' EXIT
    debootstrap --variant=minbase bookworm "$rootfs" >"$STATE_DIR/debootstrap.log" 2>&1 \
        || { say "debootstrap failed; see $STATE_DIR/debootstrap.log"; exit 1; }
    tar -C "$rootfs" -c . | podman import --quiet - "$BASE_IMAGE" >/dev/null
    rm -rf "$rootfs"
    trap - EXIT
fi

# The Docker Engine API: one service per socket, started once and left running. It runs in / because conmon
# inherits its working directory: a service started in a folder that is later deleted fails every container
# ("Failed to get working directory"); such a service is replaced.
service_cwd="$(readlink "/proc/$(cat "$STATE_DIR/service.pid" 2>/dev/null || echo none)/cwd" 2>/dev/null || true)"
if [ "${service_cwd% (deleted)}" != "$service_cwd" ]; then
    say "the running API service lost its working directory; restarting it"
    kill "$(cat "$STATE_DIR/service.pid")" 2>/dev/null || true
    sleep 1
fi
if ! curl --silent --fail --unix-socket "$SOCKET" http://d/_ping >/dev/null 2>&1; then
    rm -f "$SOCKET"
    say "starting the Docker-compatible API on unix://$SOCKET"
    # The subshell itself is redirected and execs the service: no shell of this script is left holding its
    # stdout (a caller reading that pipe to its end, like `subprocess.run(capture_output=True)`, would hang).
    (cd / && exec setsid podman system service --time=0 "unix://$SOCKET") </dev/null >"$STATE_DIR/service.log" 2>&1 &
    echo $! >"$STATE_DIR/service.pid"
    for _ in $(seq 1 100); do
        curl --silent --fail --unix-socket "$SOCKET" http://d/_ping >/dev/null 2>&1 && break
        sleep 0.1
    done
    curl --silent --fail --unix-socket "$SOCKET" http://d/_ping >/dev/null \
        || { say "the service did not answer on $SOCKET; see $STATE_DIR/service.log"; exit 1; }
fi

echo "export CONTAINERS_CONF=$CONTAINERS_CONF"
echo "export HAET_CONTAINER_SOCKET=unix://$SOCKET"
echo "export HAET_BASE_IMAGE=$BASE_IMAGE"
