"""Instance schedules and leases through PyPI's cs, against simulated hosts."""

from orrery_e2e import deploy, expect_api_error, get_vm, unique, wait_for


def test_minute_schedules_really_stop_and_start_an_instance(admin, env):
    vm = deploy(admin, env, name=unique("sched"))
    assert vm["state"] == "Running"
    # Stops on even minutes, starts on odd ones; both begin a minute from now.
    stop = admin.createVMSchedule(virtualmachineid=vm["id"], action="stop",
                                  schedule="*/2 * * * *", timezone="UTC")["vmschedule"]
    start = admin.createVMSchedule(virtualmachineid=vm["id"], action="START",
                                   schedule="1-59/2 * * * *", timezone="Europe/Berlin",
                                   description="odd minutes")["vmschedule"]
    assert stop["action"] == "STOP" and stop["virtualmachineid"] == vm["id"]
    assert stop["description"].startswith("STOP"), stop
    assert stop["enabled"] is True and "enddate" not in stop
    assert start["description"] == "odd minutes" and start["timezone"] == "Europe/Berlin"
    listed = admin.listVMSchedule(virtualmachineid=vm["id"])
    assert listed["count"] == 2
    assert {s["id"] for s in listed["vmschedule"]} == {stop["id"], start["id"]}
    assert admin.listVMSchedule(virtualmachineid=vm["id"], action="START")["count"] == 1

    wait_for(lambda: get_vm(admin, vm["id"])["state"] == "Stopped", 200,
             "the STOP schedule to stop the instance", interval=1)
    wait_for(lambda: get_vm(admin, vm["id"])["state"] == "Running", 100,
             "the START schedule to start the instance", interval=1)
    events = admin.listEvents(type="VM.STOP", listall=True).get("event", [])
    assert any(stop["id"] in e["description"] for e in events), events

    admin.deleteVMSchedule(virtualmachineid=vm["id"])
    assert not admin.listVMSchedule(virtualmachineid=vm["id"]).get("vmschedule")


def test_schedule_input_is_checked(admin, env):
    vm = deploy(admin, env, name=unique("sched"), startvm=False)
    for params, name in [
        ({"schedule": "61 * * * *", "timezone": "UTC", "action": "STOP"}, "schedule"),
        ({"schedule": "* * * *", "timezone": "UTC", "action": "STOP"}, "schedule"),
        ({"schedule": "* * * * *", "timezone": "Nowhere/Land", "action": "STOP"}, "timezone"),
        ({"schedule": "* * * * *", "timezone": "UTC", "action": "SUSPEND"}, "action"),
        ({"schedule": "* * * * *", "timezone": "UTC", "action": "STOP",
          "startdate": "2001-01-01 00:00:00"}, "startdate"),
        ({"schedule": "* * * * *", "timezone": "UTC", "action": "STOP",
          "enddate": "31/12/2030"}, "enddate"),
    ]:
        err = expect_api_error(admin.createVMSchedule, virtualmachineid=vm["id"], **params)
        assert err.status == 431, (params, err.error)
        assert name in err.error["errortext"], (params, err.error)
    assert not admin.listVMSchedule(virtualmachineid=vm["id"]).get("vmschedule")
    s = admin.createVMSchedule(virtualmachineid=vm["id"], action="REBOOT", schedule="0 3 * * *",
                               timezone="UTC", enddate="2030-01-01 00:00:00")["vmschedule"]
    assert s["enddate"].startswith("2030-01-01T00:00:00")
    err = expect_api_error(admin.updateVMSchedule, id=s["id"], enddate="")
    assert err.status == 431 and "enddate" in err.error["errortext"]
    updated = admin.updateVMSchedule(id=s["id"], schedule="30 4 * * 1-5",
                                     enabled=False)["vmschedule"]
    assert updated["schedule"] == "30 4 * * 1-5" and updated["enabled"] is False
    err = expect_api_error(admin.listVMSchedule, virtualmachineid="not-a-vm")
    assert err.status == 431 and "virtualmachineid" in err.error["errortext"]


