#!/usr/bin/env bash
# Several lab hypervisor hosts on one machine, each a network + mount + UTS
# namespace with its own virtlogd, libvirtd (TLS and TCP listeners) and a real
# orrery-agent enrolled with the coordinator.
#
#   hosts.sh up N --data-dir COORDINATOR_DATA_DIR --agent-port PORT [--store URL]
#       Creates hosts h1..hN (10.99.0.1..N on bridge orrlab0, 10.99.0.254).
#       The coordinator must accept agents on 10.99.0.254:PORT (serve with
#       --agent-listen 0.0.0.0:PORT). Prints one JSON object per host on
#       stdout: {"name", "address", "libvirt_uri", "host_id"}. Run again
#       with the same coordinator, it starts whatever is not running (a host
#       after `kill` comes back with its enrolment and state).
#   hosts.sh down              removes every lab host and all lab state
#   hosts.sh kill hN           SIGKILLs every process of hN (abrupt failure)
#   hosts.sh partition hN      cuts hN's network link
#   hosts.sh cut-storage hN    makes hN's storage heartbeat fail: an empty
#                              read-only file system over the pool's
#                              .orrery-ha directory in hN only (its guests'
#                              disks stay reachable, as when one path fails)
#   hosts.sh heal hN           restores its link and storage heartbeat
#   hosts.sh status            one JSON object per host
#   hosts.sh exec hN CMD...    runs CMD inside hN's namespaces
#
# Every host sees the same primary storage directory at
# /var/lib/orrery/primary and its own directory at /var/lib/orrery (so the
# agent's state directory has the same path everywhere: domain XML naming
# /var/lib/orrery/agent/consoles/X.log is valid on every host, as migration
# needs). /etc is an overlay per host (its /etc/hosts, /etc/orrery/agent.toml
# and the /etc/pki files the agent writes), /run a tmpfs per host. libvirt
# runs its lock manager (virtlockd) with the lockspace on the shared pool, so
# a disk one host runs cannot be started on another.
#
# Environment: ORRERY_LAB_DIR (lab state, default /var/lib/orrery-lab),
# ORRERY_COORDINATOR_BIN, ORRERY_AGENT_BIN (default the release build).
# All commands are idempotent. Traffic stays on the bridge: no forwarding,
# no NAT.
set -euo pipefail

LAB_SCRIPT=$(readlink -f "${BASH_SOURCE[0]}")
REPO=$(cd "$(dirname "$LAB_SCRIPT")/../.." && pwd)
LAB_DIR=${ORRERY_LAB_DIR:-/var/lib/orrery-lab}
COORD_BIN=${ORRERY_COORDINATOR_BIN:-$REPO/target/release/orrery-coordinator}
AGENT_BIN=${ORRERY_AGENT_BIN:-$REPO/target/release/orrery-agent}
BRIDGE=orrlab0
NET=10.99.0
GATEWAY=$NET.254
LIBVIRT_TIMEOUT=${LIBVIRT_START_TIMEOUT:-60}
# The lab's hosts share these paths; the agent's defaults point at them.
ORRERY_ROOT=/var/lib/orrery

die() { echo "hosts.sh: $*" >&2; exit 1; }
say() { echo "hosts.sh: $*" >&2; }

# `down` removes this directory recursively.
case $(readlink -m "$LAB_DIR") in
    /?*) ;;
    *) die "ORRERY_LAB_DIR must be an absolute path other than /" ;;
esac

host_dir() { echo "$LAB_DIR/hosts/$1"; }

check_name() {
    [[ $1 =~ ^h([1-9][0-9]?)$ ]] || die "bad host name '$1' (h1..h99)"
    (( BASH_REMATCH[1] <= 99 )) || die "bad host name '$1'"
}

host_index() { echo "${1#h}"; }

# The inode of a lab host's network namespace, or nothing.
netns_inode() {
    [ -e "/run/netns/$1" ] && stat -L -c %i "/run/netns/$1" 2>/dev/null || true
}

