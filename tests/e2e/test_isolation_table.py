"""Every list and every id-taking command against resources of another tenant.

A user of domain A owns one of each resource. Its own domain admin and the root
admin see each one by id (without listall); a user and the domain admin of a
sibling domain B neither see nor change any of them. The table is checked
against listApis, so a new command that takes an id must be classified here."""

from __future__ import annotations

import uuid

import pytest

from orrery_e2e import expect_api_error, unique, wait_for


def make_account(admin, coordinator, domain, accounttype):
    name = unique("iso")
    account = admin.createAccount(accounttype=accounttype, account=name, username=name,
                                  password="Pa55-" + uuid.uuid4().hex[:12],
                                  email=f"{name}@example.com", firstname="I", lastname="T",
                                  domainid=domain["id"])["account"]
    user = account["user"][0]
    keys = admin.registerUserKeys(id=user["id"])["userkeys"]
    return {"account": account, "user": user, "keys": keys,
            "api": coordinator.client(keys["apikey"], keys["secretkey"])}


@pytest.fixture(scope="module")
def world(admin, coordinator, env, image, os_type, zone):
    a = admin.createDomain(name=unique("iso-a"))["domain"]
    b = admin.createDomain(name=unique("iso-b"))["domain"]
    people = {
        "owner": make_account(admin, coordinator, a, 0),
        "a_admin": make_account(admin, coordinator, a, 2),
        "b_user": make_account(admin, coordinator, b, 0),
        "b_admin": make_account(admin, coordinator, b, 2),
    }
    api = people["owner"]["api"]
    vm = api.deployVirtualMachine(**env.deploy_args(name=unique("iso-vm")))["virtualmachine"]
    disk = admin.listDiskOfferings(name="Small")["diskoffering"][0]
    volume = api.createVolume(name=unique("iso-vol"), diskofferingid=disk["id"],
                              zoneid=zone["id"])["volume"]
    group = api.createAffinityGroup(name=unique("iso-ag"), type="host anti-affinity")[
        "affinitygroup"]
    igroup = api.createInstanceGroup(name=unique("iso-ig"))["instancegroup"]
    keypair = api.createSSHKeyPair(name=unique("iso-kp"))["keypair"]
    userdata = api.registerUserData(name=unique("iso-ud"), userdata="aGVsbG8=")["userdata"]
    schedule = api.createVMSchedule(virtualmachineid=vm["id"], schedule="0 3 * * *",
                                    action="STOP", timezone="UTC",
                                    description="nightly")["vmschedule"]
    # A private template of the owner's, registered for it by the root admin.
    template = admin.registerTemplate(
        name=unique("iso-tmpl"), displaytext="private", url=image.url, format=image.format,
        hypervisor="Simulator", ostypeid=os_type["id"], zoneid=zone["id"],
        account=people["owner"]["account"]["name"], domainid=a["id"])["template"][0]
    wait_for(lambda: admin.listTemplates(templatefilter="all", id=template["id"])
             ["template"][0]["isready"], 60, "private template to become ready")
    offering = isolated_offering(admin)
    network = api.createNetwork(name=unique("iso-net"), displaytext="private", zoneid=zone["id"],
                                networkofferingid=offering["id"])["network"]
    job = api.stopVirtualMachine(id=vm["id"], fetch_result=False)["jobid"]
    wait_for(lambda: api.queryAsyncJobResult(jobid=job, fetch_result=False)["jobstatus"] != 0,
             60, "stop job")
    api.startVirtualMachine(id=vm["id"])
    root = api.listVolumes(virtualmachineid=vm["id"], type="ROOT")["volume"][0]
    snapshot = api.createSnapshot(volumeid=root["id"])["snapshot"]
    policy = api.createSnapshotPolicy(volumeid=root["id"], intervaltype="DAILY", schedule="0:3",
                                      timezone="UTC", maxsnaps=2)["snapshotpolicy"]
    vmsnapshot = api.createVMSnapshot(virtualmachineid=vm["id"], snapshotmemory=True)["vmsnapshot"]
    return {
        "people": people, "domains": {"a": a, "b": b},
        "ids": {
            "vm": vm["id"], "volume": volume["id"], "affinitygroup": group["id"],
            "instancegroup": igroup["id"], "schedule": schedule["id"],
            "template": template["id"], "account": people["owner"]["account"]["id"],
            "user": people["owner"]["user"]["id"], "job": job, "network": network["id"],
            "serviceoffering": env.offering["id"], "keypair": keypair["id"],
            "keypairname": keypair["name"], "userdata": userdata["id"],
            "ownername": people["owner"]["account"]["name"], "ownerdomain": a["id"],
            "snapshot": snapshot["id"], "snapshotpolicy": policy["id"],
            "vmsnapshot": vmsnapshot["id"], "rootvolume": root["id"], "ostype": os_type["id"],
        },
    }


