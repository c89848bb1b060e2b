"""Two coordinators on one PostgreSQL store: either answers any call with the
same result (what one creates or changes the other lists), exactly one of
them runs the background loops, and when that one is killed (SIGKILL) the
other takes them over within seconds. Runs on the PostgreSQL pass of the
suite (ORRERY_TEST_PG)."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import requests

from orrery_e2e import Coordinator, create_service_offering, pg_admin_url, unique, wait_for

pytestmark = pytest.mark.skipif(not pg_admin_url(),
                                reason="needs a PostgreSQL server (ORRERY_TEST_PG)")

LEADER = re.compile(r"^orrery_coordinator_leader (\d+)$", re.M)


def leads(c: Coordinator) -> bool:
    text = requests.get(f"http://127.0.0.1:{c.metrics_port}/metrics", timeout=10).text
    m = LEADER.search(text)
    assert m, "no orrery_coordinator_leader in /metrics"
    return m.group(1) == "1"


def beside(first: Coordinator, base) -> Coordinator:
    """A second coordinator on the first one's database, with its CA (as an
    operator copies /var/lib/orrery/coordinator/ca.* to the next machine) and
    the same secondary storage (as an operator mounts one NFS export at
    <data dir>/secondary on each)."""
    c = Coordinator(base, hosts=0)
    c.store_url = first.store_url
    c.data_dir.mkdir(parents=True)
    for f in ("ca.pem", "ca.key"):
        shutil.copy2(first.data_dir / f, c.data_dir / f)
    (first.data_dir / "secondary").mkdir(exist_ok=True)
    (c.data_dir / "secondary").symlink_to(first.data_dir / "secondary")
    c.apikey, c.secretkey = first.apikey, first.secretkey
    c.start()
    return c


@pytest.fixture
def pair(tmp_path):
    a = Coordinator(tmp_path / "a", hosts=0)
    a.init()
    a.start()
    b = beside(a, tmp_path / "b")
    yield a, b
    for c in (a, b):
        c.stop()


def test_either_coordinator_answers_and_one_leads_until_killed(pair):
    a, b = pair
    api_a, api_b = a.client(), b.client()

    # What one creates, the other lists, field for field.
    offering = create_service_offering(api_a, name=unique("both"))
    listed = api_b.listServiceOfferings(id=offering["id"])["serviceoffering"]
    assert listed == [offering] or (listed[0]["id"] == offering["id"]
                                    and listed[0]["name"] == offering["name"]), listed
    name = unique("acct")
    api_b.createAccount(accounttype=0, account=name, username=name, password="Pa55-word-1",
                        email=f"{name}@example.com", firstname="A", lastname="B")
    assert [x["name"] for x in api_a.listAccounts(name=name)["account"]] == [name]
    # A change on one reaches the other's cached view: renamed on b, listed
    # with the new name on a.
    api_b.updateServiceOffering(id=offering["id"], name=offering["name"] + "-x")
    wait_for(lambda: api_a.listServiceOfferings(id=offering["id"])["serviceoffering"][0]["name"]
             == offering["name"] + "-x", 10, "the rename did not reach the other coordinator")
    # Settings too (each coordinator keeps them in memory).
    api_a.updateConfiguration(name="vm.allocation.algorithm", value="firstfit")
    wait_for(lambda: api_b.listConfigurations(name="vm.allocation.algorithm")["configuration"][0]
             ["value"] == "firstfit", 10, "the setting did not reach the other coordinator")

    # Statistics live in the shared database, not in a file of each.
    for c in (a, b):
        assert not (c.data_dir / "stats.db").exists(), c.data_dir
    tables = subprocess.run(
        ["psql", "-At", a.store_url, "-c",
         "SELECT tablename FROM pg_tables WHERE tablename LIKE 'stats_%' ORDER BY 1"],
        check=True, capture_output=True, text=True, timeout=30).stdout.split()
    assert tables == ["stats_blocks", "stats_tails"], tables

    # Exactly one leads: the first one, which found the lock free.
    wait_for(lambda: leads(a), 10, "the first coordinator never led")
    assert not leads(b)
    time.sleep(2)
    assert leads(a) and not leads(b)

    # Killed without a chance to let go: the other takes over within 10 s
    # and still answers.
    a.kill_hard()
    started = time.monotonic()
    wait_for(lambda: leads(b), 10, "the survivor did not take over within 10 s")
    took = time.monotonic() - started
    assert took < 10, took
    assert api_b.listServiceOfferings(id=offering["id"])["count"] == 1


def with_hosts(tmp_path, image, config: dict | None = None):
    """Two coordinators, the first with two simulated hosts and a template."""
    from orrery_e2e import find_os_type, register_template
    a = Coordinator(tmp_path / "a", hosts=2)
    if config:
        a.config = config
    a.init()
    a.start()
    b = beside(a, tmp_path / "b")
    api_a = a.client()
    zone = api_a.listZones()["zone"][0]
    template = register_template(api_a, zone["id"], find_os_type(api_a)["id"], image)
    return a, b, zone, template


def failed_as_orphan(survivor: Coordinator, job: dict) -> None:
    """The killed coordinator's job ends failed, within 20 s, saying why."""
    raw = survivor.client(fetch_result=False)
    result = wait_for(
        lambda: (lambda r: r if r["jobstatus"] != 0 else None)(
            raw.queryAsyncJobResult(jobid=job["jobid"])), 20,
        "the killed coordinator's job stayed pending")
    assert result["jobstatus"] == 2, result
    assert "stopped before it completed" in result["jobresult"]["errortext"], result


