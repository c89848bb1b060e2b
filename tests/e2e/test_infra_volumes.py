"""Zones, pods, clusters, network offerings, networks and data volumes."""

from orrery_e2e import deploy, expect_api_error, get_vm, unique

GIB = 1 << 30


def disk_offering(api, name):
    offerings = api.listDiskOfferings(name=name)["diskoffering"]
    return next(o for o in offerings if o["name"] == name)


def test_zone_pod_cluster_network_records(fresh_coordinator):
    api = fresh_coordinator.client()

    zone = api.createZone(name="zone-b", networktype="Advanced", dns1="192.0.2.1",
                          internaldns1="192.0.2.2")["zone"]
    assert zone["networktype"] == "Advanced" and zone["allocationstate"] == "Enabled"
    assert {z["name"] for z in api.listZones()["zone"]} >= {"zone-b"}

    err = expect_api_error(api.createZone, name="zone-c", networktype="Hybrid")
    assert err.status == 431 and "networktype" in err.error["errortext"]
    err = expect_api_error(api.createZone, name="zone-b", networktype="Basic")
    assert err.status == 431 and "already exists" in err.error["errortext"]

    pod = api.createPod(zoneid=zone["id"], name="pod-b", gateway="10.9.0.1",
                        netmask="255.255.255.0", startip="10.9.0.10",
                        endip="10.9.0.200")["pod"]
    assert pod["zoneid"] == zone["id"]
    err = expect_api_error(api.createPod, zoneid=zone["id"], name="pod-x", gateway="10.9.0.1",
                           netmask="255.255.255.0", startip="10.8.0.10")
    assert err.status == 431 and "startip" in err.error["errortext"]

    added = api.addCluster(zoneid=zone["id"], podid=pod["id"], clustername="kvm-b",
                           hypervisor="kvm", clustertype="CloudManaged")
    assert added["count"] == 1
    cluster = added["cluster"][0]
    assert cluster["hypervisortype"] == "KVM" and cluster["podid"] == pod["id"]
    err = expect_api_error(api.addCluster, zoneid=zone["id"], podid=pod["id"],
                           clustername="hv", hypervisor="Hyper-V",
                           clustertype="CloudManaged")
    assert err.status == 431 and "hypervisor" in err.error["errortext"]
    pools = api.listStoragePools(clusterid=cluster["id"])["storagepool"]
    assert len(pools) == 1

    offering = api.createNetworkOffering(name=unique("netoff"), guestiptype="Shared",
                                         traffictype="GUEST")["networkoffering"]
    assert offering["state"] == "Disabled"
    err = expect_api_error(api.createNetwork, name="n1", zoneid=zone["id"],
                           networkofferingid=offering["id"], gateway="10.50.0.1",
                           netmask="255.255.255.0")
    assert err.status == 431 and "Enabled" in err.error["errortext"]
    offering = api.updateNetworkOffering(id=offering["id"], state="Enabled")["networkoffering"]
    assert offering["state"] == "Enabled"

    net = api.createNetwork(name="n1", zoneid=zone["id"], networkofferingid=offering["id"],
                            gateway="10.50.0.1", netmask="255.255.255.0",
                            startip="10.50.0.10", endip="10.50.0.100")["network"]
    assert net["cidr"] == "10.50.0.0/24" and net["type"] == "Shared"
    err = expect_api_error(api.createNetwork, name="n2", zoneid=zone["id"],
                           networkofferingid=offering["id"], gateway="10.50.0.1",
                           netmask="255.255.255.0", startip="10.50.0.50",
                           endip="10.50.0.60")
    assert err.status == 431 and "overlaps" in err.error["errortext"]
    err = expect_api_error(api.createNetwork, name="n3", zoneid=zone["id"],
                           networkofferingid=offering["id"], gateway="10.60.0.1",
                           netmask="255.255.0.255")
    assert err.status == 431 and "netmask" in err.error["errortext"]

    err = expect_api_error(api.deleteNetworkOffering, id=offering["id"])
    assert err.status == 431 and "used by 1 network" in err.error["errortext"]
    api.deleteNetwork(id=net["id"])
    assert not [n for n in api.listNetworks(zoneid=zone["id"]).get("network", [])
                if n["id"] == net["id"]]
    assert api.deleteNetworkOffering(id=offering["id"])["success"] in (True, "true")
    err = expect_api_error(api.deleteNetworkOffering, id=offering["id"])
    assert err.status == 431 and "Invalid parameter id value=" in err.error["errortext"]


