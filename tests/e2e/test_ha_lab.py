"""HA with fencing on three real lab hosts: a killed host's HA guests run
elsewhere within seconds, a partitioned host that still writes its storage
heartbeat keeps its guests, and once it can write neither it kills them
itself before they start elsewhere, so no guest ever runs twice. Copies are
counted every 200 ms from every host's QEMU processes and `virsh list`."""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path

import pytest

from lab import wait_vm_state
from multihost import MultiLab, require_multihost
from orrery_e2e import unique, wait_for

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def mlab(tmp_path_factory):
    require_multihost()
    lab = MultiLab(tmp_path_factory.mktemp("ha-lab"), count=3)
    try:
        lab.up()
        api = lab.api
        lab.env["ha_offering"] = api.createServiceOffering(
            name="ha-lab-ha", displaytext="HA", cpunumber=1, cpuspeed=500, memory=192,
            offerha=True)["serviceoffering"]
        yield lab
    finally:
        lab.down()


def deploy(lab: MultiLab, host: str, ha: bool) -> dict:
    offering = lab.env["ha_offering"] if ha else lab.env["offering"]
    return lab.api.deployVirtualMachine(
        zoneid=lab.env["zone"]["id"], serviceofferingid=offering["id"],
        templateid=lab.env["template"]["id"], name=unique("ha" if ha else "plain"),
        hostid=lab.host_id(host))["virtualmachine"]


def host_name(lab: MultiLab, host_id: str | None) -> str | None:
    return next((n for n, h in lab.hosts.items() if h["host_id"] == host_id), None)


def listed(lab: MultiLab, vm_id: str) -> dict:
    return lab.api.listVirtualMachines(id=vm_id)["virtualmachine"][0]


def host_record(lab: MultiLab, host: str) -> dict:
    return lab.api.listHosts(id=lab.host_id(host))["host"][0]


def netns_inodes() -> dict[int, str]:
    """Network namespace inode -> lab host name."""
    out = {}
    for name in os.listdir("/run/netns") if os.path.isdir("/run/netns") else []:
        if re.fullmatch(r"h\d+", name):
            out[os.stat(f"/run/netns/{name}").st_ino] = name
    return out


TICKS = os.sysconf("SC_CLK_TCK")


def uptime() -> float:
    return float(Path("/proc/uptime").read_text().split()[0])


def qemu_copies(names: list[str], settled: float = 0.0) -> dict[str, list[str]]:
    """For each guest, the lab hosts where a QEMU process of it runs. With
    `settled`, only processes alive at least that many seconds count: a QEMU
    that a lock refuses lives a few milliseconds and never runs the guest."""
    hosts = netns_inodes()
    found: dict[str, list[str]] = {n: [] for n in names}
    now = uptime()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            ino = os.stat(f"/proc/{pid}/ns/net").st_ino
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        if "qemu" not in cmd:
            continue
        started = int(stat.rsplit(")", 1)[1].split()[19]) / TICKS
        if now - started < settled:
            continue
        for n in names:
            if f"guest={n}," in cmd:
                found[n].append(hosts.get(ino, "root"))
    return found


class CopyCounter:
    """Counts every guest's running copies every 200 ms (QEMU processes by
    network namespace) and each host's `virsh list` as fast as it answers."""

    def __init__(self, lab: MultiLab, names: list[str]):
        self.lab, self.names = lab, names
        self.samples: list[tuple[float, dict[str, list[str]]]] = []
        self.virsh: list[tuple[float, str, list[str]]] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._procs, daemon=True)]
        self.threads += [threading.Thread(target=self._virsh, args=(h,), daemon=True)
                         for h in lab.hosts]

    def _procs(self):
        while not self.stop.is_set():
            self.samples.append((time.monotonic(), qemu_copies(self.names, settled=1.0)))
            time.sleep(0.2)

    def _virsh(self, host: str):
        # Running domains only: one that starts paused and is refused its
        # locks never runs guest code.
        while not self.stop.is_set():
            r = self.lab.exec(host, "virsh", "-c", "qemu:///system", "list", "--name",
                              "--state-running", check=False, timeout=30)
            if r.returncode == 0:
                self.virsh.append((time.monotonic(), host, r.stdout.split()))
            time.sleep(0.2)

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=40)

    def assert_never_twice(self):
        assert len(self.samples) > 10, self.samples
        for t, copies in self.samples:
            for name, where in copies.items():
                assert len(where) <= 1, f"{name} ran on {where} at once (t={t:.1f})"
        # virsh lists of different hosts taken within 200 ms of each other.
        for t, host, names in self.virsh:
            for t2, host2, names2 in self.virsh:
                if host2 != host and abs(t2 - t) < 0.2:
                    both = set(names) & set(names2) & set(self.names)
                    assert not both, f"{both} listed on {host} and {host2} within 200 ms"