# command -> (resource, extra parameters, response key). `id` is the resource's id.
OWNED_LISTS = {
    "listVirtualMachines": ("vm", {}, "virtualmachine"),
    "listVirtualMachinesMetrics": ("vm", {}, "virtualmachine"),
    "listVirtualMachinesUsageHistory": ("vm", {}, "virtualmachine"),
    "listVolumes": ("volume", {}, "volume"),
    "listVolumesUsageHistory": ("volume", {}, "volume"),
    "listAffinityGroups": ("affinitygroup", {}, "affinitygroup"),
    "listInstanceGroups": ("instancegroup", {}, "instancegroup"),
    "listTemplates": ("template", {"templatefilter": "all"}, "template"),
    "listAccounts": ("account", {}, "account"),
    "listUsers": ("user", {}, "user"),
    "listVMSchedule": ("schedule", {"virtualmachineid": "vm"}, "vmschedule"),
    "listNetworks": ("network", {}, "network"),
    "listSSHKeyPairs": ("keypair", {}, "sshkeypair"),
    "listUserData": ("userdata", {}, "userdata"),
    "listVolumesMetrics": ("volume", {}, "volume"),
    "listSnapshots": ("snapshot", {}, "snapshot"),
    "listSnapshotPolicies": ("snapshotpolicy", {}, "snapshotpolicy"),
}
# Lists with an id whose records are shared catalogue or infrastructure (their
# own tests cover who sees them), or that have no owned record to look up here.
NOT_OWNED = {
    "listZones", "listPods", "listClusters", "listHosts", "listStoragePools",
    "listServiceOfferings", "listDiskOfferings", "listOsTypes", "listOsCategories",
    "listNetworkOfferings", "listDomains", "listRoles", "listEvents",
    "listIsos", "listPublicIpAddresses", "listPortForwardingRules", "listIpForwardingRules",
    # Features not offered: always empty.
    "listLdapConfigurations", "listIdps", "listOauthProvider", "listNetworkServiceProviders",
    "listVPCs", "listRouters", "listSystemVms", "listAlerts", "listAnnotations",
    "listResourceIcon",
    "listZonesMetrics", "listClustersMetrics", "listHostsMetrics",
    "listStoragePoolsMetrics",
}

