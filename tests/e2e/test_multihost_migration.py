"""Live migration and host maintenance between three real lab hosts, over
libvirt and QEMU TLS with the certificates the coordinator issued. Guests
count on their serial consoles once a second, so a move is seen from inside:
the count goes on on the destination without a reboot. Failures mid-move (the
network cut, the destination killed) leave the guest running on the source
and the record saying so."""

from __future__ import annotations

import re
import subprocess
import threading
import time
from pathlib import Path

import pytest

from lab import GUEST, wait_vm_state
from multihost import LAB_DIR, MultiLab, require_multihost
from orrery_e2e import expect_api_error, unique, wait_for

pytestmark = pytest.mark.lab

# Whole lines only: the serial port reaches the log a byte at a time, so a
# read can end inside "ORRERY-GUEST-TICK 57" after its "5".
TICK = re.compile(r"ORRERY-GUEST-TICK (\d+)\r?\n")


@pytest.fixture(scope="module")
def mlab(tmp_path_factory):
    require_multihost()
    lab = MultiLab(tmp_path_factory.mktemp("multihost-migration"), count=3)
    try:
        lab.up()
        yield lab
    finally:
        lab.down()


def ticks(lab: MultiLab, host: str, name: str) -> list[int]:
    return [int(n) for n in TICK.findall(lab.console(host, name))]


def domains(lab: MultiLab, host: str, *flags: str) -> list[str]:
    out = lab.exec(host, "virsh", "-c", "qemu:///system", "list", "--name", *flags).stdout
    return [line.strip() for line in out.splitlines() if line.strip()]


def host_of(lab: MultiLab, vm_id: str) -> str:
    vm = lab.api.listVirtualMachines(id=vm_id)["virtualmachine"][0]
    return next(n for n, h in lab.hosts.items() if h["host_id"] == vm["hostid"])


def running_guest(lab: MultiLab, host: str) -> dict:
    vm = lab.deploy(unique("mig"), host)
    wait_vm_state(lab.api, vm["id"], "Running", timeout=120)
    lab.wait_console(host, vm["instancename"], r"ORRERY-GUEST-TICK 2\b", timeout=120)
    return vm


def test_live_migration_moves_a_running_guest_over_tls(mlab):
    vm = running_guest(mlab, "h1")
    name = vm["instancename"]
    before = ticks(mlab, "h1", name)[-1]

    job = mlab.api.migrateVirtualMachine(virtualmachineid=vm["id"],
                                         hostid=mlab.host_id("h2"))
    assert job["virtualmachine"]["hostid"] == mlab.host_id("h2")
    listed = mlab.api.listVirtualMachines(id=vm["id"])["virtualmachine"][0]
    assert listed["hostid"] == mlab.host_id("h2") and listed["state"] == "Running"

    # The domain exists only on the destination, persistent there.
    assert name in domains(mlab, "h2")
    assert name in domains(mlab, "h2", "--persistent")
    assert name not in domains(mlab, "h1", "--all")

    # The guest goes on counting on h2, from where it was: no reboot. (The
    # ticks it printed while memory was still copying went to h1's log.)
    wait_for(lambda: len(ticks(mlab, "h2", name)) >= 3, 60,
             lambda: f"no three ticks on h2: {mlab.console('h2', name)[-2000:]}")
    after = ticks(mlab, "h2", name)
    assert after[0] >= before and after[0] <= before + 10, (before, after[:5])
    assert after[:3] == list(range(after[0], after[0] + 3)), after[:5]
    assert "ORRERY-GUEST-BOOTED" not in mlab.console("h2", name)

    events = mlab.api.listEvents(type="VM.MIGRATE", listall=True).get("event", [])
    assert any(name in e["description"] and "h2" in e["description"] for e in events), events
    mlab.env["moved"] = vm


