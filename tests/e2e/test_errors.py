"""Error envelope: HTTP status == errorcode, one top-level key, the texts clients match on."""

import uuid

import requests

from orrery_e2e import SIGNATURE_ERROR, expect_api_error, go_expires, sign_java


def assert_error_envelope(response: requests.Response, code: int) -> dict:
    assert response.status_code == code, response.text
    assert response.headers.get("Content-Type", "").startswith("application/json")
    body = response.json()
    assert isinstance(body, dict) and len(body) == 1, body
    [key] = body
    assert key.endswith("response"), body
    inner = body[key]
    assert inner["errorcode"] == code, inner
    assert isinstance(inner["errortext"], str)
    return inner


def signed(params: dict, key: str, secret: str) -> dict:
    params = {**params, "apiKey": key, "response": "json"}
    params["signature"] = sign_java(params, secret)
    return params


def test_missing_parameter(admin, env):
    error = expect_api_error(admin.deployVirtualMachine,
                             serviceofferingid=env.offering["id"],
                             templateid=env.template["id"])
    assert error.status == 431
    assert error.error["errorcode"] == 431
    assert "cserrorcode" in error.error
    assert error.error["errortext"] == (
        "Unable to execute API command deployvirtualmachine due to missing parameter zoneid")
    assert error.exception.response.json().keys() == {"deployvirtualmachineresponse"}


def test_unknown_id(admin):
    missing = str(uuid.uuid4())
    error = expect_api_error(admin.listVirtualMachines, id=missing)
    assert error.status == 431
    assert error.error["errorcode"] == 431
    assert isinstance(error.error["cserrorcode"], int)
    assert f"Invalid parameter id value={missing}" in error.error["errortext"]
    assert error.exception.response.json().keys() == {"listvirtualmachinesresponse"}


def test_unknown_id_on_async_command_fails_synchronously(admin):
    missing = str(uuid.uuid4())
    error = expect_api_error(admin.stopVirtualMachine, id=missing)
    assert error.status == 431, error.error  # not a failed job
    assert f"Invalid parameter id value={missing}" in error.error["errortext"]


def test_bad_signature(coordinator):
    params = signed({"command": "listZones"}, coordinator.apikey, "definitely-not-the-secret")
    response = requests.get(coordinator.endpoint, params=params, timeout=30)
    inner = assert_error_envelope(response, 401)
    assert inner["errortext"] == SIGNATURE_ERROR


def test_good_signature_with_raw_requests(coordinator):
    params = signed({"command": "listZones"}, coordinator.apikey, coordinator.secretkey)
    response = requests.get(coordinator.endpoint, params=params, timeout=30)
    assert response.status_code == 200, response.text
    assert response.json().keys() == {"listzonesresponse"}


def test_unknown_api_key(coordinator):
    params = signed({"command": "listZones"}, "no-such-key", coordinator.secretkey)
    inner = assert_error_envelope(
        requests.get(coordinator.endpoint, params=params, timeout=30), 401)
    assert inner["errortext"] == SIGNATURE_ERROR


def test_missing_signature(coordinator):
    params = {"command": "listZones", "apiKey": coordinator.apikey, "response": "json"}
    inner = assert_error_envelope(
        requests.get(coordinator.endpoint, params=params, timeout=30), 401)
    assert inner["errortext"] == SIGNATURE_ERROR


def test_expired_request(coordinator):
    params = signed({"command": "listZones", "signatureVersion": "3",
                     "expires": "2001-01-01T00:00:00+0000"},
                    coordinator.apikey, coordinator.secretkey)
    inner = assert_error_envelope(
        requests.get(coordinator.endpoint, params=params, timeout=30), 401)
    assert inner["errortext"] == SIGNATURE_ERROR


def test_signature_version_3_needs_expires(coordinator):
    params = signed({"command": "listZones", "signatureVersion": "3"},
                    coordinator.apikey, coordinator.secretkey)
    assert_error_envelope(requests.get(coordinator.endpoint, params=params, timeout=30), 401)


def test_unexpired_request(coordinator):
    params = signed({"command": "listZones", "signatureversion": "3", "expires": go_expires()},
                    coordinator.apikey, coordinator.secretkey)
    response = requests.get(coordinator.endpoint, params=params, timeout=30)
    assert response.status_code == 200, response.text


def test_unknown_command(admin):
    # CloudStack's text, which its web UI matches on (any other 401 text
    # logs the user out).
    error = expect_api_error(admin.noSuchCommandAtAll)
    assert error.status == 401
    assert error.error["errorcode"] == 401
    assert error.error["errortext"] == (
        "The given command 'noSuchCommandAtAll' either does not exist, is not available for "
        "user, or not available from ip address '127.0.0.1'.")


def test_logout_without_a_session_succeeds(coordinator):
    # The web UI logs out before every login; a refusal there would end the
    # session it is about to make.
    for params in ({}, {"sessionkey": "no-such-session"}):
        response = requests.get(coordinator.endpoint, params={
            "command": "logout", "response": "json", **params}, timeout=30)
        assert response.status_code == 200, response.text
        assert response.json() == {"logoutresponse": {"description": "success"}}


def test_parameter_names_are_case_insensitive(admin, env):
    error = expect_api_error(admin.listVirtualMachines, ID=str(uuid.uuid4()))
    assert error.status == 431  # ID was read as id
    zones = admin.listZones(Id=env.zone["id"])
    assert zones["count"] == 1


def test_unknown_parameters_are_ignored(admin, env):
    zones = admin.listZones(id=env.zone["id"], thisparameterdoesnotexist="x")
    assert zones["count"] == 1
