"""A full data disk: deploys acknowledged while writes fail must not stay
pending, nor their instances Starting or Creating, once space is back."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest

from orrery_e2e import Coordinator, create_service_offering, find_os_type, make_image, \
    register_template, unique, wait_for


def _mount_tmpfs(path, size_mb: int) -> None:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(path)],
                   check=True)


def _fill(path, keep_bytes: int) -> None:
    """Writes a filler file until only `keep_bytes` are free."""
    free = shutil.disk_usage(path).free
    with open(path / "filler", "wb") as f:
        chunk = b"\0" * (1 << 20)
        left = free - keep_bytes
        while left > 0:
            f.write(chunk[: min(len(chunk), left)])
            left -= len(chunk)
        f.flush()
        os.fsync(f.fileno())


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("mount") is None,
                    reason="needs root to mount a small file system")
def test_nothing_stays_pending_after_the_disk_was_full(tmp_path):
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, 96)
    # The log stays off the small disk; the data directory is on it.
    coordinator = Coordinator(tmp_path / "c", hosts=2)
    coordinator.data_dir = disk / "data"
    # The disk that fills is the data directory's: the embedded store's,
    # whichever store the other tests run on.
    coordinator.store_url = None
    try:
        coordinator.init()
        coordinator.start()
        admin = coordinator.client()
        zone = admin.listZones()["zone"][0]
        image = make_image(tmp_path / "images")
        template = register_template(admin, zone["id"], find_os_type(admin)["id"], image)
        offering = create_service_offering(admin)
        args = {"zoneid": zone["id"], "serviceofferingid": offering["id"],
                "templateid": template["id"]}
        nofetch = coordinator.client(fetch_result=False)
        _fill(disk, 768 * 1024)
        accepted, refused = [], 0
        # Keep deploying while the disk fills up: acknowledged deploys whose
        # starts then cannot record their progress, and, once it is full,
        # deploys refused at once.
        for _ in range(3000):
            try:
                r = nofetch.deployVirtualMachine(name=unique("full"), **args)
                accepted.append(r["jobid"])
            except Exception:  # noqa: BLE001 - refusals are expected here
                refused += 1
                if refused >= 20:
                    break
        assert refused > 0, "the disk never filled up"
        assert accepted, "no deploy was acknowledged before the disk filled up"
        time.sleep(2)
        (disk / "filler").unlink()

        def settled():
            jobs = [nofetch.queryAsyncJobResult(jobid=j)["jobstatus"] for j in accepted]
            vms = admin.listVirtualMachines(listall=True).get("virtualmachine", [])
            busy = [v["state"] for v in vms if v["state"] in ("Starting", "Creating",
                                                               "Stopping")]
            return (0 not in jobs and not busy) or None

        wait_for(settled, 90, "jobs to complete and instances to settle after space came back")
        print(f"{len(accepted)} deploys acknowledged, {refused} refused while the disk was full")
        # The scenario happened: an acknowledged job could not record its
        # outcome at first (and did once space was back).
        assert "could not write; retrying" in coordinator.log_path.read_text(errors="replace")
        # And the coordinator still takes work.
        vm = admin.deployVirtualMachine(name=unique("after"), **args)["virtualmachine"]
        assert vm["state"] == "Running"
    finally:
        coordinator.stop()
        subprocess.run(["umount", "-l", str(disk)], check=False)
