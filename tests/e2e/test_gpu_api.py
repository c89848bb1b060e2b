"""GPU service offerings through the API, on simulated hosts (which have no
GPUs): the offering's fields as CloudStack lists them, placement refusing
for want of GPUs, the offline change to a GPU offering, and the refusals
the specification lists (no dynamic scaling to or from GPUs). Assigning
devices on a host is the agent's part (agent/src/gpuassign.rs tests)."""

from __future__ import annotations

import pytest

from orrery_e2e import Coordinator, deploy, expect_api_error, find_os_type, register_template, unique


def test_gpu_offerings_and_their_rules(admin, env):
    gpu = admin.createServiceOffering(name=unique("gpu"), displaytext="gpu", cpunumber=1,
                                      cpuspeed=500, memory=256, gpucount=2,
                                      gpudisplay=True)["serviceoffering"]
    assert gpu["gpucount"] == 2 and gpu["gpudisplay"] is True, gpu
    listed = admin.listServiceOfferings(id=gpu["id"])["serviceoffering"][0]
    assert listed["gpucount"] == 2
    vgpu = admin.createServiceOffering(
        name=unique("vgpu"), displaytext="vgpu", cpunumber=1, cpuspeed=500, memory=256,
        serviceofferingdetails={"vgpuType": "GRID T4-1B"})["serviceoffering"]
    assert vgpu["vgpuprofilename"] == "GRID T4-1B", vgpu
    assert vgpu["serviceofferingdetails"]["vgpuType"] == "GRID T4-1B"
    plain = admin.listServiceOfferings(id=env.offering["id"])["serviceoffering"][0]
    assert "gpucount" not in plain

    err = expect_api_error(admin.createServiceOffering, name=unique("bad"), displaytext="bad",
                           cpunumber=1, cpuspeed=500, memory=256, gpucount=17)
    assert err.status == 431 and "gpucount" in err.error["errortext"], err

    # No simulated host has a GPU: placement says so.
    for offering in (gpu, vgpu):
        err = expect_api_error(admin.deployVirtualMachine,
                               **env.deploy_args(serviceofferingid=offering["id"], name=unique("g")))
        assert err.error["errorcode"] == 533, err
        assert "GPU" in err.error["errortext"] or "vGPU" in err.error["errortext"], err

    # A running instance is not scaled to a GPU offering; a stopped one
    # changes offline, and then waits for a host with GPUs.
    vm = deploy(admin, env, name=unique("later"))
    err = expect_api_error(admin.scaleVirtualMachine, id=vm["id"], serviceofferingid=gpu["id"])
    assert err.status == 431 and "GPU" in err.error["errortext"], err
    admin.stopVirtualMachine(id=vm["id"])
    changed = admin.changeServiceForVirtualMachine(id=vm["id"], serviceofferingid=gpu["id"])[
        "virtualmachine"]
    assert changed["serviceofferingid"] == gpu["id"]
    err = expect_api_error(admin.startVirtualMachine, id=vm["id"])
    assert err.error["errorcode"] == 533, err
    assert admin.listVirtualMachines(id=vm["id"])["virtualmachine"][0]["state"] == "Stopped"
    # And back to a plain one.
    admin.changeServiceForVirtualMachine(id=vm["id"], serviceofferingid=env.offering["id"])
    assert admin.startVirtualMachine(id=vm["id"])["virtualmachine"]["state"] == "Running"


