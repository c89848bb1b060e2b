"""listApis listall=true, in the shape cmk `sync` type-asserts."""

import pytest


@pytest.fixture(scope="module")
def apis(admin):
    resp = admin.listApis(listall=True)
    assert resp["count"] == len(resp["api"])
    return {api["name"]: api for api in resp["api"]}


def test_every_entry_has_the_fields_cmk_needs(apis):
    assert len(apis) > 20
    for name, api in apis.items():
        assert isinstance(api["name"], str) and api["name"], api
        assert isinstance(api["isasync"], bool), name
        assert isinstance(api["description"], str), name
        assert isinstance(api["params"], list), name
        assert isinstance(api["response"], list), name
        for param in api["params"]:
            assert isinstance(param["name"], str) and param["name"], (name, param)
            assert isinstance(param["type"], str) and param["type"], (name, param)
            assert isinstance(param["required"], bool), (name, param)
            assert isinstance(param["description"], str), (name, param)
            if "related" in param:
                assert isinstance(param["related"], str), (name, param)
            if "length" in param:
                assert isinstance(param["length"], int), (name, param)
        for field in api["response"]:
            assert isinstance(field["name"], str), (name, field)


def test_deploy_virtual_machine_entry(apis):
    deploy = apis["deployVirtualMachine"]
    assert deploy["isasync"] is True
    params = {p["name"]: p for p in deploy["params"]}
    assert params["zoneid"]["required"] is True
    assert params["serviceofferingid"]["required"] is True
    assert params["startvm"]["required"] is False
    assert params["startvm"]["type"] == "boolean"
    assert "deleteprotection" not in params


@pytest.mark.parametrize("name,isasync", [
    ("listVirtualMachines", False),
    ("startVirtualMachine", True),
    ("stopVirtualMachine", True),
    ("rebootVirtualMachine", True),
    ("destroyVirtualMachine", True),
    ("recoverVirtualMachine", False),
    ("updateVirtualMachine", False),
    ("queryAsyncJobResult", False),
    ("listAsyncJobs", False),
    ("listZones", False),
    ("login", False),
    ("logout", False),
])
def test_known_commands(apis, name, isasync):
    assert name in apis
    assert apis[name]["isasync"] is isasync


def test_update_virtual_machine_accepts_deleteprotection(apis):
    params = {p["name"]: p for p in apis["updateVirtualMachine"]["params"]}
    assert params["id"]["required"] is True
    assert params["deleteprotection"]["type"] == "boolean"


def test_list_apis_by_name(admin):
    resp = admin.listApis(name="deployVirtualMachine")
    assert [api["name"] for api in resp["api"]] == ["deployVirtualMachine"]