def test_a_vtpm_moves_with_its_guest(mlab):
    """The TPM's state goes with a live migration: the value the guest put
    into its NV index on h1 is read back inside it after a stop and start on
    h3, and h1 keeps no copy."""
    vm = mlab.deploy(unique("tpm"), "h1", **{"details[0].tpmversion": "2.0",
                                              "details[0].tpmmodel": "tpm-tis"})
    name = vm["instancename"]
    first = mlab.wait_console("h1", name, r"ORRERY-GUEST-TPM-NV=\S+", timeout=180)
    assert first.startswith("ORRERY-GUEST-TPM-NV=new:"), first
    value = first.split(":", 1)[1]
    mlab.wait_console("h1", name, r"ORRERY-GUEST-TICK 2\b", timeout=120)
    mlab.api.migrateVirtualMachine(virtualmachineid=vm["id"], hostid=mlab.host_id("h3"))
    assert host_of(mlab, vm["id"]) == "h3"
    state = lambda host: mlab.host_dir(host) / "libvirt-lib" / "swtpm" / vm["id"]  # noqa: E731
    assert state("h3").is_dir() and not state("h1").exists()
    # Off and on again there: a new swtpm reads the state from h3's disk.
    mlab.api.stopVirtualMachine(id=vm["id"])
    mlab.api.startVirtualMachine(id=vm["id"], hostid=mlab.host_id("h3"))
    wait_for(lambda: mlab.console("h3", name).count("ORRERY-GUEST-TPM-NV=") >= 1, 180,
             lambda: mlab.console("h3", name)[-2000:])
    seen = re.findall(r"ORRERY-GUEST-TPM-NV=(\S+)", mlab.console("h3", name))
    assert seen[-1] == f"kept:{value}", seen
    mlab.api.destroyVirtualMachine(id=vm["id"], expunge=True)
    assert not state("h3").exists()


def test_findhosts_and_autoselect_stay_in_the_cluster(mlab):
    vm = mlab.env["moved"]
    candidates = mlab.api.findHostsForMigration(id=vm["id"])["host"]
    ids = {h["id"] for h in candidates}
    assert ids == {mlab.host_id("h1"), mlab.host_id("h3")}
    assert all(h["suitableformigration"] and not h["requiresStorageMotion"]
               for h in candidates)
    # Placement chooses; the count goes on wherever it lands.
    moved = mlab.api.migrateVirtualMachine(virtualmachineid=vm["id"])["virtualmachine"]
    dest = next(n for n, h in mlab.hosts.items() if h["host_id"] == moved["hostid"])
    assert dest in ("h1", "h3")
    last = ticks(mlab, "h2", vm["instancename"])[-1]
    mlab.wait_console(dest, vm["instancename"], rf"ORRERY-GUEST-TICK {last + 2}\b", timeout=60)


def test_maintenance_empties_a_host_and_cancel_returns_it(mlab):
    vm = mlab.env["moved"]
    source = host_of(mlab, vm["id"])
    other = running_guest(mlab, source)
    host = mlab.api.prepareHostForMaintenance(id=mlab.host_id(source))["host"]
    assert host["resourcestate"] == "Maintenance"
    for v in (vm, other):
        now = host_of(mlab, v["id"])
        assert now != source
        assert v["instancename"] in domains(mlab, now)
    assert not [d for d in domains(mlab, source, "--all") if d.startswith("i-")]
    # Nothing is placed on it while in maintenance.
    err = expect_api_error(mlab.deploy, name=unique("mig"), host=source)
    assert "Maintenance" in err.error["errortext"], err.error
    back = mlab.api.cancelHostMaintenance(id=mlab.host_id(source))["host"]
    assert back["resourcestate"] == "Enabled"
    mlab.env["spare"] = other


HARDWARE = re.compile(r"ORRERY-GUEST-HARDWARE cpus=(\d+) memkb=(\d+)")


def hardware(lab: MultiLab, host: str, name: str) -> tuple[int, int]:
    seen = HARDWARE.findall(lab.console(host, name))
    return (int(seen[-1][0]), int(seen[-1][1])) if seen else (0, 0)


