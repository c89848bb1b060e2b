"""changeServiceForVirtualMachine / upgradeVirtualMachine through PyPI's cs:
CloudStack's rules for changing a stopped instance's compute offering, and
who may do it."""

from orrery_e2e import deploy, expect_api_error, get_vm, unique


def offering(admin, **params):
    base = {"name": unique("so"), "displaytext": "offering change", "cpuspeed": 500}
    base.update(params)
    return admin.createServiceOffering(**base)["serviceoffering"]


def test_stopped_instance_takes_a_new_offering(admin, env):
    vm = deploy(admin, env, name=unique("chg"), startvm=False)
    bigger = offering(admin, cpunumber=2, memory=512)
    try:
        changed = admin.changeServiceForVirtualMachine(
            id=vm["id"], serviceofferingid=bigger["id"])["virtualmachine"]
        assert changed["serviceofferingid"] == bigger["id"]
        assert (changed["cpunumber"], changed["memory"]) == (2, 512)
        listed = get_vm(admin, vm["id"])
        assert (listed["cpunumber"], listed["memory"]) == (2, 512)
        events = admin.listEvents(type="VM.UPGRADE", listall=True).get("event", [])
        assert any(bigger["name"] in e["description"] for e in events)

        err = expect_api_error(admin.changeServiceForVirtualMachine, id=vm["id"],
                               serviceofferingid=bigger["id"])
        assert err.status == 431 and "already has offering" in err.error["errortext"]

        # upgradeVirtualMachine is the same operation.
        back = admin.upgradeVirtualMachine(id=vm["id"],
                                           serviceofferingid=env.offering["id"])
        assert back["virtualmachine"]["serviceofferingid"] == env.offering["id"]
    finally:
        admin.destroyVirtualMachine(id=vm["id"], expunge=True)


def test_custom_offerings_need_sizes_within_limits(admin, env):
    vm = deploy(admin, env, name=unique("chg"), startvm=False)
    custom = admin.createServiceOffering(
        name=unique("so"), displaytext="custom", customized=True, mincpunumber=1,
        maxcpunumber=4, minmemory=128, maxmemory=2048)["serviceoffering"]
    try:
        err = expect_api_error(admin.changeServiceForVirtualMachine, id=vm["id"],
                               serviceofferingid=custom["id"])
        assert err.status == 431 and "cpuNumber" in err.error["errortext"]
        err = expect_api_error(admin.changeServiceForVirtualMachine, id=vm["id"],
                               serviceofferingid=custom["id"],
                               details={"cpuNumber": "8", "memory": "512"})
        assert err.status == 431 and "1 to 4" in err.error["errortext"]
        done = admin.changeServiceForVirtualMachine(
            id=vm["id"], serviceofferingid=custom["id"],
            details={"cpuNumber": "3", "cpuSpeed": "700", "memory": "768"})["virtualmachine"]
        assert (done["cpunumber"], done["cpuspeed"], done["memory"]) == (3, 700, 768)
        # A custom offering may be given again with other sizes.
        again = admin.changeServiceForVirtualMachine(
            id=vm["id"], serviceofferingid=custom["id"],
            details={"cpuNumber": "2", "memory": "256"})["virtualmachine"]
        assert (again["cpunumber"], again["memory"]) == (2, 256)
    finally:
        admin.destroyVirtualMachine(id=vm["id"], expunge=True)


def test_running_instances_and_storage_rules_are_refused(admin, env):
    running = deploy(admin, env, name=unique("chg"))
    tagged = offering(admin, cpunumber=1, memory=256, tags="ssd")
    stopped = deploy(admin, env, name=unique("chg"), startvm=False,
                     serviceofferingid=tagged["id"])
    other_tags = offering(admin, cpunumber=1, memory=512, tags="hdd")
    local = offering(admin, cpunumber=1, memory=512, tags="ssd", storagetype="local")
    more_tags = offering(admin, cpunumber=1, memory=512, tags="ssd,fast")
    try:
        err = expect_api_error(admin.changeServiceForVirtualMachine, id=running["id"],
                               serviceofferingid=other_tags["id"])
        assert err.status == 431 and "stop it first" in err.error["errortext"]
        assert get_vm(admin, running["id"])["serviceofferingid"] == env.offering["id"]

        err = expect_api_error(admin.changeServiceForVirtualMachine, id=stopped["id"],
                               serviceofferingid=other_tags["id"])
        assert err.status == 431 and "subset" in err.error["errortext"]
        err = expect_api_error(admin.changeServiceForVirtualMachine, id=stopped["id"],
                               serviceofferingid=local["id"])
        assert err.status == 431 and "local storage" in err.error["errortext"]
        ok = admin.changeServiceForVirtualMachine(id=stopped["id"],
                                                  serviceofferingid=more_tags["id"])
        assert ok["virtualmachine"]["serviceofferingid"] == more_tags["id"]
    finally:
        for vm in (running, stopped):
            admin.destroyVirtualMachine(id=vm["id"], expunge=True)


