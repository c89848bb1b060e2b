"""Instance snapshots and restoring on a real host: one guest with a data
disk it counts on (ORRERY-GUEST-COUNTER, read back from the disk every
second) and an in-memory tick (ORRERY-GUEST-TICK), and the QEMU guest agent
whose fsfreeze hook prints ORRERY-GUEST-FSFREEZE / -FSTHAW
(tests/lab/build-guest.sh). The tests run in order on that one guest."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from lab import Lab, require_lab, ssh, virsh, wait_console
from orrery_e2e import expect_api_error, unique, wait_for

pytestmark = pytest.mark.lab

COUNTER = re.compile(r"ORRERY-GUEST-COUNTER=(\d+)")
TICK = re.compile(r"ORRERY-GUEST-TICK (\d+)")


@pytest.fixture(scope="module")
def lab():
    require_lab()
    base = Path(tempfile.mkdtemp(prefix="orrery-snap-", dir="/var/tmp"))
    base.chmod(0o755)
    lab = Lab(base).up()
    yield lab
    lab.down()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def key(lab):
    pair = lab.api.createSSHKeyPair(name=unique("snapkey"))["keypair"]
    path = lab.base / "snap.pem"
    path.write_text(pair["privatekey"])
    path.chmod(0o600)
    return {"name": pair["name"], "path": path}


@pytest.fixture(scope="module")
def guest(lab, key):
    disk = lab.api.createDiskOffering(name=unique("data"), displaytext="data", disksize=1)["diskoffering"]
    vm = lab.deploy(unique("snap"), keypair=key["name"], diskofferingid=disk["id"])
    vm = lab.api.listVirtualMachines(id=vm["id"])["virtualmachine"][0]
    wait_console(lab.agent, vm["instancename"], r"ORRERY-GUEST-COUNTER=3\b", timeout=300)
    wait_console(lab.agent, vm["instancename"], r"ORRERY-GUEST-AGENT", timeout=60)
    return vm


def console(lab: Lab, vm: dict) -> str:
    return lab.agent.console(vm["instancename"])


def numbers(rx: re.Pattern, text: str) -> list[int]:
    return [int(n) for n in rx.findall(text)]


def wait_counter_past(lab: Lab, vm: dict, value: int, start: int = 0, timeout: float = 120) -> None:
    wait_for(lambda: any(n > value for n in numbers(COUNTER, console(lab, vm)[start:])), timeout,
             lambda: f"the counter never passed {value}:\n{console(lab, vm)[-2000:]}")


def data_volume_file(lab: Lab, vm: dict) -> Path:
    vol = lab.api.listVolumes(virtualmachineid=vm["id"], type="DATADISK")["volume"][0]
    return lab.agent.primary_dir / f"{vol['id']}.qcow2"


def counter_in_snapshot(lab: Lab, volume: Path, snapshot: str) -> int:
    """The counter file as the data volume's internal snapshot holds it."""
    raw = lab.base / "snapshot-view.raw"
    subprocess.run(["qemu-img", "convert", "-U", "-f", "qcow2", "-O", "raw", "-l",
                    f"snapshot.name={snapshot}", str(volume), str(raw)], check=True,
                   capture_output=True, timeout=120)
    try:
        out = subprocess.run(["debugfs", "-R", "cat /counter", str(raw)], check=True,
                             capture_output=True, text=True, timeout=60).stdout
    finally:
        raw.unlink(missing_ok=True)
    return int(out.strip())


def snapshot_names(volume: Path) -> list[str]:
    out = subprocess.run(["qemu-img", "snapshot", "-U", "-l", str(volume)], capture_output=True,
                         text=True, check=True, timeout=60).stdout
    return [line.split()[1] for line in out.splitlines()[2:] if line.strip()]


