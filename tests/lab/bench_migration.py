"""Migration benchmarks on the multi-host lab (real libvirt and QEMU under
software emulation, three namespace hosts, libvirt and QEMU TLS from the
coordinator's CA).

1. Live migration of a 256 MB guest: `migrateVirtualMachine` from the API call
   to the job's completion, against `virsh migrate --live` run by hand between
   the same two hosts with the same transport (peer to peer over qemu+tls,
   QEMU's TLS stream), alternating directions, in one run. Target: ratio of
   medians at most 1.1.
2. Maintenance of a host running six guests: seconds from
   `prepareHostForMaintenance` to `Maintenance`, and the guests' total
   downtime summed from `virsh domjobinfo --completed` on their destinations.

    .venv/bin/python tests/lab/bench_migration.py [--rounds N] [--guests N]

Needs root and the lab (tests/lab/install-deps.sh); uses the debug binaries
unless ORRERY_COORDINATOR_BIN / ORRERY_AGENT_BIN say otherwise. Prints the
figures as JSON on the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "e2e"))
os.environ.setdefault("ORRERY_COORDINATOR_BIN", str(REPO / "target/debug/orrery-coordinator"))

from lab import wait_vm_state  # noqa: E402
from multihost import MultiLab, require_multihost  # noqa: E402
from orrery_e2e import unique, wait_for  # noqa: E402

VIRSH = ["virsh", "-c", "qemu:///system"]


def virsh(lab: MultiLab, host: str, *args: str) -> str:
    return lab.exec(host, *VIRSH, *args, timeout=300).stdout


def address(lab: MultiLab, host: str) -> str:
    return lab.hosts[host]["address"]


def manual_twin(lab: MultiLab, host: str, name: str) -> str:
    """A domain Orrery does not manage, made like an Orrery guest: the same
    XML with its own name, uuid, disk overlay and console file, and no
    Orrery metadata or network (so no agent touches it)."""
    xml = virsh(lab, host, "dumpxml", name)
    twin = f"bench-{uuid.uuid4().hex[:8]}"
    xml = re.sub(r"<name>[^<]*</name>", f"<name>{twin}</name>", xml, count=1)
    old_uuid = re.search(r"<uuid>([^<]*)</uuid>", xml).group(1)
    # SMBIOS carries the uuid too; libvirt wants both equal.
    xml = xml.replace(old_uuid, str(uuid.uuid4()))
    xml = re.sub(r"<metadata>.*?</metadata>", "", xml, flags=re.S)
    xml = re.sub(r"<interface .*?</interface>", "", xml, flags=re.S)
    xml = xml.replace(f"{name}.log", f"{twin}.log")
    disk = re.search(r"<source file='([^']+\.qcow2)'", xml).group(1)
    copy = str(Path(disk).with_name(f"{twin}.qcow2"))
    lab.exec(host, "qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", disk, copy)
    xml = xml.replace(f"'{disk}'", f"'{copy}'")
    for h in lab.hosts:
        lab.exec(h, "mkdir", "-p", "/var/lib/orrery/agent/consoles")
    path = Path(tempfile.mkdtemp()) / "twin.xml"
    path.write_text(xml)
    lab.exec(host, *VIRSH, "define", str(path))
    lab.exec(host, *VIRSH, "start", twin)
    return twin


def virsh_migrate(lab: MultiLab, src: str, dst: str, domain: str) -> float:
    start = time.monotonic()
    lab.exec(src, *VIRSH, "migrate", "--live", "--p2p", "--tls", "--persistent",
             "--undefinesource", "--unsafe", "--auto-converge", domain,
             f"qemu+tls://{address(lab, dst)}/system", "--migrateuri",
             f"tcp://{address(lab, dst)}", timeout=600)
    return time.monotonic() - start


def api_migrate(lab: MultiLab, vm_id: str, dst: str) -> float:
    start = time.monotonic()
    lab.api.migrateVirtualMachine(virtualmachineid=vm_id, hostid=lab.host_id(dst))
    return time.monotonic() - start


def downtime_ms(lab: MultiLab, host: str, domain: str) -> int:
    out = virsh(lab, host, "domjobinfo", "--completed", domain)
    m = re.search(r"Total downtime:\s+(\d+)", out)
    return int(m.group(1)) if m else -1


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--guests", type=int, default=6)
    args = parser.parse_args()
    os.environ.setdefault("ORRERY_AGENT_BIN", str(REPO / "target/debug/orrery-agent"))
    require_multihost()
    lab = MultiLab(Path(tempfile.mkdtemp(prefix="bench-migration-")), count=3)
    out: dict = {"date": time.strftime("%Y-%m-%d %H:%M"), "cores": os.cpu_count()}
    try:
        lab.up()
        big = lab.api.createServiceOffering(name="bench-256", displaytext="256 MB", cpunumber=1,
                                            cpuspeed=500, memory=256)["serviceoffering"]
        vm = lab.api.deployVirtualMachine(
            zoneid=lab.env["zone"]["id"], serviceofferingid=big["id"],
            templateid=lab.env["template"]["id"], name=unique("bench"),
            hostid=lab.host_id("h1"))["virtualmachine"]
        wait_vm_state(lab.api, vm["id"], "Running", timeout=120)
        lab.wait_console("h1", vm["instancename"], r"ORRERY-GUEST-TICK 3\b")
        twin = manual_twin(lab, "h1", vm["instancename"])
        time.sleep(8)  # let the twin boot as far as the guest has
        api, manual = [], []
        where = "h1"
        for _ in range(args.rounds):
            dst = "h2" if where == "h1" else "h1"
            manual.append(virsh_migrate(lab, where, dst, twin))
            api.append(api_migrate(lab, vm["id"], dst))
            where = dst
        out["live_migration_256mb"] = {
            "api_s": [round(x, 3) for x in api],
            "virsh_s": [round(x, 3) for x in manual],
            "api_median_s": round(statistics.median(api), 3),
            "virsh_median_s": round(statistics.median(manual), 3),
            "ratio": round(statistics.median(api) / statistics.median(manual), 3),
        }
        lab.exec(where, *VIRSH, "destroy", twin, check=False)
        lab.exec(where, *VIRSH, "undefine", twin, check=False)
        lab.api.destroyVirtualMachine(id=vm["id"], expunge=True)

        small = lab.env["offering"]
        guests = []
        for _ in range(args.guests):
            g = lab.api.deployVirtualMachine(
                zoneid=lab.env["zone"]["id"], serviceofferingid=small["id"],
                templateid=lab.env["template"]["id"], name=unique("maint"),
                hostid=lab.host_id("h3"))["virtualmachine"]
            guests.append(g)
        for g in guests:
            wait_vm_state(lab.api, g["id"], "Running", timeout=180)
            lab.wait_console("h3", g["instancename"], r"ORRERY-GUEST-TICK 2\b", timeout=180)
        start = time.monotonic()
        host = lab.api.prepareHostForMaintenance(id=lab.host_id("h3"))["host"]
        took = time.monotonic() - start
        assert host["resourcestate"] == "Maintenance", host
        total = 0
        per_guest = []
        for g in guests:
            now = lab.api.listVirtualMachines(id=g["id"])["virtualmachine"][0]
            dest = next(n for n, h in lab.hosts.items() if h["host_id"] == now["hostid"])
            d = downtime_ms(lab, dest, g["instancename"])
            per_guest.append(d)
            total += max(d, 0)
        out["maintenance"] = {
            "guests": args.guests,
            "seconds_to_maintenance": round(took, 2),
            "downtime_ms_per_guest": per_guest,
            "downtime_ms_total": total,
        }
    finally:
        lab.down()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
