"""Getting into instances on a real host: SSH key pairs, user data with
variables, the metadata service as the guest sees it, and the config drive
read by cloud-init's own reader. The lab guest does at boot what cloud-init
does with CloudStack's data (tests/lab/build-guest.sh)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from lab import GUEST, Lab, require_lab, ssh, wait_console, wait_vm_state
from orrery_e2e import expect_api_error, unique, wait_for

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def lab():
    require_lab()
    base = Path(tempfile.mkdtemp(prefix="orrery-access-", dir="/var/tmp"))
    base.chmod(0o755)
    lab = Lab(base).up()
    yield lab
    lab.down()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def keys(lab):
    """Two key pairs made by the API, their private keys on disk."""
    out = {}
    for label in ("first", "second"):
        pair = lab.api.createSSHKeyPair(name=unique(label))["keypair"]
        path = lab.base / f"{label}.pem"
        path.write_text(pair["privatekey"])
        path.chmod(0o600)
        out[label] = {"name": pair["name"], "path": path, "fingerprint": pair["fingerprint"]}
    return out


def boots(lab: Lab, vm: dict) -> int:
    return lab.agent.console(vm["instancename"]).count("ORRERY-GUEST-SSHD")


def wait_sshd(lab: Lab, vm: dict, count: int = 1, timeout: float = 240) -> None:
    wait_for(lambda: boots(lab, vm) >= count, timeout,
             lambda: f"sshd never started in {vm['name']}:\n{lab.agent.console(vm['instancename'])[-3000:]}")


def full(lab: Lab, vm_id: str) -> dict:
    return lab.api.listVirtualMachines(id=vm_id)["virtualmachine"][0]


@pytest.fixture(scope="module")
def guest(lab, keys):
    """A guest deployed with the first key pair, reachable over SSH."""
    name = unique("acc")
    vm = lab.deploy(name, keypair=keys["first"]["name"])
    vm = full(lab, vm["id"])
    wait_sshd(lab, vm)
    return vm


def test_ssh_with_a_created_key_pair_prints_the_instance_name(lab, keys, guest):
    console = lab.agent.console(guest["instancename"])
    assert "ORRERY-GUEST-DATASOURCE=metadata" in console, console
    assert "ORRERY-GUEST-KEYS=1" in console
    ip = guest["nic"][0]["ipaddress"]
    assert ssh(ip, keys["first"]["path"], "hostname").stdout.strip() == guest["name"]
    assert guest["keypairs"] == keys["first"]["name"] or keys["first"]["name"] in str(guest.get("keypairs"))


def test_metadata_service_answers_every_path_with_the_instances_own_values(lab, keys, guest):
    ip = guest["nic"][0]["ipaddress"]
    gateway = guest["nic"][0]["gateway"]
    key = keys["first"]["path"]

    def get(path: str) -> str:
        return ssh(ip, key, f"timeout 5 wget -q -O - http://{gateway}{path}").stdout

    listing = get("/latest/meta-data/").split()
    expected = {
        "availability-zone": lab.env["zone"]["name"],
        "instance-id": guest["instancename"],
        "local-hostname": guest["name"],
        "local-ipv4": ip,
        "public-hostname": ip,
        "public-ipv4": ip,
        "service-offering": lab.env["offering"]["displaytext"],
        "vm-id": guest["id"],
    }
    for name, value in expected.items():
        assert name in listing
        assert get(f"/latest/meta-data/{name}") == value, name
        # CloudStack's older spelling answers the same.
        assert get(f"/latest/{name}") == value, name
    assert "cloud-identifier" in listing
    assert get("/latest/meta-data/cloud-identifier").startswith("CloudStack-{")
    public = get("/latest/meta-data/public-keys")
    mine = Path(str(keys["first"]["path"])).read_text()
    assert public.startswith("ssh-rsa ")
    # The served key is the pair's public half: it is what let us in.
    assert ssh(ip, key, "cat /root/.ssh/authorized_keys").stdout.strip() == public.strip()
    assert mine.strip() not in public


def test_new_user_data_reaches_the_running_guest_without_a_restart(lab, keys, guest):
    ip = guest["nic"][0]["ipaddress"]
    gateway = guest["nic"][0]["gateway"]
    content = f"#!/bin/sh\necho ORRERY-UPDATED-{guest['id'][:8]}\n"
    boots_before = boots(lab, guest)
    lab.api.updateVirtualMachine(id=guest["id"], userdata=base64.b64encode(content.encode()).decode())
    served = ssh(ip, keys["first"]["path"], f"timeout 5 wget -q -O - http://{gateway}/latest/user-data").stdout
    assert served == content
    assert boots(lab, guest) == boots_before


def test_another_guests_address_gets_nothing_of_that_guest(lab, keys, guest):
    other = full(lab, lab.deploy(unique("oth"))["id"])
    wait_console(lab.agent, other["instancename"], r"ORRERY-GUEST-DATASOURCE=metadata", timeout=240)
    ip = guest["nic"][0]["ipaddress"]
    theirs = other["nic"][0]["ipaddress"]
    gateway = guest["nic"][0]["gateway"]
    bits = guest["nic"][0]["netmask"]
    prefix = sum(bin(int(x)).count("1") for x in bits.split("."))
    key = keys["first"]["path"]
    # Own address: the own instance-id (so the service does answer).
    own = ssh(ip, key, f"timeout 5 wget -q -O - http://{gateway}/latest/meta-data/instance-id").stdout
    assert own == guest["instancename"]
    # Take the other guest's address for one request, then put ours back;
    # the outcome goes to the serial console (our SSH session cannot
    # survive the change of address).
    script = (
        f"ip addr flush dev eth0; ip addr add {theirs}/{prefix} dev eth0; sleep 1; "
        f"timeout 5 wget -q -O /run/spoof.out http://{gateway}/latest/meta-data/instance-id; rc=$?; "
        f"echo ORRERY-SPOOF rc=$rc body=$(cat /run/spoof.out 2>/dev/null) end >/dev/console; "
        f"ip addr flush dev eth0; ip addr add {ip}/{prefix} dev eth0; ip route add default via {gateway}; "
        f"echo ORRERY-SPOOF-DONE >/dev/console"
    )
    ssh(ip, key, f"setsid sh -c 'trap \"\" HUP; {script}' >/dev/null 2>&1 </dev/null &")
    seen = wait_console(lab.agent, guest["instancename"], r"ORRERY-SPOOF rc=.* end", timeout=60)
    wait_console(lab.agent, guest["instancename"], r"ORRERY-SPOOF-DONE", timeout=60)
    assert other["instancename"] not in seen and "body= end" in seen, seen
    assert ssh(ip, key, f"timeout 5 wget -q -O - http://{gateway}/latest/meta-data/vm-id").stdout == guest["id"]
    lab.api.destroyVirtualMachine(id=other["id"], expunge=True)


def test_user_data_variables_arrive_filled_in(lab, keys):
    content = ("## template: jinja\n#!/bin/sh\n"
               "echo \"ORRERY-UD var={{ ds.meta_data.variable1 }} host={{ ds.meta_data.local_hostname }}\"\n")
    ud = lab.api.registerUserData(
        name=unique("ud"), userdata=base64.b64encode(content.encode()).decode(),
        params="variable1")["userdata"]
    name = unique("udv")
    vm = lab.deploy(name, userdataid=ud["id"], **{"userdatadetails[0].variable1": "hello-42"})
    vm = full(lab, vm["id"])
    line = wait_console(lab.agent, vm["instancename"], r"ORRERY-UD var=\S* host=\S*", timeout=240)
    assert line == f"ORRERY-UD var=hello-42 host={name}"
    lab.api.destroyVirtualMachine(id=vm["id"], expunge=True)


def test_template_policies_deny_and_append(lab, keys):
    template = lab.api.registerTemplate(
        name=unique("linked"), displaytext="linked", url=GUEST.as_uri(), format="QCOW2",
        hypervisor="KVM", ostypeid=lab.env["os_type"]["id"], zoneid=lab.env["zone"]["id"])["template"][0]
    wait_for(lambda: lab.api.listTemplates(templatefilter="self", id=template["id"])
             ["template"][0].get("isready"), 60, "template never became ready")
    base_content = "#!/bin/sh\necho ORRERY-TEMPLATE-PART\n"
    ud = lab.api.registerUserData(
        name=unique("tud"), userdata=base64.b64encode(base_content.encode()).decode())["userdata"]
    mine = base64.b64encode(b"#!/bin/sh\necho ORRERY-MY-PART\n").decode()

    lab.api.linkUserDataToTemplate(templateid=template["id"], userdataid=ud["id"],
                                   userdatapolicy="DENYOVERRIDE")
    before = len(lab.api.listVirtualMachines(listall=True).get("virtualmachine", []))
    err = expect_api_error(lab.api.deployVirtualMachine, zoneid=lab.env["zone"]["id"],
                           serviceofferingid=lab.env["offering"]["id"], templateid=template["id"],
                           name=unique("deny"), userdata=mine)
    assert err.status == 431 and "parameter userdata" in err.error["errortext"], err.error
    assert len(lab.api.listVirtualMachines(listall=True).get("virtualmachine", [])) == before

    lab.api.linkUserDataToTemplate(templateid=template["id"], userdataid=ud["id"], userdatapolicy="APPEND")
    pair = lab.api.createSSHKeyPair(name=unique("app"))["keypair"]
    key = lab.base / "append.pem"
    key.write_text(pair["privatekey"])
    key.chmod(0o600)
    vm = lab.api.deployVirtualMachine(zoneid=lab.env["zone"]["id"], serviceofferingid=lab.env["offering"]["id"],
                                      templateid=template["id"], name=unique("app"), userdata=mine,
                                      keypair=pair["name"])["virtualmachine"]
    vm = full(lab, vm["id"])
    wait_sshd(lab, vm)
    served = ssh(vm["nic"][0]["ipaddress"], key,
                 f"timeout 5 wget -q -O - http://{vm['nic'][0]['gateway']}/latest/user-data").stdout
    # A multipart MIME message holding the template's part, then the user's.
    assert "multipart/mixed" in served
    assert served.index("ORRERY-TEMPLATE-PART") < served.index("ORRERY-MY-PART")
    lab.api.destroyVirtualMachine(id=vm["id"], expunge=True)


def test_reset_key_replaces_the_old_one_after_a_start(lab, keys, guest):
    ip = guest["nic"][0]["ipaddress"]
    lab.api.stopVirtualMachine(id=guest["id"])
    wait_vm_state(lab.api, guest["id"], "Stopped")
    before = boots(lab, guest)
    lab.api.resetSSHKeyForVirtualMachine(id=guest["id"], keypair=keys["second"]["name"])
    lab.api.startVirtualMachine(id=guest["id"])
    wait_sshd(lab, guest, count=before + 1)
    assert ssh(ip, keys["second"]["path"], "hostname").stdout.strip() == guest["name"]
    refused = ssh(ip, keys["first"]["path"], "hostname", check=False)
    assert refused.returncode != 0


def extract_iso(iso: Path, into: Path) -> None:
    """Every file of an ISO (Rock Ridge names) into a directory, with
    genisoimage's isoinfo: no loop device needed."""
    listing = subprocess.run(["isoinfo", "-R", "-f", "-i", str(iso)], capture_output=True,
                             text=True, check=True).stdout.split()
    for path in listing:
        data = subprocess.run(["isoinfo", "-R", "-i", str(iso), "-x", path], capture_output=True,
                              check=True).stdout
        target = into / path.lstrip("/")
        # isoinfo lists directories too; they come back empty.
        if data or not any(p.startswith(path + "/") for p in listing):
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        else:
            target.mkdir(parents=True, exist_ok=True)