# Commands that change or reveal one owned resource, with their parameters.
MUTATORS = [
    ("stopVirtualMachine", {"id": "vm"}),
    ("startVirtualMachine", {"id": "vm"}),
    ("rebootVirtualMachine", {"id": "vm"}),
    ("destroyVirtualMachine", {"id": "vm"}),
    ("expungeVirtualMachine", {"id": "vm"}),
    ("recoverVirtualMachine", {"id": "vm"}),
    ("updateVirtualMachine", {"id": "vm", "displayname": "taken"}),
    ("updateVMAffinityGroup", {"id": "vm", "affinitygroupids": "affinitygroup"}),
    ("createVMSchedule", {"virtualmachineid": "vm", "schedule": "0 4 * * *",
                          "action": "STOP", "timezone": "UTC"}),
    ("updateVMSchedule", {"id": "schedule", "description": "taken"}),
    ("deleteVMSchedule", {"virtualmachineid": "vm", "id": "schedule"}),
    ("createVolume", {"name": "x", "virtualmachineid": "vm", "size": "1"}),
    ("attachVolume", {"id": "volume", "virtualmachineid": "vm"}),
    ("detachVolume", {"id": "volume"}),
    ("resizeVolume", {"id": "volume", "size": "9"}),
    ("deleteVolume", {"id": "volume"}),
    ("deleteAffinityGroup", {"id": "affinitygroup"}),
    ("updateTemplate", {"id": "template", "name": "taken"}),
    ("deleteTemplate", {"id": "template"}),
    ("disableAccount", {"id": "account", "lock": "true"}),
    ("enableAccount", {"id": "account"}),
    ("deleteAccount", {"id": "account"}),
    ("registerUserKeys", {"id": "user"}),
    ("getUserKeys", {"id": "user"}),
    ("queryAsyncJobResult", {"jobid": "job"}),
    ("deleteNetwork", {"id": "network"}),
    ("changeServiceForVirtualMachine", {"id": "vm", "serviceofferingid": "serviceoffering"}),
    ("upgradeVirtualMachine", {"id": "vm", "serviceofferingid": "serviceoffering"}),
    ("scaleVirtualMachine", {"id": "vm", "serviceofferingid": "serviceoffering"}),
    ("migrateVirtualMachine", {"virtualmachineid": "vm"}),
    ("findHostsForMigration", {"id": "vm"}),
    ("migrateVirtualMachineWithVolume", {"virtualmachineid": "vm",
                                         "hostid": "8d0a3bb9-2c38-4cbe-9a52-b2d6c1f9a001"}),
    ("migrateVolume", {"volumeid": "volume", "storageid": "8d0a3bb9-2c38-4cbe-9a52-b2d6c1f9a001"}),
    ("findStoragePoolsForMigration", {"id": "volume"}),
    ("resetSSHKeyForVirtualMachine", {"id": "vm", "keypair": "keypairname"}),
    ("deleteSSHKeyPair", {"name": "keypairname", "account": "ownername",
                          "domainid": "ownerdomain"}),
    ("deleteUserData", {"id": "userdata"}),
    ("resetUserDataForVirtualMachine", {"id": "vm", "userdata": "aGk="}),
    ("getVirtualMachineUserData", {"virtualmachineid": "vm"}),
    ("linkUserDataToTemplate", {"templateid": "template", "userdataid": "userdata"}),
    ("createConsoleEndpoint", {"virtualmachineid": "vm"}),
    ("createSnapshot", {"volumeid": "rootvolume"}),
    ("deleteSnapshot", {"id": "snapshot"}),
    ("revertSnapshot", {"id": "snapshot"}),
    ("createVolume", {"snapshotid": "snapshot"}),
    ("createTemplate", {"snapshotid": "snapshot", "name": "taken", "ostypeid": "ostype"}),
    ("createTemplate", {"volumeid": "rootvolume", "name": "taken", "ostypeid": "ostype"}),
    ("createSnapshotPolicy", {"volumeid": "rootvolume", "intervaltype": "HOURLY",
                              "schedule": "5", "timezone": "UTC", "maxsnaps": "1"}),
    ("updateSnapshotPolicy", {"id": "snapshotpolicy", "fordisplay": "false"}),
    ("deleteSnapshotPolicies", {"id": "snapshotpolicy"}),
    ("createVMSnapshot", {"virtualmachineid": "vm"}),
    ("revertToVMSnapshot", {"vmsnapshotid": "vmsnapshot"}),
    ("deleteVMSnapshot", {"vmsnapshotid": "vmsnapshot"}),
    ("restoreVirtualMachine", {"virtualmachineid": "vm"}),
]

OUTSIDERS = ["b_user", "b_admin"]
INSIDERS = ["owner", "a_admin", "root"]


