"""Several real hosts on one machine: `tests/lab/hosts.sh` makes each a network,
mount and UTS namespace with its own libvirt and an enrolled orrery-agent;
the coordinator runs here and accepts agents on the lab bridge.

Needs what `lab.py` needs plus `ip`, `nsenter` and `unshare`. Without them the
tests are skipped, unless ORRERY_REQUIRE_LIBVIRT=1 makes that a failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from lab import GUEST, LAB, agent_bin, lab_unavailable, require_lab, wait_host_state
from orrery_e2e import Coordinator, CoordinatorError, find_os_type, wait_for

HOSTS_SH = LAB / "hosts.sh"
LAB_DIR = Path(os.environ.get("ORRERY_LAB_DIR", "/var/lib/orrery-lab"))
# Seconds: heartbeats come every 10 s, so a host that is quiet for 15 s is
# Disconnected (the coordinator checks every 5 s), well before the default's
# 150 s.
PING_INTERVAL = "10"
PING_TIMEOUT = "1.5"


def multihost_unavailable() -> str | None:
    why = lab_unavailable()
    if why:
        return why
    for tool in ("ip", "nsenter", "unshare"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    try:
        filesystems = Path("/proc/filesystems").read_text()
    except OSError:
        filesystems = ""
    if "overlay" not in filesystems:
        return "the kernel has no overlay file system"
    return None


def require_multihost() -> None:
    why = multihost_unavailable()
    if why:
        if os.environ.get("ORRERY_REQUIRE_LIBVIRT") == "1":
            pytest.fail(why, pytrace=False)
        pytest.skip(why)
    require_lab()


class MultiLab:
    """A coordinator and `count` lab hosts h1..hN, each running a real agent."""

    def __init__(self, base: Path, count: int = 3):
        self.base = base
        self.count = count
        self.coordinator = Coordinator(base / "coordinator", hosts=0, agent_listen_host="0.0.0.0")
        self.api = None
        self.hosts: dict[str, dict] = {}
        self.env: dict = {}

    # -- hosts.sh ----------------------------------------------------------

    def hosts_sh(self, *args: str, check: bool = True,
                 timeout: float = 300) -> subprocess.CompletedProcess:
        env = dict(os.environ, ORRERY_LAB_DIR=str(LAB_DIR),
                   ORRERY_COORDINATOR_BIN=str(self.coordinator.binary),
                   ORRERY_AGENT_BIN=str(agent_bin()))
        result = subprocess.run(["bash", str(HOSTS_SH), *args], capture_output=True, text=True,
                                env=env, timeout=timeout, stdin=subprocess.DEVNULL)
        if check and result.returncode != 0:
            raise AssertionError(f"hosts.sh {' '.join(args)} exited {result.returncode}:\n"
                                 f"{result.stderr[-4000:]}")
        return result

    def exec(self, host: str, *command: str, check: bool = True,
             timeout: float = 60) -> subprocess.CompletedProcess:
        """Runs a command inside a lab host's namespaces."""
        result = self.hosts_sh("exec", host, *command, check=False, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"{host}: {' '.join(command)} exited {result.returncode}:\n"
                                 f"{result.stderr[-3000:]}{result.stdout[-1000:]}")
        return result

    def host_id(self, host: str) -> str:
        return self.hosts[host]["host_id"]

    def host_dir(self, host: str) -> Path:
        return LAB_DIR / "hosts" / host

    def console(self, host: str, instance_name: str) -> str:
        """A guest's serial console as the host's agent writes it."""
        path = self.host_dir(host) / "orrery" / "agent" / "consoles" / f"{instance_name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_console(self, host: str, instance_name: str, pattern: str,
                     timeout: float = 120) -> str:
        rx = re.compile(pattern)

        def check():
            m = rx.search(self.console(host, instance_name))
            return m.group(0) if m else None
        return wait_for(check, timeout, lambda: f"{pattern!r} not in the console of "
                        f"{instance_name} on {host}:\n"
                        f"{self.console(host, instance_name)[-3000:]}")

    def log_tail(self, host: str, lines: int = 40) -> str:
        path = self.host_dir(host) / "agent.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    # -- life cycle --------------------------------------------------------

    def up(self) -> "MultiLab":
        # Leftovers of an earlier run that could not clean up.
        self.hosts_sh("down")
        try:
            self.coordinator.init()
            self.coordinator.start()
        except CoordinatorError as exc:
            self.coordinator.stop()
            pytest.fail(str(exc), pytrace=False)
        self.api = self.coordinator.client()
        self.api.updateConfiguration(name="ping.interval", value=PING_INTERVAL)
        self.api.updateConfiguration(name="ping.timeout", value=PING_TIMEOUT)
        out = self.hosts_sh("up", str(self.count), "--data-dir", str(self.coordinator.data_dir),
                            "--agent-port", str(self.coordinator.agent_port),
                            *self.coordinator.store_args)
        for line in out.stdout.splitlines():
            if line.strip():
                host = json.loads(line)
                self.hosts[host["name"]] = host
        assert sorted(self.hosts) == [f"h{i}" for i in range(1, self.count + 1)], out.stdout
        for name in self.hosts:
            wait_host_state(self.api, self.host_id(name), "Up", timeout=90)
        zone = self.api.listZones()["zone"][0]
        os_type = find_os_type(self.api)
        offering = self.api.createServiceOffering(
            name="multilab-tiny", displaytext="multilab tiny", cpunumber=1, cpuspeed=500,
            memory=192)["serviceoffering"]
        template = self.api.registerTemplate(
            name="multilab-guest", displaytext="multilab guest", url=GUEST.as_uri(),
            format="QCOW2", hypervisor="KVM", ostypeid=os_type["id"],
            zoneid=zone["id"])["template"][0]
        wait_for(lambda: self.api.listTemplates(templatefilter="self", id=template["id"])
                 ["template"][0].get("isready"), 60, "template never became ready")
        self.env = {"zone": zone, "os_type": os_type, "offering": offering,
                    "template": template}
        return self

    def deploy(self, name: str, host: str, **extra) -> dict:
        """Deploys the lab guest on a named host (h1, h2, ...)."""
        return self.api.deployVirtualMachine(
            zoneid=self.env["zone"]["id"], serviceofferingid=self.env["offering"]["id"],
            templateid=self.env["template"]["id"], name=name, hostid=self.host_id(host),
            **extra)["virtualmachine"]

    def down(self) -> None:
        # The coordinator first, so it does not react to hosts vanishing; the
        # hosts' guests go with their hosts.
        self.coordinator.stop()
        keep = os.environ.get("ORRERY_LAB_KEEP_LOGS")
        if keep:
            # The hosts' directories go with them; their agents' logs are
            # what tells a failure's story afterwards.
            Path(keep).mkdir(parents=True, exist_ok=True)
            for host in self.hosts:
                log = self.host_dir(host) / "agent.log"
                if log.exists():
                    shutil.copy(log, Path(keep) / f"{self.base.name}-{host}-agent.log")
        self.hosts_sh("down", check=False)
