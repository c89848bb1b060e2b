"""User data through PyPI's cs: checked as CloudStack checks it (base64, the
GET limit, vm.userdata.max.length), the user data library with variables,
templates' links with ALLOWOVERRIDE / APPEND / DENYOVERRIDE, deploy with
userdataid + userdatadetails, updates and resets, and who may see what.
What the guest receives is the lab's part (metadata service, config drive)."""

from __future__ import annotations

import base64

import pytest

from orrery_e2e import (
    create_account,
    deploy,
    expect_api_error,
    get_vm,
    unique,
    wait_for,
)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def unb64(text: str) -> str:
    return base64.b64decode(text).decode()


@pytest.fixture(scope="module")
def tenant(admin, coordinator):
    acct = create_account(admin, accounttype=0)
    acct["api"] = coordinator.client(acct["apikey"], acct["secretkey"])
    return acct


def vm_userdata(api, vm_id):
    return api.getVirtualMachineUserData(virtualmachineid=vm_id)["virtualmachineuserdata"][
        "userdata"]


def test_register_list_and_refuse_bad_content(tenant, admin, coordinator):
    api = tenant["api"]
    name = unique("ud")
    content = "#cloud-config\nhostname: {{ ds.meta_data.variable1 }}\n"
    ud = api.registerUserData(name=name, userdata=b64(content), params="variable1")["userdata"]
    assert ud["name"] == name and ud["params"] == "variable1"
    assert unb64(ud["userdata"]) == content
    assert api.listUserData(id=ud["id"])["userdata"][0]["name"] == name
    err = expect_api_error(api.registerUserData, name=unique("bad"), userdata="not base64 !")
    assert err.status == 431 and "userdata" in err.error["errortext"], err
    assert "base64" in err.error["errortext"], err
    err = expect_api_error(api.registerUserData, name=unique("bad"), userdata=b64("x"),
                           params="instance_id")
    assert err.status == 431 and "params" in err.error["errortext"], err
    err = expect_api_error(api.registerUserData, name=name, userdata=b64("x"))
    assert err.status == 431 and name in err.error["errortext"], err
    # Over 4 KiB of base64 does not fit a GET request.
    big = b64("#!/bin/sh\n" + "echo x\n" * 700)
    assert len(big) > 4096
    err = expect_api_error(api.registerUserData, name=unique("big"), userdata=big)
    assert err.status == 431 and "GET" in err.error["errortext"], err
    # Another tenant sees none of it.
    other = create_account(admin, accounttype=0)
    other_api = coordinator.client(other["apikey"], other["secretkey"])
    assert not other_api.listUserData(listall=True).get("userdata")
    err = expect_api_error(other_api.deleteUserData, id=ud["id"])
    assert err.status in (431, 531), err
    assert api.listUserData(id=ud["id"])["userdata"]


def test_post_takes_larger_user_data_up_to_the_setting(tenant, admin, coordinator, env):
    api = tenant["api"]
    big = b64("#!/bin/sh\n" + "echo x\n" * 700)
    # cs sends the same signed parameters as a form body.
    api.method = "post"
    try:
        ud = api.registerUserData(name=unique("post"), userdata=big)["userdata"]
        assert ud["userdata"] == big
        admin.updateConfiguration(name="vm.userdata.max.length", value="5000")
        err = expect_api_error(api.registerUserData, name=unique("post"), userdata=big)
        assert err.status == 431 and "vm.userdata.max.length" in err.error["errortext"], err
    finally:
        admin.updateConfiguration(name="vm.userdata.max.length", value="32768")
        api.method = "get"