def test_lease_fields_inheritance_and_feature_switch(admin, env):
    admin.updateConfiguration(name="instance.lease.enabled", value="true")
    try:
        vm = deploy(admin, env, name=unique("lease"), startvm=False, leaseduration=10,
                    leaseexpiryaction="STOP")
        assert vm["leaseduration"] == 10 and vm["leaseexpiryaction"] == "STOP"
        assert vm["leaseexpirydate"] > vm["created"]
        for params, name in [({"leaseduration": 0, "leaseexpiryaction": "STOP"}, "leaseduration"),
                             ({"leaseduration": 36501, "leaseexpiryaction": "STOP"},
                              "leaseduration"),
                             ({"leaseduration": 5, "leaseexpiryaction": "PAUSE"},
                              "leaseexpiryaction")]:
            err = expect_api_error(lambda **kw: deploy(admin, env, **kw), name=unique("lease"),
                                   startvm=False, **params)
            assert err.status == 431 and name in err.error["errortext"], err.error

        offering = admin.createServiceOffering(
            name=unique("leasing"), displaytext="leasing", cpunumber=1, cpuspeed=500,
            memory=256, leaseduration=20, leaseexpiryaction="DESTROY")["serviceoffering"]
        assert offering["leaseduration"] == 20 and offering["leaseexpiryaction"] == "DESTROY"
        inherited = deploy(admin, env, name=unique("lease"), startvm=False,
                           serviceofferingid=offering["id"])
        assert inherited["leaseduration"] == 20 and inherited["leaseexpiryaction"] == "DESTROY"
        shorter = deploy(admin, env, name=unique("lease"), startvm=False,
                         serviceofferingid=offering["id"], leaseduration=3)
        assert shorter["leaseduration"] == 3 and shorter["leaseexpiryaction"] == "DESTROY"
        err = expect_api_error(lambda **kw: deploy(admin, env, **kw), name=unique("lease"),
                               startvm=False, leaseduration=3)
        assert err.status == 431 and "leaseexpiryaction" in err.error["errortext"], err.error
        unleased = deploy(admin, env, name=unique("lease"), startvm=False,
                          serviceofferingid=offering["id"], leaseduration=-1)
        assert "leaseduration" not in unleased

        leased = {v["id"] for v in admin.listVirtualMachines(leased=True).get("virtualmachine", [])}
        assert {vm["id"], inherited["id"]} <= leased and unleased["id"] not in leased

        # Extend, then disable for good.
        extended = admin.updateVirtualMachine(id=vm["id"], leaseduration=30,
                                              leaseexpiryaction="DESTROY")["virtualmachine"]
        assert extended["leaseduration"] == 30 and extended["leaseexpiryaction"] == "DESTROY"
        reduced = admin.updateVirtualMachine(id=vm["id"], leaseduration=20)["virtualmachine"]
        assert reduced["leaseduration"] == 20 and reduced["leaseexpiryaction"] == "DESTROY"
        disabled = admin.updateVirtualMachine(id=vm["id"], leaseduration=-1)["virtualmachine"]
        assert "leaseduration" not in disabled and "leaseexpirydate" not in disabled
        err = expect_api_error(admin.updateVirtualMachine, id=vm["id"], leaseduration=5,
                               leaseexpiryaction="STOP")
        assert err.status == 431 and "leaseduration" in err.error["errortext"]
        # No lease is acquired by an edit.
        err = expect_api_error(admin.updateVirtualMachine, id=unleased["id"], leaseduration=5,
                               leaseexpiryaction="STOP")
        assert err.status == 431
    finally:
        admin.updateConfiguration(name="instance.lease.enabled", value="false")
    # Switching the feature off cancelled every lease; switching it on again
    # brings none back.
    admin.updateConfiguration(name="instance.lease.enabled", value="true")
    try:
        assert "leaseduration" not in get_vm(admin, inherited["id"])
        leased = admin.listVirtualMachines(leased=True).get("virtualmachine", [])
        assert inherited["id"] not in {v["id"] for v in leased}
        cancelled = admin.listEvents(type="VM.LEASE.CANCELLED", listall=True).get("event", [])
        assert any(e.get("resourceid", "") == inherited["id"] or inherited["id"] in
                   e["description"] for e in cancelled), cancelled
    finally:
        admin.updateConfiguration(name="instance.lease.enabled", value="false")
