"""Killing the coordinator (SIGKILL) and starting it again on the same data dir."""

from orrery_e2e import (
    PENDING,
    ClientPool,
    create_service_offering,
    find_os_type,
    get_vm,
    register_template,
    unique,
    wait_for,
)

SETTLED_STATES = {"Running", "Stopped", "Error", "Destroyed"}


def test_data_and_jobs_survive_a_hard_kill(fresh_coordinator, image):
    coordinator = fresh_coordinator
    api = coordinator.client()
    zone = api.listZones()["zone"][0]
    offering = create_service_offering(api)
    template = register_template(api, zone["id"], find_os_type(api)["id"], image)
    args = {"zoneid": zone["id"], "serviceofferingid": offering["id"],
            "templateid": template["id"]}

    # An instance that is fully deployed before the kill.
    done = api.deployVirtualMachine(name=unique("before"), startvm=True, **args)["virtualmachine"]
    assert done["state"] == "Running"

    # Start several deployments and kill the coordinator as soon as they are accepted,
    # so that some of their jobs are still pending.
    pool = ClientPool(lambda: coordinator.client(fetch_result=False), workers=8)
    replies = pool.map(
        lambda c, i: c.deployVirtualMachine(name=f"inflight-{i}", startvm=True, **args),
        range(12))
    coordinator.kill_hard()

    coordinator.start()
    api = coordinator.client()

    # Everything created before the kill is still there.
    assert api.listZones()["zone"][0]["id"] == zone["id"]
    assert api.listServiceOfferings(id=offering["id"])["serviceoffering"][0]["name"] == \
        offering["name"]
    found = api.listTemplates(templatefilter="all", id=template["id"])["template"][0]
    assert found["isready"] is True
    survivor = get_vm(api, done["id"])
    assert survivor["name"] == done["name"]

    # No job stays pending forever: each ends as succeeded (1) or failed (2).
    def all_settled():
        # fetch_result=False: otherwise cs would itself wait for the job named in the answer
        jobs = [api.queryAsyncJobResult(jobid=r["jobid"], fetch_result=False) for r in replies]
        return jobs if all(j["jobstatus"] != PENDING for j in jobs) else None

    jobs = wait_for(all_settled, 20, "jobs interrupted by the kill to be finished or failed",
                    interval=0.5)
    for job in jobs:
        assert job["jobstatus"] in (1, 2), job
        assert "jobresultcode" in job
        if job["jobstatus"] == 2:
            assert job["jobresultcode"] != 0, job
            assert job["jobresult"]["errortext"], job

    # The instances those deployments created are listed, and not stuck half-way.
    for reply in replies:
        def settled(vm_id=reply["id"]):
            vm = get_vm(api, vm_id)
            return vm if vm["state"] in SETTLED_STATES else None

        wait_for(settled, 20, f"instance {reply['id']} to leave its transitional state",
                 interval=0.5)

    # And the restarted coordinator still works normally.
    again = api.deployVirtualMachine(name=unique("after"), startvm=True, **args)["virtualmachine"]
    assert again["state"] == "Running"


def test_clean_restart_keeps_credentials_and_instances(fresh_coordinator, image):
    coordinator = fresh_coordinator
    api = coordinator.client()
    zone = api.listZones()["zone"][0]
    offering = create_service_offering(api)
    template = register_template(api, zone["id"], find_os_type(api)["id"], image)
    vm = api.deployVirtualMachine(zoneid=zone["id"], serviceofferingid=offering["id"],
                                  templateid=template["id"], name=unique("keep"),
                                  startvm=False)["virtualmachine"]

    coordinator.stop()
    coordinator.start()
    api = coordinator.client()  # same keys as before the restart
    listed = get_vm(api, vm["id"])
    assert listed["name"] == vm["name"]
    assert listed["state"] == "Stopped"
    started = api.startVirtualMachine(id=vm["id"])["virtualmachine"]
    assert started["state"] == "Running"