def _params(world, params):
    ids = world["ids"]
    return {k: ids.get(v, v) if isinstance(v, str) else v for k, v in params.items()}


def _api(world, admin, who):
    return admin if who == "root" else world["people"][who]["api"]


def test_every_list_with_an_id_is_classified(admin):
    apis = admin.listApis()["api"]
    unclassified = sorted(
        a["name"] for a in apis
        if a["name"].startswith("list") and any(p["name"] == "id" for p in a["params"])
        and a["name"] not in OWNED_LISTS and a["name"] not in NOT_OWNED)
    assert not unclassified, f"classify these in OWNED_LISTS or NOT_OWNED: {unclassified}"


def test_every_mutator_exists(admin):
    names = {a["name"] for a in admin.listApis()["api"]}
    missing = sorted({m for m, _ in MUTATORS} - names)
    assert not missing, missing


@pytest.mark.parametrize("command", sorted(OWNED_LISTS))
@pytest.mark.parametrize("who", INSIDERS + OUTSIDERS)
def test_list_by_id(world, admin, command, who):
    resource, extra, key = OWNED_LISTS[command]
    api = _api(world, admin, who)
    rid = world["ids"][resource]
    params = {"id": rid, **_params(world, extra)}
    if who in INSIDERS:
        # No listall: naming the id is enough for an admin in scope.
        resp = getattr(api, command)(**params)
        assert rid in {x["id"] for x in resp.get(key, [])}, (who, resp)
    else:
        try:
            resp = getattr(api, command)(**params)
        except Exception as exc:  # noqa: BLE001 - cs raises on API errors
            status = getattr(getattr(exc, "response", None), "status_code", None)
            assert status in (431, 531), (who, command, exc)
        else:
            assert rid not in {x["id"] for x in resp.get(key, [])}, (who, command, resp)
        # Nor with listall.
        try:
            resp = getattr(api, command)(listall=True, **{k: v for k, v in params.items()
                                                          if k != "id"})
        except Exception as exc:  # noqa: BLE001
            status = getattr(getattr(exc, "response", None), "status_code", None)
            assert status in (431, 531), (who, command, exc)
        else:
            assert rid not in {x["id"] for x in resp.get(key, [])}, (who, command, resp)


@pytest.mark.parametrize("who", OUTSIDERS)
def test_outsiders_change_nothing(world, admin, who):
    api = _api(world, admin, who)
    for command, params in MUTATORS:
        call = getattr(api, command)
        error = expect_api_error(call, **_params(world, params))
        assert error.status in (401, 431, 531), (who, command, error.status, error.error)
    ids = world["ids"]
    vm = admin.listVirtualMachines(id=ids["vm"])["virtualmachine"][0]
    assert vm["state"] == "Running" and vm["displayname"] != "taken", vm
    assert admin.listVolumes(id=ids["volume"])["volume"][0]["id"] == ids["volume"]
    assert admin.listAffinityGroups(id=ids["affinitygroup"], listall=True)["affinitygroup"]
    assert admin.listInstanceGroups(id=ids["instancegroup"], listall=True)[
        "instancegroup"][0]["name"] != "taken"
    sched = admin.listVMSchedule(virtualmachineid=ids["vm"])["vmschedule"]
    assert [s["description"] for s in sched] == ["nightly"]
    tmpl = admin.listTemplates(templatefilter="all", id=ids["template"])["template"][0]
    assert tmpl["name"] != "taken"
    account = admin.listAccounts(id=ids["account"])["account"][0]
    assert account["state"] == "enabled"
    assert admin.listNetworks(id=ids["network"])["network"][0]["id"] == ids["network"]
    keys = admin.getUserKeys(id=ids["user"])["userkeys"]
    assert keys["apikey"] == world["people"]["owner"]["keys"]["apikey"]
    assert admin.listSSHKeyPairs(id=ids["keypair"])["sshkeypair"][0]["name"] == \
        ids["keypairname"]
    assert admin.listUserData(id=ids["userdata"])["userdata"][0]["id"] == ids["userdata"]
    assert "userdataid" not in admin.listTemplates(templatefilter="all", id=ids["template"])[
        "template"][0]
    assert admin.listSnapshots(id=ids["snapshot"])["snapshot"][0]["state"] == "BackedUp"
    assert admin.listSnapshotPolicies(id=ids["snapshotpolicy"])["snapshotpolicy"][0]["fordisplay"]
    assert admin.listVMSnapshot(vmsnapshotid=ids["vmsnapshot"])["vmSnapshot"][0]["state"] == "Ready"
    assert not admin.listTemplates(templatefilter="all", name="taken").get("template")