def domains(lab: MultiLab, host: str, *flags: str) -> list[str]:
    out = lab.exec(host, "virsh", "-c", "qemu:///system", "list", "--name", *flags).stdout
    return out.split()


def wait_running_elsewhere(lab: MultiLab, vm: dict, lost: str, timeout: float = 90) -> str:
    def check():
        v = listed(lab, vm["id"])
        host = host_name(lab, v.get("hostid"))
        if v["state"] == "Running" and host not in (None, lost) and \
                "ORRERY-GUEST-BOOTED" in lab.console(host, vm["instancename"]):
            return host
        return None
    return wait_for(check, timeout, lambda: f"{vm['name']} not running elsewhere: "
                    f"{listed(lab, vm['id'])}\n{lab.log_tail(lost)}")


def test_a_killed_hosts_ha_guests_run_elsewhere_and_it_comes_back_clean(mlab):
    api = mlab.api
    ha = [deploy(mlab, "h1", True), deploy(mlab, "h1", True)]
    plain = deploy(mlab, "h1", False)
    for vm in ha + [plain]:
        wait_vm_state(api, vm["id"], "Running", timeout=120)
        mlab.wait_console("h1", vm["instancename"], r"ORRERY-GUEST-TICK 1\b", timeout=120)
    names = [vm["instancename"] for vm in ha + [plain]]

    with CopyCounter(mlab, names) as counter:
        t0 = time.monotonic()
        mlab.hosts_sh("kill", "h1")
        moved = {}
        for vm in ha:
            moved[vm["id"]] = wait_running_elsewhere(mlab, vm, "h1")
        elapsed = time.monotonic() - t0
        # The plain guest is Stopped, not restarted.
        wait_vm_state(api, plain["id"], "Stopped", timeout=30)
    counter.assert_never_twice()
    print(f"host kill to both HA guests booted elsewhere: {elapsed:.1f} s")
    assert all(h in ("h2", "h3") for h in moved.values()), moved
    # h1's QEMU processes are gone.
    assert all(where in ([], ["h2"], ["h3"]) for where in qemu_copies(names).values())
    assert qemu_copies([plain["instancename"]])[plain["instancename"]] == []

    h1 = host_record(mlab, "h1")
    assert h1["state"] == "Down" and h1["hostha"]["hastate"] == "Fenced", h1
    events = api.listEvents(type="VM.HA", listall=True).get("event", [])
    for vm in ha + [plain]:
        assert any(vm["id"] in e["description"] and "lost" in e["description"]
                   for e in events), events
    restarts = api.listEvents(type="HA.RESTART", listall=True).get("event", [])
    assert all(any(vm["id"] in e["description"] for e in restarts) for vm in ha), restarts
    assert not any(plain["id"] in e["description"] for e in restarts)

    # h1 comes back: its leftover definitions of the moved guests are removed
    # and never started; it is Up and takes placements again.
    mlab.hosts_sh("up", "3", "--data-dir", str(mlab.coordinator.data_dir),
                  "--agent-port", str(mlab.coordinator.agent_port))
    wait_for(lambda: host_record(mlab, "h1")["state"] == "Up", 90, "h1 never came back Up")
    wait_for(lambda: not {vm["instancename"] for vm in ha} & set(domains(mlab, "h1", "--all")),
             60, lambda: f"stale domains left on h1: {domains(mlab, 'h1', '--all')}")
    assert host_record(mlab, "h1")["hostha"]["hastate"] == "Available"
    for vm in ha:
        v = listed(mlab, vm["id"])
        assert v["state"] == "Running" and host_name(mlab, v["hostid"]) == moved[vm["id"]]
        assert len(qemu_copies([vm["instancename"]])[vm["instancename"]]) == 1
    assert listed(mlab, plain["id"])["state"] == "Stopped"
    fresh = deploy(mlab, "h1", False)
    assert wait_vm_state(api, fresh["id"], "Running", timeout=120)["hostid"] == mlab.host_id("h1")
    # Destroying stops gracefully: once the guest handles its power button.
    mlab.wait_console("h1", fresh["instancename"], r"ORRERY-GUEST-TICK 1\b", timeout=120)
    for vm in ha + [plain, fresh]:
        api.destroyVirtualMachine(id=vm["id"], expunge=True)