def test_an_accounts_gpu_limit_holds(admin, coordinator, env):
    from orrery_e2e import create_account
    acct = create_account(admin, accounttype=0)
    api = coordinator.client(acct["apikey"], acct["secretkey"])
    gpu = admin.createServiceOffering(name=unique("gpu1"), displaytext="gpu", cpunumber=1,
                                      cpuspeed=500, memory=256, gpucount=1)["serviceoffering"]
    limits = api.listResourceLimits()["resourcelimit"]
    assert limits == [{"resourcetype": "16", "resourcetypename": "gpu", "max": -1,
                       "account": acct["name"], "domainid": acct["domainid"],
                       "domain": limits[0]["domain"]}], limits
    set_ = admin.updateResourceLimit(resourcetype=16, max=0, account=acct["name"],
                                     domainid=acct["domainid"])["resourcelimit"]
    assert set_["max"] == 0
    err = expect_api_error(api.updateResourceLimit, resourcetype=16, max=5,
                           account=acct["name"], domainid=acct["domainid"])
    assert err.status in (401, 531), err
    err = expect_api_error(admin.updateResourceLimit, resourcetype=8, max=5,
                           account=acct["name"], domainid=acct["domainid"])
    assert err.status == 431 and "resourcetype" in err.error["errortext"], err
    # Over the limit before any host is asked.
    err = expect_api_error(api.deployVirtualMachine,
                           **env.deploy_args(serviceofferingid=gpu["id"], name=unique("g")))
    assert err.status == 535 and "'gpu'" in err.error["errortext"], err
    vm = deploy(api, env, name=unique("nogpu"))
    api.stopVirtualMachine(id=vm["id"])
    err = expect_api_error(api.changeServiceForVirtualMachine, id=vm["id"], serviceofferingid=gpu["id"])
    assert err.status == 535, err
    admin.updateResourceLimit(resourcetype="gpu", max=1, account=acct["name"], domainid=acct["domainid"])
    api.changeServiceForVirtualMachine(id=vm["id"], serviceofferingid=gpu["id"])


def test_a_domains_gpu_limit_covers_its_accounts(admin, coordinator, env):
    dom = admin.createDomain(name=unique("gpudom"))["domain"]
    people = []
    for _ in range(2):
        name = unique("gpuacct")
        acct = admin.createAccount(accounttype=0, account=name, username=name, password="Pa55-word-1",
                                   email=f"{name}@example.com", firstname="G", lastname="P",
                                   domainid=dom["id"])["account"]
        keys = admin.registerUserKeys(id=acct["user"][0]["id"])["userkeys"]
        people.append((acct, coordinator.client(keys["apikey"], keys["secretkey"])))
    gpu = admin.createServiceOffering(name=unique("gpu1"), displaytext="gpu", cpunumber=1,
                                      cpuspeed=500, memory=256, gpucount=1)["serviceoffering"]
    limit = admin.updateResourceLimit(resourcetype=16, max=1, domainid=dom["id"])["resourcelimit"]
    assert limit["max"] == 1 and limit["domainid"] == dom["id"] and "account" not in limit
    assert admin.listResourceLimits(domainid=dom["id"])["resourcelimit"][0]["max"] == 1
    vms = []
    for acct, api in people:
        vm = deploy(api, env, name=unique("d"))
        api.stopVirtualMachine(id=vm["id"])
        vms.append(vm)
    # The first account takes the domain's one GPU; the second is refused.
    people[0][1].changeServiceForVirtualMachine(id=vms[0]["id"], serviceofferingid=gpu["id"])
    err = expect_api_error(people[1][1].changeServiceForVirtualMachine, id=vms[1]["id"],
                           serviceofferingid=gpu["id"])
    assert err.status == 535 and "Domain Resource Limit = 1" in err.error["errortext"], err
    # Destroyed instances hold nothing.
    people[0][1].destroyVirtualMachine(id=vms[0]["id"])
    people[1][1].changeServiceForVirtualMachine(id=vms[1]["id"], serviceofferingid=gpu["id"])


@pytest.fixture(scope="module")
def gpu_cloud(tmp_path_factory, image):
    """A coordinator of its own whose two simulated hosts have two GPUs each
    (and a card offering the vGPU type GRID T4-1B with room for four)."""
    c = Coordinator(tmp_path_factory.mktemp("gpucloud"), hosts=2)
    c.config = {"simulated_gpus": 2}
    c.init()
    c.start()
    api = c.client()
    zone = api.listZones()["zone"][0]
    os_type = find_os_type(api)
    tmpl = register_template(api, zone["id"], os_type["id"], image)
    yield {"c": c, "api": api, "zone": zone, "template": tmpl}
    c.stop()


