"""Attacks and hostile input: shared records of other domains, local files and
internal addresses as template sources, cross-site requests with a session
cookie, password guessing, GETs where POST is enforced, malformed parameters."""

from __future__ import annotations

import bz2
import gzip
import http.server
import io
import socketserver
import threading
import time
import uuid
import zipfile

import pytest
import requests

from orrery_e2e import (
    Coordinator,
    create_account,
    expect_api_error,
    sign_java,
    unique,
    wait_for,
)


def make_domain(admin, parent: str | None = None) -> dict:
    params = {"name": unique("dom")}
    if parent:
        params["parentdomainid"] = parent
    return admin.createDomain(**params)["domain"]


def account_in(admin, coordinator, domain: dict, accounttype: int) -> dict:
    name = unique("acct")
    password = "Pa55-" + uuid.uuid4().hex[:12]
    account = admin.createAccount(accounttype=accounttype, account=name, username=name,
                                  password=password, email=f"{name}@example.com",
                                  firstname="E", lastname="T",
                                  domainid=domain["id"])["account"]
    user = account["user"][0]
    keys = admin.registerUserKeys(id=user["id"])["userkeys"]
    return {"name": name, "password": password, "account": account, "user": user,
            "api": coordinator.client(keys["apikey"], keys["secretkey"])}


@pytest.fixture(scope="module")
def domains(admin, coordinator):
    """Two sibling sub-domains, each with a domain admin and a user."""
    a = make_domain(admin)
    b = make_domain(admin)
    return {
        "a": a, "b": b,
        "a_admin": account_in(admin, coordinator, a, 2),
        "a_user": account_in(admin, coordinator, a, 0),
        "b_admin": account_in(admin, coordinator, b, 2),
        "b_user": account_in(admin, coordinator, b, 0),
    }


def offering_ids(api) -> set[str]:
    return {o["id"] for o in api.listServiceOfferings(fetch_list=True)}


# -- shared records ------------------------------------------------------------------


def test_domain_admin_cannot_touch_global_offerings(admin, domains):
    da = domains["a_admin"]["api"]
    global_offering = admin.createServiceOffering(
        name=unique("global"), displaytext="global", cpunumber=1, cpuspeed=100,
        memory=128)["serviceoffering"]
    for call, params in [
        (da.updateServiceOffering, {"id": global_offering["id"], "name": "stolen"}),
        (da.deleteServiceOffering, {"id": global_offering["id"]}),
    ]:
        error = expect_api_error(call, **params)
        assert error.status == 531, error.error
    # Nothing changed.
    seen = admin.listServiceOfferings(id=global_offering["id"])["serviceoffering"][0]
    assert seen["name"] == global_offering["name"]

    # A global offering (no domainid) is the root admin's to create.
    error = expect_api_error(da.createServiceOffering, name=unique("x"), displaytext="x",
                             cpunumber=1, cpuspeed=100, memory=128)
    assert error.status == 531 and "global" in error.error["errortext"], error.error
    error = expect_api_error(da.createDiskOffering, name=unique("x"), displaytext="x",
                             disksize=1)
    assert error.status == 531, error.error
    # Nor may it scope one to a domain outside its subtree.
    error = expect_api_error(da.createServiceOffering, name=unique("x"), displaytext="x",
                             cpunumber=1, cpuspeed=100, memory=128,
                             domainid=domains["b"]["id"])
    assert error.status == 531, error.error


