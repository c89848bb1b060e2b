"""migrateVirtualMachine and findHostsForMigration through PyPI's cs, on the
session coordinator's three simulated hosts: who may migrate, which states and
destinations are refused, and that placement's rules (strict anti-affinity)
hold for the destination. The lab suite (test_multihost_migration.py) moves
real guests between real hosts."""

from orrery_e2e import (
    Fixtures,
    create_service_offering,
    deploy,
    expect_api_error,
    find_os_type,
    get_vm,
    register_template,
    unique,
)


def own_world(coordinator, image):
    """A coordinator of the test's own: maintenance empties whole hosts, so
    other tests' instances must not be on them."""
    admin = coordinator.client()
    zone = admin.listZones()["zone"][0]
    template = register_template(admin, zone["id"], find_os_type(admin)["id"], image)
    return admin, Fixtures(zone=zone, offering=create_service_offering(admin),
                           template=template)


def _cleanup(admin, *vms):
    for vm in vms:
        try:
            admin.destroyVirtualMachine(id=vm["id"], expunge=True)
        except Exception:  # noqa: BLE001 - best effort
            pass


def test_migrate_moves_a_running_instance_and_records_it(admin, env):
    vm = deploy(admin, env, name=unique("mig"))
    try:
        source = vm["hostid"]
        candidates = admin.findHostsForMigration(id=vm["id"])["host"]
        assert source not in [h["id"] for h in candidates]
        target = next(h for h in candidates if h["suitableformigration"])
        assert target["requiresStorageMotion"] is False

        moved = admin.migrateVirtualMachine(virtualmachineid=vm["id"],
                                            hostid=target["id"])["virtualmachine"]
        assert moved["hostid"] == target["id"] and moved["state"] == "Running"
        listed = get_vm(admin, vm["id"])
        assert listed["hostid"] == target["id"] and listed["state"] == "Running"

        events = admin.listEvents(type="VM.MIGRATE", listall=True).get("event", [])
        assert any(target["name"] in e["description"] and vm["instancename"] in e["description"]
                   for e in events), events

        # Without hostid placement chooses, never the current host.
        again = admin.migrateVirtualMachine(virtualmachineid=vm["id"])["virtualmachine"]
        assert again["hostid"] != target["id"] and again["state"] == "Running"

        err = expect_api_error(admin.migrateVirtualMachine, virtualmachineid=vm["id"],
                               hostid=again["hostid"])
        assert err.status == 431 and "already runs on host" in err.error["errortext"]
        err = expect_api_error(admin.migrateVirtualMachine, virtualmachineid=vm["id"],
                               hostid="8d0a3bb9-2c38-4cbe-9a52-b2d6c1f9a001")
        assert err.status == 431 and "hostid" in err.error["errortext"]
        err = expect_api_error(admin.migrateVirtualMachine, virtualmachineid=vm["id"],
                               storageid="8d0a3bb9-2c38-4cbe-9a52-b2d6c1f9a001")
        assert err.status == 431 and "storageid" in err.error["errortext"]
    finally:
        _cleanup(admin, vm)


def test_only_running_instances_and_only_root_admins(admin, env, user):
    stopped = deploy(admin, env, name=unique("mig"), startvm=False)
    mine = deploy(user["api"], env, name=unique("mig"))
    try:
        err = expect_api_error(admin.migrateVirtualMachine, virtualmachineid=stopped["id"])
        assert err.status == 431 and "Stopped" in err.error["errortext"]
        err = expect_api_error(admin.findHostsForMigration, id=stopped["id"])
        assert "Stopped" in err.error["errortext"]
        # A user may not migrate, even their own instance.
        before = get_vm(admin, mine["id"])["hostid"]
        err = expect_api_error(user["api"].migrateVirtualMachine, virtualmachineid=mine["id"])
        assert err.status == 401
        assert get_vm(admin, mine["id"])["hostid"] == before
    finally:
        _cleanup(admin, stopped, mine)


def test_destination_honours_strict_anti_affinity(admin, env):
    group = admin.createAffinityGroup(name=unique("spread"),
                                      type="host anti-affinity")["affinitygroup"]
    a = deploy(admin, env, name=unique("mig"), affinitygroupids=group["id"])
    b = deploy(admin, env, name=unique("mig"), affinitygroupids=group["id"])
    try:
        assert a["hostid"] != b["hostid"]
        verdicts = {h["id"]: h["suitableformigration"]
                    for h in admin.findHostsForMigration(id=a["id"])["host"]}
        assert verdicts[b["hostid"]] is False
        err = expect_api_error(admin.migrateVirtualMachine, virtualmachineid=a["id"],
                               hostid=b["hostid"])
        assert "affinity" in err.error["errortext"].lower(), err.error
        vm = get_vm(admin, a["id"])
        assert vm["hostid"] == a["hostid"] and vm["state"] == "Running"
        # The third host is free of the group: autoselect goes there.
        moved = admin.migrateVirtualMachine(virtualmachineid=a["id"])["virtualmachine"]
        assert moved["hostid"] not in (a["hostid"], b["hostid"])
    finally:
        _cleanup(admin, a, b)
        admin.deleteAffinityGroup(id=group["id"])


