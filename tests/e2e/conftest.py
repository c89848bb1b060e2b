"""Fixtures for the end-to-end tests.

The tests run the real coordinator binary (ORRERY_COORDINATOR_BIN, default
target/debug/orrery-coordinator) with three simulated hosts and drive it with
the `cs` library and CLI from PyPI.
"""

from __future__ import annotations

import pytest

from orrery_e2e import (
    Coordinator,
    CoordinatorError,
    Fixtures,
    create_account,
    create_service_offering,
    find_os_type,
    make_image,
    register_template,
)


def _start(base_dir, hosts=3) -> Coordinator:
    coordinator = Coordinator(base_dir, hosts=hosts)
    try:
        coordinator.init()
        coordinator.start()
    except CoordinatorError as exc:
        coordinator.stop()
        pytest.fail(str(exc), pytrace=False)
    return coordinator


@pytest.fixture(scope="session")
def coordinator(tmp_path_factory):
    """The coordinator shared by most tests (one data dir for the whole session)."""
    coordinator = _start(tmp_path_factory.mktemp("coordinator"))
    yield coordinator
    coordinator.stop()


@pytest.fixture
def fresh_coordinator(tmp_path):
    """A coordinator of its own, for tests that restart it or need a pristine state."""
    coordinator = _start(tmp_path / "coordinator")
    yield coordinator
    coordinator.stop()


@pytest.fixture(scope="session")
def admin(coordinator):
    """cs client with the root admin keys printed by `init`; waits for async jobs."""
    return coordinator.client()


@pytest.fixture(scope="session")
def image(tmp_path_factory):
    return make_image(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="session")
def zone(admin):
    zones = admin.listZones()
    assert zones.get("count") == 1, zones
    return zones["zone"][0]


@pytest.fixture(scope="session")
def os_type(admin):
    return find_os_type(admin)


@pytest.fixture(scope="session")
def offering(admin):
    return create_service_offering(admin)


@pytest.fixture(scope="session")
def template(admin, zone, os_type, image):
    return register_template(admin, zone["id"], os_type["id"], image)


@pytest.fixture(scope="session")
def env(zone, offering, template) -> Fixtures:
    """Zone, service offering and a ready template: what deployVirtualMachine needs."""
    return Fixtures(zone=zone, offering=offering, template=template)


@pytest.fixture(scope="session")
def user(admin, coordinator):
    """A regular user account (accounttype 0) with its own keys and cs client."""
    account = create_account(admin, accounttype=0)
    account["api"] = coordinator.client(account["apikey"], account["secretkey"])
    return account


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Attach the end of the coordinator log to the report of a failed test."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and report.when in ("setup", "call"):
        lab = item.funcargs.get("lab")
        if lab is not None and getattr(lab, "agent", None) is not None:
            report.sections.append(("agent log", lab.agent.log_tail()))
            report.sections.append(("lab coordinator log", lab.coordinator.log_tail()))
        mlab = item.funcargs.get("mlab")
        if mlab is not None and getattr(mlab, "hosts", None):
            # Several hosts: what each agent and the coordinator said last.
            report.sections.append(("lab coordinator log", mlab.coordinator.log_tail()))
            for host in sorted(mlab.hosts):
                report.sections.append((f"{host} agent log", mlab.log_tail(host, 60)))
        for name in ("fresh_coordinator", "coordinator"):
            coordinator = item.funcargs.get(name)
            if isinstance(coordinator, Coordinator):
                report.sections.append(
                    (f"{name} log ({coordinator.log_path})", coordinator.log_tail()))
