"""Instance snapshots and restoreVirtualMachine through the API, on simulated
hosts: the tree with parent and current, CloudStack's rules and texts
(vmsnapshot.max, memory only of a running instance, reverts that would
change the power state, volumes frozen while snapshots exist), who may see
and touch them, and restore's choices. What the guest sees is the lab's
part (test_snapshots_lab.py)."""

from __future__ import annotations

import pytest

from orrery_e2e import create_account, deploy, expect_api_error, register_template, unique


@pytest.fixture(scope="module")
def tenant(admin, coordinator):
    acct = create_account(admin, accounttype=0)
    acct["api"] = coordinator.client(acct["apikey"], acct["secretkey"])
    return acct


@pytest.fixture(scope="module")
def other(admin, coordinator):
    acct = create_account(admin, accounttype=0)
    acct["api"] = coordinator.client(acct["apikey"], acct["secretkey"])
    return acct


def snap(api, vm_id: str, **params) -> dict:
    return api.createVMSnapshot(virtualmachineid=vm_id, **params)["vmsnapshot"]


def snaps(api, vm_id: str) -> list[dict]:
    return api.listVMSnapshot(virtualmachineid=vm_id).get("vmSnapshot", [])


def test_the_tree_branches_after_a_revert(tenant, env):
    api = tenant["api"]
    vm = deploy(api, env, name=unique("snap"))
    a = snap(api, vm["id"], name="first", description="before the upgrade", snapshotmemory=True)
    assert a["state"] == "Ready" and a["type"] == "DiskAndMemory" and a["current"] is True
    assert a["displayname"] == "first" and a["description"] == "before the upgrade"
    # Users do not see instance names; the internal name has the form.
    assert "_VS_" in a["name"] and a["name"].startswith("i-"), a
    assert "parent" not in a and a["virtualmachineid"] == vm["id"]
    b = snap(api, vm["id"], name="second", snapshotmemory=True)
    assert b["parent"] == a["id"] and b["parentName"] == "first" and b["current"] is True
    assert [s["current"] for s in snaps(api, vm["id"]) if s["id"] == a["id"]] == [False]

    reverted = api.revertToVMSnapshot(vmsnapshotid=a["id"])["virtualmachine"]
    assert reverted["id"] == vm["id"] and reverted["state"] == "Running"
    c = snap(api, vm["id"], name="branch", snapshotmemory=True)
    assert c["parent"] == a["id"], c
    listed = {s["id"]: s for s in snaps(api, vm["id"])}
    assert listed[b["id"]]["parent"] == a["id"] and listed[c["id"]]["parent"] == a["id"]
    assert [s["id"] for s in listed.values() if s["current"]] == [c["id"]]
    # Newest first, as CloudStack lists them.
    assert [s["id"] for s in snaps(api, vm["id"])] == [c["id"], b["id"], a["id"]]

    # Deleting the root hands its children to nobody; the current stays.
    assert api.deleteVMSnapshot(vmsnapshotid=a["id"])["success"] is True
    listed = {s["id"]: s for s in snaps(api, vm["id"])}
    assert set(listed) == {b["id"], c["id"]}
    assert "parent" not in listed[b["id"]] and "parent" not in listed[c["id"]]
    assert listed[c["id"]]["current"] is True
    # Deleting the current one makes its parent current (none here).
    api.deleteVMSnapshot(vmsnapshotid=c["id"])
    assert [s["id"] for s in snaps(api, vm["id"])] == [b["id"]]

    events = api.listEvents(type="VMSNAPSHOT.CREATE", pagesize=-1).get("event", [])
    assert any(c["id"] in e["description"] for e in events), events
    for kind in ("VMSNAPSHOT.REVERTTO", "VMSNAPSHOT.DELETE"):
        assert api.listEvents(type=kind).get("event"), kind