def test_jobs_of_a_killed_coordinator_end_failed_with_a_clear_error(tmp_path, image):
    """A deploy in flight on the leader when it is killed: the survivor takes
    over, fails the job with a clear error and settles the instance."""
    # Starts take a minute on these simulated hosts: long enough to kill.
    a, b, zone, template = with_hosts(tmp_path, image, {"simulator_delay_ms": 60000})
    try:
        api_a = a.client()
        offering = create_service_offering(api_a)
        job = a.client(fetch_result=False).deployVirtualMachine(
            zoneid=zone["id"], serviceofferingid=offering["id"], templateid=template["id"],
            name=unique("orphan"))
        wait_for(lambda: leads(a), 10, "the first coordinator never led")
        a.kill_hard()
        api_b = b.client()
        wait_for(lambda: leads(b), 10, "the survivor did not take over")
        failed_as_orphan(b, job)
        vm = api_b.listVirtualMachines(id=job["id"])["virtualmachine"][0]
        assert vm["state"] not in ("Starting", "Creating"), vm
    finally:
        a.stop()
        b.stop()


def test_a_snapshot_task_of_a_killed_coordinator_ends_in_error_and_frees_its_instance(
        tmp_path, image):
    """An instance snapshot being taken by the leader when it is killed: the
    survivor fails its job and puts the snapshot in Error, so the next
    snapshot task on that instance is not refused as concurrent."""
    # a's simulated hosts take a minute per task; b's are quick.
    a, b, zone, template = with_hosts(tmp_path, image, {"simulator_delay_ms": 60000})
    try:
        api_b = b.client()
        offering = create_service_offering(api_b)
        vm = api_b.deployVirtualMachine(zoneid=zone["id"], serviceofferingid=offering["id"],
                                        templateid=template["id"], name=unique("snap"))
        vm = vm["virtualmachine"]
        api_b.stopVirtualMachine(id=vm["id"])
        wait_for(lambda: leads(a), 10, "the first coordinator never led")
        job = a.client(fetch_result=False).createVMSnapshot(virtualmachineid=vm["id"],
                                                            snapshotmemory=False)
        snap_id = job["id"]
        wait_for(lambda: api_b.listVMSnapshot(vmsnapshotid=snap_id)["vmSnapshot"][0]["state"]
                 == "Creating", 10, "the snapshot never began")
        a.kill_hard()
        wait_for(lambda: leads(b), 10, "the survivor did not take over")
        failed_as_orphan(b, job)
        wait_for(lambda: api_b.listVMSnapshot(vmsnapshotid=snap_id)["vmSnapshot"][0]["state"]
                 == "Error", 10, "the interrupted snapshot was not settled")
        again = api_b.createVMSnapshot(virtualmachineid=vm["id"], snapshotmemory=False)
        assert again["vmsnapshot"]["state"] == "Ready", again
    finally:
        a.stop()
        b.stop()


