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


def test_the_root_admin_logs_in_with_the_password_init_printed(coordinator):
    password = coordinator.init_output["password"]
    assert len(password) >= 16
    admin = {"username": "admin"}
    response = login(requests.Session(), coordinator.endpoint, admin, password=password)
    assert response.status_code == 200, response.text
    assert response.json()["loginresponse"]["type"] == "1"
    wrong = login(requests.Session(), coordinator.endpoint, admin, password=password + "x")
    assert wrong.status_code == 401, wrong.text


def test_update_user_changes_the_password_with_the_current_one(coordinator, admin,
                                                                login_account):
    from orrery_e2e import expect_api_error
    user = coordinator.client(login_account["apikey"], login_account["secretkey"])
    uid = login_account["user"]["id"]
    endpoint = coordinator.endpoint
    # Without, or with a wrong, current password: refused, nothing changed.
    err = expect_api_error(user.updateUser, id=uid, password="Another-Pa55")
    assert err.status == 431 and "currentpassword" in err.error["errortext"], err
    err = expect_api_error(user.updateUser, id=uid, password="Another-Pa55",
                           currentpassword="not-it")
    assert err.status == 431 and "currentpassword" in err.error["errortext"], err
    assert login(requests.Session(), endpoint, login_account).status_code == 200
    # With it: the new password works, the old one no longer does.
    updated = user.updateUser(id=uid, password="Another-Pa55",
                              currentpassword=login_account["password"])["user"]
    assert updated["id"] == uid and "password" not in updated
    assert login(requests.Session(), endpoint, login_account).status_code == 401
    assert login(requests.Session(), endpoint, login_account,
                 password="Another-Pa55").status_code == 200
    # The root admin sets it without the current one; names change too.
    admin.updateUser(id=uid, password="Third-Pa55", firstname="Renamed")
    assert login(requests.Session(), endpoint, login_account,
                 password="Third-Pa55").status_code == 200
    assert admin.listUsers(id=uid)["user"][0]["firstname"] == "Renamed"
    # Another user cannot touch it, nor a ROOT domain admin the root admin.
    other = create_account(admin, accounttype=0)
    other_api = coordinator.client(other["apikey"], other["secretkey"])
    err = expect_api_error(other_api.updateUser, id=uid, password="Mine-Pa55")
    assert err.status in (431, 531), err
    dadmin = create_account(admin, accounttype=2)
    dadmin_api = coordinator.client(dadmin["apikey"], dadmin["secretkey"])
    root_id = coordinator.init_output["userid"]
    err = expect_api_error(dadmin_api.updateUser, id=root_id, password="Taken-Pa55")
    assert err.status in (431, 531), err
    err = expect_api_error(dadmin_api.registerUserKeys, id=root_id)
    assert err.status in (431, 531), err
    assert login(requests.Session(), endpoint, {"username": "admin"},
                 password=coordinator.init_output["password"]).status_code == 200
