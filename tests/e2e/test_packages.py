"""The Debian packages (packaging/build.sh), installed on this machine as an
operator would: files, owners, modes and conffiles; the systemd units
checked by systemd-analyze and their command lines run as the units would
run them (no systemd runs here), booting a real guest; removal keeping the
data, a reinstall finding it, and a purge removing it."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import requests

from lab import GUEST, REPO, agent_bin, remove_idle_networks, require_lab, virsh
from orrery_e2e import wait_for

pytestmark = pytest.mark.lab

PACKAGES = ("orrery-coordinator", "orrery-agent")
UNITS = Path("/lib/systemd/system")


def run(*cmd: str, check: bool = True, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, **kw)
    if check:
        assert r.returncode == 0, f"{' '.join(cmd)}: {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
    return r


def installed(pkg: str) -> bool:
    r = run("dpkg-query", "-W", "-f=${Status}", pkg, check=False)
    return r.stdout.strip() == "install ok installed"


def purge_all() -> None:
    run("dpkg", "--purge", *PACKAGES, check=False)


def unit_lines(unit: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in (UNITS / unit).read_text().splitlines():
        line = line.strip()
        if "=" in line and not line.startswith(("#", "[")):
            k, v = line.split("=", 1)
            out.setdefault(k, []).append(v)
    return out


def as_unit(unit: str, key: str) -> list[str]:
    """A unit's command line as the unit runs it: as its user, if it has one."""
    u = unit_lines(unit)
    cmd = shlex.split(u[key][0])
    user = u.get("User", [None])[0]
    return ["runuser", "-u", user, "--", *cmd] if user else cmd


@pytest.fixture(scope="module")
def debs(tmp_path_factory):
    require_lab()
    if shutil.which("dpkg-deb") is None or shutil.which("systemd-analyze") is None:
        pytest.fail("dpkg-deb and systemd-analyze are needed (tests/lab/install-deps.sh)",
                    pytrace=False)
    # The packages own these paths; never take over (or purge) data that
    # something else put there.
    if not any(installed(p) for p in PACKAGES):
        for path in ("/var/lib/orrery/coordinator", "/var/lib/orrery/agent", "/etc/orrery"):
            if Path(path).exists():
                pytest.fail(f"{path} exists but no Orrery package is installed: refusing to "
                            "install over it (move it away first)", pytrace=False)
    out = tmp_path_factory.mktemp("pkg")
    env = dict(os.environ, CARGO_TARGET_DIR=str(out),
               ORRERY_PACKAGE_BIN_DIR=str(agent_bin().parent),
               ORRERY_PACKAGE_COMPRESSION="gzip")
    run("bash", str(REPO / "packaging" / "build.sh"), env=env, timeout=600)
    found = {p: next((out / "debian").glob(f"{p}_*.deb")) for p in PACKAGES}
    purge_all()
    yield found
    purge_all()


def test_package_contents_modes_and_conffiles(debs):
    for pkg, deb in debs.items():
        listing = run("dpkg-deb", "-c", str(deb)).stdout
        binary = pkg
        assert f"-rwxr-xr-x root/root" in next(l for l in listing.splitlines()
                                               if l.endswith(f"./usr/bin/{binary}"))
        conf = pkg.split("-")[1]
        assert f"-rw-r--r-- root/root" in next(l for l in listing.splitlines()
                                               if l.endswith(f"./etc/orrery/{conf}.toml"))
        assert f"./lib/systemd/system/{pkg}.service" in listing
        info = run("dpkg-deb", "-I", str(deb)).stdout
        assert f"Package: {pkg}" in info
        conffiles = run("dpkg-deb", "-f", str(deb), "Package").stdout.strip()
        assert conffiles == pkg
        ctrl = Path(tempfile.mkdtemp())
        run("dpkg-deb", "-e", str(deb), str(ctrl))
        assert (ctrl / "conffiles").read_text().split() == [f"/etc/orrery/{conf}.toml"]
        for script in ("postinst", "prerm", "postrm"):
            assert os.access(ctrl / script, os.X_OK), script
            run("sh", "-n", str(ctrl / script))
        shutil.rmtree(ctrl)
    agent_deps = run("dpkg-deb", "-f", str(debs["orrery-agent"]), "Depends").stdout
    for dep in ("libvirt-daemon-system", "qemu-system-x86", "qemu-utils"):
        assert dep in agent_deps
    recommends = run("dpkg-deb", "-f", str(debs["orrery-agent"]), "Recommends").stdout
    for opt in ("ovmf", "swtpm", "genisoimage"):
        assert opt in recommends