# Every process whose network namespace is host $1's.
netns_pids() {
    local ino pid
    ino=$(netns_inode "$1")
    [ -n "$ino" ] || return 0
    for pid in /proc/[0-9]*; do
        [ "$(readlink "$pid/ns/net" 2>/dev/null)" = "net:[$ino]" ] && echo "${pid#/proc/}"
    done
    return 0
}

# The process that holds host $1's mount and UTS namespaces, when alive and
# really in the host's network namespace (a pid file can outlive its process).
keeper_pid() {
    local pidfile pid ino
    pidfile="$(host_dir "$1")/keeper.pid"
    [ -r "$pidfile" ] || return 1
    pid=$(cat "$pidfile")
    ino=$(netns_inode "$1")
    [ -n "$pid" ] && [ -n "$ino" ] || return 1
    [ "$(readlink "/proc/$pid/ns/net" 2>/dev/null)" = "net:[$ino]" ] || return 1
    echo "$pid"
}

in_host() {
    local name=$1 pid
    shift
    pid=$(keeper_pid "$name") || die "$name is not running"
    nsenter -t "$pid" -m -u -n -- "$@"
}

# Whether a process named $2 runs in host $1.
host_runs() {
    local pid
    for pid in $(netns_pids "$1"); do
        [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ] && return 0
    done
    return 1
}

# Kills every process of host $1 with SIGKILL until none is left.
kill_host() {
    local name=$1 pids deadline=$((SECONDS + 30))
    while :; do
        pids=$(netns_pids "$name")
        [ -z "$pids" ] && return 0
        # shellcheck disable=SC2086
        kill -9 $pids 2>/dev/null || true
        [ $SECONDS -lt $deadline ] || die "processes of $name survive SIGKILL: $pids"
        sleep 0.1
    done
}

# Lab hosts: those with state, and any namespace named like one whose veth
# is still there (state removed by hand).
known_hosts() {
    {
        [ -d "$LAB_DIR/hosts" ] && ls "$LAB_DIR/hosts"
        for ns in $(ip netns list 2>/dev/null | awk '{print $1}'); do
            [[ $ns =~ ^h[0-9]+$ ]] && ip link show "veth-$ns" >/dev/null 2>&1 && echo "$ns"
        done
        true
    } | sort -u -V
}

# ---------------------------------------------------------------------------
# Inside a new mount + UTS namespace (run through `unshare`): set the host up
# and keep its namespaces alive.
keeper() {
    local name=$1 dir=$2 shared=$3
    hostname "$name"
    mount -t overlay overlay -o "lowerdir=/etc,upperdir=$dir/etc-upper,workdir=$dir/etc-work" /etc
    # Without it the host's daemons would share pid files and sockets with
    # the root namespace's.
    mount -t tmpfs -o mode=0755 tmpfs /run
    mkdir -p /run/libvirt /run/lock
    mount --bind "$dir/libvirt-etc" /etc/libvirt
    mount --bind "$dir/libvirt-lib" /var/lib/libvirt
    mount --bind "$dir/libvirt-log" /var/log/libvirt
    mount --bind "$dir/libvirt-cache" /var/cache/libvirt
    mount --bind "$dir/orrery" "$ORRERY_ROOT"
    mount --bind "$shared" "$ORRERY_ROOT/primary"
    echo $$ >"$dir/keeper.pid"
    exec sleep infinity
}

# ---------------------------------------------------------------------------

ensure_bridge() {
    if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
        ip link add "$BRIDGE" type bridge
    fi
    ip addr replace "$GATEWAY/24" dev "$BRIDGE"
    ip link set "$BRIDGE" up
}