def test_a_memory_snapshot_brings_back_memory_and_disk(lab, guest):
    text = console(lab, guest)
    c0 = max(numbers(COUNTER, text))
    snap = lab.api.createVMSnapshot(virtualmachineid=guest["id"], snapshotmemory=True,
                                    name="with-memory")["vmsnapshot"]
    assert snap["state"] == "Ready" and snap["type"] == "DiskAndMemory", snap
    after = console(lab, guest)
    c1 = max(numbers(COUNTER, after))
    t1 = max(numbers(TICK, after))
    # It writes on for a while.
    wait_counter_past(lab, guest, c1 + 4)
    mark = len(console(lab, guest))
    high = max(numbers(COUNTER, console(lab, guest)))

    vm = lab.api.revertToVMSnapshot(vmsnapshotid=snap["id"])["virtualmachine"]
    assert vm["state"] == "Running"
    wait_for(lambda: len(numbers(COUNTER, console(lab, guest)[mark:])) >= 2, 120,
             lambda: f"no counter after the revert:\n{console(lab, guest)[mark - 500:]}")
    since = console(lab, guest)[mark:]
    resumed = numbers(COUNTER, since)[0]
    # It goes on from the value the disk held at the snapshot, not from
    # where it had got to, and without booting again.
    assert c0 <= resumed <= c1 + 1 < high, (c0, resumed, c1, high)
    assert "ORRERY-GUEST-BOOTED" not in since, since
    # The in-memory tick went back too: the guest's memory is the saved one.
    ticks = numbers(TICK, since)
    assert ticks and 0 < ticks[0] <= t1 + 1, (ticks[:3], t1)
    listed = lab.api.listVMSnapshot(vmsnapshotid=snap["id"])["vmSnapshot"][0]
    assert listed["current"] is True
    assert lab.api.listEvents(type="VMSNAPSHOT.REVERTTO").get("event")
    lab.api.deleteVMSnapshot(vmsnapshotid=snap["id"])
    assert snap["name"] not in snapshot_names(data_volume_file(lab, guest))


def test_a_quiesced_disk_snapshot_holds_the_file_as_it_was(lab, guest):
    mark = len(console(lab, guest))
    snap = lab.api.createVMSnapshot(virtualmachineid=guest["id"], quiescevm=True,
                                    name="quiesced")["vmsnapshot"]
    assert snap["type"] == "Disk" and snap["state"] == "Ready", snap
    wait_console(lab.agent, guest["instancename"], "ORRERY-GUEST-FSTHAW", timeout=30)
    text = console(lab, guest)
    seg = text[mark:]
    freeze, thaw = seg.index("ORRERY-GUEST-FSFREEZE"), seg.index("ORRERY-GUEST-FSTHAW")
    assert freeze < thaw, seg
    # The guest stopped writing in between (it waits for the thaw).
    assert not COUNTER.search(seg[freeze:thaw]), seg[freeze:thaw]
    last = numbers(COUNTER, text[:mark + freeze])[-1]
    volume = data_volume_file(lab, guest)
    assert snap["name"] in snapshot_names(volume)
    held = counter_in_snapshot(lab, volume, snap["name"])
    # The last value written before the freeze (or the one whose line it
    # printed after the thaw).
    assert held in (last, last + 1), (held, last)
    assert lab.api.listVirtualMachines(id=guest["id"])["virtualmachine"][0]["state"] == "Running"
    lab.api.deleteVMSnapshot(vmsnapshotid=snap["id"])
    assert snap["name"] not in snapshot_names(volume)


def test_a_quiesce_without_a_guest_agent_says_so(lab, guest, key):
    ip = guest["nic"][0]["ipaddress"]
    ssh(ip, key["path"], "touch /run/orrery-no-agent; killall qemu-ga")
    try:
        err = expect_api_error(lab.api.createVMSnapshot, virtualmachineid=guest["id"],
                               quiescevm=True, name="no-agent")
        text = err.error["errortext"]
        assert "quiescevm" in text and "guest agent" in text, err.error
        failed = [s for s in lab.api.listVMSnapshot(virtualmachineid=guest["id"]).get("vmSnapshot", [])
                  if s["displayname"] == "no-agent"]
        assert [s["state"] for s in failed] == ["Error"], failed
        lab.api.deleteVMSnapshot(vmsnapshotid=failed[0]["id"])
        # Without quiescing it works, agent or not.
        plain = lab.api.createVMSnapshot(virtualmachineid=guest["id"], name="plain")["vmsnapshot"]
        assert plain["state"] == "Ready"
        lab.api.deleteVMSnapshot(vmsnapshotid=plain["id"])
    finally:
        mark = len(console(lab, guest))
        ssh(ip, key["path"], "rm -f /run/orrery-no-agent")
        wait_for(lambda: "ORRERY-GUEST-AGENT" in console(lab, guest)[mark:], 60, "the agent never came back")


