"""Snapshot benchmarks on the one-host lab (real libvirt and QEMU under
software emulation).

1. `createVMSnapshot` with memory of a running 256 MB guest, from the API
   call to the job's completion, against `virsh snapshot-create-as` (the same
   internal snapshot with memory) run by hand on the same guest, alternating,
   in one run. Target: ratio of medians at most 1.1.
2. A volume snapshot of a 1 GB data volume with 512 MB written in the guest:
   seconds from `createSnapshot` to BackedUp, and the bytes it takes in
   secondary storage.

    .venv/bin/python tests/lab/bench_snapshots.py [--rounds N]

Needs root and the lab (tests/lab/install-deps.sh); uses the debug binaries
unless ORRERY_COORDINATOR_BIN / ORRERY_AGENT_BIN say otherwise. Prints the
figures as JSON on the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "e2e"))
os.environ.setdefault("ORRERY_COORDINATOR_BIN", str(REPO / "target/debug/orrery-coordinator"))

from lab import Lab, require_lab, ssh, virsh, wait_console  # noqa: E402
from orrery_e2e import unique  # noqa: E402


def timed(fn) -> float:
    t = time.monotonic()
    fn()
    return time.monotonic() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    require_lab()
    base = Path(tempfile.mkdtemp(prefix="orrery-bench-snap-", dir="/var/tmp"))
    base.chmod(0o755)
    lab = Lab(base).up()
    try:
        api = lab.api
        pair = api.createSSHKeyPair(name=unique("bench"))["keypair"]
        key = base / "bench.pem"
        key.write_text(pair["privatekey"])
        key.chmod(0o600)
        vm = lab.deploy(unique("bench"), keypair=pair["name"])
        vm = api.listVirtualMachines(id=vm["id"])["virtualmachine"][0]
        name = vm["instancename"]
        wait_console(lab.agent, name, "ORRERY-GUEST-SSHD", timeout=300)

        # 1. With memory: Orrery against virsh, alternating. The job's end is
        # seen by polling; a 5 ms poll keeps the polling itself out of the
        # figure (the test client's 100 ms would dominate it).
        from cs import CloudStack
        fast = CloudStack(endpoint=lab.coordinator.endpoint, key=lab.coordinator.apikey,
                          secret=lab.coordinator.secretkey, fetch_result=True, timeout=60,
                          job_timeout=600, poll_interval=0.005)
        ours, theirs = [], []
        for i in range(args.rounds):
            holder = {}
            ours.append(timed(lambda: holder.setdefault("s", fast.createVMSnapshot(
                virtualmachineid=vm["id"], snapshotmemory=True)["vmsnapshot"])))
            api.deleteVMSnapshot(vmsnapshotid=holder["s"]["id"])
            manual = f"bench-{i}"
            theirs.append(timed(lambda: virsh("snapshot-create-as", name, manual)))
            virsh("snapshot-delete", name, manual)
            print(f"round {i}: orrery {ours[-1]:.2f} s, virsh {theirs[-1]:.2f} s", flush=True)

        # 2. A 1 GB volume with 512 MB written.
        offering = api.createDiskOffering(name=unique("gb"), displaytext="1 GB", disksize=1)["diskoffering"]
        vol = api.createVolume(name=unique("bench"), zoneid=lab.env["zone"]["id"],
                               diskofferingid=offering["id"])["volume"]
        api.attachVolume(id=vol["id"], virtualmachineid=vm["id"])
        ip = vm["nic"][0]["ipaddress"]
        deadline = time.monotonic() + 300
        while "ORRERY-GUEST-DATA=mounted" not in lab.agent.console(name):
            if time.monotonic() > deadline:
                raise SystemExit("the data disk was never mounted")
            time.sleep(1)
        t = time.monotonic()
        ssh(ip, key, "dd if=/dev/urandom of=/data/fill bs=1M count=512 conv=fsync 2>/dev/null",
            timeout=1800)
        write_s = time.monotonic() - t
        snap_s = timed(lambda: api.createSnapshot(volumeid=vol["id"]))
        snap = api.listSnapshots(volumeid=vol["id"])["snapshot"][0]
        assert snap["state"] == "BackedUp", snap
        copy = lab.coordinator.data_dir / "secondary" / "snapshot" / f"{snap['id']}.qcow2"
        on_disk = copy.stat().st_blocks * 512
        info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(copy)],
                                         capture_output=True, text=True, check=True).stdout)
        figures = {
            "memory_snapshot_256mb": {
                "orrery_s": [round(x, 3) for x in ours],
                "virsh_s": [round(x, 3) for x in theirs],
                "orrery_median_s": round(statistics.median(ours), 3),
                "virsh_median_s": round(statistics.median(theirs), 3),
                "ratio": round(statistics.median(ours) / statistics.median(theirs), 3),
            },
            "volume_snapshot_1gb_512mb_written": {
                "guest_write_s": round(write_s, 1),
                "to_backed_up_s": round(snap_s, 2),
                "physicalsize_bytes": snap["physicalsize"],
                "file_bytes_on_disk": on_disk,
                "virtual_size": info["virtual-size"],
            },
        }
        print(json.dumps(figures))
    finally:
        lab.down()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