# The files of host $1 (index $2) of $3 hosts, made before it starts.
prepare_host() {
    local name=$1 i=$2 n=$3 dir j
    dir=$(host_dir "$name")
    mkdir -p "$dir"/{etc-upper,etc-work,libvirt-etc,libvirt-lib,libvirt-cache} \
        "$dir"/libvirt-log/{qemu,lxc,swtpm} "$dir"/orrery/{agent,primary}
    mkdir -p "$dir"/libvirt-lib/{boot,images,qemu/channel/target,dnsmasq,network,swtpm,sanlock} \
        "$dir"/libvirt-cache/qemu
    # The package's configuration, without the root namespace's domains,
    # networks and pools.
    if [ ! -e "$dir/libvirt-etc/libvirtd.conf" ]; then
        cp -a /etc/libvirt/. "$dir/libvirt-etc/"
        rm -rf "$dir/libvirt-etc/qemu" "$dir/libvirt-etc/storage"
        mkdir -p "$dir/libvirt-etc/qemu/networks/autostart"
        cat >>"$dir/libvirt-etc/libvirtd.conf" <<'EOF'

# Orrery lab host: TLS with the certificates the agent writes from its
# Orrery certificate; plain TCP without authentication for the lab only.
listen_tls = 1
listen_tcp = 1
auth_tcp = "none"
EOF
        cat >>"$dir/libvirt-etc/qemu.conf" <<'EOF'

# Orrery lab host.
user = "root"
group = "root"
security_driver = "none"
lock_manager = "lockd"
# Consoles: VNC only over TLS with a client certificate from the Orrery CA
# (the files the agent writes under /etc/pki/qemu).
vnc_tls = 1
vnc_tls_x509_verify = 1
EOF
        cat >"$dir/libvirt-etc/qemu-lockd.conf" <<EOF
# Disk leases in a lockspace every host shares: a second start of a disk
# that another host's QEMU holds is refused.
auto_disk_leases = 1
require_lease_for_disks = 1
file_lockspace_dir = "$ORRERY_ROOT/primary/.orrery-locks"
EOF
    fi
    echo "$name" >"$dir/etc-upper/hostname"
    {
        echo "127.0.0.1 localhost"
        echo "::1 localhost ip6-localhost ip6-loopback"
        for j in $(seq 1 "$n"); do echo "$NET.$j h$j"; done
        echo "$GATEWAY orrlab-gateway"
    } >"$dir/etc-upper/hosts"
    mkdir -p "$dir/etc-upper/orrery"
    cat >"$dir/etc-upper/orrery/agent.toml" <<EOF
# Orrery lab host $name: software emulation (KVM does not boot guests here),
# libvirt and QEMU TLS from the host certificate, the bridge address.
domain_type = "qemu"
libvirt_tls = true
address = "$NET.$i"
# Consoles on every address of the host (so a migrated domain finds its
# address on the destination too); TLS with client certificates guards them.
vnc_listen = "0.0.0.0"
EOF
}

start_network() {
    local name=$1 i=$2
    [ -e "/run/netns/$name" ] || ip netns add "$name"
    if ! ip link show "veth-$name" >/dev/null 2>&1; then
        ip link add "veth-$name" type veth peer name eth0 netns "$name"
    fi
    ip link set "veth-$name" master "$BRIDGE" up
    ip -n "$name" link set lo up
    ip -n "$name" addr replace "$NET.$i/24" dev eth0
    ip -n "$name" link set eth0 up
}

start_keeper() {
    local name=$1 dir deadline
    dir=$(host_dir "$name")
    keeper_pid "$name" >/dev/null && return 0
    rm -f "$dir/keeper.pid"
    setsid ip netns exec "$name" unshare --mount --uts --propagation private --fork \
        bash "$LAB_SCRIPT" _keeper "$name" "$dir" "$LAB_DIR/primary" \
        </dev/null >>"$dir/keeper.log" 2>&1 &
    deadline=$((SECONDS + 20))
    until keeper_pid "$name" >/dev/null; do
        [ $SECONDS -lt $deadline ] || die "$name: namespace keeper did not start: $(tail -5 "$dir/keeper.log")"
        sleep 0.1
    done
}