def test_disk_snapshots_of_a_stopped_guest_branch_and_revert(lab, guest):
    api = lab.api
    api.stopVirtualMachine(id=guest["id"])
    at_a = numbers(COUNTER, console(lab, guest))[-1]
    a = api.createVMSnapshot(virtualmachineid=guest["id"], name="A")["vmsnapshot"]
    assert a["type"] == "Disk" and a["state"] == "Ready"
    assert counter_in_snapshot(lab, data_volume_file(lab, guest), a["name"]) == at_a

    mark = len(console(lab, guest))
    api.startVirtualMachine(id=guest["id"])
    wait_counter_past(lab, guest, at_a + 3, start=mark, timeout=300)
    api.stopVirtualMachine(id=guest["id"])
    b = api.createVMSnapshot(virtualmachineid=guest["id"], name="B")["vmsnapshot"]
    assert b["parent"] == a["id"]
    err = expect_api_error(api.attachVolume, id=api.createVolume(
        name=unique("late"), zoneid=lab.env["zone"]["id"],
        diskofferingid=api.listDiskOfferings()["diskoffering"][0]["id"])["volume"]["id"],
        virtualmachineid=guest["id"])
    assert err.status == 431 and "Instance Snapshots" in err.error["errortext"], err

    vm = api.revertToVMSnapshot(vmsnapshotid=a["id"])["virtualmachine"]
    assert vm["state"] == "Stopped"
    mark = len(console(lab, guest))
    api.startVirtualMachine(id=guest["id"])
    wait_for(lambda: numbers(COUNTER, console(lab, guest)[mark:]), 300,
             lambda: f"no counter after the start:\n{console(lab, guest)[mark:][-2000:]}")
    # The disk is A's again: the count resumes from A's value.
    assert numbers(COUNTER, console(lab, guest)[mark:])[0] == at_a + 1

    c = api.createVMSnapshot(virtualmachineid=guest["id"], name="C")["vmsnapshot"]
    tree = {s["displayname"]: s for s in api.listVMSnapshot(virtualmachineid=guest["id"])["vmSnapshot"]}
    assert tree["B"]["parent"] == a["id"] and tree["C"]["parent"] == a["id"], tree
    assert [n for n, s in tree.items() if s["current"]] == ["C"]
    assert c["parentName"] == "A"
    for s in (c, b, a):
        api.deleteVMSnapshot(vmsnapshotid=s["id"])
    assert api.listVMSnapshot(virtualmachineid=guest["id"]).get("vmSnapshot", []) == []


def counter_in_file(lab: Lab, image: Path) -> int:
    """The counter file as a standalone qcow2 image of the data disk holds it."""
    raw = lab.base / "image-view.raw"
    subprocess.run(["qemu-img", "convert", "-U", "-f", "qcow2", "-O", "raw", str(image), str(raw)],
                   check=True, capture_output=True, timeout=120)
    try:
        out = subprocess.run(["debugfs", "-R", "cat /counter", str(raw)], check=True,
                             capture_output=True, text=True, timeout=60).stdout
    finally:
        raw.unlink(missing_ok=True)
    return int(out.strip())


def test_a_volume_snapshot_is_copied_off_and_gives_volumes_and_reverts(lab, guest):
    api = lab.api
    data = api.listVolumes(virtualmachineid=guest["id"], type="DATADISK")["volume"][0]
    mark = len(console(lab, guest))
    snap = api.createSnapshot(volumeid=data["id"], quiescevm=True)["snapshot"]
    assert snap["state"] == "BackedUp" and snap["virtualsize"] == data["size"], snap
    wait_console(lab.agent, guest["instancename"], "ORRERY-GUEST-FSTHAW", timeout=30)
    text = console(lab, guest)
    seg = text[mark:]
    freeze = seg.index("ORRERY-GUEST-FSFREEZE")
    assert freeze < seg.index("ORRERY-GUEST-FSTHAW")
    last = numbers(COUNTER, text[:mark + freeze])[-1]
    # In secondary storage, a file of its own, smaller than the disk.
    copy = lab.coordinator.data_dir / "secondary" / "snapshot" / f"{snap['id']}.qcow2"
    assert 0 < copy.stat().st_size == snap["physicalsize"] < data["size"]
    held = counter_in_file(lab, copy)
    assert held in (last, last + 1), (held, last)
    # The volume's own file keeps no trace of the momentary snapshot.
    assert snapshot_names(data_volume_file(lab, guest)) == []

    # A new volume from it, made when attached.
    vol = api.createVolume(snapshotid=snap["id"], name=unique("copy"))["volume"]
    api.attachVolume(id=vol["id"], virtualmachineid=guest["id"])
    made = lab.agent.primary_dir / f"{vol['id']}.qcow2"
    assert counter_in_file(lab, made) == held
    api.detachVolume(id=vol["id"])
    api.deleteVolume(id=vol["id"])

    # Revert: the instance stopped, the disk's content is the snapshot's.
    api.stopVirtualMachine(id=guest["id"])
    api.revertSnapshot(id=snap["id"])
    mark = len(console(lab, guest))
    api.startVirtualMachine(id=guest["id"])
    wait_for(lambda: numbers(COUNTER, console(lab, guest)[mark:]), 300,
             lambda: f"no counter after the start:\n{console(lab, guest)[mark:][-2000:]}")
    assert numbers(COUNTER, console(lab, guest)[mark:])[0] == held + 1
    assert api.deleteSnapshot(id=snap["id"])["success"] is True
    assert not copy.exists()