def test_installed_units_boot_a_guest_and_data_outlives_removal(debs):
    run("apt-get", "install", "-y", "-q", "--no-install-recommends",
        *[str(d) for d in debs.values()], timeout=600,
        env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    assert all(installed(p) for p in PACKAGES)

    # Owners and modes the packages promise.
    def owner_mode(p: str) -> tuple[str, str]:
        out = run("stat", "-c", "%U:%G %a", p).stdout.split()
        return out[0], out[1]
    assert owner_mode("/var/lib/orrery/coordinator") == ("orrery:orrery", "750")
    assert owner_mode("/var/lib/orrery/agent") == ("root:root", "700")
    assert owner_mode("/var/lib/orrery/primary") == ("root:root", "711")
    assert owner_mode("/usr/bin/orrery-coordinator") == ("root:root", "755")
    for pkg, conf in (("orrery-coordinator", "coordinator"), ("orrery-agent", "agent")):
        listed = run("dpkg-query", "-W", "-f=${Conffiles}", pkg).stdout
        assert f"/etc/orrery/{conf}.toml" in listed
    assert run("getent", "passwd", "orrery").stdout.split(":")[6].strip() == "/usr/sbin/nologin"

    # The units as systemd reads them.
    verify = run("systemd-analyze", "verify", str(UNITS / "orrery-coordinator.service"),
                 str(UNITS / "orrery-agent.service"), check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr

    # Free ports, set in the conffile as an operator would: something else
    # on this machine may hold the defaults.
    from orrery_e2e import free_port
    ports = {k: free_port() for k in ("api", "agent", "metrics", "console")}
    conf = Path("/etc/orrery/coordinator.toml")
    text = conf.read_text()
    for key, default in (("api_listen", "127.0.0.1:8080"), ("agent_listen", "0.0.0.0:8250"),
                         ("metrics_listen", "127.0.0.1:9595"), ("console_listen", "127.0.0.1:8082")):
        port = ports[key.split("_")[0]]
        text = text.replace(f'{key} = "{default}"', f'{key} = "{default.rsplit(":", 1)[0]}:{port}"')
    conf.write_text(text)
    api_url = f"http://127.0.0.1:{ports['api']}/client/api"
    procs: list[subprocess.Popen] = []
    vm_id = None
    try:
        # First start: init as the unit's user, keys into the keys file.
        first = run(*as_unit("orrery-coordinator.service", "ExecStartPre"))
        keys_file = Path("/var/lib/orrery/coordinator/admin-keys.json")
        assert str(keys_file) in first.stdout and "secretkey" not in first.stdout
        assert owner_mode(str(keys_file)) == ("orrery:orrery", "600")
        keys = json.loads(keys_file.read_text())
        assert owner_mode("/var/lib/orrery/coordinator/ca.key")[0] == "orrery:orrery"
        again = run(*as_unit("orrery-coordinator.service", "ExecStartPre"))
        assert "nothing to do" in again.stdout
        log = open("/tmp/orrery-pkg-coordinator.log", "w")
        procs.append(subprocess.Popen(as_unit("orrery-coordinator.service", "ExecStart"),
                                      stdout=log, stderr=subprocess.STDOUT))
        from cs import CloudStack
        api = CloudStack(endpoint=api_url, key=keys["apikey"], secret=keys["secretkey"])
        wait_for(lambda: _answers(api), 60, "the packaged coordinator never answered")
        assert requests.get(f"http://127.0.0.1:{ports['metrics']}/readyz",
                            timeout=5).status_code == 200

        # As an operator of these machines would: KVM does not boot guests
        # here, so the agent's conffile asks for software emulation.
        agent_conf = Path("/etc/orrery/agent.toml")
        agent_conf.write_text(agent_conf.read_text() + 'domain_type = "qemu"\n')
        # Enrol this host with the packaged agent, then run its unit's line.
        token = run("runuser", "-u", "orrery", "--", "/usr/bin/orrery-coordinator", "--config",
                    "/etc/orrery/coordinator.toml", "token", "create").stdout.strip()
        run("/usr/bin/orrery-agent", "--config", "/etc/orrery/agent.toml", "enroll",
            "--coordinator", f"127.0.0.1:{ports['agent']}", "--token", token)
        assert Path("/var/lib/orrery/agent/agent.json").exists()
        agent_log = open("/tmp/orrery-pkg-agent.log", "w")
        procs.append(subprocess.Popen(as_unit("orrery-agent.service", "ExecStart"),
                                      stdout=agent_log, stderr=subprocess.STDOUT))
        wait_for(lambda: any(h["state"] == "Up" for h in api.listHosts().get("host", [])), 90,
                 "the packaged agent never came up")
        api.updateConfiguration(name="instance.name", value=f"P{os.getpid()}")
        zone = api.listZones()["zone"][0]
        os_type = api.listOsTypes()["ostype"][0]
        offering = api.createServiceOffering(name="pkg-tiny", displaytext="pkg tiny", cpunumber=1,
                                             cpuspeed=500, memory=256)["serviceoffering"]
        template = api.registerTemplate(name="pkg-guest", displaytext="pkg guest",
                                        url=GUEST.as_uri(), format="QCOW2", hypervisor="KVM",
                                        ostypeid=os_type["id"], zoneid=zone["id"])["template"][0]
        wait_for(lambda: api.listTemplates(templatefilter="self", id=template["id"])
                 ["template"][0].get("isready"), 120, "template never became ready")
        vm = api.deployVirtualMachine(zoneid=zone["id"], serviceofferingid=offering["id"],
                                      templateid=template["id"], name="pkg-guest",
                                      fetch_result=True)["virtualmachine"]
        vm_id = vm["id"]
        assert vm["state"] == "Running"
        inst = api.listVirtualMachines(id=vm_id)["virtualmachine"][0]["instancename"]
        console = Path("/var/lib/orrery/agent/consoles") / f"{inst}.log"
        wait_for(lambda: console.exists() and "ORRERY-GUEST-BOOTED" in console.read_text(
            errors="replace"), 240, lambda: f"the guest never booted: {console} "
            f"{sorted(p.name for p in console.parent.glob('*'))} "
            f"{virsh('list', '--all', check=False)} "
            f"{virsh('dumpxml', inst, check=False)[-3000:]}")
        api.destroyVirtualMachine(id=vm_id, expunge=True, fetch_result=True)
        vm_id = None
    finally:
        if vm_id:
            try:
                for n in virsh("list", "--all", "--name", check=False).split():
                    if n.startswith(f"i-") and f"P{os.getpid()}" in n:
                        virsh("destroy", n, check=False)
                        virsh("undefine", n, "--nvram", check=False)
            except Exception:  # noqa: BLE001 - best-effort cleanup
                pass
        for p in procs:
            p.terminate()
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        remove_idle_networks()

    store = Path("/var/lib/orrery/coordinator/orrery.db")
    before = store.stat().st_size
    # Remove: configuration and data stay.
    run("dpkg", "--remove", *PACKAGES)
    assert not Path("/usr/bin/orrery-coordinator").exists()
    assert store.exists() and Path("/var/lib/orrery/agent/agent.json").exists()
    assert Path("/etc/orrery/coordinator.toml").exists()
    # The operator's change to a conffile survives removal and reinstall.
    assert 'domain_type = "qemu"' in Path("/etc/orrery/agent.toml").read_text()
    # Reinstall: the same store and keys; init has nothing to do.
    run("dpkg", "--install", *[str(d) for d in debs.values()])
    assert store.stat().st_size >= before
    assert json.loads(Path("/var/lib/orrery/coordinator/admin-keys.json").read_text()) == keys
    assert "nothing to do" in run(*as_unit("orrery-coordinator.service", "ExecStartPre")).stdout
    assert 'domain_type = "qemu"' in Path("/etc/orrery/agent.toml").read_text()
    # Purge: data, identity and user gone.
    run("dpkg", "--purge", *PACKAGES)
    assert not Path("/var/lib/orrery/coordinator").exists()
    assert not Path("/var/lib/orrery/agent").exists()
    assert not Path("/etc/orrery/coordinator.toml").exists()
    assert run("getent", "passwd", "orrery", check=False).returncode != 0


def _answers(api) -> bool:
    try:
        api.listCapabilities()
        return True
    except Exception:  # noqa: BLE001 - not up yet
        time.sleep(0.5)
        return False