# Enrols host $1 with token $2 (once), starts its libvirt, then its agent.
start_host_services() {
    local name=$1 token=$2 dir deadline
    dir=$(host_dir "$name")
    if [ ! -e "$dir/orrery/agent/agent.json" ]; then
        in_host "$name" "$AGENT_BIN" enroll --coordinator "$GATEWAY:$AGENT_PORT" --token "$token" \
            >>"$dir/enroll.log" 2>&1 || die "$name: enrolment failed: $(tail -5 "$dir/enroll.log")"
    fi
    # After enrolment: libvirtd reads the TLS files the agent wrote at start.
    host_runs "$name" virtlogd ||
        in_host "$name" virtlogd -d </dev/null >>"$dir/libvirtd.log" 2>&1
    host_runs "$name" virtlockd ||
        in_host "$name" virtlockd -d </dev/null >>"$dir/libvirtd.log" 2>&1
    host_runs "$name" libvirtd ||
        in_host "$name" libvirtd -d --listen </dev/null >>"$dir/libvirtd.log" 2>&1
    deadline=$((SECONDS + LIBVIRT_TIMEOUT))
    until in_host "$name" virsh -c qemu:///system version >/dev/null 2>&1; do
        [ $SECONDS -lt $deadline ] || die "$name: libvirt did not answer within ${LIBVIRT_TIMEOUT}s"
        sleep 0.3
    done
    if ! host_runs "$name" orrery-agent; then
        echo "===== agent run =====" >>"$dir/agent.log"
        # exec: the background process becomes the agent itself, in the
        # host's namespaces, holding none of this script's descriptors.
        local pid
        pid=$(keeper_pid "$name") || die "$name is not running"
        (exec nsenter -t "$pid" -m -u -n -- setsid "$AGENT_BIN" run) \
            </dev/null >>"$dir/agent.log" 2>&1 &
    fi
}

host_json() {
    local name=$1 i id
    i=$(host_index "$name")
    id=$(sed -n 's/.*"host_id": *"\([^"]*\)".*/\1/p' "$(host_dir "$name")/orrery/agent/agent.json" 2>/dev/null || true)
    printf '{"name": "%s", "address": "%s", "libvirt_uri": "qemu+tls://%s/system", "host_id": "%s"}\n' \
        "$name" "$NET.$i" "$NET.$i" "$id"
}

cmd_up() {
    local n="" data_dir="" i name pids=() failed=0 store_args=()
    while [ $# -gt 0 ]; do
        case $1 in
            --data-dir) data_dir=$2; shift 2 ;;
            --agent-port) AGENT_PORT=$2; shift 2 ;;
            # The coordinator's PostgreSQL store, when it has one.
            --store) store_args=(--store "$2"); shift 2 ;;
            [0-9]*) n=$1; shift ;;
            *) die "up: unknown argument '$1'" ;;
        esac
    done
    [[ $n =~ ^[1-9][0-9]?$ ]] && [ "$n" -le 99 ] || die "usage: up N --data-dir DIR --agent-port PORT"
    [ -n "$data_dir" ] && [ -n "${AGENT_PORT:-}" ] || die "usage: up N --data-dir DIR --agent-port PORT"
    [ "$(id -u)" -eq 0 ] || die "must run as root"
    for tool in ip nsenter unshare virtlogd libvirtd virsh; do
        command -v "$tool" >/dev/null 2>&1 || die "missing $tool"
    done
    [ -x "$COORD_BIN" ] || die "no coordinator binary $COORD_BIN (set ORRERY_COORDINATOR_BIN)"
    [ -x "$AGENT_BIN" ] || die "no agent binary $AGENT_BIN (set ORRERY_AGENT_BIN)"

    mkdir -p "$LAB_DIR/hosts" "$LAB_DIR/primary/.orrery-locks"
    # The mount point every host binds its own directory on; remembered so
    # `down` removes it again.
    if [ ! -d "$ORRERY_ROOT" ]; then
        mkdir -p "$ORRERY_ROOT"
        touch "$LAB_DIR/created-orrery-root"
    fi
    ensure_bridge
    say "agents reach the coordinator at $GATEWAY:$AGENT_PORT (serve with --agent-listen 0.0.0.0:$AGENT_PORT)"

    local tokens=()
    for i in $(seq 1 "$n"); do
        name=h$i
        prepare_host "$name" "$i" "$n"
        if ! keeper_pid "$name" >/dev/null && [ -e "/run/netns/$name" ]; then
            # A host that was killed comes back as a rebooted machine would:
            # with a fresh network stack, not the bridges its old libvirt
            # made (the new one knows nothing of them).
            kill_host "$name"
            ip netns del "$name" 2>/dev/null || true
            ip link del "veth-$name" 2>/dev/null || true
        fi
        start_network "$name" "$i"
        start_keeper "$name"
        if [ -e "$(host_dir "$name")/orrery/agent/agent.json" ]; then
            tokens[i]=-
        else
            tokens[i]=$("$COORD_BIN" "${store_args[@]}" token create --data-dir "$data_dir") ||
                die "token create failed"
        fi
    done
    # libvirtd's first start probes QEMU for several seconds: hosts in parallel.
    for i in $(seq 1 "$n"); do
        start_host_services "h$i" "${tokens[i]}" &
        pids+=($!)
    done
    for pid in "${pids[@]}"; do
        wait "$pid" || failed=1
    done
    [ $failed -eq 0 ] || die "some hosts did not start (logs under $LAB_DIR/hosts)"
    for i in $(seq 1 "$n"); do host_json "h$i"; done
}

