#!/usr/bin/env bash
# Build the lab's guest disk: a tiny bootable qcow2 made only from Debian
# packages already on this machine (install-deps.sh), without mounting
# anything, so it works in containers with no loop devices.
#
#   tests/lab/build-guest.sh [OUT.qcow2]     (default tests/lab/out/guest.qcow2)
#
# Disk layout: MBR (syslinux mbr.bin) + one bootable FAT16 partition holding
# syslinux, the host's Debian kernel and an initramfs generated here; for
# UEFI the same partition carries Debian's signed shim and GRUB at the
# removable-media path (EFI/BOOT/BOOTX64.EFI), so it also boots under
# Secure Boot with Microsoft's and Debian's keys. The
# initramfs is the whole guest: busybox-static as userland, the few kernel
# modules a libvirt guest needs, and an /init that reports what it sees on
# the serial console as ORRERY-GUEST-* lines for the tests to grep:
#
#   ORRERY-GUEST-BOOTED               /init started
#   ORRERY-GUEST-HOSTNAME=<name>      hostname offered by DHCP ("none" if none)
#   ORRERY-GUEST-IP=<address>         address leased on eth0 ("none" if none)
#   ORRERY-GUEST-POWERBUTTON          ACPI power button pressed; powers off
#   ORRERY-GUEST-BUSY                 SMBIOS product names "OrreryBusy": the
#                                     guest keeps one CPU busy from now on
#   ORRERY-GUEST-DATASOURCE=<source>  where its first-boot step found its data:
#                                     configdrive, metadata (the service at
#                                     the DHCP server) or none
#   ORRERY-GUEST-KEYS=<n>             SSH keys put into root's authorized_keys
#   ORRERY-GUEST-SSHD                 the SSH server (dropbear) listens on 22
#   ORRERY-GUEST-FIRMWARE=<bios|uefi> how it was booted
#   ORRERY-GUEST-SECUREBOOT=<state>   UEFI's SecureBoot variable: enabled,
#                                     disabled (or none under BIOS)
#   ORRERY-GUEST-TPM=<n|none>         a TPM's major version, when one is there
#   ORRERY-GUEST-TPM-NV=<new|kept>:<hex>  TPM 2.0 only: an NV index's value,
#                                     kept from an earlier boot or new (this
#                                     boot defined it with a random value)
#   ORRERY-GUEST-CPU=<model name>     the first CPU's model name
#   ORRERY-GUEST-CHIPSET=<i440fx|q35> the machine type's chipset
#   ORRERY-GUEST-USERDATA-BEGIN/END   user data that is a script ran; its
#                                     output is printed between the two
#   ORRERY-GUEST-AGENT                the QEMU guest agent (qemu-ga) serves
#                                     the org.qemu.guest_agent.0 channel
#   ORRERY-GUEST-FSFREEZE             the guest agent is about to freeze the
#                                     file systems (guest-fsfreeze-freeze)
#   ORRERY-GUEST-FSTHAW               the guest agent has thawed them
#   ORRERY-GUEST-DATA=mounted         a second disk (vdb, at boot or hot-
#                                     plugged) is mounted at /data; made
#                                     ext4 first when it had no ext2/3/4
#   ORRERY-GUEST-DATA=error           it could not be made, mounted or
#                                     written; tried again in 10 s
#   ORRERY-GUEST-COUNTER=<n>          once a second while /data is mounted:
#                                     n = /data/counter (0 when absent) + 1,
#                                     written back and synced before this
#                                     line, so a snapshot of the disk holds
#                                     the last value printed (or the next);
#                                     none between FSFREEZE and FSTHAW
#
# Like a cloud image, the guest reads its metadata as cloud-init does on
# every boot (config drive labelled config-2 first, then the metadata
# service on the DHCP server's address): keys replace root's
# authorized_keys, the host name is set from local-hostname, and user data
# is run when it is a script, after a "## template: jinja" first line has
# its {{ ds.meta_data.NAME }} references filled in from the metadata. The
# graphical console (tty1) shows a prompt with a root shell.
#
# For snapshot and quiesce tests the guest also runs Debian's qemu-ga (its
# fsfreeze hook prints the FSFREEZE/FSTHAW lines; it freezes /data, the one
# block-device file system) and keeps a counter on the second disk, so a
# reverted snapshot shows on the console as the counter going on from the
# snapshot's value. Both start after the steps above and wait in the
# background, so a guest without the channel or the disk reaches its other
# markers as before (the larger initramfs and the ext4 modules cost a few
# tenths of a second under TCG).
#
# A sha256 of the qcow2 is written next to it (guest.qcow2 -> guest.sha256).
set -euo pipefail

