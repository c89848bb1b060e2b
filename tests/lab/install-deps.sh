#!/usr/bin/env bash
# Install the Debian packages the VM test lab needs: the hypervisor stack
# (QEMU, libvirt, swtpm, OVMF, dnsmasq for libvirt's DHCP) and the tools
# build-guest.sh uses to assemble a bootable guest disk without mounting
# anything, plus the tools other tests compare with or drive (OpenSSH's
# ssh-keygen, a headless chromium). Safe to rerun: when every package is already installed, apt is
# not touched at all.
set -euo pipefail

PACKAGES=(
    # Hypervisor stack. qemu-utils is listed here for the "already
    # installed" check; the apt command pins it to qemu-system-x86's version
    # (see below).
    qemu-system-x86
    qemu-utils
    libvirt-daemon-system
    libvirt-daemon-driver-qemu
    libvirt-clients
    libvirt-dev
    swtpm
    swtpm-tools
    ovmf
    # libvirt runs dnsmasq for a virtual network's DHCP and programs the
    # network's forwarding/NAT rules with iptables.
    dnsmasq-base
    iptables
    # Guest image: Debian's kernel and its modules, busybox as the whole
    # userland, and tools that write the disk image directly (partition
    # table, FAT filesystem, files, bootloader) instead of mounting it.
    linux-image-amd64
    busybox-static
    syslinux
    syslinux-common
    mtools
    dosfstools
    fdisk
    cpio
    # UEFI boot of the same guest disk: Debian's signed shim and GRUB (the
    # kernel is signed too), so it boots under Secure Boot.
    shim-signed
    grub-efi-amd64-signed
    # The agent's libvirt bindings find libvirt through pkg-config.
    pkg-config
    # ssh-keygen: the key pair tests compare fingerprints with OpenSSH's.
    openssh-client
    # A real browser for the web UI tests (driven by selenium).
    chromium
    chromium-driver
    # The lab guest's SSH server (copied into its initramfs with its
    # libraries), the agent's config drive writer, and cloud-init, whose own
    # config drive reader the tests use.
    dropbear-bin
    genisoimage
    cloud-init
    # Also copied into the lab guest's initramfs with their libraries: the
    # QEMU guest agent (qemu-ga, for quiesced snapshots: fsfreeze/thaw) and
    # mke2fs, which makes the guest's data disk ext4.
    qemu-guest-agent
    e2fsprogs
    # noVNC, which the coordinator's console proxy serves to browsers.
    novnc
    # systemd-analyze checks the packages' units (nothing starts systemd).
    systemd
    # The PostgreSQL store: the server the tests start by hand
    # (tests/lab/postgres.sh), and psql/pg_dump.
    postgresql
    postgresql-client
)

if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps.sh: must run as root" >&2
    exit 1
fi

# A package counts as present only when dpkg says it is fully installed
# ("install ok installed"); half-configured or removed-but-config leftovers
# fall through to apt.
missing=()
for pkg in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    if [ "$status" != "install ok installed" ]; then
        missing+=("$pkg")
    fi
done

# qemu-img can vanish even when every package above is "installed" (see the
# qemu-utils note), so check the binary itself too.
if [ ${#missing[@]} -eq 0 ] && command -v qemu-img >/dev/null 2>&1; then
    echo "install-deps.sh: all ${#PACKAGES[@]} packages already installed"
    exit 0
fi

echo "install-deps.sh: installing: ${missing[*]:-qemu-utils (qemu-img missing)}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q

# A machine may come with a newer qemu-utils (from backports) than Debian's
# QEMU. That qemu-utils declares Breaks on Debian's qemu-system-common, so
# apt refuses the install outright, and a plain "apt-get install
# qemu-system-x86" would remove it, leaving no qemu-img at all. Pin
# qemu-utils to exactly the version of qemu-system-x86 that apt will install
# (both come from the same source package) and allow the downgrade.
qemu_version=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/ {print $2}')
if [ -z "$qemu_version" ] || [ "$qemu_version" = "(none)" ]; then
    echo "install-deps.sh: apt knows no qemu-system-x86 candidate" >&2
    exit 1
fi
install_list=()
for pkg in "${PACKAGES[@]}"; do
    if [ "$pkg" = qemu-utils ]; then
        install_list+=("qemu-utils=$qemu_version")
    else
        install_list+=("$pkg")
    fi
done

# Install the full list, not only the missing ones, so that qemu-utils is
# always resolved together with qemu-system-x86.
apt-get install -y -q --no-install-recommends --allow-downgrades \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    "${install_list[@]}"

if ! command -v qemu-img >/dev/null 2>&1; then
    echo "install-deps.sh: qemu-img is missing after the install" >&2
    exit 1
fi
echo "install-deps.sh: done ($(qemu-img --version | head -n1))"
