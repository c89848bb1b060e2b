"""GPU service offerings through the API, on simulated hosts (which have no
GPUs): the offering's fields as CloudStack lists them, placement refusing
for want of GPUs, the offline change to a GPU offering, and the refusals
the specification lists (no dynamic scaling to or from GPUs). Assigning
devices on a host is the agent's part (agent/src/gpuassign.rs tests)."""

from __future__ import annotations

from orrery_e2e import deploy, expect_api_error, unique


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
