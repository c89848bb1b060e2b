"""Volume snapshots, snapshot policies and templates made from snapshots,
through the API on simulated hosts: CloudStack's parameters, answers and
rules, and who may see what. The copies' content is the lab's part
(test_volume_snapshots_lab.py)."""

from __future__ import annotations

import pytest

from orrery_e2e import create_account, deploy, expect_api_error, unique


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


def root_of(api, vm_id: str) -> dict:
    return api.listVolumes(virtualmachineid=vm_id, type="ROOT")["volume"][0]


def test_snapshot_volume_template_and_revert(tenant, env, os_type):
    api = tenant["api"]
    vm = deploy(api, env, name=unique("vs"))
    root = root_of(api, vm["id"])
    snap = api.createSnapshot(volumeid=root["id"])["snapshot"]
    assert snap["state"] == "BackedUp" and snap["snapshottype"] == "MANUAL", snap
    assert snap["volumeid"] == root["id"] and snap["volumetype"] == "ROOT"
    assert snap["name"].startswith(vm["name"] + "_" + root["name"] + "_"), snap
    assert snap["virtualsize"] == root["size"] and snap["physicalsize"] > 0
    assert snap["revertable"] is True
    listed = api.listSnapshots(volumeid=root["id"])["snapshot"]
    assert [s["id"] for s in listed] == [snap["id"]]
    assert api.listSnapshots(snapshottype="RECURRING").get("snapshot", []) == []

    # A new volume from it, larger than it if asked; never smaller.
    vol = api.createVolume(snapshotid=snap["id"], name=unique("from"))["volume"]
    assert vol["size"] == snap["virtualsize"] and vol["zoneid"] == env.zone["id"], vol
    err = expect_api_error(api.createVolume, snapshotid=snap["id"], size=0)
    assert err.status == 431 and "snapshot size" in err.error["errortext"], err

    # A template from it, usable by deploy.
    t = api.createTemplate(snapshotid=snap["id"], name=unique("t")[:30], ostypeid=os_type["id"])["template"]
    assert t["isready"] is True and t["size"] == snap["virtualsize"], t
    other_vm = deploy(api, env, name=unique("fromtmpl"), templateid=t["id"])
    assert other_vm["state"] == "Running" and other_vm["templateid"] == t["id"]
    err = expect_api_error(api.createTemplate, name="x" * 33, ostypeid=os_type["id"],
                           snapshotid=snap["id"])
    assert err.status == 431 and "32 characters" in err.error["errortext"], err
    err = expect_api_error(api.createTemplate, name="both", ostypeid=os_type["id"],
                           snapshotid=snap["id"], volumeid=root["id"])
    assert err.status == 431 and "only one of" in err.error["errortext"], err
    # From a volume: its instance must be stopped.
    err = expect_api_error(api.createTemplate, name="live", ostypeid=os_type["id"], volumeid=root["id"])
    assert err.status == 530 and "please stop the VM first" in err.error["errortext"], err

    # Revert: the instance must be stopped.
    err = expect_api_error(api.revertSnapshot, id=snap["id"])
    assert err.status == 431 and "not in the shutdown state" in err.error["errortext"], err
    api.stopVirtualMachine(id=vm["id"])
    reverted = api.revertSnapshot(id=snap["id"])["snapshot"]
    assert reverted["id"] == snap["id"]
    assert api.listEvents(type="SNAPSHOT.REVERT").get("event")
    from_volume = api.createTemplate(volumeid=root["id"], name=unique("v")[:30],
                                     ostypeid=os_type["id"])["template"]
    assert from_volume["isready"] is True

    assert api.deleteSnapshot(id=snap["id"])["success"] is True
    assert api.listSnapshots(id=snap["id"]).get("snapshot", []) == []
    err = expect_api_error(api.createVolume, snapshotid=snap["id"])
    assert err.status == 431, err


def test_snapshot_rules(tenant, env, admin):
    api = tenant["api"]
    vm = deploy(api, env, name=unique("rules"))
    root = root_of(api, vm["id"])
    vol = api.createVolume(name=unique("new"), zoneid=env.zone["id"],
                           diskofferingid=api.listDiskOfferings()["diskoffering"][0]["id"])["volume"]
    # A volume never used has nothing to copy.
    err = expect_api_error(api.createSnapshot, volumeid=vol["id"])
    assert err.status == 431 and "is not in Ready state but Allocated" in err.error["errortext"], err
    err = expect_api_error(api.createSnapshot, volumeid=root["id"], name="n" * 256)
    assert err.status == 431 and "name" in err.error["errortext"], err
    # A volume snapshot and an instance snapshot do not hinder each other
    # once done; revert waits for the instance snapshots to go.
    api.createVMSnapshot(virtualmachineid=vm["id"])
    snap = api.createSnapshot(volumeid=root["id"])["snapshot"]
    api.stopVirtualMachine(id=vm["id"])
    err = expect_api_error(api.revertSnapshot, id=snap["id"])
    assert err.status == 431 and "remove VM snapshots" in err.error["errortext"], err