def _host(admin, host_id):
    return admin.listHosts(id=host_id)["host"][0]


def test_maintenance_empties_a_host_and_cancel_returns_it(fresh_coordinator, image):
    admin, env = own_world(fresh_coordinator, image)
    hosts = [h["id"] for h in admin.listHosts(type="Routing")["host"] if h["state"] == "Up"]
    target = hosts[0]
    vms = [deploy(admin, env, name=unique("maint"), hostid=target) for _ in range(2)]
    try:
        assert all(v["hostid"] == target for v in vms)
        host = admin.prepareHostForMaintenance(id=target)["host"]
        assert host["id"] == target and host["resourcestate"] == "Maintenance"
        for v in vms:
            moved = get_vm(admin, v["id"])
            assert moved["state"] == "Running" and moved["hostid"] != target
        events = admin.listEvents(type="MAINT.PREPARE", listall=True).get("event", [])
        assert any(host["name"] in e["description"] for e in events)
        # A host in maintenance takes no instances, even when named.
        err = expect_api_error(lambda **kw: deploy(admin, env, **kw), name=unique("maint"),
                               hostid=target)
        assert "Maintenance" in err.error["errortext"], err.error
        err = expect_api_error(admin.prepareHostForMaintenance, id=target)
        assert err.status == 431 and "maintenance" in err.error["errortext"]

        back = admin.cancelHostMaintenance(id=target)["host"]
        assert back["resourcestate"] == "Enabled"
        assert _host(admin, target)["resourcestate"] == "Enabled"
        err = expect_api_error(admin.cancelHostMaintenance, id=target)
        assert err.status == 431
    finally:
        _cleanup(admin, *vms)
        if _host(admin, target)["resourcestate"] != "Enabled":
            admin.cancelHostMaintenance(id=target)


def test_maintenance_with_an_unmovable_instance(fresh_coordinator, image):
    """Strict anti-affinity over all three hosts: the instance on the host
    going into maintenance has nowhere to go."""
    admin, env = own_world(fresh_coordinator, image)
    group = admin.createAffinityGroup(name=unique("pinned"),
                                      type="host anti-affinity")["affinitygroup"]
    vms = [deploy(admin, env, name=unique("maint"), affinitygroupids=group["id"])
           for _ in range(3)]
    target = vms[0]["hostid"]
    try:
        err = expect_api_error(admin.prepareHostForMaintenance, id=target)
        assert vms[0]["instancename"] in err.error["errortext"], err.error
        assert _host(admin, target)["resourcestate"] == "ErrorInMaintenance"
        vm = get_vm(admin, vms[0]["id"])
        assert vm["state"] == "Running" and vm["hostid"] == target

        # ForceStop: the instance that cannot move is stopped instead.
        admin.updateConfiguration(name="host.maintenance.local.storage.strategy",
                                  value="ForceStop")
        host = admin.prepareHostForMaintenance(id=target)["host"]
        assert host["resourcestate"] == "Maintenance"
        assert get_vm(admin, vms[0]["id"])["state"] == "Stopped"
    finally:
        admin.updateConfiguration(name="host.maintenance.local.storage.strategy", value="Error")
        _cleanup(admin, *vms)
        if _host(admin, target)["resourcestate"] != "Enabled":
            admin.cancelHostMaintenance(id=target)
        admin.deleteAffinityGroup(id=group["id"])


def test_migrate_with_volumes_to_a_hosts_local_pool(admin, env):
    vm = deploy(admin, env, name=unique("stor"))
    try:
        source = vm["hostid"]
        hosts = [h["id"] for h in admin.listHosts(type="Routing")["host"]
                 if h["state"] == "Up" and h["resourcestate"] == "Enabled" and h["id"] != source]
        target, third = hosts[0], hosts[1]
        pools = admin.listStoragePools(listall=True)["storagepool"]
        local = {p["hostid"]: p for p in pools if p["scope"] == "HOST"}
        assert {source, target, third} <= set(local), pools
        root = admin.listVolumes(virtualmachineid=vm["id"], type="ROOT")["volume"][0]

        # Every other pool of the zone is offered for the root volume.
        offered = {p["id"]: p for p in
                   admin.findStoragePoolsForMigration(id=root["id"])["storagepool"]}
        assert local[target]["id"] in offered and offered[local[target]["id"]][
            "suitableformigration"] is True

        # A pool the destination cannot use is refused, naming the parameter.
        err = expect_api_error(admin.migrateVirtualMachineWithVolume, virtualmachineid=vm["id"],
                               hostid=target,
                               migrateto=[{"volume": root["id"], "pool": local[third]["id"]}])
        assert err.status == 431 and "migrateto" in err.error["errortext"]

        moved = admin.migrateVirtualMachineWithVolume(
            virtualmachineid=vm["id"], hostid=target,
            migrateto=[{"volume": root["id"], "pool": local[target]["id"]}])["virtualmachine"]
        assert moved["hostid"] == target and moved["state"] == "Running"
        root = admin.listVolumes(id=root["id"])["volume"][0]
        assert root["storageid"] == local[target]["id"] and root["storagetype"] == "local"

        # Its root volume is now only on that host: a plain live migration
        # cannot take it along.
        err = expect_api_error(admin.migrateVirtualMachine, virtualmachineid=vm["id"],
                               hostid=third)
        assert err.status == 431 and "migrateVirtualMachineWithVolume" in err.error["errortext"]
        assert all(h["requiresStorageMotion"]
                   for h in admin.findHostsForMigration(id=vm["id"])["host"])
        # Unnamed volumes that the destination cannot reach go to its own pool.
        again = admin.migrateVirtualMachineWithVolume(virtualmachineid=vm["id"],
                                                      hostid=third)["virtualmachine"]
        assert again["hostid"] == third
        assert admin.listVolumes(id=root["id"])["volume"][0]["storageid"] == local[third]["id"]
    finally:
        _cleanup(admin, vm)