def test_rules_and_their_cloudstack_texts(tenant, env, admin):
    api = tenant["api"]
    vm = deploy(api, env, name=unique("rules"))
    disk = snap(api, vm["id"], name="disk")
    assert disk["type"] == "Disk"
    # A disk-only snapshot is reverted to while Stopped, one with memory
    # while Running: a revert never changes the power state.
    err = expect_api_error(api.revertToVMSnapshot, vmsnapshotid=disk["id"])
    assert err.status == 431, err
    assert "For running Instances only Snapshots with memory can be reverted" in err.error["errortext"]
    mem = snap(api, vm["id"], name="mem", snapshotmemory=True)
    api.stopVirtualMachine(id=vm["id"])
    err = expect_api_error(api.revertToVMSnapshot, vmsnapshotid=mem["id"])
    assert err.status == 431 and "you need to first start the Instance" in err.error["errortext"], err
    err = expect_api_error(api.createVMSnapshot, virtualmachineid=vm["id"], snapshotmemory=True)
    assert err.status == 431, err
    assert err.error["errortext"] == "Can not Snapshot memory when the Instance is not in Running state"
    assert api.revertToVMSnapshot(vmsnapshotid=disk["id"])["virtualmachine"]["state"] == "Stopped"

    # Volumes cannot change under the snapshots.
    vol = api.createVolume(name=unique("data"), zoneid=env.zone["id"],
                           diskofferingid=api.listDiskOfferings()["diskoffering"][0]["id"])["volume"]
    err = expect_api_error(api.attachVolume, id=vol["id"], virtualmachineid=vm["id"])
    assert err.status == 431, err
    assert "please specify an Instance that does not have Instance Snapshots" in err.error["errortext"]
    err = expect_api_error(api.restoreVirtualMachine, virtualmachineid=vm["id"])
    assert err.status == 431, err
    assert "please remove Instance Snapshots before restoring Instance" in err.error["errortext"]

    # vmsnapshot.max, counted per instance.
    admin.updateConfiguration(name="vmsnapshot.max", value="3")
    try:
        snap(api, vm["id"], name="third")
        err = expect_api_error(api.createVMSnapshot, virtualmachineid=vm["id"])
        assert err.status == 530, err
        assert err.error["errortext"] == (
            "Creating Instance Snapshot failed due to a Instance can just have : 3 Instance "
            "Snapshots. Please delete old ones"), err
    finally:
        admin.updateConfiguration(name="vmsnapshot.max", value="10")

    # Bad input names the parameter and changes nothing.
    before = len(snaps(api, vm["id"]))
    err = expect_api_error(api.createVMSnapshot, virtualmachineid=vm["id"], name="x" * 256)
    assert err.status == 431 and "name" in err.error["errortext"], err
    err = expect_api_error(api.createVMSnapshot, virtualmachineid="not-a-uuid")
    assert err.status == 431 and "virtualmachineid" in err.error["errortext"], err
    assert len(snaps(api, vm["id"])) == before

    # With its snapshots gone, the volume attaches.
    for s in snaps(api, vm["id"]):
        api.deleteVMSnapshot(vmsnapshotid=s["id"])
    assert api.attachVolume(id=vol["id"], virtualmachineid=vm["id"])["volume"]["virtualmachineid"] == vm["id"]


def test_destroying_the_instance_removes_its_snapshots(tenant, env):
    api = tenant["api"]
    vm = deploy(api, env, name=unique("gone"))
    s = snap(api, vm["id"], snapshotmemory=True)
    api.destroyVirtualMachine(id=vm["id"])
    assert api.listVMSnapshot(vmsnapshotid=s["id"]).get("vmSnapshot", []) == []
    events = api.listEvents(type="VMSNAPSHOT.DELETE", pagesize=-1).get("event", [])
    assert any(s["id"] in e["description"] for e in events)


