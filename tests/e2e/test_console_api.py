"""createConsoleEndpoint through PyPI's cs on simulated hosts: the answer's
shape, who may ask, and the console proxy's WebSocket refusing a token it
does not know or one already spent. The console itself, in a browser over
VNC with TLS, is the multi-host lab's test."""

from __future__ import annotations

import base64
import os
import socket
from urllib.parse import parse_qs, unquote, urlparse

from orrery_e2e import deploy, expect_api_error


def upgrade(host: str, port: int, path: str) -> str:
    """A WebSocket upgrade request; returns the status line."""
    key = base64.b64encode(os.urandom(16)).decode()
    req = (f"GET /{path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
           f"Sec-WebSocket-Protocol: binary\r\n\r\n")
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(req.encode())
        return s.recv(4096).decode(errors="replace").split("\r\n", 1)[0]


def test_endpoint_shape_and_token_use(admin, env, coordinator):
    vm = deploy(admin, env)
    e = admin.createConsoleEndpoint(virtualmachineid=vm["id"])["consoleendpoint"]
    assert e["success"] is True
    ws = e["websocket"]
    assert set(ws) == {"token", "host", "port", "path"}
    assert len(ws["token"]) >= 40 and ws["path"] == f"console/websockify?token={ws['token']}"
    url = urlparse(e["url"])
    assert url.path == "/console/vnc_lite.html"
    assert unquote(parse_qs(url.query)["path"][0]) == ws["path"]
    assert (ws["host"], int(ws["port"])) == ("127.0.0.1", coordinator.console_port)
    # A second endpoint has a new token.
    again = admin.createConsoleEndpoint(virtualmachineid=vm["id"])["consoleendpoint"]
    assert again["websocket"]["token"] != ws["token"]
    # Unknown token: refused before any upgrade.
    assert " 403 " in upgrade(ws["host"], int(ws["port"]), "console/websockify?token=nope") + " "
    # A simulated host has no console: the token is spent all the same.
    assert "403" in upgrade(ws["host"], int(ws["port"]), ws["path"])
    assert "403" in upgrade(ws["host"], int(ws["port"]), ws["path"])
    events = admin.listEvents(type="VM.CONSOLE").get("event", [])
    assert not any(vm["id"] in ev["description"] for ev in events)


def test_only_owners_and_admins_and_only_running_instances(admin, env, user):
    mine = deploy(user["api"], env)
    assert admin.createConsoleEndpoint(virtualmachineid=mine["id"])["consoleendpoint"]["success"]
    theirs = deploy(admin, env)
    err = expect_api_error(user["api"].createConsoleEndpoint, virtualmachineid=theirs["id"])
    assert err.status == 431 and "virtualmachineid" in err.error["errortext"], err.error
    admin.stopVirtualMachine(id=theirs["id"])
    err = expect_api_error(admin.createConsoleEndpoint, virtualmachineid=theirs["id"])
    assert "Running" in err.error["errortext"], err.error
    err = expect_api_error(admin.createConsoleEndpoint, virtualmachineid="not-a-uuid")
    assert err.status == 431 and "virtualmachineid" in err.error["errortext"], err.error


def test_novnc_page_is_served_and_paths_stay_inside(coordinator):
    import requests

    base = f"http://127.0.0.1:{coordinator.console_port}/console"
    r = requests.get(f"{base}/vnc_lite.html", timeout=10)
    assert r.status_code == 200 and "noVNC" in r.text
    r = requests.get(f"{base}/core/rfb.js", timeout=10)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/javascript")
    assert requests.get(f"{base}/../../etc/passwd", timeout=10).status_code in (400, 404)
    assert requests.get(f"{base}/%2e%2e/%2e%2e/etc/passwd", timeout=10).status_code in (400, 404)


def test_older_console_url_redirects_a_session_to_a_one_time_url(admin, env, user, coordinator):
    import requests

    from test_session_login import login

    mine = deploy(user["api"], env)
    theirs = deploy(admin, env)
    session = requests.Session()
    key = login(session, coordinator.endpoint, user).json()["loginresponse"]["sessionkey"]
    base = coordinator.endpoint.replace("/client/api", "/client/console")

    r = session.get(base, params={"cmd": "access", "vm": mine["id"], "sessionkey": key},
                    allow_redirects=False, timeout=10)
    assert r.status_code == 302, r.text
    target = urlparse(r.headers["location"])
    assert target.path == "/console/vnc_lite.html" and "token" in unquote(target.query)
    # Someone else's instance, no session, or no sessionkey: refused.
    r = session.get(base, params={"cmd": "access", "vm": theirs["id"], "sessionkey": key},
                    allow_redirects=False, timeout=10)
    assert r.status_code == 431 and "vm" not in r.headers.get("location", ""), r.text
    r = requests.get(base, params={"cmd": "access", "vm": mine["id"]}, allow_redirects=False,
                     timeout=10)
    assert r.status_code == 401
    r = session.get(base, params={"cmd": "access", "vm": mine["id"]}, allow_redirects=False,
                    timeout=10)
    assert r.status_code == 401
    r = session.get(base, params={"cmd": "thumbnail", "vm": mine["id"], "sessionkey": key},
                    allow_redirects=False, timeout=10)
    assert r.status_code == 400
