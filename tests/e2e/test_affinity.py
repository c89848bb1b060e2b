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