def test_scaling_a_running_guest_is_seen_from_inside(mlab):
    api = mlab.api
    api.updateConfiguration(name="enable.dynamic.scale.vm", value="true")
    api.updateTemplate(id=mlab.env["template"]["id"], isdynamicallyscalable=True)
    try:
        vm = running_guest(mlab, "h1")
        name = vm["instancename"]
        assert vm["isdynamicallyscalable"] is True
        mlab.wait_console("h1", name, r"ORRERY-GUEST-HARDWARE cpus=1 ", timeout=60)
        cpus, memkb = hardware(mlab, "h1", name)
        bigger = api.createServiceOffering(
            name=unique("scale"), displaytext="2 vCPUs, 320 MB", cpunumber=2, cpuspeed=500,
            memory=320)["serviceoffering"]
        scaled = api.scaleVirtualMachine(id=vm["id"],
                                         serviceofferingid=bigger["id"])["virtualmachine"]
        assert (scaled["cpunumber"], scaled["memory"], scaled["state"]) == (2, 320, "Running")
        # The guest sees the second vCPU and the added 128 MB itself.
        wait_for(lambda: hardware(mlab, "h1", name)[0] == 2, 60,
                 lambda: f"no second vCPU in the guest:\n{mlab.console('h1', name)[-1500:]}")
        wait_for(lambda: hardware(mlab, "h1", name)[1] >= memkb + 120 * 1024, 60,
                 lambda: f"no added memory in the guest (was {memkb} kB):\n"
                         f"{mlab.console('h1', name)[-1500:]}")
        assert cpus == 1
        # Never down while running.
        err = expect_api_error(api.scaleVirtualMachine, id=vm["id"],
                               serviceofferingid=mlab.env["offering"]["id"])
        assert err.status == 431 and "Only scaling up" in err.error["errortext"]
        api.destroyVirtualMachine(id=vm["id"], expunge=True)
    finally:
        api.updateConfiguration(name="enable.dynamic.scale.vm", value="false")
        api.updateTemplate(id=mlab.env["template"]["id"], isdynamicallyscalable=False)

    # A guest of a template that is not scalable is refused, and unchanged.
    api.updateConfiguration(name="enable.dynamic.scale.vm", value="true")
    try:
        plain = running_guest(mlab, "h1")
        err = expect_api_error(api.scaleVirtualMachine, id=plain["id"],
                               serviceofferingid=bigger["id"])
        assert err.status == 431 and "dynamically scalable" in err.error["errortext"]
        assert api.listVirtualMachines(id=plain["id"])["virtualmachine"][0]["memory"] == 192
        api.destroyVirtualMachine(id=plain["id"], expunge=True)
    finally:
        api.updateConfiguration(name="enable.dynamic.scale.vm", value="false")