cmd_down() {
    local name
    for name in $(known_hosts); do
        kill_host "$name"
        ip netns del "$name" 2>/dev/null || true
        ip link del "veth-$name" 2>/dev/null || true
    done
    ip link del "$BRIDGE" 2>/dev/null || true
    if [ -e "$LAB_DIR/created-orrery-root" ]; then
        rmdir "$ORRERY_ROOT" 2>/dev/null || true
    fi
    # Only lab state below; no mounts were made in this namespace.
    rm -rf "$LAB_DIR"
}

cmd_kill() {
    check_name "$1"
    kill_host "$1"
}

cmd_link() {
    check_name "$1"
    ip link show "veth-$1" >/dev/null 2>&1 || die "$1 has no link"
    ip link set "veth-$1" "$2"
}

HA_DIR=$ORRERY_ROOT/primary/.orrery-ha

cmd_cut_storage() {
    check_name "$1"
    in_host "$1" mkdir -p "$HA_DIR"
    in_host "$1" mountpoint -q "$HA_DIR" ||
        in_host "$1" mount -t tmpfs -o ro,size=64k,mode=0555 orrery-cut "$HA_DIR"
}

cmd_heal() {
    cmd_link "$1" up
    if keeper_pid "$1" >/dev/null; then
        while in_host "$1" mountpoint -q "$HA_DIR"; do in_host "$1" umount "$HA_DIR"; done
    fi
}

cmd_status() {
    local name i state
    for name in $(known_hosts); do
        i=$(host_index "$name")
        state=$(ip -o link show "veth-$name" 2>/dev/null | grep -q '[<,]UP[,>]' && echo up || echo down)
        printf '{"name": "%s", "address": "%s", "keeper": %s, "libvirtd": %s, "agent": %s, "link": "%s"}\n' \
            "$name" "$NET.$i" \
            "$(keeper_pid "$name" >/dev/null && echo true || echo false)" \
            "$(host_runs "$name" libvirtd && echo true || echo false)" \
            "$(host_runs "$name" orrery-agent && echo true || echo false)" \
            "$state"
    done
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case $cmd in
    up) cmd_up "$@" ;;
    down) cmd_down ;;
    kill) [ $# -eq 1 ] || die "usage: kill hN"; cmd_kill "$1" ;;
    partition) [ $# -eq 1 ] || die "usage: partition hN"; cmd_link "$1" down ;;
    heal) [ $# -eq 1 ] || die "usage: heal hN"; cmd_heal "$1" ;;
    cut-storage) [ $# -eq 1 ] || die "usage: cut-storage hN"; cmd_cut_storage "$1" ;;
    status) cmd_status ;;
    exec)
        [ $# -ge 2 ] || die "usage: exec hN CMD..."
        check_name "$1"
        pid=$(keeper_pid "$1") || die "$1 is not running"
        shift
        exec nsenter -t "$pid" -m -u -n -- "$@"
        ;;
    _keeper) keeper "$@" ;;
    *) die "usage: hosts.sh up N --data-dir DIR --agent-port PORT | down | kill hN | partition hN | heal hN | status | exec hN CMD..." ;;
esac