def test_restore_boots_a_new_root_and_keeps_the_data_disk(lab, guest):
    api = lab.api
    root = api.listVolumes(virtualmachineid=guest["id"], type="ROOT")["volume"][0]
    old_file = lab.agent.primary_dir / f"{root['id']}.qcow2"
    assert old_file.exists()
    # A template made from its own root volume (stopped), then booted from.
    api.stopVirtualMachine(id=guest["id"])
    second = api.createTemplate(volumeid=root["id"], name=unique("fromroot")[:30],
                                ostypeid=lab.env["os_type"]["id"])["template"]
    assert second["isready"] is True and second["size"] == root["size"], second
    started = len(console(lab, guest))
    api.startVirtualMachine(id=guest["id"])
    wait_for(lambda: numbers(COUNTER, console(lab, guest)[started:]), 300, "no counter after the start")
    count_before = numbers(COUNTER, console(lab, guest))[-1]
    mark = len(console(lab, guest))
    vm = api.restoreVirtualMachine(virtualmachineid=guest["id"], templateid=second["id"],
                                   rootdisksize=2)["virtualmachine"]
    assert vm["state"] == "Running" and vm["templateid"] == second["id"], vm
    wait_console_after(lab, guest, mark, "ORRERY-GUEST-BOOTED")
    vols = api.listVolumes(virtualmachineid=guest["id"])["volume"]
    new_root = vols[0]
    assert new_root["type"] == "ROOT" and new_root["id"] != root["id"], vols
    assert new_root["size"] == 2 * 1024 ** 3
    new_file = lab.agent.primary_dir / f"{new_root['id']}.qcow2"
    info = subprocess.run(["qemu-img", "info", "-U", "--output=json", str(new_file)], check=True,
                          capture_output=True, text=True).stdout
    assert '"virtual-size": 2147483648' in info, info
    # Kept in state Destroy until the expunger's time; not listed.
    assert old_file.exists()
    assert api.listVolumes(id=root["id"]).get("volume", []) == []
    # The data disk came through untouched: the count goes on.
    wait_for(lambda: numbers(COUNTER, console(lab, guest)[mark:]), 300, "no counter after the restore")
    assert numbers(COUNTER, console(lab, guest)[mark:])[0] == count_before + 1

    # Again from its (new) template, this time expunging the old root.
    mark = len(console(lab, guest))
    api.restoreVirtualMachine(virtualmachineid=guest["id"], expunge=True)
    # Up again, power button handler and all, once it counts.
    wait_for(lambda: numbers(COUNTER, console(lab, guest)[mark:]), 300, "no counter after the restore")
    assert not new_file.exists()
    newest = api.listVolumes(virtualmachineid=guest["id"], type="ROOT")["volume"][0]
    assert newest["id"] not in (root["id"], new_root["id"])
    assert api.listEvents(type="VM.RESTORE").get("event")


def wait_console_after(lab: Lab, vm: dict, mark: int, pattern: str, timeout: float = 300) -> None:
    wait_for(lambda: pattern in console(lab, vm)[mark:], timeout,
             lambda: f"{pattern} not seen:\n{console(lab, vm)[mark:][-2000:]}")


def test_snapshots_go_with_the_instance(lab, guest):
    snap = lab.api.createVMSnapshot(virtualmachineid=guest["id"], snapshotmemory=True)["vmsnapshot"]
    assert snap["state"] == "Ready"
    assert snap["name"] in virsh("snapshot-list", guest["instancename"], "--name")
    lab.api.destroyVirtualMachine(id=guest["id"], expunge=True)
    assert lab.api.listVMSnapshot(vmsnapshotid=snap["id"]).get("vmSnapshot", []) == []
    assert guest["instancename"] not in virsh("list", "--all", "--name").split()
