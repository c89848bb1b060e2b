"""Session login (what cmk does with a username and password): login, sessionkey, logout."""

import pytest
import requests

from orrery_e2e import create_account


@pytest.fixture
def login_account(admin):
    return create_account(admin, accounttype=0)


def login(session: requests.Session, endpoint: str, account: dict, password=None):
    return session.post(endpoint, data={
        "command": "login",
        "username": account["username"],
        "password": password if password is not None else account["password"],
        "domain": "/",
        "response": "json",
    }, timeout=30)


def test_login_use_session_and_logout(coordinator, login_account):
    endpoint = coordinator.endpoint
    session = requests.Session()

    response = login(session, endpoint, login_account)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body.keys() == {"loginresponse"}
    info = body["loginresponse"]
    key = info["sessionkey"]
    assert isinstance(key, str) and key
    assert info["username"] == login_account["username"]
    assert info["account"] == login_account["name"]
    assert info["userid"] == login_account["user"]["id"]
    assert isinstance(info["timeout"], int)
    assert info["type"] == "0"
    assert "sessionkey" in session.cookies.get_dict()

    # No apiKey, no signature: the session key (parameter + cookie) is enough.
    params = {"command": "listVirtualMachines", "sessionkey": key, "response": "json"}
    listed = session.get(endpoint, params=params, timeout=30)
    assert listed.status_code == 200, listed.text
    assert listed.json().keys() == {"listvirtualmachinesresponse"}

    zones = session.get(endpoint, params={**params, "command": "listZones"}, timeout=30)
    assert zones.status_code == 200, zones.text
    assert zones.json()["listzonesresponse"]["count"] == 1

    out = session.get(endpoint, params={"command": "logout", "sessionkey": key,
                                        "response": "json"}, timeout=30)
    assert out.status_code == 200, out.text
    assert out.json() == {"logoutresponse": {"description": "success"}}

    after = session.get(endpoint, params=params, timeout=30)
    assert after.status_code == 401, after.text
    assert after.json()[next(iter(after.json()))]["errorcode"] == 401

    # The old key on its own, from a client without cookies, does not work either.
    bare = requests.get(endpoint, params=params, timeout=30)
    assert bare.status_code == 401, bare.text


def test_login_with_wrong_password(coordinator, login_account):
    response = login(requests.Session(), coordinator.endpoint, login_account,
                     password="wrong-" + login_account["password"])
    assert response.status_code == 401, response.text
    body = response.json()
    assert len(body) == 1
    assert body[next(iter(body))]["errorcode"] == 401


def test_made_up_session_key_is_refused(coordinator):
    response = requests.get(coordinator.endpoint, params={
        "command": "listVirtualMachines", "sessionkey": "bm90LWEtcmVhbC1zZXNzaW9uLWtleQ",
        "response": "json"}, timeout=30)
    assert response.status_code == 401, response.text