LAB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUT=${1:-$LAB_DIR/out/guest.qcow2}

# Kernel modules the guest loads, by name; their dependencies are resolved
# from modules.dep and loaded first. Add names here (e.g. iso9660, sr_mod,
# ata_piix for a config-drive CD-ROM) and they are picked up automatically.
GUEST_MODULES=(
    virtio_pci      # the PCI transport every virtio device below sits on
    virtio_blk      # the root disk (and any second disk)
    virtio_net      # the NIC
    virtio_console  # virtio serial channels (e.g. a guest agent later)
    evdev           # /dev/input/event* that busybox acpid reads
    button          # ACPI power button -> input event
    ata_piix        # IDE CD-ROM drives (i440fx machines): the config drive
    ahci            # SATA CD-ROM drives (q35 machines)
    sr_mod          # SCSI CD-ROM devices (/dev/sr*)
    isofs           # ISO 9660 file systems
    efivarfs        # UEFI variables (SecureBoot)
    crc32c_generic  # ext4/jbd2 checksums (asked for by name, not in modules.dep)
    ext4            # the data disk's file system (/data)
)

die() { echo "build-guest.sh: $*" >&2; exit 1; }

for tool in busybox cpio gzip sfdisk mkfs.vfat mcopy syslinux qemu-img sha256sum ldd; do
    command -v "$tool" >/dev/null 2>&1 || die "missing $tool (run tests/lab/install-deps.sh)"
done
BUSYBOX=/bin/busybox
[ -x "$BUSYBOX" ] || die "no $BUSYBOX (busybox-static)"
DROPBEAR=/usr/sbin/dropbear
[ -x "$DROPBEAR" ] || die "no $DROPBEAR (dropbear-bin)"
QEMU_GA=/usr/sbin/qemu-ga
[ -x "$QEMU_GA" ] || die "no $QEMU_GA (qemu-guest-agent)"
MKE2FS=/usr/sbin/mke2fs
[ -x "$MKE2FS" ] || die "no $MKE2FS (e2fsprogs)"
SHIM=/usr/lib/shim/shimx64.efi.signed
GRUB_EFI=/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed
[ -r "$SHIM" ] || die "no $SHIM (shim-signed)"
[ -r "$GRUB_EFI" ] || die "no $GRUB_EFI (grub-efi-amd64-signed)"
MBR_BIN=/usr/lib/syslinux/mbr/mbr.bin
[ -r "$MBR_BIN" ] || die "no $MBR_BIN (syslinux-common)"

