"""queryAsyncJobResult and listAsyncJobs fields, as cs, cmk, libcloud and Marvin read them."""

import re
import uuid

import pytest

from orrery_e2e import DATE_RE, PENDING, SUCCEEDED, expect_api_error, unique, wait_for

JOB_FIELDS = ("accountid", "userid", "cmd", "jobstatus", "jobprocstatus", "jobresultcode",
              "jobinstancetype", "jobinstanceid", "created", "jobid")


@pytest.fixture(scope="module")
def deploy_job(coordinator, env):
    api = coordinator.client(fetch_result=False)
    reply = api.deployVirtualMachine(**env.deploy_args(name=unique("job"), startvm=True))
    first = api.queryAsyncJobResult(jobid=reply["jobid"])

    def finished():
        job = api.queryAsyncJobResult(jobid=reply["jobid"])
        return job if job["jobstatus"] != PENDING else None

    final = wait_for(finished, 60, "deploy job to finish", interval=0.1)
    return {"reply": reply, "first": first, "final": final}


def test_query_async_job_result_while_running_or_done(deploy_job):
    first, reply = deploy_job["first"], deploy_job["reply"]
    for field in JOB_FIELDS:
        assert field in first, field
    assert first["jobid"] == reply["jobid"]
    assert first["jobstatus"] in (0, 1)
    assert isinstance(first["jobprocstatus"], int)
    assert isinstance(first["jobresultcode"], int)
    assert first["jobinstancetype"] == "VirtualMachine"
    assert first["jobinstanceid"] == reply["id"]
    assert re.match(DATE_RE, first["created"]), first["created"]
    if first["jobstatus"] == PENDING:
        assert first["jobresultcode"] == 0
        assert "jobresult" not in first
        assert "completed" not in first


def test_query_async_job_result_succeeded(deploy_job):
    job, reply = deploy_job["final"], deploy_job["reply"]
    for field in JOB_FIELDS:
        assert field in job, field
    assert job["jobstatus"] == SUCCEEDED
    assert job["jobresultcode"] == 0
    assert job["jobresulttype"] == "object"
    assert job["jobinstancetype"] == "VirtualMachine"
    assert job["jobinstanceid"] == reply["id"]
    assert "DeployVM" in job["cmd"], job["cmd"]
    assert re.match(DATE_RE, job["completed"]), job["completed"]
    assert job["completed"] >= job["created"]
    vm = job["jobresult"]["virtualmachine"]
    assert vm["id"] == reply["id"]
    assert vm["state"] == "Running"
    assert vm["jobid"] == reply["jobid"]  # Marvin reads vm.jobid


def test_list_async_jobs(admin, deploy_job):
    jobs = admin.listAsyncJobs(fetch_list=True)
    assert jobs, "listAsyncJobs returned nothing"
    for job in jobs:
        assert isinstance(job["jobid"], str)
        assert isinstance(job["jobresultcode"], int), job
        assert job["jobstatus"] in (0, 1, 2), job
        assert isinstance(job["cmd"], str)
    mine = [j for j in jobs if j["jobid"] == deploy_job["reply"]["jobid"]]
    assert len(mine) == 1
    assert mine[0]["jobstatus"] == SUCCEEDED
    assert mine[0]["jobresultcode"] == 0
    assert mine[0]["jobinstanceid"] == deploy_job["reply"]["id"]


def test_cs_waits_for_every_async_command(admin, deploy_job):
    """cs (fetch_result=True) needs jobresultcode and a jobresult keyed by the object name."""
    vm_id = deploy_job["reply"]["id"]
    stopped = admin.stopVirtualMachine(id=vm_id)
    assert stopped.keys() == {"virtualmachine"}
    assert stopped["virtualmachine"]["state"] == "Stopped"


def test_unknown_job_id(admin):
    missing = str(uuid.uuid4())
    error = expect_api_error(admin.queryAsyncJobResult, jobid=missing, fetch_result=False)
    assert error.status == 431, error.error
    assert error.error["errorcode"] == 431
