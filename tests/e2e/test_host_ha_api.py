"""HA as the API shows it, on a coordinator of the test's own with simulated
hosts: `hahost` follows `ha.tag`, `hostha` says simulated hosts cannot be
judged (no agent, no storage heartbeat), and the HA timing settings refuse
values outside their ranges with the parameter named."""

from orrery_e2e import expect_api_error


def test_hahost_follows_the_ha_tag_and_simulated_hosts_are_ineligible(coordinator):
    admin = coordinator.client()
    hosts = admin.listHosts()["host"]
    assert len(hosts) >= 2
    for h in hosts:
        assert h["hahost"] is False
        assert h["hostha"] == {"haenable": False, "hastate": "Ineligible",
                               "haprovider": "kvmhaprovider"}
    chosen = hosts[0]
    # Other tests' tags on this host come back afterwards.
    before = chosen.get("hosttags", "")
    try:
        admin.updateConfiguration(name="ha.tag", value="ha-reserve")
        admin.updateHost(id=chosen["id"], hosttags=",".join(filter(None, [before, "ha-reserve"])))
        listed = {h["id"]: h for h in admin.listHosts()["host"]}
        assert listed[chosen["id"]]["hahost"] is True
        assert all(not h["hahost"] for i, h in listed.items() if i != chosen["id"])
    finally:
        admin.updateConfiguration(name="ha.tag", value="")
        admin.updateHost(id=chosen["id"], hosttags=before)
    assert all(not h["hahost"] for h in admin.listHosts()["host"])


def test_ha_timings_are_range_checked(coordinator):
    admin = coordinator.client()
    for name, bad in (("ha.heartbeat.interval", "50"), ("ha.lease.time", "100"),
                      ("ha.restart.margin", "-1"), ("ha.lease.time", "soon")):
        err = expect_api_error(admin.updateConfiguration, name=name, value=bad)
        assert err.status == 431 and err.error["errorcode"] == 431, err
        assert name in err.error["errortext"], err
    listed = {name: admin.listConfigurations(name=name)["configuration"][0]["value"]
              for name in ("ha.heartbeat.interval", "ha.lease.time", "ha.restart.margin")}
    assert listed["ha.heartbeat.interval"] == "500"
    assert listed["ha.lease.time"] == "3000"
    assert listed["ha.restart.margin"] == "500"