def test_strict_host_tags_are_checked_against_the_last_host(admin, env):
    vm = deploy(admin, env, name=unique("chg"))
    admin.stopVirtualMachine(id=vm["id"])
    needs_gpu = offering(admin, cpunumber=1, memory=256, hosttags="gpu-x1")
    admin.updateConfiguration(name="vm.strict.host.tags", value="gpu-x1")
    try:
        err = expect_api_error(admin.changeServiceForVirtualMachine, id=vm["id"],
                               serviceofferingid=needs_gpu["id"])
        assert err.status == 431, err.error
        assert "gpu-x1" in err.error["errortext"] and "strict" in err.error["errortext"]
        assert get_vm(admin, vm["id"])["serviceofferingid"] == env.offering["id"]
        # Not strict: the change is allowed (placement applies the tag later).
        admin.updateConfiguration(name="vm.strict.host.tags", value="")
        ok = admin.changeServiceForVirtualMachine(id=vm["id"], serviceofferingid=needs_gpu["id"])
        assert ok["virtualmachine"]["serviceofferingid"] == needs_gpu["id"]
    finally:
        admin.updateConfiguration(name="vm.strict.host.tags", value="")
        admin.destroyVirtualMachine(id=vm["id"], expunge=True)


def test_other_accounts_cannot_change_or_use_what_they_cannot_see(admin, env, user):
    mine = deploy(admin, env, name=unique("chg"), startvm=False)
    theirs = deploy(user["api"], env, name=unique("chg"), startvm=False)
    sub = admin.createDomain(name=unique("dom"))["domain"]
    scoped = offering(admin, cpunumber=1, memory=512, domainid=sub["id"])
    try:
        err = expect_api_error(user["api"].changeServiceForVirtualMachine, id=mine["id"],
                               serviceofferingid=env.offering["id"])
        assert err.status == 431 and "id" in err.error["errortext"]
        err = expect_api_error(user["api"].changeServiceForVirtualMachine, id=theirs["id"],
                               serviceofferingid=scoped["id"])
        assert err.status == 431 and "serviceofferingid" in err.error["errortext"]
        assert get_vm(admin, theirs["id"])["serviceofferingid"] == env.offering["id"]
    finally:
        for vm in (mine, theirs):
            admin.destroyVirtualMachine(id=vm["id"], expunge=True)
        admin.deleteServiceOffering(id=scoped["id"])


def test_scaling_a_running_instance(admin, env, image, zone, os_type):
    from orrery_e2e import register_template
    template = register_template(admin, zone["id"], os_type["id"], image)
    admin.updateTemplate(id=template["id"], isdynamicallyscalable=True)
    small = offering(admin, cpunumber=1, memory=256)
    big = offering(admin, cpunumber=2, memory=512)
    smaller = offering(admin, cpunumber=1, memory=128)
    fixed = offering(admin, cpunumber=4, memory=1024, dynamicscalingenabled=False)

    def launch(**extra):
        return admin.deployVirtualMachine(zoneid=zone["id"], serviceofferingid=small["id"],
                                          templateid=template["id"], name=unique("scale"),
                                          **extra)["virtualmachine"]
    vm = launch()
    rigid = launch(dynamicscalingenabled=False)
    try:
        assert vm["isdynamicallyscalable"] is True and rigid["isdynamicallyscalable"] is False
        err = expect_api_error(admin.scaleVirtualMachine, id=vm["id"],
                               serviceofferingid=big["id"])
        assert err.status == 431 and "enable.dynamic.scale.vm" in err.error["errortext"]

        admin.updateConfiguration(name="enable.dynamic.scale.vm", value="true")
        scaled = admin.scaleVirtualMachine(id=vm["id"],
                                           serviceofferingid=big["id"])["virtualmachine"]
        assert (scaled["cpunumber"], scaled["memory"], scaled["state"]) == (2, 512, "Running")
        assert scaled["serviceofferingid"] == big["id"]
        events = admin.listEvents(type="VM.DYNAMIC.SCALE", listall=True).get("event", [])
        assert any(vm["id"] in e["description"] for e in events)

        err = expect_api_error(admin.scaleVirtualMachine, id=vm["id"],
                               serviceofferingid=smaller["id"])
        assert err.status == 431 and "Only scaling up" in err.error["errortext"]
        err = expect_api_error(admin.scaleVirtualMachine, id=vm["id"],
                               serviceofferingid=fixed["id"])
        assert err.status == 431 and "dynamic scaling" in err.error["errortext"]
        err = expect_api_error(admin.scaleVirtualMachine, id=rigid["id"],
                               serviceofferingid=big["id"])
        assert err.status == 431 and "not dynamically scalable" in err.error["errortext"]
        assert get_vm(admin, rigid["id"])["memory"] == 256

        # A stopped instance simply takes the offering, scalable or not.
        admin.stopVirtualMachine(id=rigid["id"])
        done = admin.scaleVirtualMachine(id=rigid["id"], serviceofferingid=big["id"])
        assert done["virtualmachine"]["memory"] == 512
    finally:
        admin.updateConfiguration(name="enable.dynamic.scale.vm", value="false")
        for v in (vm, rigid):
            admin.destroyVirtualMachine(id=v["id"], expunge=True)