def test_a_partitioned_host_keeps_its_guests_until_it_fences_itself(mlab):
    api = mlab.api
    vm = deploy(mlab, "h1", True)
    name = vm["instancename"]
    wait_vm_state(api, vm["id"], "Running", timeout=120)
    mlab.wait_console("h1", name, r"ORRERY-GUEST-TICK 1\b", timeout=120)
    try:
        with CopyCounter(mlab, [name]) as counter:
            mlab.hosts_sh("partition", "h1")
            # Cut from the coordinator but still writing its storage
            # heartbeat: Disconnected, and its guest stays where it is.
            wait_for(lambda: host_record(mlab, "h1")["state"] == "Disconnected", 60,
                     "the partitioned host never became Disconnected")
            assert host_record(mlab, "h1")["hostha"]["hastate"] == "Suspect"
            time.sleep(12)  # well past lease + margin
            v = listed(mlab, vm["id"])
            assert v["state"] == "Running" and host_name(mlab, v["hostid"]) == "h1", v
            assert qemu_copies([name])[name] == ["h1"]
            ticks_before = len(re.findall(r"ORRERY-GUEST-TICK", mlab.console("h1", name)))
            # Now its storage heartbeat fails too: it must fence itself, and
            # only then does the guest start elsewhere.
            t0 = time.monotonic()
            mlab.hosts_sh("cut-storage", "h1")
            where = wait_running_elsewhere(mlab, vm, "h1")
            elapsed = time.monotonic() - t0
        counter.assert_never_twice()
        print(f"storage cut to the guest booted elsewhere: {elapsed:.1f} s")
        assert any(c[name] == ["h1"] for _, c in counter.samples)
        assert counter.samples[-1][1][name] == [where]
        assert ticks_before > 0
        assert "fenced" in mlab.log_tail("h1", 200)
    finally:
        mlab.hosts_sh("heal", "h1")
    # Back: reconnected, the stale definition removed, the guest single.
    wait_for(lambda: host_record(mlab, "h1")["state"] == "Up", 90, "h1 never came back Up")
    wait_for(lambda: name not in domains(mlab, "h1", "--all"), 60,
             lambda: f"stale domain left on h1: {domains(mlab, 'h1', '--all')}")
    assert qemu_copies([name])[name] == [where]
    api.destroyVirtualMachine(id=vm["id"], expunge=True)


def agent_pid(host: str) -> int:
    """The pid of a lab host's agent (found by network namespace)."""
    ino = next(i for i, n in netns_inodes().items() if n == host)
    for pid in os.listdir("/proc"):
        try:
            if pid.isdigit() and Path(f"/proc/{pid}/comm").read_text().strip() == "orrery-agent" \
                    and os.stat(f"/proc/{pid}/ns/net").st_ino == ino:
                return int(pid)
        except OSError:
            continue
    raise AssertionError(f"no agent runs in {host}")


