"""Affinity groups through PyPI's cs: the API, and placement honouring them."""

from orrery_e2e import deploy, expect_api_error, get_vm, unique


def test_affinity_group_api(admin, env, user):
    types = {t["type"] for t in admin.listAffinityGroupTypes()["affinityGroupType"]}
    assert types == {"host anti-affinity", "host affinity", "non-strict host anti-affinity",
                     "non-strict host affinity"}

    name = unique("ag")
    group = admin.createAffinityGroup(name=name, type="host anti-affinity",
                                      description="web tier")["affinitygroup"]
    assert group["name"] == name and group["type"] == "host anti-affinity"
    assert group["virtualmachineIds"] == []

    err = expect_api_error(admin.createAffinityGroup, name=name, type="host affinity")
    assert err.status == 431 and "already exists" in err.error["errortext"]
    err = expect_api_error(admin.createAffinityGroup, name=unique("ag"), type="rack affinity")
    assert err.status == 431 and "type" in err.error["errortext"]

    vm = deploy(admin, env, name=unique("vm"), startvm=False, affinitygroupids=group["id"])
    assert [g["id"] for g in vm["affinitygroup"]] == [group["id"]]
    listed = admin.listAffinityGroups(virtualmachineid=vm["id"])["affinitygroup"]
    assert [g["id"] for g in listed] == [group["id"]]
    assert listed[0]["virtualmachineIds"] == [vm["id"]]

    err = expect_api_error(lambda **kw: deploy(admin, env, **kw), name=unique("vm"),
                           startvm=False, affinitygroupids=group["id"], affinitygroupnames=name)
    assert err.status == 431 and "mutually exclusive" in err.error["errortext"]

    # Another account's group cannot be used or seen.
    err = expect_api_error(user["api"].deleteAffinityGroup, id=group["id"])
    assert err.status == 431 and "Invalid parameter id value=" in err.error["errortext"]
    assert not user["api"].listAffinityGroups().get("affinitygroup")

    # Changing groups needs a stopped instance.
    other = admin.createAffinityGroup(name=unique("ag"), type="host affinity")["affinitygroup"]
    updated = admin.updateVMAffinityGroup(id=vm["id"], affinitygroupids=other["id"])
    assert [g["id"] for g in updated["virtualmachine"]["affinitygroup"]] == [other["id"]]
    running = deploy(admin, env, name=unique("vm"), startvm=True)
    err = expect_api_error(admin.updateVMAffinityGroup, id=running["id"],
                           affinitygroupids=other["id"])
    assert err.status == 431 and "Stopped" in err.error["errortext"]

    # Deleting a group disassociates its members.
    admin.deleteAffinityGroup(id=other["id"])
    assert get_vm(admin, vm["id"])["affinitygroup"] == []
    admin.deleteAffinityGroup(name=name)
    assert not [g for g in admin.listAffinityGroups(listall=True).get("affinitygroup", [])
                if g["id"] in (group["id"], other["id"])]


def test_strict_anti_affinity_spreads_and_then_refuses(admin, env):
    # The session coordinator has three simulated hosts.
    group = admin.createAffinityGroup(name=unique("spread"),
                                      type="host anti-affinity")["affinitygroup"]
    hosts = set()
    for _ in range(3):
        vm = deploy(admin, env, name=unique("web"), affinitygroupids=group["id"])
        assert vm["state"] == "Running"
        hosts.add(vm["hostid"])
    assert len(hosts) == 3
    err = expect_api_error(lambda **kw: deploy(admin, env, **kw), name=unique("web"),
                           affinitygroupids=group["id"])
    assert err.error["errorcode"] == 533, err.error
    assert "anti-affinity" in err.error["errortext"], err.error["errortext"]


def test_strict_affinity_keeps_members_together(admin, env):
    group = admin.createAffinityGroup(name=unique("together"),
                                      type="host affinity")["affinitygroup"]
    first = deploy(admin, env, name=unique("db"), affinitygroupids=group["id"])
    for _ in range(3):
        vm = deploy(admin, env, name=unique("db"), affinitygroupids=group["id"])
        assert vm["hostid"] == first["hostid"]