def test_domain_offerings_stay_in_their_domain(admin, domains):
    da = domains["a_admin"]["api"]
    mine = da.createServiceOffering(name=unique("a-only"), displaytext="a", cpunumber=1,
                                    cpuspeed=100, memory=128,
                                    domainid=domains["a"]["id"])["serviceoffering"]
    assert mine["domainid"] == domains["a"]["id"]
    disk = da.createDiskOffering(name=unique("a-disk"), displaytext="a", disksize=1,
                                 domainid=domains["a"]["id"])["diskoffering"]

    assert mine["id"] in offering_ids(domains["a_user"]["api"])
    assert mine["id"] in offering_ids(admin)
    for outsider in ("b_admin", "b_user"):
        api = domains[outsider]["api"]
        assert mine["id"] not in offering_ids(api)
        assert disk["id"] not in {o["id"] for o in api.listDiskOfferings(fetch_list=True)}
        # By id: nothing, as for any offering the caller may not see.
        assert api.listServiceOfferings(id=mine["id"]) == {}
    # The sibling domain admin can neither change nor delete it.
    b = domains["b_admin"]["api"]
    for call, params in [
        (b.updateServiceOffering, {"id": mine["id"], "name": "stolen"}),
        (b.deleteServiceOffering, {"id": mine["id"]}),
        (b.deleteDiskOffering, {"id": disk["id"]}),
    ]:
        error = expect_api_error(call, **params)
        assert error.status == 431, error.error

    # Its own domain admin can.
    assert da.updateServiceOffering(id=mine["id"], name="renamed")["serviceoffering"][
        "name"] == "renamed"
    assert da.deleteDiskOffering(id=disk["id"])["success"] in (True, "true")
    assert disk["id"] not in {o["id"] for o in admin.listDiskOfferings(fetch_list=True)}
    assert da.deleteServiceOffering(id=mine["id"])["success"] in (True, "true")


def test_delete_disk_offering(admin):
    o = admin.createDiskOffering(name=unique("d"), displaytext="d", disksize=2)["diskoffering"]
    assert admin.deleteDiskOffering(id=o["id"])["success"] in (True, "true")
    assert o["id"] not in {x["id"] for x in admin.listDiskOfferings(fetch_list=True)}
    error = expect_api_error(admin.deleteDiskOffering, id=o["id"])
    assert error.status == 431


# -- template sources ------------------------------------------------------------------


@pytest.mark.parametrize("url", [
    "/etc/shadow",
    "file:///etc/shadow",
    "/nonexistent/file.qcow2",
    "ftp://example.org/x.qcow2",
])
def test_users_may_only_register_http_templates(user, zone, os_type, url):
    error = expect_api_error(user["api"].registerTemplate, name=unique("t"),
                             displaytext="t", url=url, format="QCOW2", hypervisor="KVM",
                             ostypeid=os_type["id"], zoneid=zone["id"])
    assert error.status == 431
    # The same text whether the file exists or not: no oracle.
    assert "only http and https" in error.error["errortext"], error.error
    assert "url" in error.error["errortext"]


@pytest.mark.parametrize("host", ["127.0.0.1", "169.254.169.254", "10.0.0.1", "[::1]",
                                  "localhost"])
def test_internal_addresses_are_refused(user, admin, zone, os_type, host):
    for api in (user["api"], admin):
        error = expect_api_error(api.registerTemplate, name=unique("t"), displaytext="t",
                                 url=f"http://{host}:1/x.qcow2", format="QCOW2",
                                 hypervisor="KVM", ostypeid=os_type["id"],
                                 zoneid=zone["id"])
        assert error.status == 431, error.error
        assert "internal address" in error.error["errortext"], error.error


def test_own_address_is_internal(user, coordinator, zone, os_type):
    """The coordinator's listeners, reached through this machine's own
    address rather than loopback, are refused too."""
    import socket
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("192.0.2.1", 9))  # no packet is sent for UDP
        own = probe.getsockname()[0]
    except OSError:
        pytest.skip("no non-loopback address on this machine")
    finally:
        probe.close()
    error = expect_api_error(user["api"].registerTemplate, name=unique("t"), displaytext="t",
                             url=f"http://{own}:{coordinator.port}/client/api?x.qcow2",
                             format="QCOW2", hypervisor="KVM", ostypeid=os_type["id"],
                             zoneid=zone["id"])
    assert error.status == 431, error.error
    assert "internal address" in error.error["errortext"]


class _Files(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}

    def do_GET(self):  # noqa: N802 - http.server's name
        body = self.files.get(self.path.split("?")[0])
        if body is None:
            self.send_response(404)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def file_server(image):
    raw = image.path.read_bytes()
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("disk.img", raw)
    _Files.files = {
        "/img": raw,
        "/img.gz": gzip.compress(raw),
        "/img.bz2": bz2.compress(raw),
        "/img.zip": zipped.getvalue(),
    }
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Files)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", len(raw)
    server.shutdown()


