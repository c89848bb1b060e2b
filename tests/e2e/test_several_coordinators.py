"""Two coordinators on one PostgreSQL store: either answers any call with the
same result (what one creates or changes the other lists), exactly one of
them runs the background loops, and when that one is killed (SIGKILL) the
other takes them over within seconds. Runs on the PostgreSQL pass of the
suite (ORRERY_TEST_PG)."""

from __future__ import annotations

import re
import shutil
import time

import pytest
import requests

from orrery_e2e import Coordinator, create_service_offering, pg_admin_url, unique, wait_for

pytestmark = pytest.mark.skipif(not pg_admin_url(),
                                reason="needs a PostgreSQL server (ORRERY_TEST_PG)")

LEADER = re.compile(r"^orrery_coordinator_leader (\d+)$", re.M)


def leads(c: Coordinator) -> bool:
    text = requests.get(f"http://127.0.0.1:{c.metrics_port}/metrics", timeout=10).text
    m = LEADER.search(text)
    assert m, "no orrery_coordinator_leader in /metrics"
    return m.group(1) == "1"


def beside(first: Coordinator, base) -> Coordinator:
    """A second coordinator on the first one's database, with its CA (as an
    operator copies /var/lib/orrery/coordinator/ca.* to the next machine)."""
    c = Coordinator(base, hosts=0)
    c.store_url = first.store_url
    c.data_dir.mkdir(parents=True)
    for f in ("ca.pem", "ca.key"):
        shutil.copy2(first.data_dir / f, c.data_dir / f)
    c.apikey, c.secretkey = first.apikey, first.secretkey
    c.start()
    return c


@pytest.fixture
def pair(tmp_path):
    a = Coordinator(tmp_path / "a", hosts=0)
    a.init()
    a.start()
    b = beside(a, tmp_path / "b")
    yield a, b
    for c in (a, b):
        c.stop()


def test_either_coordinator_answers_and_one_leads_until_killed(pair):
    a, b = pair
    api_a, api_b = a.client(), b.client()

    # What one creates, the other lists, field for field.
    offering = create_service_offering(api_a, name=unique("both"))
    listed = api_b.listServiceOfferings(id=offering["id"])["serviceoffering"]
    assert listed == [offering] or (listed[0]["id"] == offering["id"]
                                    and listed[0]["name"] == offering["name"]), listed
    name = unique("acct")
    api_b.createAccount(accounttype=0, account=name, username=name, password="Pa55-word-1",
                        email=f"{name}@example.com", firstname="A", lastname="B")
    assert [x["name"] for x in api_a.listAccounts(name=name)["account"]] == [name]
    # A change on one reaches the other's cached view: renamed on b, listed
    # with the new name on a.
    api_b.updateServiceOffering(id=offering["id"], name=offering["name"] + "-x")
    wait_for(lambda: api_a.listServiceOfferings(id=offering["id"])["serviceoffering"][0]["name"]
             == offering["name"] + "-x", 10, "the rename did not reach the other coordinator")
    # Settings too (each coordinator keeps them in memory).
    api_a.updateConfiguration(name="vm.allocation.algorithm", value="firstfit")
    wait_for(lambda: api_b.listConfigurations(name="vm.allocation.algorithm")["configuration"][0]
             ["value"] == "firstfit", 10, "the setting did not reach the other coordinator")

    # Exactly one leads: the first one, which found the lock free.
    wait_for(lambda: leads(a), 10, "the first coordinator never led")
    assert not leads(b)
    time.sleep(2)
    assert leads(a) and not leads(b)

    # Killed without a chance to let go: the other takes over within 10 s
    # and still answers.
    a.kill_hard()
    started = time.monotonic()
    wait_for(lambda: leads(b), 10, "the survivor did not take over within 10 s")
    took = time.monotonic() - started
    assert took < 10, took
    assert api_b.listServiceOfferings(id=offering["id"])["count"] == 1