# The newest installed Debian kernel that also has its modules.
KVER=
while read -r vmlinuz; do
    [ -f "$vmlinuz" ] || continue
    v=${vmlinuz#/boot/vmlinuz-}
    if [ -f "/lib/modules/$v/modules.dep" ]; then KVER=$v; break; fi
done < <(printf '%s\n' /boot/vmlinuz-* | sort -V -r)
[ -n "$KVER" ] || die "no /boot/vmlinuz-* with /lib/modules/<version>/modules.dep (linux-image-amd64)"
KERNEL=/boot/vmlinuz-$KVER
MODDIR=/lib/modules/$KVER

WORK=$(mktemp -d "${TMPDIR:-/tmp}/orrery-guest.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
ROOT=$WORK/initramfs
mkdir -p "$ROOT"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,run,tmp,etc/acpi/PWRF,etc/qemu,lib/modules,mnt,root,data,var}
# qemu-ga's default state directory and pid file live under /var/run.
ln -s ../run "$ROOT/var/run"

# --- userland: busybox and one symlink per applet ---------------------------
cp "$BUSYBOX" "$ROOT/bin/busybox"
# --list-full prints each applet with its install path (bin/sh, sbin/ip, ...).
while read -r applet; do
    [ "$applet" = bin/busybox ] && continue
    # Relative link: one "../" per directory level of the applet's path.
    dirs=${applet//[!\/]/}
    rel=${dirs//\//../}bin/busybox
    ln -sf "$rel" "$ROOT/$applet"
done < <("$BUSYBOX" --list-full)

# --- Debian programs with the shared libraries they link --------------------
# Copied with the dynamic loader at the paths ldd reports, so they run
# unchanged inside the guest.
copy_program() { # /usr/sbin/NAME -> the same path in the initramfs
    local prog=$1 lib
    mkdir -p "$ROOT$(dirname "$prog")"
    cp "$prog" "$ROOT$prog"
    while read -r lib; do
        [ -n "$lib" ] || continue
        mkdir -p "$ROOT$(dirname "$lib")"
        cp -L "$lib" "$ROOT$lib"
    done < <(ldd "$prog" | sed -n 's/.*=> \(\/[^ ]*\) .*/\1/p; s/^[[:space:]]*\(\/[^ ]*\) (.*/\1/p')
}
# The SSH server.
copy_program "$DROPBEAR"
# The QEMU guest agent, and mke2fs for the data disk (busybox's mke2fs
# makes ext2 only; /init calls this one by its full path).
copy_program "$QEMU_GA"
copy_program "$MKE2FS"
[ -r /etc/mke2fs.conf ] && cp /etc/mke2fs.conf "$ROOT/etc/mke2fs.conf"
mkdir -p "$ROOT/etc/dropbear" "$ROOT/root/.ssh"
chmod 0700 "$ROOT/root" "$ROOT/root/.ssh"
# '*': no password works, keys do (dropbear refuses accounts locked with '!').
echo 'root:*:0:0:root:/root:/bin/sh' >"$ROOT/etc/passwd"
echo 'root:x:0:' >"$ROOT/etc/group"
echo '/bin/sh' >"$ROOT/etc/shells"

# --- kernel modules, in load order -------------------------------------------
# modules.dep maps "path.ko: dep.ko dep.ko..."; names may use - or _ (the
# kernel treats them alike). Depth-first so every dependency precedes its
# user; each module is listed once.
modname() { # kernel/drivers/net/virtio_net.ko[.xz] -> virtio_net
    local n=${1##*/}
    n=${n%%.ko*}
    printf '%s' "${n//-/_}"
}
declare -A MOD_PATH=() MOD_DEPS=() MOD_SEEN=()
while IFS= read -r line; do
    path=${line%%:*}
    name=${path##*/}; name=${name%%.ko*}; name=${name//-/_}
    MOD_PATH[$name]=$path
    MOD_DEPS[$name]=${line#*:}
done <"$MODDIR/modules.dep"

LOAD_ORDER=()
add_module() {
    local name=${1//-/_} dep
    [ -n "${MOD_SEEN[$name]:-}" ] && return 0
    MOD_SEEN[$name]=1
    if [ -z "${MOD_PATH[$name]:-}" ]; then
        # Not a module: either built into this kernel or a typo.
        if grep -qE "/${name//_/[-_]}\.ko" "$MODDIR/modules.builtin" 2>/dev/null; then
            return 0
        fi
        die "module $name is neither in modules.dep nor built into $KVER"
    fi
    for dep in ${MOD_DEPS[$name]}; do
        add_module "$(modname "$dep")"
    done
    LOAD_ORDER+=("$name")
}
for m in "${GUEST_MODULES[@]}"; do add_module "$m"; done

: >"$ROOT/etc/modules"
for name in "${LOAD_ORDER[@]}"; do
    src=$MODDIR/${MOD_PATH[$name]}
    dst=$ROOT/lib/modules/$name.ko
    # Newer Debian kernels compress modules; busybox insmod wants plain .ko.
    case "$src" in
        *.ko)     cp "$src" "$dst" ;;
        *.ko.xz)  xz -dc "$src" >"$dst" ;;
        *.ko.zst) zstd -qdc "$src" >"$dst" ;;
        *.ko.gz)  gzip -dc "$src" >"$dst" ;;
        *) die "unknown module format: $src" ;;
    esac
    echo "$name" >>"$ROOT/etc/modules"
done

# --- /init and its helpers ---------------------------------------------------
cat >"$ROOT/init" <<'INIT'
#!/bin/sh
# PID 1 of the lab guest. Each step is a function so new ones (config drive,
# second disk, ...) slot into main() without touching the others.
export PATH=/sbin:/bin:/usr/sbin:/usr/bin

# Markers go to the console (ttyS0 via console=ttyS0) in a single write each.
say() { echo "$*" >/dev/console; }

mount_pseudo_filesystems() {
    mount -t proc proc /proc
    mount -t sysfs sysfs /sys
    mount -t devtmpfs devtmpfs /dev
    mount -t tmpfs tmpfs /run
    mount -t tmpfs tmpfs /tmp
    exec </dev/console >/dev/console 2>&1
}

load_modules() {
    # Listed in dependency order at build time (see build-guest.sh).
    while read -r mod; do
        insmod "/lib/modules/$mod.ko" || echo "init: insmod $mod failed"
    done </etc/modules
}

setup_network() {
    ip link set lo up
    # virtio_net probes synchronously on insmod, but allow a moment anyway.
    n=0
    while [ ! -e /sys/class/net/eth0 ] && [ $n -lt 20 ]; do sleep 0.1; n=$((n + 1)); done
    if [ -e /sys/class/net/eth0 ]; then
        ip link set eth0 up
        # 10 tries x 2 s = the ~20 s budget; -q: exit once bound, -n: give
        # up instead of retrying forever. The hostname option is requested
        # explicitly so the DHCP server's host name always comes back.
        udhcpc -i eth0 -s /etc/udhcpc.script -O hostname -t 10 -T 2 -n -q \
            >/dev/null 2>&1 || true
    fi
    lease_ip=none lease_hostname=none lease_server=
    [ -r /run/lease.env ] && . /run/lease.env
    say "ORRERY-GUEST-HOSTNAME=$lease_hostname"
    say "ORRERY-GUEST-IP=$lease_ip"
}

busy_if_asked() {
    # The SMBIOS product comes from the zone setting vm.metadata.product;
    # tests that need CPU load set it to OrreryBusy before starting a guest.
    case "$(cat /sys/class/dmi/id/product_name 2>/dev/null)" in
        *OrreryBusy*)
            say "ORRERY-GUEST-BUSY"
            (while :; do :; done) &
            ;;
    esac
}

tick() {
    # A counter once a second: a test that moves the running guest to
    # another host sees it go on there without a restart or a long gap.
    (i=0; while :; do say "ORRERY-GUEST-TICK $i"; i=$((i + 1)); sleep 1; done) &
}

watch_hardware() {
    # Brings hot-added vCPUs and memory online (no udev here) and reports
    # what the guest has whenever it changes, so a test can see live
    # scaling from inside.
    (
        last=""
        while :; do
            for f in /sys/devices/system/cpu/cpu*/online; do
                [ -w "$f" ] && [ "$(cat "$f")" = 0 ] && echo 1 >"$f"
            done
            for f in /sys/devices/system/memory/memory*/state; do
                [ -w "$f" ] && [ "$(cat "$f")" = offline ] && echo online >"$f" 2>/dev/null
            done
            cpus=$(grep -c '^processor' /proc/cpuinfo)
            mem=$(sed -n 's/^MemTotal: *\([0-9]*\) kB/\1/p' /proc/meminfo)
            now="ORRERY-GUEST-HARDWARE cpus=$cpus memkb=$mem"
            [ "$now" != "$last" ] && say "$now"
            last=$now
            sleep 2
        done
    ) &
}

# The first-boot step: what cloud-init does with CloudStack's data.
# meta NAME prints a metadata file from whichever source was found.
meta() {
    case "$datasource" in
        configdrive) cat "/mnt/config/cloudstack/metadata/$1.txt" 2>/dev/null ;;
        metadata) timeout 5 wget -q -O - "http://$lease_server/latest/meta-data/$1" 2>/dev/null ;;
    esac
}