def test_deploy_with_registered_user_data_and_variables(tenant, admin, env):
    api = tenant["api"]
    ud = api.registerUserData(name=unique("vars"), userdata=b64("#cloud-config\nx: 1\n"),
                              params="variable1,variable2")["userdata"]
    args = env.deploy_args(name=unique("vm"), userdataid=ud["id"])
    err = expect_api_error(api.deployVirtualMachine,
                           **args, **{"userdatadetails[0].variable1": "a"})
    assert err.status == 431 and "variable2" in err.error["errortext"], err
    err = expect_api_error(api.deployVirtualMachine, **args,
                           **{"userdatadetails[0].variable1": "a",
                              "userdatadetails[0].variable2": "b",
                              "userdatadetails[0].other": "c"})
    assert err.status == 431 and "other" in err.error["errortext"], err
    err = expect_api_error(api.deployVirtualMachine, **args, userdata=b64("x"))
    assert err.status == 431 and "userdata" in err.error["errortext"], err
    vm = deploy(api, env, name=unique("vm"), userdataid=ud["id"],
                **{"userdatadetails[0].variable1": "a", "userdatadetails[0].variable2": "b"})
    listed = get_vm(api, vm["id"])
    assert listed["userdataid"] == ud["id"] and listed["userdataname"] == ud["name"]
    assert listed["userdatadetails"] == "{variable1=a, variable2=b}"
    assert vm_userdata(api, vm["id"]) == ud["userdata"]
    # In use: not deleted.
    err = expect_api_error(api.deleteUserData, id=ud["id"])
    assert err.status == 536 and vm["id"] in err.error["errortext"], err
    # Reset needs a stopped instance; then it replaces the content.
    err = expect_api_error(api.resetUserDataForVirtualMachine, id=vm["id"], userdata=b64("y"))
    assert "Stopped" in str(err.error), err
    api.stopVirtualMachine(id=vm["id"])
    reset = api.resetUserDataForVirtualMachine(id=vm["id"], userdata=b64("#!/bin/sh\ntrue\n"))
    assert unb64(vm_userdata(api, vm["id"])) == "#!/bin/sh\ntrue\n"
    assert "userdataid" not in reset["virtualmachine"]
    api.deleteUserData(id=ud["id"])
    admin.destroyVirtualMachine(id=vm["id"], expunge=True)


@pytest.fixture()
def linked_template(tenant, admin, env, image, os_type, zone):
    """A template of the tenant's own, for linking."""
    t = admin.registerTemplate(
        name=unique("ud-tmpl"), displaytext="linked", url=image.url, format=image.format,
        hypervisor="Simulator", ostypeid=os_type["id"], zoneid=zone["id"],
        account=tenant["name"], domainid=tenant["domainid"])["template"][0]
    wait_for(lambda: admin.listTemplates(templatefilter="all", id=t["id"])
             ["template"][0]["isready"], 60, "the template never became ready")
    yield t
    admin.deleteTemplate(id=t["id"])


def test_template_policies(tenant, admin, env, linked_template):
    api = tenant["api"]
    base = api.registerUserData(name=unique("base"), userdata=b64("#cloud-config\nbase: 1\n"))[
        "userdata"]
    own = b64("#!/bin/sh\necho own\n")
    args = lambda: dict(zoneid=env.zone["id"], serviceofferingid=env.offering["id"],  # noqa: E731
                        templateid=linked_template["id"], name=unique("vm"))
    err = expect_api_error(api.linkUserDataToTemplate, templateid=linked_template["id"],
                           userdataid=base["id"], userdatapolicy="SOMETIMES")
    assert err.status == 431 and "userdatapolicy" in err.error["errortext"], err

    # ALLOWOVERRIDE: the instance's own user data wins; without it, the template's.
    t = api.linkUserDataToTemplate(templateid=linked_template["id"], userdataid=base["id"],
                                   userdatapolicy="ALLOWOVERRIDE")["template"]
    assert t["userdataid"] == base["id"] and t["userdatapolicy"] == "ALLOWOVERRIDE"
    vm1 = api.deployVirtualMachine(**args(), userdata=own)["virtualmachine"]
    assert vm_userdata(api, vm1["id"]) == own
    vm2 = api.deployVirtualMachine(**args())["virtualmachine"]
    assert vm_userdata(api, vm2["id"]) == base["userdata"]
    assert get_vm(api, vm2["id"])["userdatapolicy"] == "ALLOWOVERRIDE"

    # APPEND: one multipart message, the template's part first.
    api.linkUserDataToTemplate(templateid=linked_template["id"], userdataid=base["id"],
                               userdatapolicy="APPEND")
    vm3 = api.deployVirtualMachine(**args(), userdata=own)["virtualmachine"]
    merged = unb64(vm_userdata(api, vm3["id"]))
    assert merged.startswith("Content-Type: multipart/mixed"), merged
    assert merged.index("base: 1") < merged.index("echo own"), merged
    assert "text/cloud-config" in merged and "text/x-shellscript" in merged

    # DENYOVERRIDE: own user data refused, nothing deployed.
    api.linkUserDataToTemplate(templateid=linked_template["id"], userdataid=base["id"],
                               userdatapolicy="DENYOVERRIDE")
    before = len(api.listVirtualMachines().get("virtualmachine", []))
    err = expect_api_error(api.deployVirtualMachine, **args(), userdata=own)
    assert err.status == 431 and "DENYOVERRIDE" in err.error["errortext"], err
    assert len(api.listVirtualMachines().get("virtualmachine", [])) == before
    vm4 = api.deployVirtualMachine(**args())["virtualmachine"]
    assert vm_userdata(api, vm4["id"]) == base["userdata"]

    # In use by instances, then by the template's link: not deleted.
    err = expect_api_error(api.deleteUserData, id=base["id"])
    assert err.status == 536 and vm2["id"] in err.error["errortext"], err
    for vm in (vm1, vm2, vm3, vm4):
        admin.destroyVirtualMachine(id=vm["id"], expunge=True)
    err = expect_api_error(api.deleteUserData, id=base["id"])
    assert err.status == 536 and linked_template["id"] in err.error["errortext"], err
    # Unlinked, deploys take none from the template, and it can go.
    t = api.linkUserDataToTemplate(templateid=linked_template["id"])["template"]
    assert "userdataid" not in t
    vm5 = api.deployVirtualMachine(**args())["virtualmachine"]
    assert vm_userdata(api, vm5["id"]) is None
    admin.destroyVirtualMachine(id=vm5["id"], expunge=True)
    api.deleteUserData(id=base["id"])