def test_expunged_instance_id_lists_nothing(admin, env):
    vm = admin.deployVirtualMachine(**env.deploy_args(name=unique("gone")))["virtualmachine"]
    admin.destroyVirtualMachine(id=vm["id"], expunge=True)
    wait_for(lambda: not admin.listVirtualMachines(id=vm["id"]).get("virtualmachine"), 60,
             "expunged instance to leave the list")
    assert admin.listVirtualMachines(id=vm["id"]) == {}
    # An id that never existed is still an error.
    error = expect_api_error(admin.listVirtualMachines, id=str(uuid.uuid4()))
    assert error.status == 431


def test_stop_is_idempotent(admin, env):
    vm = admin.deployVirtualMachine(**env.deploy_args(name=unique("idem")))["virtualmachine"]
    admin.stopVirtualMachine(id=vm["id"])
    for forced in (False, True):
        again = admin.stopVirtualMachine(id=vm["id"], forced=forced)["virtualmachine"]
        assert again["state"] == "Stopped"
    admin.destroyVirtualMachine(id=vm["id"], expunge=True)


def test_libcloud_list_nodes_commands(user):
    api = user["api"]
    for command in ("listPublicIpAddresses", "listPortForwardingRules",
                    "listIpForwardingRules"):
        assert getattr(api, command)() == {}, command


def test_backup_settings_are_listed(admin):
    for name, value in (("backup.framework.enabled", "false"),
                        ("backup.framework.provider.plugin", "dummy")):
        found = admin.listConfigurations(name=name)["configuration"]
        assert [c["value"] for c in found if c["name"] == name] == [value], found


def isolated_offering(admin) -> dict:
    offerings = [o for o in admin.listNetworkOfferings(fetch_list=True)
                 if o.get("guestiptype") == "Isolated" and o.get("state") == "Enabled"]
    if offerings:
        return offerings[0]
    return admin.createNetworkOffering(
        name=unique("iso-off"), displaytext="isolated", guestiptype="Isolated",
        traffictype="GUEST", supportedservices="Dhcp", enable=True)["networkoffering"]


def test_isolated_network_default_range(admin, zone):
    net = admin.createNetwork(name=unique("iso-net"), displaytext="x", zoneid=zone["id"],
                              networkofferingid=isolated_offering(admin)["id"])["network"]
    assert net["gateway"] == "10.1.1.1"
    admin.deleteNetwork(id=net["id"])


@pytest.mark.parametrize("who", OUTSIDERS)
def test_outsiders_cannot_deploy_into_the_tenants_network_or_template(world, admin, env, who):
    """Deploy names the tenant's isolated network or private template: refused,
    nothing created."""
    api = _api(world, admin, who)
    ids = world["ids"]
    before = len(admin.listVirtualMachines(listall=True).get("virtualmachine", []))
    for extra in ({"networkids": ids["network"]}, {"templateid": ids["template"]}):
        args = env.deploy_args(name=unique("intruder"), **extra)
        error = expect_api_error(api.deployVirtualMachine, **args)
        assert error.status in (431, 531), (who, extra, error.status, error.error)
    assert len(admin.listVirtualMachines(listall=True).get("virtualmachine", [])) == before
    nets = admin.listNetworks(id=ids["network"], listall=True)["network"]
    assert nets[0]["id"] == ids["network"]