find_datasource() {
    datasource=none
    mkdir -p /mnt/config
    for dev in /dev/sr0 /dev/sr1 /dev/sr2; do
        [ -b "$dev" ] || continue
        if mount -t iso9660 -o ro "$dev" /mnt/config 2>/dev/null; then
            if [ -d /mnt/config/cloudstack/metadata ] || [ -f /mnt/config/openstack/latest/meta_data.json ]; then
                datasource=configdrive
                return
            fi
            umount /mnt/config
        fi
    done
    # The metadata service answers on the DHCP server's address once the
    # host knows us; retry briefly while it starts.
    if [ -n "${lease_server:-}" ]; then
        n=0
        while [ $n -lt 10 ]; do
            if timeout 5 wget -q -O /dev/null "http://$lease_server/latest/meta-data/instance-id" 2>/dev/null; then
                datasource=metadata
                return
            fi
            n=$((n + 1)); sleep 1
        done
    fi
}

fill_template() {
    # {{ ds.meta_data.NAME }} -> the metadata file NAME (cloud-init's
    # names use _ where CloudStack's files use -); other text unchanged.
    src=$1 out=$2
    : >"$out"
    while IFS= read -r line || [ -n "$line" ]; do
        while :; do
            ref=$(printf '%s\n' "$line" | sed -n 's/.*{{ *ds\.meta_data\.\([A-Za-z0-9_.-]*\) *}}.*/\1/p')
            [ -n "$ref" ] || break
            val=$(meta "$ref")
            [ -n "$val" ] || val=$(meta "$(echo "$ref" | tr _ -)")
            line=$(printf '%s\n' "$line" | sed "s|{{ *ds\.meta_data\.$ref *}}|$(printf '%s' "$val" | sed 's/[|&\\]/\\&/g')|")
        done
        printf '%s\n' "$line" >>"$out"
    done <"$src"
}