def test_deploys_through_both_coordinators_never_overcommit_a_host(tmp_path, image):
    """Two coordinators placing at once: each decides with the other's
    placements in view (one decides at a time, after catching up with the
    other's commits), so the hosts fill exactly and the rest are refused."""
    from concurrent.futures import ThreadPoolExecutor
    a, b, zone, template = with_hosts(tmp_path, image)
    try:
        api_a = a.client()
        hosts = api_a.listHosts(type="Routing")["host"]
        assert len(hosts) == 2, hosts
        per_host = 3
        # Memory decides: each host holds exactly three of these (80% of it,
        # under the cluster's 85% disable threshold; a fourth would not fit).
        mem_mb = min(h["memorytotal"] for h in hosts) // (1024 * 1024) * 8 // 10 // per_host
        offering = create_service_offering(api_a, cpuspeed=100, memory=int(mem_mb))
        fits = per_host * len(hosts)
        wanted = fits + 10

        def deploy(i: int) -> dict:
            c = (a if i % 2 else b).client(fetch_result=False)
            return c.deployVirtualMachine(zoneid=zone["id"], serviceofferingid=offering["id"],
                                          templateid=template["id"], name=unique(f"fill{i}"))

        with ThreadPoolExecutor(max_workers=wanted) as pool:
            jobs = list(pool.map(deploy, range(wanted)))
        raw = a.client(fetch_result=False)

        def outcome(job):
            r = raw.queryAsyncJobResult(jobid=job["jobid"])
            return r if r["jobstatus"] != 0 else None

        results = [wait_for(lambda j=j: outcome(j), 60, "a deploy job stayed pending")
                   for j in jobs]
        done = [r for r in results if r["jobstatus"] == 1]
        refused = [r for r in results if r["jobstatus"] == 2]
        assert len(done) == fits, [r["jobresult"] for r in refused]
        assert len(refused) == wanted - fits
        for r in refused:
            assert r["jobresult"]["errorcode"] == 533, r
        running = api_a.listVirtualMachines(state="Running", listall=True)["virtualmachine"]
        per = {}
        for vm in running:
            per[vm["hostid"]] = per.get(vm["hostid"], 0) + 1
        assert sorted(per.values()) == [per_host] * len(hosts), per
        # Full as seen from either: one more through b is refused.
        late = b.client(fetch_result=False).deployVirtualMachine(
            zoneid=zone["id"], serviceofferingid=offering["id"], templateid=template["id"],
            name=unique("late"))
        r = wait_for(lambda: outcome(late), 60, "the late deploy stayed pending")
        assert r["jobstatus"] == 2 and r["jobresult"]["errorcode"] == 533, r
        for h in api_b_hosts(b):
            assert h["memoryallocated"] == per_host * int(mem_mb) * 1024 * 1024, h
    finally:
        a.stop()
        b.stop()


def api_b_hosts(b: Coordinator) -> list[dict]:
    return b.client().listHosts(type="Routing")["host"]