def test_policies(tenant, other, env, admin):
    api = tenant["api"]
    vm = deploy(api, env, name=unique("pol"))
    root = root_of(api, vm["id"])
    p = api.createSnapshotPolicy(volumeid=root["id"], intervaltype="DAILY", schedule="30:2",
                                 timezone="Europe/Berlin", maxsnaps=3)["snapshotpolicy"]
    assert p["intervaltype"] == 1 and p["schedule"] == "30:2" and p["maxsnaps"] == 3, p
    assert p["timezone"] == "Europe/Berlin" and p["volumeid"] == root["id"]
    # Another DAILY one updates it.
    q = api.createSnapshotPolicy(volumeid=root["id"], intervaltype="daily", schedule="0:4",
                                 timezone="UTC", maxsnaps=2)["snapshotpolicy"]
    assert q["id"] == p["id"] and q["schedule"] == "0:4"
    w = api.createSnapshotPolicy(volumeid=root["id"], intervaltype="WEEKLY", schedule="0:4:1",
                                 timezone="UTC", maxsnaps=2)["snapshotpolicy"]
    assert w["intervaltype"] == 2
    listed = api.listSnapshotPolicies(volumeid=root["id"])["snapshotpolicy"]
    assert sorted(x["id"] for x in listed) == sorted([p["id"], w["id"]])

    for params, text in (
        ({"intervaltype": "YEARLY", "schedule": "0", "maxsnaps": 1}, "Unsupported interval type"),
        ({"intervaltype": "HOURLY", "schedule": "61", "maxsnaps": 1}, "invalid schedule"),
        ({"intervaltype": "MONTHLY", "schedule": "0:0:29", "maxsnaps": 1}, "invalid schedule"),
        ({"intervaltype": "HOURLY", "schedule": "5", "maxsnaps": 0}, "should be greater than 0"),
        ({"intervaltype": "HOURLY", "schedule": "5", "maxsnaps": 9}, "exceeds limit [8]"),
    ):
        err = expect_api_error(api.createSnapshotPolicy, volumeid=root["id"], timezone="UTC", **params)
        assert err.status == 431 and text in err.error["errortext"], (params, err)
    err = expect_api_error(api.createSnapshotPolicy, volumeid=root["id"], intervaltype="HOURLY",
                           schedule="5", maxsnaps=1, timezone="Mars/Olympus")
    assert err.status == 431 and "timezone" in err.error["errortext"], err

    # Other tenants neither see nor change them.
    err = expect_api_error(other["api"].listSnapshotPolicies, volumeid=root["id"])
    assert err.status == 431, err
    err = expect_api_error(other["api"].deleteSnapshotPolicies, id=p["id"])
    assert err.status == 431, err

    updated = api.updateSnapshotPolicy(id=w["id"])["snapshotpolicy"]
    assert updated["id"] == w["id"]
    assert api.deleteSnapshotPolicies(ids=f"{p['id']},{w['id']}")["success"] is True
    assert api.listSnapshotPolicies(volumeid=root["id"]).get("snapshotpolicy", []) == []
    err = expect_api_error(api.deleteSnapshotPolicies)
    assert err.status == 431 and "No policy id" in err.error["errortext"], err


def test_other_tenants_neither_see_nor_touch_snapshots(tenant, other, env, admin):
    api = tenant["api"]
    vm = deploy(api, env, name=unique("iso"))
    snap = api.createSnapshot(volumeid=root_of(api, vm["id"])["id"])["snapshot"]
    assert other["api"].listSnapshots(id=snap["id"]).get("snapshot", []) == []
    for call, params in ((other["api"].deleteSnapshot, {"id": snap["id"]}),
                         (other["api"].revertSnapshot, {"id": snap["id"]}),
                         (other["api"].createVolume, {"snapshotid": snap["id"]}),
                         (other["api"].createSnapshot, {"volumeid": root_of(api, vm["id"])["id"]})):
        err = expect_api_error(call, **params)
        assert err.status == 431, err
    assert [s["id"] for s in admin.listSnapshots(id=snap["id"])["snapshot"]] == [snap["id"]]


def test_snapshots_and_policies_go_with_their_account(admin, coordinator, env):
    acct = create_account(admin, accounttype=0)
    api = coordinator.client(acct["apikey"], acct["secretkey"])
    vm = deploy(api, env, name=unique("leaving"))
    root = root_of(api, vm["id"])
    snap = api.createSnapshot(volumeid=root["id"])["snapshot"]
    policy = api.createSnapshotPolicy(volumeid=root["id"], intervaltype="HOURLY", schedule="5",
                                      timezone="UTC", maxsnaps=1)["snapshotpolicy"]
    copy = coordinator.data_dir / "secondary" / "snapshot" / f"{snap['id']}.qcow2"
    assert copy.exists()
    admin.deleteAccount(id=acct["account"]["id"])
    assert admin.listSnapshots(id=snap["id"], listall=True).get("snapshot", []) == []
    assert not copy.exists()
    err = expect_api_error(admin.listSnapshotPolicies, id=policy["id"])
    assert err.status == 431, err