read_config_drive() {
    find_datasource
    say "ORRERY-GUEST-DATASOURCE=$datasource"
    [ "$datasource" = none ] && return
    name=$(meta local-hostname)
    [ -n "$name" ] && hostname "$name"
    # Keys replace what was there, as on a fresh boot of a cloud image.
    meta public-keys >/root/.ssh/authorized_keys
    chmod 0600 /root/.ssh/authorized_keys
    say "ORRERY-GUEST-KEYS=$(grep -c . /root/.ssh/authorized_keys)"
    case "$datasource" in
        configdrive) cp /mnt/config/cloudstack/userdata/user_data.txt /run/user-data 2>/dev/null ;;
        metadata) timeout 5 wget -q -O /run/user-data "http://$lease_server/latest/user-data" 2>/dev/null ;;
    esac
    [ -s /run/user-data ] || return 0
    if [ "$(head -n 1 /run/user-data | tr -d '\r')" = "## template: jinja" ]; then
        tail -n +2 /run/user-data >/run/user-data.jinja
        fill_template /run/user-data.jinja /run/user-data
    fi
    case "$(head -c 2 /run/user-data)" in
        '#!')
            chmod 0755 /run/user-data
            out=$(/run/user-data 2>&1)
            say "ORRERY-GUEST-USERDATA-BEGIN"
            say "$out"
            say "ORRERY-GUEST-USERDATA-END"
            ;;
    esac
}

# TPM 2.0 commands as hex (xxd -r -p skips the spaces): one 8-byte NV
# index, 0x01500016, readable and writable with its own empty password
# (a TPM_RS_PW session), defined under the owner hierarchy, whose password
# swtpm leaves empty. A value written there is only still there after a
# restart if the host kept the TPM's state.
TPM_PW_SESSION="00000009 40000009 0000 00 0000"
TPM_NV="01500016 01500016"
TPM_NV_READ="8002 00000023 0000014e $TPM_NV $TPM_PW_SESSION 0008 0000"
TPM_NV_DEFINE="8002 0000002d 0000012a 40000001 $TPM_PW_SESSION 0000 000e 01500016 000b 02040004 0000 0008"
TPM_NV_WRITE="8002 0000002b 00000137 $TPM_NV $TPM_PW_SESSION 0008"

# One command to /dev/tpm0, written whole and answered on the same open
# file; prints the response as hex (response code at characters 12-19).
tpm_cmd() {
    exec 3<>/dev/tpm0 || return 1
    printf '%s' "$1" | xxd -r -p >&3
    dd bs=4096 count=1 <&3 2>/dev/null | od -An -v -tx1 | tr -d ' \n'
    exec 3>&-
}

# ORRERY-GUEST-TPM-NV=kept:<hex> when the index was already there, new:<hex>
# when this boot defined it with a random value.
report_tpm_nv() {
    r=$(tpm_cmd "$TPM_NV_READ")
    state=kept
    if [ "${r:12:8}" != 00000000 ]; then
        state=new
        v=$(dd if=/dev/urandom bs=8 count=1 2>/dev/null | od -An -v -tx1 | tr -d ' \n')
        d=$(tpm_cmd "$TPM_NV_DEFINE")
        w=$(tpm_cmd "$TPM_NV_WRITE $v 0000")
        r=$(tpm_cmd "$TPM_NV_READ")
    fi
    if [ "${r:12:8}" = 00000000 ]; then
        say "ORRERY-GUEST-TPM-NV=$state:${r:32:16}"
    else
        say "ORRERY-GUEST-TPM-NV=error:${d:12:8}/${w:12:8}/${r:12:8}"
    fi
}