def test_migrate_volume_moves_the_running_instance_along(admin, env):
    vm = deploy(admin, env, name=unique("mvol"))
    stopped = deploy(admin, env, name=unique("mvol"), startvm=False)
    try:
        pools = admin.listStoragePools(listall=True)["storagepool"]
        local = {p["hostid"]: p for p in pools if p["scope"] == "HOST"}
        other = next(h for h in local if h != vm["hostid"])
        root = admin.listVolumes(virtualmachineid=vm["id"], type="ROOT")["volume"][0]

        err = expect_api_error(admin.migrateVolume, volumeid=root["id"],
                               storageid=local[other]["id"])
        assert err.status == 431 and "livemigrate" in err.error["errortext"]
        err = expect_api_error(admin.migrateVolume, volumeid=root["id"],
                               storageid=local[vm["hostid"]]["id"], livemigrate=True)
        assert err.status == 431 and "own host" in err.error["errortext"]

        moved = admin.migrateVolume(volumeid=root["id"], storageid=local[other]["id"],
                                    livemigrate=True)["volume"]
        assert moved["id"] == root["id"] and moved["storageid"] == local[other]["id"]
        assert get_vm(admin, vm["id"])["hostid"] == other

        # A stopped instance's volume moves on its own, through a host that
        # can use both pools; the instance then starts where it is.
        admin.startVirtualMachine(id=stopped["id"])
        admin.stopVirtualMachine(id=stopped["id"])
        sroot = admin.listVolumes(virtualmachineid=stopped["id"], type="ROOT")["volume"][0]
        third = next(h for h in local if h not in (other,))
        done = admin.migrateVolume(volumeid=sroot["id"], storageid=local[third]["id"])["volume"]
        assert done["storageid"] == local[third]["id"] and done["storagetype"] == "local"
        assert get_vm(admin, stopped["id"])["state"] == "Stopped"
        assert admin.startVirtualMachine(id=stopped["id"])["virtualmachine"]["hostid"] == third
        admin.stopVirtualMachine(id=stopped["id"])
        # Back to the shared pool with migrateVirtualMachine storageid: all of
        # its volumes go.
        cluster = admin.listHosts(id=third)["host"][0]["clusterid"]
        shared = next(p for p in admin.listStoragePools(clusterid=cluster)["storagepool"]
                      if p["scope"] == "CLUSTER")
        back = admin.migrateVirtualMachine(virtualmachineid=stopped["id"],
                                           storageid=shared["id"])["virtualmachine"]
        assert back["state"] == "Stopped"
        vols = admin.listVolumes(virtualmachineid=stopped["id"])["volume"]
        assert {v["storageid"] for v in vols} == {shared["id"]}
        err = expect_api_error(admin.migrateVirtualMachine, virtualmachineid=stopped["id"],
                               storageid=shared["id"])
        assert err.status == 431 and "already" in err.error["errortext"]
    finally:
        _cleanup(admin, vm, stopped)


def test_an_instance_starts_where_its_local_volumes_are(admin, env):
    vm = deploy(admin, env, name=unique("pin"))
    try:
        local = {p["hostid"]: p for p in admin.listStoragePools(listall=True)["storagepool"]
                 if p["scope"] == "HOST"}
        target, other = [h for h in local if h != vm["hostid"]][:2]
        root = admin.listVolumes(virtualmachineid=vm["id"], type="ROOT")["volume"][0]
        admin.migrateVirtualMachineWithVolume(
            virtualmachineid=vm["id"], hostid=target,
            migrateto=[{"volume": root["id"], "pool": local[target]["id"]}])
        for _ in range(3):
            admin.stopVirtualMachine(id=vm["id"])
            assert admin.startVirtualMachine(id=vm["id"])["virtualmachine"]["hostid"] == target
        admin.stopVirtualMachine(id=vm["id"])
        err = expect_api_error(admin.startVirtualMachine, id=vm["id"], hostid=other)
        assert "cannot start elsewhere" in err.error["errortext"], err.error
        assert get_vm(admin, vm["id"])["state"] == "Stopped"
    finally:
        _cleanup(admin, vm)
