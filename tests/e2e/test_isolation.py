"""A regular user sees only its own account's instances and cannot use admin commands."""

import pytest

from orrery_e2e import deploy, expect_api_error, get_vm, unique


@pytest.fixture(scope="module")
def admin_vm(admin, env):
    return deploy(admin, env, name=unique("admin-vm"), startvm=True)


@pytest.fixture(scope="module")
def user_vm(user, env):
    return deploy(user["api"], env, name=unique("user-vm"), startvm=True)


def test_user_sees_only_its_own_instances(admin, user, admin_vm, user_vm):
    api = user["api"]
    assert user_vm["state"] == "Running"
    assert user_vm["account"] == user["name"]

    for params in ({}, {"listall": True}):
        listed = api.listVirtualMachines(fetch_list=True, **params)
        ids = {vm["id"] for vm in listed}
        assert user_vm["id"] in ids
        assert admin_vm["id"] not in ids
        assert all(vm["account"] == user["name"] for vm in listed), listed

    # Asking for the admin's instance by id gives nothing back (empty list or an error).
    try:
        resp = api.listVirtualMachines(id=admin_vm["id"])
    except Exception as exc:  # noqa: BLE001
        status = getattr(getattr(exc, "response", None), "status_code", None)
        assert status in (431, 531), exc
    else:
        assert admin_vm["id"] not in {vm["id"] for vm in resp.get("virtualmachine", [])}

    # The admin, asking for everything, sees both.
    all_ids = {vm["id"] for vm in admin.listVirtualMachines(listall=True, fetch_list=True)}
    assert {admin_vm["id"], user_vm["id"]} <= all_ids


def test_user_view_hides_admin_only_fields(admin, user, user_vm):
    mine = get_vm(user["api"], user_vm["id"])
    assert mine["state"] == "Running"
    assert "hostid" not in mine
    assert "instancename" not in mine
    assert mine["nic"][0]["ipaddress"]

    # The deploy job result the user got back hides them too.
    assert "hostid" not in user_vm
    assert "instancename" not in user_vm

    # The root admin sees them for the same instance.
    seen_by_admin = get_vm(admin, user_vm["id"], listall=True)
    assert seen_by_admin["hostid"]
    assert seen_by_admin["instancename"].startswith("i-")


@pytest.mark.parametrize("command,params", [
    ("listHosts", {}),
    ("createZone", {"name": "not-allowed", "networktype": "Basic", "dns1": "8.8.8.8",
                    "internaldns1": "8.8.8.8"}),
    ("createServiceOffering", {"name": "not-allowed", "displaytext": "x", "cpunumber": 1,
                               "cpuspeed": 100, "memory": 128}),
])
def test_user_cannot_use_admin_commands(user, command, params):
    error = expect_api_error(getattr(user["api"], command), **params)
    assert error.status in (401, 531), (error.status, error.error)
    assert error.error["errorcode"] == error.status
    assert error.error["errortext"]


def test_user_cannot_act_on_admin_instance(user, admin, admin_vm):
    error = expect_api_error(user["api"].stopVirtualMachine, id=admin_vm["id"])
    assert error.status in (431, 531), (error.status, error.error)
    assert get_vm(admin, admin_vm["id"])["state"] == "Running"
