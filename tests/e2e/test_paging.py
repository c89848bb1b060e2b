"""Paging through 1,200 instances, the way cs fetch_list (and Ansible through it) does."""

import time

import pytest

from orrery_e2e import SUCCEEDED, ClientPool, create_account, wait_jobs

TOTAL = 1200
PAGE_SIZE = 500


@pytest.fixture(scope="module")
def paged_account(admin, coordinator, env):
    """A dedicated root-admin account (no instance limit) holding exactly TOTAL instances."""
    account = create_account(admin, accounttype=1)
    pool = ClientPool(lambda: coordinator.client(account["apikey"], account["secretkey"],
                                                 fetch_result=False))
    started = time.monotonic()
    replies = pool.map(
        lambda api, i: api.deployVirtualMachine(
            **env.deploy_args(name=f"page-{i:04d}", startvm=False)),
        range(TOTAL))
    deployed = time.monotonic()
    jobs = wait_jobs(pool, [r["jobid"] for r in replies], timeout=180)
    finished = time.monotonic()
    print(f"\n{TOTAL} deploys sent in {deployed - started:.1f}s, "
          f"all jobs done after {finished - started:.1f}s")
    failed = [j for j in jobs.values() if j["jobstatus"] != SUCCEEDED]
    assert not failed, failed[:3]
    account["vm_ids"] = {r["id"] for r in replies}
    account["api"] = coordinator.client(account["apikey"], account["secretkey"])
    return account


@pytest.mark.slow
def test_fetch_list_returns_every_instance(paged_account):
    api = paged_account["api"]
    scope = {"account": paged_account["name"], "domainid": paged_account["domainid"]}
    vms = api.listVirtualMachines(fetch_list=True, **scope)
    ids = [vm["id"] for vm in vms]
    assert len(ids) == TOTAL
    assert len(set(ids)) == TOTAL, "an instance appeared on two pages"
    assert set(ids) == paged_account["vm_ids"]
    assert all(vm["state"] == "Stopped" for vm in vms)


@pytest.mark.slow
def test_every_page_reports_the_total(paged_account):
    api = paged_account["api"]
    scope = {"account": paged_account["name"], "domainid": paged_account["domainid"]}
    seen = []
    for page, expected in ((1, 500), (2, 500), (3, 200)):
        resp = api.listVirtualMachines(page=page, pagesize=PAGE_SIZE, **scope)
        assert resp["count"] == TOTAL, (page, resp.get("count"))
        assert list(resp) == ["count", "virtualmachine"], list(resp)
        assert len(resp["virtualmachine"]) == expected, page
        seen.extend(vm["id"] for vm in resp["virtualmachine"])
    assert len(seen) == len(set(seen)) == TOTAL

    # A page past the end carries the count only.
    assert api.listVirtualMachines(page=4, pagesize=PAGE_SIZE, **scope) == {"count": TOTAL}


@pytest.mark.slow
def test_paging_is_stable_with_small_pages(paged_account):
    api = paged_account["api"]
    scope = {"account": paged_account["name"], "domainid": paged_account["domainid"]}
    first = api.listVirtualMachines(page=1, pagesize=7, **scope)
    again = api.listVirtualMachines(page=1, pagesize=7, **scope)
    assert [v["id"] for v in first["virtualmachine"]] == [v["id"] for v in again["virtualmachine"]]
    last = api.listVirtualMachines(page=172, pagesize=7, **scope)  # 171 * 7 = 1197
    assert last["count"] == TOTAL and len(last["virtualmachine"]) == 3


@pytest.mark.slow
def test_other_accounts_do_not_see_the_paged_instances(user, paged_account):
    ids = {vm["id"] for vm in user["api"].listVirtualMachines(fetch_list=True)}
    assert not ids & paged_account["vm_ids"]