def test_gpus_are_placed_by_capacity_and_not_moved_live(gpu_cloud):
    api = gpu_cloud["api"]
    hosts = api.listHosts(type="Routing")["host"]
    assert all(h["gputotal"] == 3 for h in hosts), hosts
    two = api.createServiceOffering(name=unique("two"), displaytext="two", cpunumber=1,
                                    cpuspeed=500, memory=256, gpucount=2)["serviceoffering"]
    plain = api.createServiceOffering(name=unique("plain"), displaytext="plain", cpunumber=1,
                                      cpuspeed=500, memory=256)["serviceoffering"]
    args = {"zoneid": gpu_cloud["zone"]["id"], "templateid": gpu_cloud["template"]["id"]}
    a = api.deployVirtualMachine(serviceofferingid=two["id"], name=unique("a"), **args)["virtualmachine"]
    b = api.deployVirtualMachine(serviceofferingid=two["id"], name=unique("b"), **args)["virtualmachine"]
    # Two GPUs each: one instance per host, then none left.
    assert a["hostid"] != b["hostid"], (a["hostid"], b["hostid"])
    for h in api.listHosts(type="Routing")["host"]:
        passthrough = [t for g in h["gpugroup"] for t in g["vgpu"] if t["vgputype"] == "passthrough"]
        assert passthrough == [{"vgputype": "passthrough", "maxcapacity": 2, "remainingcapacity": 0}], h
    err = expect_api_error(api.deployVirtualMachine, serviceofferingid=two["id"], name=unique("c"), **args)
    assert err.error["errorcode"] == 533 and "GPU" in err.error["errortext"], err
    # Live migration of a GPU instance is refused with the specification's reason.
    err = expect_api_error(api.migrateVirtualMachine, virtualmachineid=a["id"])
    assert err.status == 431 and "Live migration of GPU/vGPU enabled Instance is not supported" in \
        err.error["errortext"], err
    # A stopped one frees its GPUs for the next (their devices are released).
    api.stopVirtualMachine(id=a["id"])
    c = api.deployVirtualMachine(serviceofferingid=two["id"], name=unique("c"), **args)["virtualmachine"]
    assert c["hostid"] == a["hostid"]
    err = expect_api_error(api.startVirtualMachine, id=a["id"])
    assert err.error["errorcode"] == 533, err
    # vGPU: placed on a host offering the type.
    vgpu = api.createServiceOffering(name=unique("vgpu"), displaytext="vgpu", cpunumber=1,
                                     cpuspeed=500, memory=256,
                                     serviceofferingdetails={"vgpuType": "GRID T4-1B"})["serviceoffering"]
    v = api.deployVirtualMachine(serviceofferingid=vgpu["id"], name=unique("v"), **args)["virtualmachine"]
    assert v["state"] == "Running"
    other = api.createServiceOffering(name=unique("a100"), displaytext="a100", cpunumber=1,
                                      cpuspeed=500, memory=256,
                                      serviceofferingdetails={"vgpuType": "GRID A100-40C"})["serviceoffering"]
    err = expect_api_error(api.deployVirtualMachine, serviceofferingid=other["id"], name=unique("x"), **args)
    assert err.error["errorcode"] == 533 and "vGPU" in err.error["errortext"], err
    # Plain instances still go to these hosts (they are all there is).
    assert api.deployVirtualMachine(serviceofferingid=plain["id"], name=unique("p"), **args)[
        "virtualmachine"]["state"] == "Running"
    # Each host's card holds four GRID T4-1B: eight in all, then none, with
    # the reason; listHosts counts them down; a stopped one frees its device.
    held = [v] + [api.deployVirtualMachine(serviceofferingid=vgpu["id"], name=unique("v"),
                                           **args)["virtualmachine"] for _ in range(7)]
    assert sorted(x["hostid"] for x in held).count(held[0]["hostid"]) == 4, held
    for h in api.listHosts(type="Routing")["host"]:
        t4 = [t for g in h["gpugroup"] for t in g["vgpu"] if t["vgputype"] == "GRID T4-1B"]
        assert t4 == [{"vgputype": "GRID T4-1B", "maxcapacity": 4, "remainingcapacity": 0}], h
    err = expect_api_error(api.deployVirtualMachine, serviceofferingid=vgpu["id"], name=unique("v"), **args)
    assert err.error["errorcode"] == 533 and \
        "all 4 vGPUs of type 'GRID T4-1B' in use" in err.error["errortext"], err
    api.stopVirtualMachine(id=held[3]["id"])
    again = api.deployVirtualMachine(serviceofferingid=vgpu["id"], name=unique("v"), **args)["virtualmachine"]
    assert again["hostid"] == held[3]["hostid"]
    err = expect_api_error(api.startVirtualMachine, id=held[3]["id"])
    assert err.error["errorcode"] == 533, err