def test_concurrent_deploys_never_overcommit_or_break_strict_rules(fresh_coordinator):
    """100 deploys at once against three hosts: every host stays within its
    capacity and a strict anti-affinity group never shares a host."""
    from orrery_e2e import (SUCCEEDED, ClientPool, find_os_type, make_image,
                            register_template, wait_jobs)
    api = fresh_coordinator.client()
    zone = api.listZones()["zone"][0]
    image = make_image(fresh_coordinator.base_dir)
    template = register_template(api, zone["id"], find_os_type(api)["id"], image)
    # 8 cores of 2400 MHz: a 32-core simulated host fits four by CPU.
    big = api.createServiceOffering(name="big", displaytext="big", cpunumber=8, cpuspeed=2400,
                                    memory=1024)["serviceoffering"]
    api.updateConfiguration(name="cluster.cpu.allocated.capacity.disablethreshold", value="1")
    group = api.createAffinityGroup(name="apart", type="host anti-affinity")["affinitygroup"]
    pool = ClientPool(lambda: fresh_coordinator.client(fetch_result=False), workers=32)

    def go(client, i):
        extra = {"affinitygroupids": group["id"]} if i % 2 == 0 else {}
        return client.deployVirtualMachine(zoneid=zone["id"], serviceofferingid=big["id"],
                                           templateid=template["id"], name=f"c-{i:03d}", **extra)
    replies = pool.map(go, range(100))
    jobs = wait_jobs(pool, [r["jobid"] for r in replies], timeout=180)
    ok = [j for j in jobs.values() if j["jobstatus"] == SUCCEEDED]
    failed = [j for j in jobs.values() if j["jobstatus"] != SUCCEEDED]
    assert all(j["jobresult"]["errorcode"] == 533 for j in failed), failed[:2]
    hosts = {h["id"]: h for h in api.listHosts()["host"]}
    vms = api.listVirtualMachines(listall=True, state="Running", fetch_list=True)
    per_host: dict[str, int] = {}
    for vm in vms:
        per_host[vm["hostid"]] = per_host.get(vm["hostid"], 0) + vm["cpunumber"] * vm["cpuspeed"]
    for hid, used in per_host.items():
        assert used <= hosts[hid]["cpunumber"] * hosts[hid]["cpuspeed"], (hid, used)
    assert len(ok) == 12  # three hosts, four each
    members = [vm for vm in vms if any(g["id"] == group["id"] for g in vm["affinitygroup"])]
    assert len(members) == len({vm["hostid"] for vm in members}) <= 3


def test_admin_placement_tools(admin, env):
    vm = deploy(admin, env, name=unique("mig"))
    hosts = admin.findHostsForMigration(id=vm["id"])["host"]
    assert vm["hostid"] not in {h["id"] for h in hosts}
    assert len(hosts) == 2 and all(h["suitableformigration"] for h in hosts)
    assert all("requiresStorageMotion" in h for h in hosts)

    group = admin.createAffinityGroup(name=unique("full"),
                                      type="host anti-affinity")["affinitygroup"]
    for _ in range(3):
        deploy(admin, env, name=unique("full"), affinitygroupids=group["id"])
    waiting = deploy(admin, env, name=unique("wait"), startvm=False,
                     affinitygroupids=group["id"])
    plan = admin.listDeploymentPlan(virtualmachineid=waiting["id"])["host"]
    assert len(plan) == 3 and not any(h["eligible"] for h in plan)
    assert all(any("anti-affinity" in r for r in h["reasons"]) for h in plan), plan

    zone = env.zone["id"]
    report = admin.listClusterHaCapacity(zoneid=zone, perhostlimit=10)["clusterhacapacity"]
    assert report[0]["hosts"] == 3 and report[0]["safeinstances"] == 20
    assert report[0]["headroom"] == 20 - report[0]["instances"]
    err = expect_api_error(admin.listClusterHaCapacity, zoneid=zone, perhostlimit=0)
    assert err.status == 431 and "perhostlimit" in err.error["errortext"]


def test_hosts_preferring_an_os_category_get_its_guests_first(fresh_coordinator):
    from orrery_e2e import find_os_type, make_image, register_template
    api = fresh_coordinator.client()
    zone = api.listZones()["zone"][0]
    os_type = find_os_type(api)
    template = register_template(api, zone["id"], os_type["id"],
                                 make_image(fresh_coordinator.base_dir))
    offering = api.createServiceOffering(name="s", displaytext="s", cpunumber=1, cpuspeed=500,
                                         memory=256)["serviceoffering"]
    hosts = api.listHosts()["host"]
    preferred = hosts[1]
    api.updateHost(id=preferred["id"], oscategoryid=os_type["oscategoryid"])
    assert api.listHosts(id=preferred["id"])["host"][0]["oscategoryid"] == os_type["oscategoryid"]
    for i in range(5):
        vm = api.deployVirtualMachine(zoneid=zone["id"], serviceofferingid=offering["id"],
                                      templateid=template["id"], name=f"os-{i}")["virtualmachine"]
        assert vm["hostid"] == preferred["id"]