def test_update_virtual_machine_user_data_is_checked(tenant, admin, env):
    api = tenant["api"]
    vm = deploy(api, env, name=unique("upd"))
    err = expect_api_error(api.updateVirtualMachine, id=vm["id"], userdata="%%%")
    assert err.status == 431 and "userdata" in err.error["errortext"], err
    api.updateVirtualMachine(id=vm["id"], userdata=b64("#!/bin/sh\nexit 0\n"))
    assert unb64(vm_userdata(api, vm["id"])) == "#!/bin/sh\nexit 0\n"
    admin.destroyVirtualMachine(id=vm["id"], expunge=True)


def test_network_offerings_name_their_user_data_provider(admin, tenant):
    name = unique("cfgdrive")
    o = admin.createNetworkOffering(
        name=name, displaytext=name, guestiptype="Isolated", traffictype="Guest",
        **{"serviceproviderlist[0].service": "UserData", "serviceproviderlist[0].provider": "ConfigDrive",
           "serviceproviderlist[1].service": "Dhcp", "serviceproviderlist[1].provider": "VirtualRouter"},
    )["networkoffering"]
    services = {s["name"]: [p["name"] for p in s["provider"]] for s in o["service"]}
    assert services == {"UserData": ["ConfigDrive"], "Dhcp": ["VirtualRouter"]}
    listed = admin.listNetworkOfferings(id=o["id"])["networkoffering"][0]
    assert listed["service"] == o["service"]
    default = admin.listNetworkOfferings(name="DefaultSharedNetworkOffering")["networkoffering"][0]
    assert {"name": "UserData", "provider": [{"name": "VirtualRouter"}]} in default["service"]
    before = len(admin.listNetworkOfferings()["networkoffering"])
    for service, provider in (("UserData", "Nuage"), ("Firewall", "VirtualRouter")):
        err = expect_api_error(
            admin.createNetworkOffering, name=unique("bad"), displaytext="x", guestiptype="Isolated",
            traffictype="Guest", **{"serviceproviderlist[0].service": service,
                                    "serviceproviderlist[0].provider": provider})
        assert err.status == 431 and "serviceproviderlist" in err.error["errortext"], err.error
    assert len(admin.listNetworkOfferings()["networkoffering"]) == before
    # Offerings are the root admin's: a tenant cannot make one.
    err = expect_api_error(tenant["api"].createNetworkOffering, name=unique("t"), displaytext="x",
                           guestiptype="Isolated", traffictype="Guest")
    assert err.status in (401, 432)