report_platform() {
    if [ -d /sys/firmware/efi ]; then
        say "ORRERY-GUEST-FIRMWARE=uefi"
        mount -t efivarfs efivarfs /sys/firmware/efi/efivars 2>/dev/null
        # 4 bytes of attributes, then the value: 1 when Secure Boot is on.
        sb=/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c
        # efivarfs answers whole reads only: take all five bytes at once.
        case "$(dd if="$sb" bs=5 count=1 2>/dev/null | od -An -tu1 | awk '{print $5}')" in
            1) say "ORRERY-GUEST-SECUREBOOT=enabled" ;;
            *) say "ORRERY-GUEST-SECUREBOOT=disabled" ;;
        esac
    else
        say "ORRERY-GUEST-FIRMWARE=bios"
        say "ORRERY-GUEST-SECUREBOOT=none"
    fi
    say "ORRERY-GUEST-CPU=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
    # The machine type's chipset, by its PCI host bridge (SMBIOS carries the
    # cloud's product name instead of QEMU's).
    case "$(cat /sys/bus/pci/devices/0000:00:00.0/vendor /sys/bus/pci/devices/0000:00:00.0/device 2>/dev/null | tr '\n' ' ')" in
        "0x8086 0x1237 ") say "ORRERY-GUEST-CHIPSET=i440fx" ;;
        "0x8086 0x29c0 ") say "ORRERY-GUEST-CHIPSET=q35" ;;
        *) say "ORRERY-GUEST-CHIPSET=unknown" ;;
    esac
    if [ -e /dev/tpm0 ]; then
        major=$(cat /sys/class/tpm/tpm0/tpm_version_major 2>/dev/null || echo unknown)
        say "ORRERY-GUEST-TPM=$major"
        [ "$major" = 2 ] && report_tpm_nv
    else
        say "ORRERY-GUEST-TPM=none"
    fi
}

start_sshd() {
    mkdir -p /dev/pts
    mount -t devpts devpts /dev/pts
    # -R: host keys made on first use; -E: log to stderr (the console).
    if dropbear -R -E -p 22 2>/dev/null; then
        say "ORRERY-GUEST-SSHD"
    fi
}

start_guest_agent() {
    # qemu-ga on the virtio serial port the host named
    # org.qemu.guest_agent.0 (none: nothing to do). No udev here: the port
    # (/dev/vportNpM) is found by its name in sysfs and linked where qemu-ga
    # looks by default. Restarted should it ever exit.
    (
        while :; do
            # A test can take the agent away: it is not restarted while
            # this file exists.
            if [ -e /run/orrery-no-agent ]; then sleep 1; continue; fi
            port=
            for f in /sys/class/virtio-ports/*/name; do
                [ -r "$f" ] || continue
                read -r name <"$f" || true
                if [ "$name" = org.qemu.guest_agent.0 ]; then
                    port=${f%/name}; port=${port##*/}
                fi
            done
            if [ -z "$port" ]; then sleep 1; continue; fi
            if [ ! -c "/dev/$port" ]; then
                IFS=: read -r maj min <"/sys/class/virtio-ports/$port/dev"
                mknod "/dev/$port" c "$maj" "$min"
            fi
            mkdir -p /dev/virtio-ports /run/qemu-ga
            ln -sf "../$port" /dev/virtio-ports/org.qemu.guest_agent.0
            qemu-ga -m virtio-serial -p "/dev/$port" -t /run/qemu-ga \
                -f /run/qemu-ga.pid -l /run/qemu-ga.log \
                -F/etc/qemu/fsfreeze-hook &
            ga=$!
            # Started once it holds the port open.
            n=0
            while [ $n -lt 50 ] && [ -d "/proc/$ga" ]; do
                if ls -l "/proc/$ga/fd" 2>/dev/null | grep -q " /dev/$port\$"; then
                    say "ORRERY-GUEST-AGENT"
                    break
                fi
                sleep 0.1; n=$((n + 1))
            done
            wait $ga
            sleep 1
        done
    ) &
}

# The data disk: vdb, there at boot or hot-plugged any time later.
data_disk_present() { [ -e /sys/block/vdb ]; }

mount_data_disk() {
    # devtmpfs makes /dev/vdb; should it be missing, make it from sysfs.
    if [ ! -b /dev/vdb ]; then
        IFS=: read -r maj min </sys/block/vdb/dev || return 1
        mknod /dev/vdb b "$maj" "$min" || return 1
    fi
    # ext2/3/4 carry 0xEF53 at byte 1080; anything else is made ext4.
    magic=$(dd if=/dev/vdb bs=1 skip=1080 count=2 2>/dev/null | od -An -tx1 | tr -d ' \n')
    if [ "$magic" != 53ef ]; then
        /usr/sbin/mke2fs -q -F -t ext4 -L orrery-data /dev/vdb >/dev/null 2>&1 || return 1
    fi
    mount -t ext4 /dev/vdb /data 2>/dev/null
}

