#!/usr/bin/env bash
# Builds the Debian packages orrery-coordinator and orrery-agent into
# target/debian/ from this workspace, with dpkg-deb (no other tools).
#
#   bash packaging/build.sh                 release binaries (cargo build --release)
#   ORRERY_PACKAGE_PROFILE=dev bash ...     debug binaries (faster; for tests)
#   ORRERY_PACKAGE_BIN_DIR=DIR bash ...     binaries already built in DIR
#   ORRERY_PACKAGE_COMPRESSION=gzip ...     faster, larger packages (default xz)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PKG=$ROOT/packaging
PROFILE=${ORRERY_PACKAGE_PROFILE:-release}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=$TARGET/debian

if [ -n "${ORRERY_PACKAGE_BIN_DIR:-}" ]; then
    BIN=$ORRERY_PACKAGE_BIN_DIR
else
    (cd "$ROOT" && cargo build --profile "$PROFILE" -p orrery-coordinator -p orrery-agent)
    case "$PROFILE" in
        dev) BIN=$TARGET/debug ;;
        *) BIN=$TARGET/$PROFILE ;;
    esac
fi
for b in orrery-coordinator orrery-agent; do
    [ -x "$BIN/$b" ] || { echo "build.sh: no $BIN/$b" >&2; exit 1; }
done

VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -n 1)
ARCH=$(dpkg --print-architecture)
mkdir -p "$OUT"

# stage PACKAGE: a fresh staging tree for one package.
stage() {
    local dir=$OUT/stage/$1
    rm -rf "$dir"
    mkdir -p "$dir/DEBIAN" "$dir/usr/bin" "$dir/lib/systemd/system" "$dir/etc/orrery" \
        "$dir/usr/share/doc/$1"
    echo "$dir"
}

# finish PACKAGE DIR: docs, modes, and the .deb.
finish() {
    local name=$1 dir=$2
    cat >"$dir/usr/share/doc/$name/copyright" <<COPY
Orrery $VERSION
License: Apache-2.0
COPY
    # Owners come from --root-owner-group (root:root); modes are set here
    # so the umask of whoever builds does not leak into the package.
    find "$dir" -type d -exec chmod 0755 {} +
    find "$dir" -type f -exec chmod 0644 {} +
    chmod 0755 "$dir"/usr/bin/* "$dir"/DEBIAN/postinst "$dir"/DEBIAN/prerm "$dir"/DEBIAN/postrm
    local deb=$OUT/${name}_${VERSION}_${ARCH}.deb
    dpkg-deb --root-owner-group -Z"${ORRERY_PACKAGE_COMPRESSION:-xz}" --build "$dir" "$deb" >/dev/null
    echo "$deb"
}

# --- orrery-coordinator -------------------------------------------------------
d=$(stage orrery-coordinator)
install -m 0755 "$BIN/orrery-coordinator" "$d/usr/bin/"
install -m 0644 "$ROOT/systemd/orrery-coordinator.service" "$d/lib/systemd/system/"
install -m 0644 "$PKG/files/coordinator.toml" "$d/etc/orrery/coordinator.toml"
cat >"$d/DEBIAN/control" <<CTRL
Package: orrery-coordinator
Version: $VERSION
Architecture: $ARCH
Maintainer: Orrery <orrery@localhost>
Section: admin
Priority: optional
Depends: libc6, passwd
Recommends: novnc
Description: Orrery coordinator: a CloudStack-compatible VM control plane
 Serves the CloudStack API (stock clients and the web UI work unchanged),
 places instances on hosts, keeps the store (SQLite), runs the console
 proxy and accepts orrery-agent connections over mutual TLS.
CTRL
echo /etc/orrery/coordinator.toml >"$d/DEBIAN/conffiles"
install -m 0755 "$PKG/scripts/coordinator.postinst" "$d/DEBIAN/postinst"
install -m 0755 "$PKG/scripts/coordinator.prerm" "$d/DEBIAN/prerm"
install -m 0755 "$PKG/scripts/coordinator.postrm" "$d/DEBIAN/postrm"
finish orrery-coordinator "$d"

# --- orrery-agent -------------------------------------------------------------
d=$(stage orrery-agent)
install -m 0755 "$BIN/orrery-agent" "$d/usr/bin/"
install -m 0644 "$ROOT/systemd/orrery-agent.service" "$d/lib/systemd/system/"
install -m 0644 "$PKG/files/agent.toml" "$d/etc/orrery/agent.toml"
cat >"$d/DEBIAN/control" <<CTRL
Package: orrery-agent
Version: $VERSION
Architecture: $ARCH
Maintainer: Orrery <orrery@localhost>
Section: admin
Priority: optional
Depends: libc6, libvirt0, libvirt-daemon-system, libvirt-clients, libvirt-daemon-driver-qemu, qemu-system-x86, qemu-utils, dnsmasq-base, iptables
Recommends: ovmf, swtpm, swtpm-tools, genisoimage
Description: Orrery agent: runs a host's instances for the Orrery coordinator
 Drives libvirt and QEMU on a KVM host: domains, volumes, migration,
 statistics, the metadata service and config drives for guests, and the
 storage heartbeat that fences the host when it loses its coordinator.
 Optional: ovmf (UEFI), swtpm (vTPM), genisoimage (config drives).
CTRL
echo /etc/orrery/agent.toml >"$d/DEBIAN/conffiles"
install -m 0755 "$PKG/scripts/agent.postinst" "$d/DEBIAN/postinst"
install -m 0755 "$PKG/scripts/agent.prerm" "$d/DEBIAN/prerm"
install -m 0755 "$PKG/scripts/agent.postrm" "$d/DEBIAN/postrm"
finish orrery-agent "$d"
rm -rf "$OUT/stage"
