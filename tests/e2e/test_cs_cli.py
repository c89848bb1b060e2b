"""The `cs` command-line client, configured through the environment."""

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from orrery_e2e import unique


@pytest.fixture
def run_cs(coordinator):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDSTACK_")}
    env.update({
        "CLOUDSTACK_ENDPOINT": coordinator.endpoint,
        "CLOUDSTACK_KEY": coordinator.apikey,
        "CLOUDSTACK_SECRET": coordinator.secretkey,
        "CLOUDSTACK_POLL_INTERVAL": "0.2",
        "CLOUDSTACK_TIMEOUT": "60",
        "CLOUDSTACK_JOB_TIMEOUT": "120",
    })

    script = Path(sys.executable).parent / "cs"
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "cs"]

    def run(*args, expect_ok=True):
        result = subprocess.run([*command, *args], env=env,
                                capture_output=True, text=True, timeout=180,
                                stdin=subprocess.DEVNULL)
        if expect_ok:
            assert result.returncode == 0, (result.stdout, result.stderr)
        return result, (json.loads(result.stdout) if result.stdout.strip() else None)

    return run


def test_cs_list_zones(run_cs, zone):
    _, out = run_cs("listZones")
    assert out["count"] == 1
    assert out["zone"][0]["id"] == zone["id"]
    assert out["zone"][0]["networktype"] == "Basic"


def test_cs_deploy_waits_for_the_job(run_cs, env):
    name = unique("cli")
    _, out = run_cs("deployVirtualMachine", f"zoneid={env.zone['id']}",
                    f"serviceofferingid={env.offering['id']}",
                    f"templateid={env.template['id']}", f"name={name}",
                    "displayname=Made by the cs CLI", "startvm=true")
    vm = out["virtualmachine"]
    assert vm["name"] == name
    assert vm["displayname"] == "Made by the cs CLI"
    assert vm["state"] == "Running"

    _, listed = run_cs("listVirtualMachines", f"id={vm['id']}")
    assert listed["count"] == 1 and listed["virtualmachine"][0]["state"] == "Running"

    _, stopped = run_cs("stopVirtualMachine", f"id={vm['id']}")
    assert stopped["virtualmachine"]["state"] == "Stopped"


def test_cs_async_flag_and_post(run_cs, env):
    _, reply = run_cs("--async", "--post", "deployVirtualMachine", f"zoneid={env.zone['id']}",
                      f"serviceofferingid={env.offering['id']}",
                      f"templateid={env.template['id']}", f"name={unique('cli')}",
                      "startvm=false")
    assert set(reply) == {"id", "jobid"}
    _, job = run_cs("queryAsyncJobResult", f"jobid={reply['jobid']}")
    assert job["jobid"] == reply["jobid"]
    assert "jobresultcode" in job


def test_cs_reports_api_errors(run_cs):
    missing = str(uuid.uuid4())
    result, out = run_cs("listVirtualMachines", f"id={missing}", expect_ok=False)
    assert result.returncode == 1
    assert "HTTP 431" in result.stderr
    inner = out["listvirtualmachinesresponse"]
    assert inner["errorcode"] == 431
    assert f"Invalid parameter id value={missing}" in inner["errortext"]