def test_storage_migration_between_host_local_pools(mlab):
    api = mlab.api
    vm = running_guest(mlab, "h1")
    name = vm["instancename"]
    root = api.listVolumes(virtualmachineid=vm["id"], type="ROOT")["volume"][0]
    local = {p["hostid"]: p for p in api.listStoragePools(listall=True)["storagepool"]
             if p["scope"] == "HOST"}
    for h in ("h1", "h2", "h3"):
        assert local[mlab.host_id(h)]["disksizetotal"] > 0, local
    shared_file = LAB_DIR / "primary" / f"{root['id']}.qcow2"
    assert shared_file.exists()

    def local_file(host: str) -> Path:
        return mlab.host_dir(host) / "orrery" / "local" / f"{root['id']}.qcow2"

    def move(host: str) -> None:
        # What the destination's log already holds: only lines after it count.
        start = len(mlab.console(host, name))
        moved = api.migrateVirtualMachineWithVolume(
            virtualmachineid=vm["id"], hostid=mlab.host_id(host),
            migrateto=[{"volume": root["id"], "pool": local[mlab.host_id(host)]["id"]}])
        assert moved["virtualmachine"]["hostid"] == mlab.host_id(host)
        # Still the same running guest, now on the host's own disk: it goes
        # on counting there, without booting again.
        wait_for(lambda: len(TICK.findall(mlab.console(host, name)[start:])) >= 2, 60,
                 lambda: f"no ticks on {host}:\n{mlab.console(host, name)[start:][-1500:]}")
        assert "ORRERY-GUEST-BOOTED" not in mlab.console(host, name)[start:]
        disks = mlab.exec(host, "virsh", "-c", "qemu:///system", "domblklist", name).stdout
        assert f"/var/lib/orrery/local/{root['id']}.qcow2" in disks, disks
        listed = api.listVolumes(id=root["id"])["volume"][0]
        assert listed["storageid"] == local[mlab.host_id(host)]["id"]
        assert listed["storagetype"] == "local"

    move("h2")  # shared primary -> h2's own pool
    assert local_file("h2").exists() and not shared_file.exists()
    move("h3")  # h2's own pool -> h3's own pool
    assert local_file("h3").exists() and not local_file("h2").exists()

    # The disk's content came along: the guest only reads its disk, so the
    # copy holds exactly what the template holds.
    api.stopVirtualMachine(id=vm["id"])
    result = subprocess.run(["qemu-img", "compare", str(local_file("h3")), str(GUEST)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    # Stopped, its volumes go back to the shared pool through h3 (a copy
    # between two pools of one host), and it starts from there.
    cluster = api.listHosts(id=mlab.host_id("h3"))["host"][0]["clusterid"]
    shared = next(p for p in api.listStoragePools(clusterid=cluster)["storagepool"]
                  if p["scope"] == "CLUSTER")
    api.migrateVirtualMachine(virtualmachineid=vm["id"], storageid=shared["id"])
    assert shared_file.exists() and not local_file("h3").exists()
    result = subprocess.run(["qemu-img", "compare", str(shared_file), str(GUEST)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    seen = {h: len(mlab.console(h, name)) for h in ("h1", "h2", "h3")}
    api.startVirtualMachine(id=vm["id"])
    now = host_of(mlab, vm["id"])
    # Ticking after this boot: the guest handles the power button by then.
    wait_for(lambda: re.search(r"ORRERY-GUEST-BOOTED[\s\S]*ORRERY-GUEST-TICK 1\b",
                               mlab.console(now, name)[seen[now]:]), 120,
             lambda: f"no new boot on {now}:\n{mlab.console(now, name)[-1500:]}")
    api.destroyVirtualMachine(id=vm["id"], expunge=True)
    wait_for(lambda: not shared_file.exists(), 60, "the expunged volume's file stayed")


def test_volatile_offering_gives_a_new_root_disk_on_reboot(mlab):
    api = mlab.api
    volatile = api.createServiceOffering(
        name=unique("volatile"), displaytext="volatile", cpunumber=1, cpuspeed=500,
        memory=192, isvolatile=True)["serviceoffering"]
    vm = api.deployVirtualMachine(
        zoneid=mlab.env["zone"]["id"], serviceofferingid=volatile["id"],
        templateid=mlab.env["template"]["id"], name=unique("volatile"),
        hostid=mlab.host_id("h1"))["virtualmachine"]
    name = vm["instancename"]
    mlab.wait_console("h1", name, r"ORRERY-GUEST-TICK 1\b", timeout=120)
    root = api.listVolumes(virtualmachineid=vm["id"], type="ROOT")["volume"][0]
    disk = LAB_DIR / "primary" / f"{root['id']}.qcow2"
    # The file is made anew, not kept: whatever the guest wrote is gone.
    # (Inode numbers are reused at once, so the file's change time tells.)
    asked = time.time_ns()
    assert disk.stat().st_ctime_ns < asked
    rebooted = api.rebootVirtualMachine(id=vm["id"])["virtualmachine"]
    assert rebooted["state"] == "Running" and rebooted["hostid"] == mlab.host_id("h1")
    assert disk.exists() and disk.stat().st_ctime_ns > asked
    # A fresh boot from the new disk.
    mlab.wait_console("h1", name, r"ORRERY-GUEST-BOOTED[\s\S]*ORRERY-GUEST-BOOTED[\s\S]*"
                      r"ORRERY-GUEST-TICK 1\b", timeout=120)
    # The volume keeps its identity.
    assert api.listVolumes(id=root["id"])["volume"][0]["virtualmachineid"] == vm["id"]
    api.destroyVirtualMachine(id=vm["id"], expunge=True)


def test_an_ha_guest_whose_qemu_dies_is_restarted_but_not_one_the_user_stopped(mlab):
    api = mlab.api
    ha = api.createServiceOffering(name=unique("ha"), displaytext="HA", cpunumber=1,
                                   cpuspeed=500, memory=192, offerha=True)["serviceoffering"]
    vm = api.deployVirtualMachine(
        zoneid=mlab.env["zone"]["id"], serviceofferingid=ha["id"],
        templateid=mlab.env["template"]["id"], name=unique("ha"),
        hostid=mlab.host_id("h2"))["virtualmachine"]
    name = vm["instancename"]
    assert vm["haenable"] is True
    mlab.wait_console("h2", name, r"ORRERY-GUEST-TICK 1\b", timeout=120)
    # Every other guest of the lab runs on, whatever happens to this one.
    others = {v["id"] for v in api.listVirtualMachines(listall=True)["virtualmachine"]
              if v["state"] == "Running" and v["id"] != vm["id"]}
    pid = mlab.exec("h2", "pgrep", "-f", f"guest={name},").stdout.split()[0]
    seen = len(mlab.console("h2", name))
    subprocess.run(["kill", "-9", pid], check=True)
    # Restarted on the same host: a fresh boot on its console.
    wait_for(lambda: "ORRERY-GUEST-BOOTED" in mlab.console("h2", name)[seen:], 120,
             lambda: f"no restart:\n{mlab.console('h2', name)[-1500:]}")
    listed = wait_vm_state(api, vm["id"], "Running", timeout=60)
    assert listed["hostid"] == mlab.host_id("h2")
    events = api.listEvents(type="HA.RESTART", listall=True).get("event", [])
    assert any(vm["id"] in e["description"] for e in events), events
    still = {v["id"] for v in api.listVirtualMachines(listall=True)["virtualmachine"]
             if v["state"] == "Running"}
    assert others <= still, others - still

    # A stop the user asked for is not undone (once the restarted guest is
    # ticking, so it handles the power button).
    wait_for(lambda: re.search(r"ORRERY-GUEST-BOOTED[\s\S]*ORRERY-GUEST-TICK 1\b",
                               mlab.console("h2", name)[seen:]), 120,
             "the restarted guest never got going")
    api.stopVirtualMachine(id=vm["id"])
    time.sleep(8)
    assert api.listVirtualMachines(id=vm["id"])["virtualmachine"][0]["state"] == "Stopped"
    assert name not in domains(mlab, "h2")
    api.destroyVirtualMachine(id=vm["id"], expunge=True)


def _migrate_in_background(lab: MultiLab, vm_id: str, host: str) -> dict:
    """Starts a migration; returns a dict filled with its outcome when done."""
    outcome: dict = {}

    def run():
        try:
            outcome["result"] = lab.api.migrateVirtualMachine(
                virtualmachineid=vm_id, hostid=lab.host_id(host))
        except Exception as exc:  # noqa: BLE001 - the outcome is what is checked
            outcome["error"] = exc
    t = threading.Thread(target=run, daemon=True)
    t.start()
    outcome["thread"] = t
    return outcome


def _slow_migrations(lab: MultiLab) -> None:
    # 2 MiB/s: a 192 MB guest takes over a minute to copy, long enough to
    # break the move half-way.
    lab.api.updateConfiguration(name="vm.migrate.speed", value="2")


def _wait_migrating(lab: MultiLab, vm_id: str) -> None:
    wait_for(lambda: lab.api.listVirtualMachines(id=vm_id)["virtualmachine"][0]["state"]
             == "Migrating", 30, "the migration never started")
    time.sleep(3)


def test_network_cut_mid_migration_leaves_the_guest_on_the_source(mlab):
    vm = mlab.env["spare"]
    source = host_of(mlab, vm["id"])
    dest = next(h for h in ("h1", "h2", "h3") if h != source)
    _slow_migrations(mlab)
    outcome = _migrate_in_background(mlab, vm["id"], dest)
    try:
        _wait_migrating(mlab, vm["id"])
        # The job reports how far the copy has come.
        def progress():
            jobs = mlab.api.listAsyncJobs(listall=True).get("asyncjobs", [])
            return max((j.get("jobprocstatus", 0) for j in jobs
                        if j.get("jobinstanceid") == vm["id"] and j["jobstatus"] == 0),
                       default=0)
        wait_for(lambda: progress() > 0, 60, "the migration job never reported progress")
        assert outcome["thread"].is_alive(), f"the migration ended before the cut: {outcome}"
        mlab.hosts_sh("partition", dest)
        outcome["thread"].join(timeout=180)
        assert not outcome["thread"].is_alive(), "the migration never ended"
        assert "error" in outcome, outcome
    finally:
        mlab.hosts_sh("heal", dest)
        mlab.api.updateConfiguration(name="vm.migrate.speed", value="0")
        # A failure above leaves no migration running into the next test.
        outcome["thread"].join(timeout=180)
    listed = wait_vm_state(mlab.api, vm["id"], "Running", timeout=60)
    assert listed["hostid"] == mlab.host_id(source)
    assert vm["instancename"] in domains(mlab, source)
    last = ticks(mlab, source, vm["instancename"])[-1]
    mlab.wait_console(source, vm["instancename"], rf"ORRERY-GUEST-TICK {last + 2}\b",
                      timeout=30)
    # The destination keeps nothing of it once it can talk again.
    wait_for(lambda: vm["instancename"] not in domains(mlab, dest, "--all"), 60,
             f"{vm['instancename']} left behind on {dest}")
    events = mlab.api.listEvents(type="VM.MIGRATE", listall=True).get("event", [])
    assert any("failed" in e["description"] and vm["instancename"] in e["description"]
               for e in events)


def test_destination_killed_mid_migration_leaves_the_guest_on_the_source(mlab):
    # Last: the killed host does not come back.
    vm = mlab.env["spare"]
    source = host_of(mlab, vm["id"])
    dest = next(h for h in ("h3", "h2", "h1") if h != source)
    _slow_migrations(mlab)
    outcome = _migrate_in_background(mlab, vm["id"], dest)
    try:
        _wait_migrating(mlab, vm["id"])
        assert outcome["thread"].is_alive(), f"the migration ended before the kill: {outcome}"
        mlab.hosts_sh("kill", dest)
        outcome["thread"].join(timeout=180)
        assert not outcome["thread"].is_alive(), "the migration never ended"
        assert "error" in outcome, outcome
    finally:
        mlab.api.updateConfiguration(name="vm.migrate.speed", value="0")
        outcome["thread"].join(timeout=180)
    listed = wait_vm_state(mlab.api, vm["id"], "Running", timeout=60)
    assert listed["hostid"] == mlab.host_id(source)
    assert vm["instancename"] in domains(mlab, source)
    last = ticks(mlab, source, vm["instancename"])[-1]
    mlab.wait_console(source, vm["instancename"], rf"ORRERY-GUEST-TICK {last + 2}\b",
                      timeout=30)