def test_network_with_instances_cannot_be_deleted(admin, env):
    deploy(admin, env, name=unique("vm"), startvm=False)
    default = next(n for n in admin.listNetworks(zoneid=env.zone["id"])["network"]
                   if n["isdefault"])
    err = expect_api_error(admin.deleteNetwork, id=default["id"])
    assert err.status == 536 and "instances" in err.error["errortext"]


def test_data_volume_lifecycle(admin, env):
    custom = disk_offering(admin, "Custom")
    small = disk_offering(admin, "Small")

    err = expect_api_error(admin.createVolume, diskofferingid=custom["id"],
                           zoneid=env.zone["id"])
    assert err.status == 431 and "size" in err.error["errortext"]
    err = expect_api_error(admin.createVolume, diskofferingid=small["id"])
    assert err.status == 431 and "zoneid" in err.error["errortext"]

    vol = admin.createVolume(name=unique("data"), diskofferingid=custom["id"], size=3,
                             zoneid=env.zone["id"])["volume"]
    assert vol["type"] == "DATADISK" and vol["state"] == "Allocated"
    assert vol["size"] == 3 * GIB and "virtualmachineid" not in vol

    vm = deploy(admin, env, name=unique("vm"), startvm=True)
    err = expect_api_error(admin.attachVolume, id=vol["id"], virtualmachineid=vm["id"],
                           deviceid=3)
    assert err.status == 431 and "deviceid" in err.error["errortext"]

    attached = admin.attachVolume(id=vol["id"], virtualmachineid=vm["id"])["volume"]
    assert attached["virtualmachineid"] == vm["id"]
    assert attached["deviceid"] == 1 and attached["state"] == "Ready"
    vols = admin.listVolumes(virtualmachineid=vm["id"])["volume"]
    assert [v["type"] for v in vols] == ["ROOT", "DATADISK"]

    err = expect_api_error(admin.attachVolume, id=vol["id"], virtualmachineid=vm["id"])
    assert "already attached" in err.error["errortext"]
    err = expect_api_error(admin.deleteVolume, id=vol["id"])
    assert err.status == 431 and "detach" in err.error["errortext"]

    err = expect_api_error(admin.resizeVolume, id=vol["id"], size=2)
    assert err.status == 431 and "shrinkok" in err.error["errortext"]
    grown = admin.resizeVolume(id=vol["id"], size=5)["volume"]
    assert grown["size"] == 5 * GIB

    root = vols[0]
    err = expect_api_error(admin.detachVolume, id=root["id"])
    assert err.status == 431 and "ROOT" in err.error["errortext"]

    detached = admin.detachVolume(virtualmachineid=vm["id"], deviceid=1)["volume"]
    assert "virtualmachineid" not in detached
    assert admin.deleteVolume(id=vol["id"])["success"] in (True, "true")
    assert not admin.listVolumes(id=vol["id"]).get("volume")

    # A volume created with virtualmachineid is attached by the same job.
    second = admin.createVolume(diskofferingid=small["id"], virtualmachineid=vm["id"])["volume"]
    assert second["virtualmachineid"] == vm["id"] and second["deviceid"] == 1
    assert get_vm(admin, vm["id"])["state"] == "Running"


def test_destroy_with_volumeids_deletes_data_volumes(admin, env):
    small = disk_offering(admin, "Small")
    vm = deploy(admin, env, name=unique("vm"), startvm=True)
    keep = admin.createVolume(diskofferingid=small["id"], virtualmachineid=vm["id"])["volume"]
    drop = admin.createVolume(diskofferingid=small["id"], virtualmachineid=vm["id"])["volume"]
    assert {keep["deviceid"], drop["deviceid"]} == {1, 2}

    admin.destroyVirtualMachine(id=vm["id"], volumeids=drop["id"], expunge=True)
    assert not admin.listVolumes(id=drop["id"]).get("volume")
    kept = admin.listVolumes(id=keep["id"])["volume"][0]
    assert "virtualmachineid" not in kept


def test_user_cannot_touch_another_accounts_volume(admin, env, user):
    small = disk_offering(admin, "Small")
    vol = admin.createVolume(diskofferingid=small["id"], zoneid=env.zone["id"])["volume"]
    err = expect_api_error(user["api"].deleteVolume, id=vol["id"])
    assert err.status == 431 and "Invalid parameter id value=" in err.error["errortext"]
    assert admin.listVolumes(id=vol["id"])["volume"][0]["state"] == "Allocated"