def test_volatile_offering_resets_the_root_disk_on_reboot(admin, env):
    volatile = offering(admin, cpunumber=1, memory=256, isvolatile=True)
    assert volatile["isvolatile"] is True
    listed = admin.listServiceOfferings(id=volatile["id"])["serviceoffering"][0]
    assert listed["isvolatile"] is True
    vm = deploy(admin, env, name=unique("vol"), serviceofferingid=volatile["id"])
    try:
        rebooted = admin.rebootVirtualMachine(id=vm["id"])["virtualmachine"]
        assert rebooted["state"] == "Running"
        events = admin.listEvents(type="VM.REBOOT", listall=True).get("event", [])
        assert any("new root disk" in e["description"] and vm["id"] in e["description"]
                   for e in events), events
        # A plain offering's reboot keeps the disk.
        plain = deploy(admin, env, name=unique("vol"))
        admin.rebootVirtualMachine(id=plain["id"])
        events = admin.listEvents(type="VM.REBOOT", listall=True).get("event", [])
        assert not any("new root disk" in e["description"] and plain["id"] in e["description"]
                       for e in events)
        admin.destroyVirtualMachine(id=plain["id"], expunge=True)
    finally:
        admin.destroyVirtualMachine(id=vm["id"], expunge=True)


def test_scaling_moves_to_a_host_with_room_first(fresh_coordinator, image):
    """The instance's host is full: with scale.retry the instance first
    moves within its cluster, then grows there; with scale.retry=0 it stays
    as it was and the job says why."""
    from orrery_e2e import create_service_offering, find_os_type, register_template
    admin = fresh_coordinator.client()
    zone = admin.listZones()["zone"][0]
    template = register_template(admin, zone["id"], find_os_type(admin)["id"], image)
    admin.updateTemplate(id=template["id"], isdynamicallyscalable=True)
    admin.updateConfiguration(name="enable.dynamic.scale.vm", value="true")
    host = admin.listHosts(type="Routing")["host"][0]
    cores = host["cpunumber"]
    filler = create_service_offering(admin, cpunumber=cores - 1, cpuspeed=host["cpuspeed"],
                                     memory=1024)
    small = offering(admin, cpunumber=1, memory=256)
    big = offering(admin, cpunumber=2, cpuspeed=host["cpuspeed"], memory=512)

    def launch(off):
        return admin.deployVirtualMachine(zoneid=zone["id"], serviceofferingid=off["id"],
                                          templateid=template["id"], name=unique("room"),
                                          hostid=host["id"])["virtualmachine"]
    launch(filler)
    vm = launch(small)
    admin.updateConfiguration(name="scale.retry", value="0")
    err = expect_api_error(admin.scaleVirtualMachine, id=vm["id"], serviceofferingid=big["id"])
    assert "lacks room" in err.error["errortext"], err.error
    still = get_vm(admin, vm["id"])
    assert (still["hostid"], still["memory"], still["state"]) == (host["id"], 256, "Running")

    admin.updateConfiguration(name="scale.retry", value="2")
    scaled = admin.scaleVirtualMachine(id=vm["id"], serviceofferingid=big["id"])["virtualmachine"]
    assert scaled["hostid"] != host["id"]
    assert (scaled["cpunumber"], scaled["memory"], scaled["state"]) == (2, 512, "Running")
