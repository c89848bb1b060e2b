"""A one-host lab: real libvirt and QEMU, the coordinator, an enrolled agent.

Needs root, libvirt and the lab guest image (tests/lab). Without them the lab
tests are skipped, unless ORRERY_REQUIRE_LIBVIRT=1 (CI) makes that a failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from orrery_e2e import REPO_ROOT as REPO, Coordinator, CoordinatorError, find_os_type, wait_for

LAB = REPO / "tests" / "lab"
GUEST = LAB / "out" / "guest.qcow2"
VIRSH = ["virsh", "-c", "qemu:///system"]


def agent_bin() -> Path:
    env = os.environ.get("ORRERY_AGENT_BIN")
    if env:
        return Path(env)
    return Path(os.environ.get("ORRERY_COORDINATOR_BIN", REPO / "target/debug/x")).parent / "orrery-agent"


def guest_current() -> bool:
    """The guest image exists and was built by the current recipe."""
    import hashlib
    recipe = hashlib.sha256((LAB / "build-guest.sh").read_bytes()).hexdigest()
    stamp = GUEST.with_suffix(".recipe")
    return GUEST.exists() and stamp.exists() and stamp.read_text().strip() == recipe


def lab_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "the lab needs root"
    if shutil.which("virsh") is None or shutil.which("libvirtd") is None:
        return "libvirt is not installed (tests/lab/install-deps.sh)"
    return None


def require_lab() -> None:
    why = lab_unavailable()
    if why is None:
        result = subprocess.run(["bash", str(LAB / "start-libvirt.sh")], capture_output=True,
                                text=True, timeout=120)
        if result.returncode != 0:
            why = f"libvirt did not start: {result.stderr[-2000:]}"
    if why is None and not guest_current():
        result = subprocess.run(["bash", str(LAB / "build-guest.sh")], capture_output=True,
                                text=True, timeout=300)
        if result.returncode != 0:
            why = f"building the guest failed: {result.stderr[-2000:]}"
    if why:
        if os.environ.get("ORRERY_REQUIRE_LIBVIRT") == "1":
            pytest.fail(why, pytrace=False)
        pytest.skip(why)


def virsh(*args: str, check: bool = True) -> str:
    result = subprocess.run(VIRSH + list(args), capture_output=True, text=True, timeout=60)
    if check and result.returncode != 0:
        raise AssertionError(f"virsh {' '.join(args)}: {result.stderr}")
    return result.stdout


def domain_state(name: str) -> str:
    result = subprocess.run(VIRSH + ["domstate", name], capture_output=True, text=True,
                            timeout=60)
    if result.returncode != 0:
        return "missing"
    return result.stdout.strip()


def remove_idle_networks() -> None:
    """Guest networks of earlier labs that no domain uses any more: another
    lab's network with the same subnet would stop this lab's from starting."""
    for net in virsh("net-list", "--all", "--name", check=False).split():
        if not net.startswith("orrery-"):
            continue
        xml = virsh("net-dumpxml", net, check=False)
        if "connections=" in xml.split("\n", 1)[0]:
            continue
        virsh("net-destroy", net, check=False)
        virsh("net-undefine", net, check=False)


class Agent:
    """One orrery-agent process with its own state directory."""

    def __init__(self, base: Path, coordinator: Coordinator):
        self.base = base
        self.state_dir = base / "agent-state"
        self.primary_dir = base / "primary"
        self.config = base / "agent.toml"
        self.log_path = base / "agent.log"
        self.coordinator = coordinator
        self.proc: subprocess.Popen | None = None
        # KVM does not boot guests on these machines; software emulation does.
        self.config.write_text('domain_type = "qemu"\n')

    def run(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [str(agent_bin()), "--config", str(self.config), "--state-dir", str(self.state_dir),
             "--primary-dir", str(self.primary_dir), *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if check and result.returncode != 0:
            raise AssertionError(f"orrery-agent {' '.join(args)} exited {result.returncode}:\n"
                                 f"{result.stderr[-3000:]}")
        return result

    def enroll(self, token: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run("enroll", "--coordinator", f"127.0.0.1:{self.coordinator.agent_port}",
                        "--token", token, check=check)

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            log.write(b"\n===== agent run =====\n")
            log.flush()
            self.proc = subprocess.Popen(
                [str(agent_bin()), "--config", str(self.config), "--state-dir",
                 str(self.state_dir), "--primary-dir", str(self.primary_dir), "run"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def kill_hard(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill_hard()

    def host_id(self) -> str:
        return json.loads((self.state_dir / "agent.json").read_text())["host_id"]

    def console(self, instance_name: str) -> str:
        path = self.state_dir / "consoles" / f"{instance_name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def log_tail(self, lines: int = 60) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def ssh(ip: str, key: Path, command: str, check: bool = True,
        timeout: float = 60) -> subprocess.CompletedProcess:
    """Runs `command` as root in a lab guest, logging in with `key`."""
    result = subprocess.run(
        ["ssh", "-i", str(key), "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
         "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-o", "IdentitiesOnly=yes", "-o", "LogLevel=ERROR",
         f"root@{ip}", command], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if check:
        assert result.returncode == 0, f"ssh {command!r}: {result.returncode} {result.stderr}"
    return result


def token(coordinator: Coordinator, *extra: str) -> str:
    result = subprocess.run(
        [str(coordinator.binary), *coordinator.store_args, "token", "create",
         "--data-dir", str(coordinator.data_dir),
         *extra], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise AssertionError(f"token create: {result.stderr}")
    return result.stdout.strip()


def wait_host_state(api, host_id: str, state: str, timeout: float = 60) -> dict:
    def check():
        hosts = api.listHosts(id=host_id).get("host", [])
        return hosts[0] if hosts and hosts[0]["state"] == state else None
    return wait_for(check, timeout, lambda: f"host {host_id} never became {state}: "
                    f"{api.listHosts(id=host_id)}")


def wait_vm_state(api, vm_id: str, state: str, timeout: float = 60) -> dict:
    def check():
        vms = api.listVirtualMachines(id=vm_id).get("virtualmachine", [])
        return vms[0] if vms and vms[0]["state"] == state else None
    return wait_for(check, timeout, lambda: f"instance {vm_id} never became {state}: "
                    f"{api.listVirtualMachines(id=vm_id)}")


def wait_console(agent: Agent, instance_name: str, pattern: str, timeout: float = 120) -> str:
    rx = re.compile(pattern)

    def check():
        m = rx.search(agent.console(instance_name))
        return m.group(0) if m else None
    return wait_for(check, timeout, lambda: f"{pattern!r} not in the console of {instance_name}:\n"
                    f"{agent.console(instance_name)[-3000:]}")


class Lab:
    def __init__(self, base: Path):
        self.base = base
        self.coordinator = Coordinator(base / "coordinator", hosts=0)
        self.agent: Agent | None = None
        self.api = None
        self.env = {}

    def up(self) -> "Lab":
        remove_idle_networks()
        try:
            self.coordinator.init()
            self.coordinator.start()
        except CoordinatorError as exc:
            self.coordinator.stop()
            pytest.fail(str(exc), pytrace=False)
        self.api = self.coordinator.client()
        # Domain names must not collide with another lab's on the same libvirt.
        self.api.updateConfiguration(name="instance.name", value=f"L{os.getpid()}")
        self.agent = Agent(self.base, self.coordinator)
        self.agent.enroll(token(self.coordinator))
        self.agent.start()
        host = wait_host_state(self.api, self.agent.host_id(), "Up")
        zone = self.api.listZones()["zone"][0]
        os_type = find_os_type(self.api)
        offering = self.api.createServiceOffering(
            name="lab-tiny", displaytext="lab tiny", cpunumber=1, cpuspeed=500,
            memory=256)["serviceoffering"]
        template = self.api.registerTemplate(
            name="lab-guest", displaytext="lab guest", url=GUEST.as_uri(), format="QCOW2",
            hypervisor="KVM", ostypeid=os_type["id"], zoneid=zone["id"])["template"][0]
        wait_for(lambda: self.api.listTemplates(templatefilter="self", id=template["id"])
                 ["template"][0].get("isready"), 60, "template never became ready")
        self.env = {"zone": zone, "os_type": os_type, "offering": offering,
                    "template": template, "host": host}
        return self

    def deploy(self, name: str, **extra) -> dict:
        return self.api.deployVirtualMachine(
            zoneid=self.env["zone"]["id"], serviceofferingid=self.env["offering"]["id"],
            templateid=self.env["template"]["id"], name=name, **extra)["virtualmachine"]

    def down(self) -> None:
        # Leave no domains behind: expunge what the coordinator knows, then
        # remove any domain of this lab libvirt still has.
        try:
            for vm in self.api.listVirtualMachines(listall=True).get("virtualmachine", []):
                try:
                    if vm["state"] == "Running":
                        self.api.stopVirtualMachine(id=vm["id"], forced=True)
                    self.api.destroyVirtualMachine(id=vm["id"], expunge=True)
                except Exception:  # noqa: BLE001 - best-effort cleanup
                    pass
        except Exception:  # noqa: BLE001
            pass
        if self.agent:
            self.agent.stop()
        self.coordinator.stop()
        names = virsh("list", "--all", "--name", check=False).split()
        for n in names:
            if n.startswith("i-") and self.agent and self.agent.console(n):
                virsh("destroy", n, check=False)
                virsh("undefine", n, "--nvram", "--snapshots-metadata", check=False)
        remove_idle_networks()