def test_an_offering_change_discards_the_snapshots_with_memory(tenant, env, admin):
    api = tenant["api"]
    vm = deploy(api, env, name=unique("resize"))
    mem = snap(api, vm["id"], snapshotmemory=True)
    disk = snap(api, vm["id"])
    api.stopVirtualMachine(id=vm["id"])
    bigger = admin.createServiceOffering(name=unique("bigger"), displaytext="bigger", cpunumber=2,
                                         cpuspeed=500, memory=512)["serviceoffering"]
    api.changeServiceForVirtualMachine(id=vm["id"], serviceofferingid=bigger["id"])
    left = [s["id"] for s in snaps(api, vm["id"])]
    assert left == [disk["id"]], (left, mem["id"])


def test_other_tenants_neither_see_nor_touch_them(tenant, other, env, admin):
    api = tenant["api"]
    vm = deploy(api, env, name=unique("mine"))
    s = snap(api, vm["id"], snapshotmemory=True)
    for call, params in ((other["api"].revertToVMSnapshot, {"vmsnapshotid": s["id"]}),
                         (other["api"].deleteVMSnapshot, {"vmsnapshotid": s["id"]}),
                         (other["api"].createVMSnapshot, {"virtualmachineid": vm["id"]})):
        err = expect_api_error(call, **params)
        assert err.status == 431, err
    assert other["api"].listVMSnapshot(vmsnapshotid=s["id"]).get("vmSnapshot", []) == []
    assert other["api"].listVMSnapshot(listall=True).get("vmSnapshot", []) == [] or all(
        x["account"] == other["name"] for x in other["api"].listVMSnapshot(listall=True)["vmSnapshot"])
    # The root admin sees it by id.
    assert [x["id"] for x in admin.listVMSnapshot(vmsnapshotid=s["id"])["vmSnapshot"]] == [s["id"]]
    assert snaps(api, vm["id"])[0]["id"] == s["id"]


def test_restore_gives_a_new_root_and_keeps_the_power_state(tenant, env, admin, os_type, zone, image):
    api = tenant["api"]
    vm = deploy(api, env, name=unique("restore"))
    old_root = api.listVolumes(virtualmachineid=vm["id"], type="ROOT")["volume"][0]
    other_tmpl = register_template(admin, zone["id"], os_type["id"], image)

    restored = api.restoreVirtualMachine(virtualmachineid=vm["id"], templateid=other_tmpl["id"],
                                         rootdisksize=3)["virtualmachine"]
    assert restored["state"] == "Running" and restored["templateid"] == other_tmpl["id"], restored
    vols = api.listVolumes(virtualmachineid=vm["id"])["volume"]
    assert vols[0]["type"] == "ROOT" and vols[0]["id"] != old_root["id"], vols
    assert vols[0]["size"] == 3 * 1024 ** 3 and vols[0]["templateid"] == other_tmpl["id"], vols[0]
    # The old root is destroyed, not listed.
    assert api.listVolumes(id=old_root["id"]).get("volume", []) == []
    assert api.listEvents(type="VM.RESTORE").get("event")

    # A stopped instance stays stopped; a size below the template's is refused.
    api.stopVirtualMachine(id=vm["id"])
    err = expect_api_error(api.restoreVirtualMachine, virtualmachineid=vm["id"],
                           details={"rootdisksize": "0"})
    assert err.status == 431 and "rootdisksize" in err.error["errortext"], err
    again = api.restoreVirtualMachine(virtualmachineid=vm["id"], expunge=True)["virtualmachine"]
    assert again["state"] == "Stopped"
    # An ISO is not a template to restore a template-based instance from.
    isos = admin.listIsos(isofilter="all").get("iso", [])
    if isos:
        err = expect_api_error(api.restoreVirtualMachine, virtualmachineid=vm["id"],
                               templateid=isos[0]["id"])
        assert err.status == 431, err
    # Another tenant's instance is unknown.
    err = expect_api_error(admin.restoreVirtualMachine, virtualmachineid="00000000-0000-0000-0000-000000000000")
    assert err.status == 431, err