def test_allowed_internal_site_and_compressed_templates(admin, zone, os_type, image,
                                                        file_server):
    base, size = file_server
    admin.updateConfiguration(name="secstorage.allowed.internal.sites", value="127.0.0.1/32")
    try:
        error = expect_api_error(admin.updateConfiguration,
                                 name="secstorage.allowed.internal.sites", value="not-a-cidr")
        assert error.status == 431
        for suffix in ("", ".gz", ".bz2", ".zip"):
            t = admin.registerTemplate(name=unique("z"), displaytext="z",
                                       url=f"{base}/img{suffix}", format=image.format,
                                       hypervisor="Simulator", ostypeid=os_type["id"],
                                       zoneid=zone["id"])["template"][0]

            def ready(tid=t["id"]):
                found = admin.listTemplates(templatefilter="all", id=tid)["template"][0]
                assert not found["status"].startswith("Failed"), found
                return found if found["isready"] else None

            found = wait_for(ready, 60, f"template {suffix or 'plain'} to become ready")
            # Unpacked: the stored image is the original, not the archive.
            assert found["physicalsize"] == size, (suffix, found)
    finally:
        admin.updateConfiguration(name="secstorage.allowed.internal.sites", value="")
    error = expect_api_error(admin.registerTemplate, name=unique("z"), displaytext="z",
                             url=f"{base}/img", format=image.format, hypervisor="Simulator",
                             ostypeid=os_type["id"], zoneid=zone["id"])
    assert error.status == 431


# -- sessions and logins ---------------------------------------------------------------


def _login(coordinator, account, password=None, session=None):
    s = session or requests.Session()
    r = s.post(coordinator.endpoint, data={
        "command": "login", "username": account["name"],
        "password": password if password is not None else account["password"],
        "domain": "/", "response": "json"}, timeout=30)
    return s, r


def test_session_needs_parameter_and_cookie(coordinator, admin):
    account = create_account(admin)
    account["name"] = account["username"]
    s, r = _login(coordinator, account)
    assert r.status_code == 200, r.text
    key = r.json()["loginresponse"]["sessionkey"]
    params = {"command": "listVirtualMachines", "response": "json"}
    # The cookie alone (what a forged cross-site request carries): refused.
    assert s.get(coordinator.endpoint, params=params, timeout=30).status_code == 401
    # The parameter alone: refused.
    assert requests.get(coordinator.endpoint, params={**params, "sessionkey": key},
                        timeout=30).status_code == 401
    # A parameter that does not match the cookie: refused.
    assert s.get(coordinator.endpoint, params={**params, "sessionkey": key[:-1] + "x"},
                 timeout=30).status_code == 401
    # Both, equal: accepted.
    assert s.get(coordinator.endpoint, params={**params, "sessionkey": key},
                 timeout=30).status_code == 200


def test_failed_logins_are_throttled(coordinator, admin):
    admin.updateConfiguration(name="login.failures.lockout", value="3")
    try:
        account = create_account(admin)
        account["name"] = account["username"]
        for _ in range(5):
            _, r = _login(coordinator, account, password="wrong")
            assert r.status_code == 401
        # Locked: the right password is refused too.
        _, r = _login(coordinator, account)
        assert r.status_code == 401, r.text
        # Another user from the same address is not affected.
        other = create_account(admin)
        other["name"] = other["username"]
        assert _login(coordinator, other)[1].status_code == 200
        time.sleep(3.5)
        _, r = _login(coordinator, account)
        assert r.status_code == 200, r.text
    finally:
        admin.updateConfiguration(name="login.failures.lockout", value="60")


def test_enforced_post_refuses_signed_get(fresh_coordinator):
    admin = fresh_coordinator.client()
    admin.updateConfiguration(name="enforce.post.requests.and.timestamps", value="true")
    expires = time.strftime("%Y-%m-%dT%H:%M:%S+0000", time.gmtime(time.time() + 300))
    params = {"command": "listZones", "response": "json", "apikey": fresh_coordinator.apikey,
              "signatureversion": "3", "expires": expires}
    signed = {**params, "signature": sign_java(params, fresh_coordinator.secretkey)}
    r = requests.get(fresh_coordinator.endpoint, params=signed, timeout=30)
    assert r.status_code == 401, r.text
    r = requests.post(fresh_coordinator.endpoint, data=signed, timeout=30)
    assert r.status_code == 200, r.text


