"""Instance lifecycle through the cs library (it polls every async job to the end)."""

import time
import uuid


from orrery_e2e import SUCCEEDED, deploy, expect_api_error, get_vm, unique, wait_for


def test_deploy_running_instance(admin, env):
    name = unique("vm")
    vm = deploy(admin, env, name=name, startvm=True)

    assert vm["state"] == "Running"
    assert vm["name"] == name
    assert vm["displayname"] == name  # defaults to the name
    assert vm["zoneid"] == env.zone["id"]
    assert vm["templateid"] == env.template["id"]
    assert vm["serviceofferingid"] == env.offering["id"]
    assert vm["nic"] and vm["nic"][0]["ipaddress"]
    assert vm["hostid"]  # root admin sees the host
    assert vm["instancename"].startswith("i-")

    listed = get_vm(admin, vm["id"])
    assert listed["state"] == "Running"
    assert listed["hostid"] == vm["hostid"]
    assert listed["nic"][0]["ipaddress"] == vm["nic"][0]["ipaddress"]


def test_deploy_stopped_instance_has_allocated_root_volume(admin, env):
    vm = deploy(admin, env, name=unique("vm"), displayname="Stopped one", startvm=False)
    assert vm["state"] == "Stopped"
    assert vm["displayname"] == "Stopped one"

    volumes = admin.listVolumes(virtualmachineid=vm["id"], type="ROOT")
    assert volumes.get("count") == 1, volumes
    root = volumes["volume"][0]
    assert root["type"] == "ROOT"
    assert root["state"] == "Allocated"
    assert root["virtualmachineid"] == vm["id"]


def test_full_lifecycle(admin, env):
    vm = deploy(admin, env, name=unique("vm"), startvm=True)
    vm_id = vm["id"]

    ids = {v["id"] for v in admin.listVirtualMachines(fetch_list=True)}
    assert vm_id in ids

    stopped = admin.stopVirtualMachine(id=vm_id)["virtualmachine"]
    assert stopped["id"] == vm_id and stopped["state"] == "Stopped"
    assert get_vm(admin, vm_id)["state"] == "Stopped"

    started = admin.startVirtualMachine(id=vm_id)["virtualmachine"]
    assert started["state"] == "Running"
    assert started["hostid"]

    rebooted = admin.rebootVirtualMachine(id=vm_id)["virtualmachine"]
    assert rebooted["state"] == "Running"
    assert get_vm(admin, vm_id)["state"] == "Running"

    destroyed = admin.destroyVirtualMachine(id=vm_id)["virtualmachine"]
    assert destroyed["state"] == "Destroyed"
    assert get_vm(admin, vm_id)["state"] == "Destroyed"  # the admin still sees it

    recovered = admin.recoverVirtualMachine(id=vm_id)  # synchronous
    assert recovered["virtualmachine"]["id"] == vm_id
    assert recovered["virtualmachine"]["state"] == "Stopped"
    assert get_vm(admin, vm_id)["state"] == "Stopped"

    expunged = admin.destroyVirtualMachine(id=vm_id, expunge=True)
    assert expunged == {"virtualmachine": {}}

    # The id of an expunged instance still resolves, as in CloudStack, and
    # lists nothing.
    wait_for(lambda: admin.listVirtualMachines(id=vm_id) == {}, 10,
             f"listVirtualMachines id={vm_id} to list nothing after the expunge")


def test_delete_protection(admin, env):
    vm = deploy(admin, env, name=unique("vm"), startvm=False)
    vm_id = vm["id"]

    updated = admin.updateVirtualMachine(id=vm_id, deleteprotection=True)["virtualmachine"]
    assert updated["deleteprotection"] is True
    assert get_vm(admin, vm_id)["deleteprotection"] is True

    refused = expect_api_error(admin.destroyVirtualMachine, id=vm_id)
    # Either refused synchronously (HTTP error) or as a failed job (HTTP 200, job result).
    assert refused.error.get("errortext"), refused.error
    assert refused.error.get("errorcode") in (431, 530, 531, 536), refused.error
    if refused.status != 200:
        assert refused.status == refused.error["errorcode"]
    after = get_vm(admin, vm_id)
    assert after["state"] != "Destroyed"
    assert after["deleteprotection"] is True

    refused = expect_api_error(admin.destroyVirtualMachine, id=vm_id, expunge=True)
    assert refused.error.get("errortext")
    assert get_vm(admin, vm_id)["state"] != "Destroyed"

    cleared = admin.updateVirtualMachine(id=vm_id, deleteprotection=False)["virtualmachine"]
    assert cleared["deleteprotection"] is False
    assert admin.destroyVirtualMachine(id=vm_id)["virtualmachine"]["state"] == "Destroyed"


def test_update_without_changes_returns_the_instance(admin, env):
    vm = deploy(admin, env, name=unique("vm"), startvm=False)
    same = admin.updateVirtualMachine(id=vm["id"])["virtualmachine"]
    assert same["id"] == vm["id"]
    assert same["name"] == vm["name"] and same["state"] == "Stopped"


def test_deploy_returns_id_and_jobid_at_once(coordinator, env):
    api = coordinator.client(fetch_result=False)
    started = time.monotonic()
    reply = api.deployVirtualMachine(**env.deploy_args(name=unique("vm"), startvm=False))
    assert set(reply) == {"id", "jobid"}, reply
    uuid.UUID(reply["id"])
    uuid.UUID(reply["jobid"])
    # the entity exists as soon as the reply is sent
    listed = api.listVirtualMachines(id=reply["id"])
    assert listed["virtualmachine"][0]["id"] == reply["id"]

    def done():
        job = api.queryAsyncJobResult(jobid=reply["jobid"])
        return job if job["jobstatus"] != 0 else None

    job = wait_for(done, 60, "deploy job to finish")
    assert job["jobstatus"] == SUCCEEDED, job
    assert time.monotonic() - started < 60