def test_an_agent_killed_alone_never_leads_to_a_second_copy(mlab):
    """Only the agent dies: both heartbeats stop, so the host is declared
    lost, but its guest runs on; the restart elsewhere is refused by the lock
    manager, and the returning agent finds the guest and it is Running there
    again."""
    api = mlab.api
    vm = deploy(mlab, "h2", True)
    name = vm["instancename"]
    wait_vm_state(api, vm["id"], "Running", timeout=120)
    mlab.wait_console("h2", name, r"ORRERY-GUEST-TICK 1\b", timeout=120)
    with CopyCounter(mlab, [name]) as counter:
        os.kill(agent_pid("h2"), 9)
        wait_for(lambda: host_record(mlab, "h2")["state"] == "Down", 60, "h2 never Down")
        restarts = lambda: [e for e in api.listEvents(type="HA.RESTART", listall=True)
                            .get("event", []) if vm["id"] in e["description"]]
        wait_for(restarts, 30, "no HA restart was tried")
        wait_for(lambda: listed(mlab, vm["id"])["state"] == "Stopped", 120,
                 lambda: f"the refused restart did not settle: {listed(mlab, vm['id'])}")
        assert qemu_copies([name])[name] == ["h2"]
        mlab.hosts_sh("up", "3", "--data-dir", str(mlab.coordinator.data_dir),
                      "--agent-port", str(mlab.coordinator.agent_port))
        wait_for(lambda: host_record(mlab, "h2")["state"] == "Up", 90, "h2 never came back")
        v = wait_vm_state(api, vm["id"], "Running", timeout=60)
    counter.assert_never_twice()
    assert v["hostid"] == mlab.host_id("h2")
    assert qemu_copies([name])[name] == ["h2"]
    assert "ORRERY-GUEST-BOOTED" not in "".join(
        mlab.console(h, name) for h in ("h1", "h3"))
    api.destroyVirtualMachine(id=vm["id"], expunge=True)


def test_the_lock_manager_refuses_a_second_start_of_a_running_disk(mlab):
    vm = deploy(mlab, "h2", False)
    name = vm["instancename"]
    wait_vm_state(mlab.api, vm["id"], "Running", timeout=120)
    mlab.wait_console("h2", name, r"ORRERY-GUEST-TICK 1\b", timeout=120)
    xml = mlab.exec("h2", "virsh", "-c", "qemu:///system", "dumpxml", "--inactive", name).stdout
    # The same disks under another name and identity, on another host, with
    # no network or console and QEMU's own image locking off (on one kernel it would
    # refuse first; libvirt takes its leases only as the CPUs start).
    twin = re.sub(r"<uuid>[^<]*</uuid>", "", xml)
    twin = twin.replace(f"<name>{name}</name>", f"<name>{name}-twin</name>")
    twin = re.sub(r"<interface type='network'>.*?</interface>", "", twin, flags=re.S)
    # Nor a console: it listens on h2's own address.
    twin = re.sub(r"<graphics .*?</graphics>", "", twin, flags=re.S)
    wrapper = mlab.host_dir("h3") / "orrery" / "qemu-nolock"
    wrapper.write_text("#!/bin/bash\n"
                       "exec qemu-system-x86_64 \"${@//\\\"driver\\\":\\\"file\\\"/"
                       "\\\"driver\\\":\\\"file\\\",\\\"locking\\\":\\\"off\\\"}\"\n")
    wrapper.chmod(0o755)
    twin = re.sub(r"<emulator>[^<]*</emulator>",
                  "<emulator>/var/lib/orrery/qemu-nolock</emulator>", twin)
    path = mlab.host_dir("h3") / "orrery" / "twin.xml"
    path.write_text(twin)
    r = mlab.exec("h3", "virsh", "-c", "qemu:///system", "create",
                  "/var/lib/orrery/twin.xml", check=False)
    assert r.returncode != 0
    # Refused by libvirt's lock manager before QEMU runs (QEMU's own image
    # locking would say "Failed to get ... lock" instead).
    assert "Lockspace resource" in r.stderr, r.stderr
    assert f"{name}-twin" not in domains(mlab, "h3")
    assert qemu_copies([name])[name] == ["h2"]
    mlab.api.destroyVirtualMachine(id=vm["id"], expunge=True)