@pytest.mark.lab
def test_a_real_host_is_commanded_through_either_coordinator(tmp_path):
    """A real agent that reaches only one of two coordinators: a guest
    deployed through the other, which carries the commands over mutual TLS
    to the one holding the host's session. Then with a session to each: the
    guest stopped through one, and started again through the survivor after
    the leader is killed."""
    from lab import Lab, require_lab, virsh, wait_console, wait_host_state, wait_vm_state

    require_lab()
    # Not under pytest's 0700 temporary directory: QEMU (libvirt-qemu) must
    # reach the disk images below the agent's state directory.
    base = Path(tempfile.mkdtemp(prefix="orrery-two-", dir="/var/tmp"))
    base.chmod(0o755)
    lab = Lab(base / "lab")
    lab.up()
    b = None
    try:
        b = beside(lab.coordinator, tmp_path / "b")
        a = lab.coordinator

        def agent_reaches(*coordinators: Coordinator) -> None:
            """Restarts the agent with these coordinators and waits until it
            holds a session with each and their hello reports are settled."""
            lab.agent.stop()
            addresses = [f"127.0.0.1:{c.agent_port}" for c in coordinators]
            lab.agent.config.write_text(
                f'domain_type = "qemu"\ncoordinator = "{",".join(addresses)}"\n')
            lab.agent.start()

            def sessions() -> bool:
                run = re.sub(r"\x1b\[[0-9;]*m", "", lab.agent.log_path.read_text(
                    errors="replace")).rsplit("===== agent run =====", 1)[-1]
                return all(f"connected coordinator={x}" in run for x in addresses)
            wait_for(sessions, 30, lambda: f"no session with each of {addresses}:\n"
                     f"{lab.agent.log_tail()}")
            time.sleep(2)

        # Only b: a (the leader) has no session with the host.
        agent_reaches(b)
        api_b = b.client()
        wait_host_state(api_b, lab.agent.host_id(), "Up")
        wait_for(lambda: leads(a), 10, "the first coordinator never led")
        vm = lab.api.deployVirtualMachine(
            zoneid=lab.env["zone"]["id"], serviceofferingid=lab.env["offering"]["id"],
            templateid=lab.env["template"]["id"], name=unique("two"))["virtualmachine"]
        assert vm["state"] == "Running"
        wait_console(lab.agent, vm["instancename"], r"ORRERY-GUEST-BOOTED")
        # The leader heard the host through b's records: still Up.
        host = lab.api.listHosts(id=lab.agent.host_id())["host"][0]
        assert host["state"] == "Up", host
        # A forwarded stop, then start, through a.
        assert lab.api.stopVirtualMachine(id=vm["id"], forced=True)["virtualmachine"]["state"] \
            == "Stopped"
        # A volume snapshot through a: the agent sends the copy to b, which
        # took a's upload grant over with the command.
        root = lab.api.listVolumes(virtualmachineid=vm["id"], type="ROOT")["volume"][0]
        snap = lab.api.createSnapshot(volumeid=root["id"])["snapshot"]
        assert snap["state"] == "BackedUp", snap
        assert lab.api.startVirtualMachine(id=vm["id"])["virtualmachine"]["state"] == "Running"
        wait_vm_state(lab.api, vm["id"], "Running")
        # The guest powered off behind the API's back: only b hears the
        # domain event, and acts on it although a leads. The console log is
        # kept across runs, so this matches the first run's line at once: the
        # destroy comes moments after the start, before the agent's power
        # watcher may have seen the guest running, and is reported all the
        # same.
        wait_console(lab.agent, vm["instancename"], r"ORRERY-GUEST-BOOTED")
        virsh("destroy", vm["instancename"])
        wait_vm_state(lab.api, vm["id"], "Stopped", timeout=20)
        events = lab.api.listEvents(type="VM.STOP", listall=True).get("event", [])
        assert [e for e in events if e["description"]
                == f"Instance powered off on its host. Instance Id: {vm['id']}"], events
        assert lab.api.startVirtualMachine(id=vm["id"])["virtualmachine"]["state"] == "Running"

        # Both: the agent keeps a session with each.
        agent_reaches(a, b)
        wait_host_state(api_b, lab.agent.host_id(), "Up")
        assert lab.api.stopVirtualMachine(id=vm["id"], forced=True)["virtualmachine"]["state"] \
            == "Stopped"
        wait_for(lambda: leads(a), 10, "the first coordinator never led")
        a.kill_hard()
        wait_for(lambda: leads(b), 10, "the survivor did not take over")
        assert api_b.startVirtualMachine(id=vm["id"])["virtualmachine"]["state"] == "Running"
        wait_vm_state(api_b, vm["id"], "Running")
        # (Forced: the guest has only just started and would not yet heed
        # the power button a plain destroy presses first.)
        api_b.stopVirtualMachine(id=vm["id"], forced=True)
        api_b.destroyVirtualMachine(id=vm["id"], expunge=True)
        assert api_b.listVirtualMachines(id=vm["id"]).get("virtualmachine", []) == []
    finally:
        lab.api = b.client() if b else lab.api
        lab.down()
        if b:
            b.stop()
        shutil.rmtree(base, ignore_errors=True)


def console_answer(port: int, path: str) -> str:
    """A WebSocket upgrade at a coordinator's console proxy: the status line
    and, for a refusal, the reason in the body."""
    import base64
    import os
    import socket
    key = base64.b64encode(os.urandom(16)).decode()
    req = (f"GET /{path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
           f"Connection: close\r\n\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(req.encode())
        s.settimeout(5)
        data = b""
        try:
            while chunk := s.recv(4096):
                data += chunk
        except socket.timeout:
            pass
    return data.decode(errors="replace")


def test_a_console_token_from_one_coordinator_is_taken_once_by_any(tmp_path, image):
    """createConsoleEndpoint through one coordinator; the URL opened at the
    other's console proxy (as behind a load balancer) finds the token, and
    it is spent for both."""
    a, b, zone, template = with_hosts(tmp_path, image)
    try:
        api_a = a.client()
        offering = create_service_offering(api_a, name=unique("con"))
        vm = api_a.deployVirtualMachine(zoneid=zone["id"], serviceofferingid=offering["id"],
                                        templateid=template["id"],
                                        name=unique("con"))["virtualmachine"]
        ws = api_a.createConsoleEndpoint(virtualmachineid=vm["id"])["consoleendpoint"]["websocket"]
        unknown = "The console token is unknown, used or expired"
        # Taken at b: the token is known there (the simulated host then has
        # no console to offer, which is the refusal's reason).
        first = console_answer(b.console_port, ws["path"])
        assert first.startswith("HTTP/1.1 403") and unknown not in first, first
        # Spent: neither coordinator takes it again.
        for c in (a, b):
            again = console_answer(c.console_port, ws["path"])
            assert again.startswith("HTTP/1.1 403") and unknown in again, again
        # A fresh token, taken at the coordinator that issued it, works too.
        ws = api_a.createConsoleEndpoint(virtualmachineid=vm["id"])["consoleendpoint"]["websocket"]
        assert unknown not in console_answer(a.console_port, ws["path"])
    finally:
        for c in (a, b):
            c.stop()
