"""`init`, and what a freshly initialised coordinator contains."""

from orrery_e2e import Coordinator


def test_init_prints_credentials_and_refuses_to_run_twice(tmp_path):
    coordinator = Coordinator(tmp_path / "c")
    output = coordinator.init()
    assert isinstance(output["apikey"], str) and output["apikey"]
    assert isinstance(output["secretkey"], str) and output["secretkey"]
    assert output["apikey"] != output["secretkey"]

    again = coordinator.run_init()
    assert again.returncode != 0, (
        f"second `init` on the same data dir must fail; stdout={again.stdout!r}")


def test_fresh_coordinator_inventory(fresh_coordinator):
    api = fresh_coordinator.client()

    zones = api.listZones()
    assert zones["count"] == 1 and len(zones["zone"]) == 1
    zone = zones["zone"][0]
    assert zone["networktype"] == "Basic"
    assert zone["id"] and zone["name"]

    assert len(api.listPods(zoneid=zone["id"]).get("pod", [])) == 1
    assert len(api.listClusters(zoneid=zone["id"]).get("cluster", [])) == 1
    hosts = api.listHosts(zoneid=zone["id"], type="Routing")
    assert hosts.get("count") == 3, hosts
    assert {h["zoneid"] for h in hosts["host"]} == {zone["id"]}
    assert all(h["state"] == "Up" for h in hosts["host"]), hosts

    disk_offerings = {d["name"] for d in api.listDiskOfferings().get("diskoffering", [])}
    assert {"Small", "Custom"} <= disk_offerings

    os_types = api.listOsTypes(fetch_list=True)
    assert "Other Linux (64-bit)" in {o["description"] for o in os_types}

    # Nothing else is seeded: an empty list is {} (no count, no item key).
    assert api.listServiceOfferings() == {}
    assert api.listTemplates(templatefilter="all") == {}
    assert api.listVirtualMachines(listall=True) == {}
