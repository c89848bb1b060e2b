"""Instances on a real host: libvirt, QEMU (software emulation), an enrolled
agent over mutual TLS, driven through the `cs` CLI and library."""

from __future__ import annotations

import json
import re
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from lab import (
    Lab,
    domain_state,
    require_lab,
    virsh,
    wait_console,
    wait_host_state,
    wait_vm_state,
)
from orrery_e2e import unique, wait_for

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def lab():
    require_lab()
    # Not under pytest's 0700 temporary directory: QEMU runs as libvirt-qemu
    # and must reach the disk images below the agent's state directory.
    base = Path(tempfile.mkdtemp(prefix="orrery-lab-", dir="/var/tmp"))
    base.chmod(0o755)
    lab = Lab(base).up()
    yield lab
    lab.down()
    shutil.rmtree(base, ignore_errors=True)


def cs_cli(lab: Lab, *args: str) -> dict:
    env = dict(os.environ, CLOUDSTACK_ENDPOINT=lab.coordinator.endpoint,
               CLOUDSTACK_KEY=lab.coordinator.apikey, CLOUDSTACK_SECRET=lab.coordinator.secretkey)
    script = Path(sys.executable).parent / "cs"
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "cs"]
    result = subprocess.run([*command, *args], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr + result.stdout
    return json.loads(result.stdout)


def test_deploy_boots_with_the_instance_name_from_dhcp(lab):
    name = unique("web")
    out = cs_cli(lab, "deployVirtualMachine", f"zoneid={lab.env['zone']['id']}",
                 f"serviceofferingid={lab.env['offering']['id']}",
                 f"templateid={lab.env['template']['id']}", f"name={name}")
    vm = out["virtualmachine"]
    assert vm["state"] == "Running"
    assert vm["hostid"] == lab.agent.host_id()
    nic = vm["nic"][0]
    assert nic["ipaddress"] and nic["macaddress"] and nic["networkid"] and nic["isdefault"]
    inst = vm["instancename"]
    assert domain_state(inst) == "running"
    wait_console(lab.agent, inst, r"ORRERY-GUEST-BOOTED")
    assert wait_console(lab.agent, inst, r"ORRERY-GUEST-HOSTNAME=\S+") == \
        f"ORRERY-GUEST-HOSTNAME={name}"
    assert wait_console(lab.agent, inst, r"ORRERY-GUEST-IP=\S+") == \
        f"ORRERY-GUEST-IP={nic['ipaddress']}"
    xml = virsh("dumpxml", inst)
    assert "type='qemu'" in xml.splitlines()[0]
    assert "CloudStack" in xml  # SMBIOS product for cloud-init's data source
    assert "<listen type='address' address='127.0.0.1'" in xml


def test_graceful_and_forced_stop_then_start_with_changes(lab):
    api = lab.api
    vm = lab.deploy(unique("stop"))
    inst = vm["instancename"]
    wait_console(lab.agent, inst, r"ORRERY-GUEST-BOOTED")
    # Let the guest's acpid come up before pressing the button.
    wait_console(lab.agent, inst, r"ORRERY-GUEST-IP=\S+")

    stopped = api.stopVirtualMachine(id=vm["id"])["virtualmachine"]
    assert stopped["state"] == "Stopped"
    assert "ORRERY-GUEST-POWERBUTTON" in lab.agent.console(inst)
    assert domain_state(inst) == "shut off"

    ostype = next(o for o in api.listOsTypes()["ostype"]
                  if o["description"] == "Debian GNU/Linux 12 (64-bit)")
    api.updateVirtualMachine(id=vm["id"], displayname="Renamed while stopped",
                             ostypeid=ostype["id"])
    started = api.startVirtualMachine(id=vm["id"])["virtualmachine"]
    assert started["state"] == "Running"
    xml = virsh("dumpxml", inst)
    assert "<title>Renamed while stopped</title>" in xml
    assert "Debian GNU/Linux 12 (64-bit)" in xml

    forced = api.stopVirtualMachine(id=vm["id"], forced=True)["virtualmachine"]
    assert forced["state"] == "Stopped"
    assert domain_state(inst) == "shut off"


def test_a_guest_stopped_while_it_boots_still_shuts_down_cleanly(lab):
    """The first press of the power button comes before the guest listens
    to it (its acpid starts late in boot); the agent presses again until the
    guest powers itself off, instead of waiting out `vm.stop.timeout` and
    pulling the plug."""
    api = lab.api
    vm = lab.deploy(unique("early"))
    inst = vm["instancename"]
    assert "ORRERY-GUEST-POWERBUTTON" not in lab.agent.console(inst)
    stopped = api.stopVirtualMachine(id=vm["id"])["virtualmachine"]
    assert stopped["state"] == "Stopped"
    console = lab.agent.console(inst)
    # Booted, then powered off by its own handler: not destroyed.
    assert console.index("ORRERY-GUEST-BOOTED") < console.index("ORRERY-GUEST-POWERBUTTON")
    assert domain_state(inst) == "shut off"
    api.destroyVirtualMachine(id=vm["id"], expunge=True)


def test_reboot_keeps_the_domain(lab):
    vm = lab.deploy(unique("reboot"))
    inst = vm["instancename"]
    wait_console(lab.agent, inst, r"ORRERY-GUEST-IP=\S+")
    pid_before = virsh("domid", inst).strip()
    uuid_before = virsh("domuuid", inst).strip()
    rebooted = lab.api.rebootVirtualMachine(id=vm["id"])["virtualmachine"]
    assert rebooted["state"] == "Running"
    assert domain_state(inst) == "running"
    assert virsh("domid", inst).strip() == pid_before
    assert virsh("domuuid", inst).strip() == uuid_before
    # The guest went through a second boot.
    wait_for(lambda: lab.agent.console(inst).count("ORRERY-GUEST-BOOTED") >= 2, 120,
             lambda: lab.agent.console(inst)[-2000:])


def test_extraconfig_and_machine_type_reach_the_domain(lab):
    from urllib.parse import quote

    admin_account = lab.api.listAccounts(name="admin")["account"][0]["id"]
    lab.api.updateConfiguration(name="enable.additional.vm.configuration", value="true",
                                accountid=admin_account)
    lab.api.updateConfiguration(name="allow.additional.vm.configuration.list.kvm",
                                value="memoryBacking")
    machines = lab.api.listDetailOptions(resourcetype="UserVm")["detailoptions"]["details"][
        "kvm.guest.os.machine.type"]
    versioned = sorted(m for m in machines if m.startswith("pc-i440fx-"))
    assert versioned, machines
    try:
        vm = lab.deploy(unique("xcfg"), extraconfig=quote("<memoryBacking><nosharepages/></memoryBacking>"),
                        **{"details[0].kvm.guest.os.machine.type": versioned[0],
                           "details[0].guest.cpu.model": "Westmere"})
        inst = vm["instancename"]
        xml = virsh("dumpxml", inst)
        assert "<nosharepages/>" in xml, xml
        assert f"machine='{versioned[0]}'" in xml, xml
        assert ">Westmere</model>" in xml, xml
        # The guest sees the CPU model it was given.
        cpu = wait_console(lab.agent, inst, r"ORRERY-GUEST-CPU=.*")
        assert "Westmere" in cpu, cpu
        # And the machine type's chipset (UEFI guests, on q35, see theirs).
        chipset = wait_console(lab.agent, inst, r"ORRERY-GUEST-CHIPSET=\S+")
        assert chipset == "ORRERY-GUEST-CHIPSET=i440fx", chipset
        wait_console(lab.agent, inst, r"ORRERY-GUEST-IP=\S+")
        lab.api.destroyVirtualMachine(id=vm["id"], expunge=True)
    finally:
        lab.api.updateConfiguration(name="enable.additional.vm.configuration", value="false",
                                    accountid=admin_account)


def swtpm_state(vm_id: str) -> Path:
    """Where libvirt's swtpm keeps an instance's TPM (by domain uuid)."""
    return Path("/var/lib/libvirt/swtpm") / vm_id


def test_uefi_secure_boot_and_vtpm_are_seen_from_inside(lab):
    # GRUB under OVMF needs more than the lab's 256 MB to load the kernel.
    offering = lab.api.createServiceOffering(
        name=unique("uefi"), displaytext="uefi", cpunumber=1, cpuspeed=500,
        memory=512)["serviceoffering"]

    def deploy(**details):
        return lab.api.deployVirtualMachine(
            zoneid=lab.env["zone"]["id"], serviceofferingid=offering["id"],
            templateid=lab.env["template"]["id"], name=unique("fw"),
            **{f"details[0].{k}": v for k, v in details.items()})["virtualmachine"]

    secure = deploy(UEFI="SECURE", tpmmodel="tpm-crb")
    legacy = deploy(UEFI="LEGACY", tpmversion="1.2", tpmmodel="tpm-tis")
    tis2 = deploy(tpmversion="2.0", tpmmodel="tpm-tis")
    bios = deploy()
    seen = {}
    for vm in (secure, legacy, tis2, bios):
        inst = vm["instancename"]
        wait_console(lab.agent, inst, r"ORRERY-GUEST-TPM=\S+", timeout=300)
        if vm in (secure, tis2):
            wait_console(lab.agent, inst, r"ORRERY-GUEST-TPM-NV=\S+", timeout=120)
        text = lab.agent.console(inst)
        seen[vm["id"]] = [line for line in text.splitlines()
                          if line.startswith(("ORRERY-GUEST-FIRMWARE", "ORRERY-GUEST-SECUREBOOT",
                                              "ORRERY-GUEST-TPM", "ORRERY-GUEST-CHIPSET"))]
    nv = {}
    for vm in (secure, tis2):
        lines = seen[vm["id"]]
        assert lines[-1].startswith("ORRERY-GUEST-TPM-NV=new:"), seen
        nv[vm["id"]] = lines.pop()[len("ORRERY-GUEST-TPM-NV=new:"):]
        assert re.fullmatch(r"[0-9a-f]{16}", nv[vm["id"]]), seen
    assert seen[secure["id"]] == ["ORRERY-GUEST-FIRMWARE=uefi", "ORRERY-GUEST-SECUREBOOT=enabled",
                                  "ORRERY-GUEST-CHIPSET=q35", "ORRERY-GUEST-TPM=2"], seen
    assert seen[legacy["id"]] == ["ORRERY-GUEST-FIRMWARE=uefi", "ORRERY-GUEST-SECUREBOOT=disabled",
                                  "ORRERY-GUEST-CHIPSET=q35", "ORRERY-GUEST-TPM=1"], seen
    assert seen[tis2["id"]] == ["ORRERY-GUEST-FIRMWARE=bios", "ORRERY-GUEST-SECUREBOOT=none",
                                "ORRERY-GUEST-CHIPSET=i440fx", "ORRERY-GUEST-TPM=2"], seen
    assert seen[bios["id"]] == ["ORRERY-GUEST-FIRMWARE=bios", "ORRERY-GUEST-SECUREBOOT=none",
                                "ORRERY-GUEST-CHIPSET=i440fx", "ORRERY-GUEST-TPM=none"], seen
    xml = virsh("dumpxml", secure["instancename"])
    assert "secure='yes'" in xml and "tpm-crb" in xml and "<smm state='on'/>" in xml, xml
    assert "tpm-tis" in virsh("dumpxml", tis2["instancename"])

    # The TPM's state and the UEFI variables outlive a stop and start: the
    # files stay, and the value the guest wrote into the TPM's NV index at
    # its first boot is read back inside it at the next.
    state = swtpm_state(secure["id"])
    files = sorted(p.relative_to(state) for p in state.rglob("*") if p.is_file())
    assert files, f"no swtpm state under {state}"
    for vm in (secure, tis2):
        lab.api.stopVirtualMachine(id=vm["id"])
    assert state.is_dir() and sorted(p.relative_to(state) for p in state.rglob("*")
                                     if p.is_file()) == files
    for vm in (secure, tis2):
        lab.api.startVirtualMachine(id=vm["id"])
    for vm in (secure, tis2):
        inst = vm["instancename"]
        wait_for(lambda: lab.agent.console(inst).count("ORRERY-GUEST-TPM-NV=") >= 2,
                 300, lambda: lab.agent.console(inst)[-2000:])
        last = [line for line in lab.agent.console(inst).splitlines()
                if line.startswith("ORRERY-GUEST-TPM-NV=")][-1]
        assert last == f"ORRERY-GUEST-TPM-NV=kept:{nv[vm['id']]}", last
    nvram = list((lab.agent.state_dir / "nvram").glob(f"{secure['instancename']}*"))
    assert nvram, "no NVRAM for the UEFI instance"

    # Expunged: the TPM state and the variable store go with the instance.
    # (Stopped forced first: the restarted guests may still be booting and
    # not yet heed the power button a plain destroy presses first.)
    for vm in (secure, legacy, tis2, bios):
        lab.api.stopVirtualMachine(id=vm["id"], forced=True)
        lab.api.destroyVirtualMachine(id=vm["id"], expunge=True)
    assert not state.exists()
    assert not list((lab.agent.state_dir / "nvram").glob(f"{secure['instancename']}*"))


def test_destroy_and_expunge_remove_domain_and_volumes(lab):
    vm = lab.deploy(unique("gone"))
    inst = vm["instancename"]
    # Destroying stops the guest gracefully first: let it boot far enough
    # to honour the power button.
    wait_console(lab.agent, inst, r"ORRERY-GUEST-IP=\S+")
    root = lab.api.listVolumes(virtualmachineid=vm["id"], type="ROOT")["volume"][0]
    volume_file = lab.agent.primary_dir / f"{root['id']}.qcow2"
    assert volume_file.exists()
    lab.api.destroyVirtualMachine(id=vm["id"], expunge=True)
    listed = {v["id"] for v in lab.api.listVirtualMachines(listall=True).get("virtualmachine", [])}
    assert vm["id"] not in listed
    assert domain_state(inst) == "missing"
    assert not volume_file.exists()


def test_statistics_tell_a_busy_guest_from_an_idle_one(lab):
    api, zone = lab.api, lab.env["zone"]["id"]
    # The agent samples every two seconds from now on, without a restart.
    api.updateConfiguration(name="vm.stats.interval", value="2000")
    api.updateConfiguration(name="vm.disk.stats.interval", value="2")
    api.updateConfiguration(name="vm.disk.stats.interval.min", value="2")
    api.updateConfiguration(name="vm.disk.stats.retention.enabled", value="true")
    # The lab guest keeps a CPU busy when its SMBIOS product says so.
    api.updateConfiguration(name="vm.metadata.product", value="CloudStack OrreryBusy",
                            zoneid=zone)
    try:
        busy = lab.deploy(unique("busy"))
    finally:
        api.updateConfiguration(name="vm.metadata.product", value="CloudStack KVM Hypervisor",
                                zoneid=zone)
    idle = lab.deploy(unique("idle"))
    try:
        wait_console(lab.agent, busy["instancename"], "ORRERY-GUEST-BUSY")
        wait_console(lab.agent, idle["instancename"], r"ORRERY-GUEST-IP=\S+")

        def cpu(vm):
            stats = api.listVirtualMachinesUsageHistory(id=vm["id"])["virtualmachine"][0]["stats"]
            return [float(s["cpuused"].rstrip("%")) for s in stats]

        wait_for(lambda: len(cpu(busy)) >= 5 and len(cpu(idle)) >= 5, 90,
                 "statistics from the agent", interval=1)
        # Let a few more two-second samples come in after both guests settled.
        time.sleep(10)
        busy_cpu, idle_cpu = cpu(busy), cpu(idle)
        assert min(busy_cpu[-3:]) > 50, busy_cpu
        assert max(idle_cpu[-3:]) < 25, idle_cpu
        # The busy guest's history rises from its boot to the loop.
        assert busy_cpu[-1] >= busy_cpu[0] or busy_cpu[0] > 50, busy_cpu
        listed = api.listVirtualMachines(id=busy["id"])["virtualmachine"][0]
        assert float(listed["cpuused"].rstrip("%")) > 50
        assert listed["memorykbs"] == 256 * 1024
        # Disk statistics of the ROOT volume arrive as well.
        root = api.listVolumes(virtualmachineid=idle["id"], type="ROOT")["volume"][0]
        vol = api.listVolumesUsageHistory(id=root["id"])["volume"][0]
        assert vol["stats"] and vol["stats"][-1]["physicalsize"] > 0
    finally:
        api.updateConfiguration(name="vm.stats.interval", value="60000")
        api.updateConfiguration(name="vm.disk.stats.interval", value="0")
        for vm in (busy, idle):
            api.destroyVirtualMachine(id=vm["id"], expunge=True)


def test_agent_killed_instances_keep_running(lab):
    api = lab.api
    vm = lab.deploy(unique("survive"))
    inst = vm["instancename"]
    lab.agent.kill_hard()
    wait_host_state(api, lab.agent.host_id(), "Disconnected", timeout=30)
    time.sleep(2)
    assert domain_state(inst) == "running"
    lab.agent.start()
    wait_host_state(api, lab.agent.host_id(), "Up")
    assert wait_vm_state(api, vm["id"], "Running")["hostid"] == lab.agent.host_id()
    assert domain_state(inst) == "running"


def test_coordinator_away_instances_keep_running_and_stops_are_noticed(lab):
    api = lab.api
    keep = lab.deploy(unique("keep"))
    halt = lab.deploy(unique("halt"))
    wait_console(lab.agent, halt["instancename"], r"ORRERY-GUEST-IP=\S+")
    lab.coordinator.stop()
    # The guest powers itself off (ACPI) while nobody watches.
    virsh("shutdown", halt["instancename"])
    wait_for(lambda: domain_state(halt["instancename"]) == "shut off", 60,
             "the guest did not power off")
    assert domain_state(keep["instancename"]) == "running"
    lab.coordinator.start(same_port=True)
    wait_host_state(api, lab.agent.host_id(), "Up")
    wait_vm_state(api, halt["id"], "Stopped")
    assert wait_vm_state(api, keep["id"], "Running")
    assert domain_state(keep["instancename"]) == "running"


def gpu_sysfs(root: Path) -> None:
    """Two passthrough GPUs on vfio-pci, a card with two vGPU types, a NIC."""
    def dev(addr, cls, vendor, device, driver, group):
        d = root / "bus/pci/devices" / addr
        d.mkdir(parents=True)
        (d / "class").write_text(cls + "\n")
        (d / "vendor").write_text(vendor + "\n")
        (d / "device").write_text(device + "\n")
        drv = root / "bus/pci/drivers" / driver
        drv.mkdir(parents=True, exist_ok=True)
        (d / "driver").symlink_to(drv)
        g = root / "kernel/iommu_groups" / str(group)
        g.mkdir(parents=True, exist_ok=True)
        (d / "iommu_group").symlink_to(g)
        return d
    dev("0000:3b:00.0", "0x030200", "0x10de", "0x1db6", "vfio-pci", 30)
    dev("0000:5e:00.0", "0x030200", "0x10de", "0x1db6", "vfio-pci", 31)
    card = dev("0000:af:00.0", "0x030000", "0x10de", "0x1eb8", "nvidia", 40)
    for t, name, avail in (("nvidia-222", "GRID T4-1B", 16), ("nvidia-231", "GRID T4-8Q", 2)):
        p = card / "mdev_supported_types" / t
        p.mkdir(parents=True)
        (p / "name").write_text(name + "\n")
        (p / "available_instances").write_text(f"{avail}\n")
    dev("0000:18:00.0", "0x020000", "0x8086", "0x1572", "i40e", 12)


def test_gpus_from_sysfs_reach_list_hosts(lab):
    root = lab.base / "sysfs"
    gpu_sysfs(root)
    original = lab.agent.config.read_text()
    facts = json.loads(lab.agent.run("debug", "facts").stdout)
    assert facts["gpus"] == []  # this machine's own sysfs has no GPU
    lab.agent.config.write_text(original + f'sysfs_root = "{root}"\n')
    try:
        facts = json.loads(lab.agent.run("debug", "facts").stdout)
        assert [g["address"] for g in facts["gpus"]] == ["0000:3b:00.0", "0000:5e:00.0",
                                                          "0000:af:00.0"]
        assert facts["gpus"][2]["mdev_types"][1]["available"] == 2
        alone = json.loads(lab.agent.run("debug", "gpus").stdout)
        assert alone == facts["gpus"]
        lab.agent.stop()
        lab.agent.start()
        host_id = lab.env["host"]["id"]

        def listed():
            h = lab.api.listHosts(id=host_id)["host"][0]
            return h if h["state"] == "Up" and h.get("gpugroup") else None
        host = wait_for(listed, 60, "the host never listed its GPUs")
        assert host["gputotal"] == 3
        groups = {g["gpugroupname"]: g["vgpu"] for g in host["gpugroup"]}
        assert groups["10de:1db6"] == [{"vgputype": "passthrough", "maxcapacity": 2,
                                        "remainingcapacity": 2}]
        assert {v["vgputype"]: v["maxcapacity"] for v in groups["10de:1eb8"]} == {
            "GRID T4-1B": 16, "GRID T4-8Q": 2}
    finally:
        lab.agent.config.write_text(original)
        lab.agent.stop()
        lab.agent.start()
        wait_host_state(lab.api, lab.env["host"]["id"], "Up")