# -- malformed parameters ----------------------------------------------------------


def test_malformed_parameters_are_refused(admin, coordinator, env):
    # POST, so a megabyte of parameters reaches the API rather than the URL limit.
    admin = coordinator.client()
    admin.method = "post"
    cases = [
        (admin.createServiceOffering,
         {"name": unique("o"), "displaytext": "o", "cpunumber": "", "memory": 128},
         "cpunumber"),
        (admin.listVirtualMachines,
         {"ids": f"{uuid.uuid4()},garbage"}, "ids"),
        (admin.deployVirtualMachine,
         {**env.deploy_args(), "details[abc].x": "1"}, "details"),
        (admin.deployVirtualMachine,
         {**env.deploy_args(), "details[0].memory": "abc"}, "details"),
        (admin.deployVirtualMachine,
         {**env.deploy_args(), "displayname": "x" * (1 << 20)}, "displayname"),
        (admin.createServiceOffering,
         {"name": "n" * 256, "displaytext": "o", "cpunumber": 1, "memory": 128}, "name"),
    ]
    before = len(admin.listVirtualMachines(listall=True, fetch_list=True))
    for call, params, name in cases:
        error = expect_api_error(call, **params)
        assert error.status == 431, (name, error.error)
        assert name in error.error["errortext"], (name, error.error)
    assert len(admin.listVirtualMachines(listall=True, fetch_list=True)) == before
    # 255 characters are fine: the limit listApis advertises.
    apis = admin.listApis(name="createServiceOffering")["api"][0]
    length = {p["name"]: p["length"] for p in apis["params"]}["name"]
    assert length == 255
    o = admin.createServiceOffering(name="n" * 255, displaytext="o", cpunumber=1,
                                    cpuspeed=100, memory=128)["serviceoffering"]
    admin.deleteServiceOffering(id=o["id"])


def test_required_map_parameter_is_seen(admin):
    role = admin.importRole(name=unique("role"), type="User",
                            **{"rules[0].rule": "listZones", "rules[0].permission": "allow"})
    assert role["role"]["name"]


# -- the listeners ----------------------------------------------------------------


def test_metrics_are_not_on_the_api_listener(coordinator):
    r = requests.get(f"http://127.0.0.1:{coordinator.port}/metrics", timeout=10)
    assert r.status_code == 404
    r = requests.get(f"http://127.0.0.1:{coordinator.metrics_port}/metrics", timeout=10)
    assert r.status_code == 200 and "orrery_jobs" in r.text


def test_idle_and_half_open_connections_do_not_lock_clients_out(tmp_path):
    import resource
    import socket

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 4096:
        pytest.skip(f"descriptor hard limit {hard} is too low for this test")
    # This test opens 1,100 connections itself.
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    coordinator = Coordinator(tmp_path / "c", hosts=1)
    coordinator.config = {"api_header_timeout_secs": 1, "api_idle_timeout_secs": 60}
    # Start it with the common default of 1,024 descriptors: it must raise
    # its own limit rather than run out.
    coordinator.preexec = lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
    coordinator.init()
    coordinator.start()
    sockets = []
    try:
        # A request whose header never ends is cut off.
        half = socket.create_connection(("127.0.0.1", coordinator.port), timeout=10)
        half.sendall(b"GET /client/api?command=listZones HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        half.settimeout(10)
        try:
            while half.recv(1024):
                pass
        except ConnectionResetError:
            pass
        assert time.monotonic() - started < 8
        half.close()
        # 1,100 idle connections, more than the descriptors it started with.
        for _ in range(1100):
            sockets.append(socket.create_connection(("127.0.0.1", coordinator.port), timeout=10))
        t = time.monotonic()
        zones = coordinator.client().listZones()
        assert zones["count"] == 1
        assert time.monotonic() - t < 10
    finally:
        for s in sockets:
            s.close()
        coordinator.stop()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