wait_thawed() {
    # The fsfreeze hook holds /run/fsfrozen from before the freeze until
    # after FSTHAW is printed: no counter line falls between the two.
    while [ -e /run/fsfrozen ]; do sleep 0.1; done
}

count_on_data_disk() {
    # Written to a new file, synced, renamed over the old one and synced
    # again: the disk holds a whole value at any moment.
    while data_disk_present; do
        wait_thawed
        n=$(cat /data/counter 2>/dev/null)
        case "$n" in ''|*[!0-9]*) n=0 ;; esac
        n=$((n + 1))
        { echo "$n" >/data/counter.new && sync && mv -f /data/counter.new /data/counter && sync; } \
            2>/dev/null || return 1
        wait_thawed
        say "ORRERY-GUEST-COUNTER=$n"
        sleep 1
    done
}

data_disk() {
    (
        while :; do
            if data_disk_present; then
                if mount_data_disk; then
                    say "ORRERY-GUEST-DATA=mounted"
                    count_on_data_disk
                    umount /data 2>/dev/null || umount -l /data 2>/dev/null
                fi
                # Still there a moment later: it failed rather than went away.
                sleep 1
                if data_disk_present; then
                    say "ORRERY-GUEST-DATA=error"
                    sleep 10
                fi
            fi
            sleep 1
        done
    ) &
}

console_prompt() {
    # The graphical console: a prompt with a root shell, for the console
    # in a browser.
    [ -e /dev/tty1 ] || return 0
    (while :; do setsid getty -n -l /bin/sh 0 tty1; sleep 1; done) &
}

start_acpid() {
    # busybox acpid maps the power button key to event PWRF/00000080 and
    # runs /etc/acpi/PWRF/00000080.
    acpid -c /etc/acpi -l /dev/null
}

main() {
    mount_pseudo_filesystems
    say "ORRERY-GUEST-BOOTED"
    load_modules
    report_platform
    start_acpid
    setup_network
    read_config_drive
    start_sshd
    start_guest_agent
    data_disk
    console_prompt
    busy_if_asked
    tick
    watch_hardware
    # Idle; acpid powers the machine off.
    while :; do sleep 3600; done
}

main
INIT

cat >"$ROOT/etc/udhcpc.script" <<'SCRIPT'
#!/bin/sh
# udhcpc hook: configure the interface and record the lease for /init.
# udhcpc passes the lease in the environment ($interface, $ip, $mask,
# $broadcast, $router, $dns, $hostname).
case "$1" in
deconfig)
    ip addr flush dev "$interface"
    ip link set "$interface" up
    ;;
bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" ${broadcast:+broadcast "$broadcast"} dev "$interface"
    for r in $router; do ip route add default via "$r" dev "$interface" && break; done
    : >/etc/resolv.conf
    for d in $dns; do echo "nameserver $d" >>/etc/resolv.conf; done
    [ -n "$hostname" ] && hostname "$hostname"
    {
        echo "lease_ip=$ip"
        echo "lease_hostname=${hostname:-none}"
        echo "lease_server=${serverid:-}"
    } >/run/lease.env
    ;;
esac
exit 0
SCRIPT

cat >"$ROOT/etc/acpi/PWRF/00000080" <<'SCRIPT'
#!/bin/sh
# Power button: announce, flush, power off right away (no init to signal).
echo "ORRERY-GUEST-POWERBUTTON" >/dev/console
sync
poweroff -f
SCRIPT

cat >"$ROOT/etc/qemu/fsfreeze-hook" <<'SCRIPT'
#!/bin/sh
# qemu-ga runs this with "freeze" before it freezes the file systems and
# with "thaw" after it thawed them, its output going nowhere: the markers
# go straight to the console. /run/fsfrozen holds /init's data disk
# counter back meanwhile (see wait_thawed). A failure here would fail the
# freeze.
case "$1" in
freeze)
    : >/run/fsfrozen
    echo "ORRERY-GUEST-FSFREEZE" >/dev/console
    ;;
thaw)
    echo "ORRERY-GUEST-FSTHAW" >/dev/console
    rm -f /run/fsfrozen
    ;;
esac
exit 0
SCRIPT

chmod 0755 "$ROOT/init" "$ROOT/etc/udhcpc.script" "$ROOT/etc/acpi/PWRF/00000080" \
    "$ROOT/etc/qemu/fsfreeze-hook"
echo "orrery-guest" >"$ROOT/etc/hostname"