def test_config_drive_is_read_by_the_guest_and_by_cloud_init(lab, keys):
    content = "#!/bin/sh\necho ORRERY-FROM-CONFIG-DRIVE\n"
    name = unique("cfg")
    vm = lab.deploy(name, keypair=keys["second"]["name"], userdata=base64.b64encode(content.encode()).decode(),
                    **{"details[0].configdrive": "true"})
    vm = full(lab, vm["id"])
    wait_sshd(lab, vm)
    console = lab.agent.console(vm["instancename"])
    assert "ORRERY-GUEST-DATASOURCE=configdrive" in console
    assert "ORRERY-FROM-CONFIG-DRIVE" in console
    assert ssh(vm["nic"][0]["ipaddress"], keys["second"]["path"], "hostname").stdout.strip() == name

    iso = lab.agent.primary_dir / "configdrive" / f"{vm['instancename']}.iso"
    label = subprocess.run(["isoinfo", "-d", "-i", str(iso)], capture_output=True, text=True, check=True).stdout
    assert "Volume id: config-2" in label
    tree = lab.base / f"iso-{name}"
    extract_iso(iso, tree)
    # cloud-init's own ConfigDrive reader (Debian's cloud-init package).
    reader = (
        "import json, sys\n"
        "from cloudinit.sources.helpers import openstack\n"
        "r = openstack.ConfigDriveReader(sys.argv[1]).read_v2()\n"
        "md = r['metadata']\n"
        "print(json.dumps({'instance-id': md.get('instance-id') or md.get('uuid'),"
        " 'hostname': md.get('hostname') or md.get('local-hostname'),"
        " 'keys': md.get('public_keys') or md.get('public-keys'),"
        " 'userdata': (r.get('userdata') or b'').decode() if isinstance(r.get('userdata'), bytes) else r.get('userdata')}))\n"
    )
    out = subprocess.run(["/usr/bin/python3", "-c", reader, str(tree)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout)
    assert seen["instance-id"] == vm["id"]
    assert seen["hostname"] == name
    public = lab.api.listSSHKeyPairs(name=keys["second"]["name"])["sshkeypair"][0]
    assert any(isinstance(seen["keys"], dict) and k.startswith("ssh-rsa ") for k in seen["keys"].values())
    assert seen["userdata"] == content
    assert public["fingerprint"] == keys["second"]["fingerprint"]

    lab.api.destroyVirtualMachine(id=vm["id"], expunge=True)
    assert not iso.exists()