# --- initramfs ---------------------------------------------------------------
# newc is the format the kernel unpacks; owners forced to root. /dev/console
# needs no device node here: the kernel's built-in initramfs provides it.
(cd "$ROOT" && find . -mindepth 1 | LC_ALL=C sort |
    cpio --quiet -o -H newc -R 0:0 | gzip -9n) >"$WORK/initrd.gz"

# --- FAT partition with syslinux ---------------------------------------------
cat >"$WORK/syslinux.cfg" <<'CFG'
SERIAL 0 115200
DEFAULT orrery
PROMPT 0
TIMEOUT 0
LABEL orrery
    LINUX /vmlinuz
    INITRD /initrd.gz
    APPEND console=ttyS0
CFG

PART_START=2048   # sectors: the usual 1 MiB alignment
payload_kib=$(( ($(stat -c %s "$KERNEL") + $(stat -c %s "$WORK/initrd.gz") + $(stat -c %s "$SHIM") + $(stat -c %s "$GRUB_EFI")) / 1024 ))
# FAT16 needs at least ~16 MiB of clusters; leave room for slack either way.
part_mib=$(( payload_kib / 1024 + 8 ))
[ $part_mib -lt 20 ] && part_mib=20
part_sectors=$(( part_mib * 2048 ))

PART=$WORK/part.img
truncate -s $(( part_sectors * 512 )) "$PART"
# -h: hidden sectors = partition offset, as a BIOS boot sector expects.
mkfs.vfat -F 16 -n ORRERY -h $PART_START "$PART" >/dev/null
export MTOOLS_SKIP_CHECK=1
mcopy -i "$PART" "$KERNEL" ::vmlinuz
mcopy -i "$PART" "$WORK/initrd.gz" ::initrd.gz
mcopy -i "$PART" "$WORK/syslinux.cfg" ::syslinux.cfg
# UEFI: shim -> GRUB (both signed) -> the signed kernel. Debian's GRUB looks
# for its configuration under its prefix, else next to itself.
cat >"$WORK/grub.cfg" <<'CFG'
set timeout=0
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
linux /vmlinuz console=ttyS0
initrd /initrd.gz
boot
CFG
mmd -i "$PART" ::EFI ::EFI/BOOT ::EFI/debian
mcopy -i "$PART" "$SHIM" ::EFI/BOOT/BOOTX64.EFI
mcopy -i "$PART" "$GRUB_EFI" ::EFI/BOOT/grubx64.efi
mcopy -i "$PART" "$WORK/grub.cfg" ::EFI/BOOT/grub.cfg
mcopy -i "$PART" "$WORK/grub.cfg" ::EFI/debian/grub.cfg
# The mtools flavour of the installer writes ldlinux.sys/ldlinux.c32 and the
# boot sector straight into the image file.
syslinux --install "$PART"

# --- whole disk: MBR + partition ---------------------------------------------
DISK=$WORK/disk.raw
truncate -s $(( (PART_START + part_sectors) * 512 )) "$DISK"
# type 6 = FAT16, bootable; sfdisk only writes the partition table.
printf 'label: dos\nstart=%d, size=%d, type=6, bootable\n' $PART_START $part_sectors |
    sfdisk --quiet "$DISK"
# The boot code is the first 440 bytes; the partition table after it stays.
dd if="$MBR_BIN" of="$DISK" bs=440 count=1 conv=notrunc status=none
dd if="$PART" of="$DISK" bs=512 seek=$PART_START conv=notrunc,sparse status=none

# --- qcow2 -------------------------------------------------------------------
mkdir -p "$(dirname "$OUT")"
tmp_out=$(dirname "$OUT")/.$(basename "$OUT").tmp
qemu-img convert -c -O qcow2 "$DISK" "$tmp_out"
# World-readable: libvirt's QEMU may run as an unprivileged user.
chmod 0644 "$tmp_out"
mv -f "$tmp_out" "$OUT"
(cd "$(dirname "$OUT")" && sha256sum "$(basename "$OUT")") >"${OUT%.qcow2}.sha256"
# Which recipe made the image: a changed recipe makes the tests rebuild it.
sha256sum <"$LAB_DIR/build-guest.sh" | cut -d' ' -f1 >"${OUT%.qcow2}.recipe"

size=$(stat -c %s "$OUT")
echo "build-guest.sh: kernel $KVER, modules: ${LOAD_ORDER[*]}"
echo "build-guest.sh: wrote $OUT ($(( (size + 1023) / 1024 )) KiB)"
