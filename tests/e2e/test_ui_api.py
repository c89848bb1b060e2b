"""What CloudStack's web UI does at login and on its pages, through plain
HTTP as the browser sends it: logout before login, login with the root
admin's password, listCapabilities, listApis, listUsers of the session user,
the pre-login calls (listGuiThemes, forgotPassword), and the empty answers of
features Orrery does not offer, in CloudStack's exact shape."""

from __future__ import annotations

import base64

import requests

EMPTY = ["listLdapConfigurations", "listIdps", "listOauthProvider",
         "listNetworkServiceProviders", "listVPCs", "listRouters", "listSystemVms",
         "listAlerts", "listAnnotations"]


def call(session, endpoint, key, command, **params):
    r = session.get(endpoint, params={"command": command, "sessionkey": key,
                                      "response": "json", **params}, timeout=30)
    return r


def test_the_ui_login_sequence_and_its_pages(coordinator):
    endpoint = coordinator.endpoint
    s = requests.Session()
    # Before login: themes (none) and the mail-less password reset.
    themes = s.get(endpoint, params={"command": "listGuiThemes", "response": "json"},
                   timeout=30)
    assert themes.status_code == 200 and themes.json() == {"listguithemesresponse": {}}
    forgot = s.post(endpoint, data={"command": "forgotPassword", "username": "admin",
                                    "domain": "/", "response": "json"}, timeout=30)
    assert forgot.status_code == 530, forgot.text
    assert "mail" in forgot.json()["forgotpasswordresponse"]["errortext"]
    # The UI logs out before it logs in.
    out = s.get(endpoint, params={"command": "logout", "response": "json"}, timeout=30)
    assert out.status_code == 200 and out.json() == {"logoutresponse": {"description": "success"}}
    login = s.post(endpoint, data={"command": "login", "username": "admin",
                                   "password": coordinator.init_output["password"],
                                   "domain": "/", "response": "json"}, timeout=30)
    assert login.status_code == 200, login.text
    info = login.json()["loginresponse"]
    key = info["sessionkey"]

    caps = call(s, endpoint, key, "listCapabilities")
    assert caps.status_code == 200, caps.text
    cap = caps.json()["listcapabilitiesresponse"]["capability"]
    assert cap["dynamicrolesenabled"] is True and cap["securitygroupsenabled"] is False
    assert cap["cloudstackversion"].startswith("4.")
    assert isinstance(cap["kvmsnapshotenabled"], bool)
    assert cap["instanceleaseenabled"] is False

    apis = call(s, endpoint, key, "listApis").json()["listapisresponse"]["api"]
    names = {a["name"] for a in apis}
    assert {"listCapabilities", "listVPCs", "updateUser", "listSSHKeyPairs",
            "listUserData", "listHypervisors"} <= names

    users = call(s, endpoint, key, "listUsers", id=info["userid"]).json()
    assert users["listusersresponse"]["user"][0]["username"] == "admin"

    for command in EMPTY:
        r = call(s, endpoint, key, command)
        assert r.status_code == 200, (command, r.text)
        assert r.json() == {f"{command.lower()}response": {}}, (command, r.json())
    cloudian = call(s, endpoint, key, "cloudianIsEnabled").json()
    assert cloudian["cloudianisenabledresponse"]["cloudian"]["enabled"] is False
    hyp = call(s, endpoint, key, "listHypervisors").json()["listhypervisorsresponse"]
    assert hyp["count"] >= 1 and all("name" in h for h in hyp["hypervisor"])
    # An unknown command keeps the session (CloudStack's 401 text).
    unknown = call(s, endpoint, key, "listNothingAtAll")
    assert unknown.status_code == 401
    assert "either does not exist" in unknown.json()["errorresponse"]["errortext"]
    assert call(s, endpoint, key, "listZones").status_code == 200


def test_the_metrics_pages_and_the_infrastructure_overview(fresh_coordinator, image):
    """CloudStack's metrics fields, units and formats, with figures worked
    out from one instance of 1 x 500 MHz and 256 MB on a cloud of its own."""
    import re

    from orrery_e2e import (create_account, create_service_offering, expect_api_error,
                            find_os_type, register_template, unique)
    admin = fresh_coordinator.client()
    zone = admin.listZones()["zone"][0]
    hosts = admin.listHosts()["host"]
    infra = admin.listInfrastructure()["infrastructure"]
    assert infra["hosts"] == len(hosts) and infra["zones"] == 1
    assert infra["systemvms"] == 0 and infra["managementservers"] == 1
    assert {"imagecachestores", "backuprepositories", "objectstores", "ilbvms"} <= set(infra)
    # CloudStack has no pods metrics page (its pods page uses listPods).
    err = expect_api_error(admin.listPodsMetrics)
    assert err.status == 401 and "either does not exist" in err.error["errortext"]

    offering = create_service_offering(admin, cpunumber=1, cpuspeed=500, memory=256)
    template = register_template(admin, zone["id"], find_os_type(admin)["id"], image)
    host = hosts[0]
    vm = admin.deployVirtualMachine(zoneid=zone["id"], serviceofferingid=offering["id"],
                                    templateid=template["id"], name=unique("m"),
                                    hostid=host["id"])["virtualmachine"]

    def gb(n: float) -> str:
        return f"{n / 2**30:.2f} GB"

    flags = ["cpuallocatedthreshold", "cpuallocateddisablethreshold", "memorythreshold",
             "memorydisablethreshold", "memoryallocatedthreshold",
             "memoryallocateddisablethreshold"]
    by_id = {h["id"]: h for h in admin.listHostsMetrics()["host"]}
    assert set(by_id) == {h["id"] for h in hosts}
    h = by_id[host["id"]]
    assert h["powerstate"] == "Disabled"  # no out-of-band management
    assert h["instances"] == "1 / 1"
    assert h["cputotalghz"] == f"{host['cpunumber'] * host['cpuspeed'] / 1000:.2f} Ghz"
    assert h["cpuallocatedghz"] == "0.50 Ghz"
    assert h["memorytotalgb"] == gb(host["memorytotal"])
    assert h["memoryallocatedgb"] == h["memoryusedgb"] == "0.25 GB"
    assert all(h[f] is False for f in flags), h
    assert "cpuusedghz" not in h  # simulated hosts report no use
    # A page carries its hosts' figures too.
    page = admin.listHostsMetrics(id=host["id"], page=1, pagesize=1)["host"]
    assert [(x["id"], x["instances"]) for x in page] == [(host["id"], "1 / 1")]
    other = next(x for i, x in by_id.items() if i != host["id"])
    assert other["instances"] == "0 / 0" and other["cpuallocatedghz"] == "0.00 Ghz"

    cpu = sum(x["cpunumber"] * x["cpuspeed"] for x in hosts)
    mem = sum(x["memorytotal"] for x in hosts)
    z = admin.listZonesMetrics()["zone"][0]
    assert z["id"] == zone["id"] and z["state"] == "Enabled" and z["clusters"] == "1 / 1"
    assert z["cputotal"] == f"{cpu / 1000:.2f} Ghz"
    assert z["cpuallocated"] == f"{500 * 100 / cpu:.2f}%"
    assert z["memorytotal"] == gb(mem)
    assert z["memoryallocated"] == z["memoryused"] == f"{2**28 * 100 / mem:.2f}%"
    n = len(hosts)
    avg = 2**28 / n
    assert z["memorymaxdeviation"] == f"{(2**28 - avg) * 100 / avg:.2f}%"
    assert all(z[f] is False for f in flags), z
    c = admin.listClustersMetrics()["cluster"][0]
    assert c["hosts"] == f"{n} / {n}" and c["state"] == "Enabled"
    assert c["cputotal"] == z["cputotal"] and c["memoryallocated"] == z["memoryallocated"]

    # A cluster's notification threshold below what is allocated flags it,
    # on the cluster and its host; the zone uses the global value.
    admin.updateConfiguration(name="cluster.cpu.allocated.capacity.notificationthreshold",
                              value="0.0001", clusterid=c["id"])
    assert admin.listClustersMetrics()["cluster"][0]["cpuallocatedthreshold"] is True
    h = next(x for x in admin.listHostsMetrics()["host"] if x["id"] == host["id"])
    assert h["cpuallocatedthreshold"] is True and h["cpuallocateddisablethreshold"] is False
    assert admin.listZonesMetrics()["zone"][0]["cpuallocatedthreshold"] is False

    for p in admin.listStoragePoolsMetrics().get("storagepool", []):
        assert re.fullmatch(r"\d+\.\d\d GB \(x1\.0\)", p["disksizetotalgb"]), p
        for k in ("disksizeallocatedgb", "disksizeusedgb", "disksizeunallocatedgb"):
            assert re.fullmatch(r"\d+\.\d\d GB", p[k]), (k, p)
        for k in ("storageusagethreshold", "storageusagedisablethreshold",
                  "storageallocatedthreshold", "storageallocateddisablethreshold"):
            assert p[k] is False, (k, p)

    vols = admin.listVolumesMetrics(virtualmachineid=vm["id"])["volume"]
    root = next(v for v in vols if v["type"] == "ROOT")
    assert root["sizegb"] == f"{root['size'] / 2**30:.2f} GiB"
    assert root["storagetype"] == "Shared (ROOT)"
    m = admin.listVirtualMachinesMetrics(id=vm["id"])["virtualmachine"][0]
    assert m["cputotal"] == "0.5 Ghz" and m["memorytotal"] == "0.25 GiB"

    # A user sees the plain storage type, and no infrastructure.
    acct = create_account(admin)
    user = fresh_coordinator.client(acct["apikey"], acct["secretkey"])
    assert all(v["storagetype"] in ("shared", "local")
               for v in user.listVolumesMetrics().get("volume", []))
    assert expect_api_error(user.listZonesMetrics).status in (401, 432)


PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(range(64))).decode()


def test_resource_icons(admin, coordinator, env):
    from orrery_e2e import create_account, deploy, expect_api_error, unique
    zone = env.zone["id"]
    admin.uploadResourceIcon(resourceids=zone, resourcetype="Zone", base64image=PNG)
    listed = admin.listZones(id=zone, showicon=True)["zone"][0]
    assert listed["icon"]["base64image"] == PNG
    assert "icon" not in admin.listZones(id=zone)["zone"][0]
    owner = create_account(admin, accounttype=0)
    api = coordinator.client(owner["apikey"], owner["secretkey"])
    vm = deploy(api, env, name=unique("icon"))
    api.uploadResourceIcon(resourceids=vm["id"], resourcetype="UserVm", base64image=PNG)
    got = api.listResourceIcon(resourceids=vm["id"], resourcetype="VirtualMachine")["icon"]
    assert got == [{"resourceid": vm["id"], "resourcetype": "VirtualMachine", "base64image": PNG}]
    # Not an image, or not the caller's resource: refused, nothing changed.
    err = expect_api_error(api.uploadResourceIcon, resourceids=vm["id"],
                           resourcetype="VirtualMachine",
                           base64image=base64.b64encode(b"plain text").decode())
    assert err.status == 431 and "base64image" in err.error["errortext"], err
    other = create_account(admin, accounttype=0)
    other_api = coordinator.client(other["apikey"], other["secretkey"])
    err = expect_api_error(other_api.uploadResourceIcon, resourceids=vm["id"],
                           resourcetype="VirtualMachine", base64image=PNG)
    assert err.status in (431, 531), err
    err = expect_api_error(api.uploadResourceIcon, resourceids=zone, resourcetype="Zone",
                           base64image=PNG)
    assert err.status in (431, 531), err
    assert not other_api.listResourceIcon(resourceids=vm["id"],
                                          resourcetype="VirtualMachine").get("icon")
    api.deleteResourceIcon(resourceids=vm["id"], resourcetype="VirtualMachine")
    assert not api.listResourceIcon(resourceids=vm["id"],
                                    resourcetype="VirtualMachine").get("icon")
    admin.deleteResourceIcon(resourceids=zone, resourcetype="Zone")
    assert "icon" not in admin.listZones(id=zone, showicon=True)["zone"][0]
    admin.destroyVirtualMachine(id=vm["id"], expunge=True)


def test_icons_show_on_every_list_and_go_with_their_resource(admin, coordinator, env):
    from orrery_e2e import create_account, deploy, unique, wait_for
    owner = create_account(admin, accounttype=0)
    api = coordinator.client(owner["apikey"], owner["secretkey"])
    vm = deploy(api, env, name=unique("icons"))
    root = api.listVolumes(virtualmachineid=vm["id"])["volume"][0]
    acct = owner["account"]
    api.uploadResourceIcon(resourceids=vm["id"], resourcetype="UserVm", base64image=PNG)
    api.uploadResourceIcon(resourceids=root["id"], resourcetype="Volume", base64image=PNG)
    admin.uploadResourceIcon(resourceids=acct["id"], resourcetype="Account", base64image=PNG)
    admin.uploadResourceIcon(resourceids=acct["domainid"], resourcetype="Domain", base64image=PNG)
    shown = [
        api.listVirtualMachines(id=vm["id"], showicon=True)["virtualmachine"][0],
        api.listVolumes(id=root["id"], showicon=True)["volume"][0],
        admin.listAccounts(id=acct["id"], showicon=True)["account"][0],
        admin.listDomains(id=acct["domainid"], showicon=True)["domain"][0],
    ]
    for item in shown:
        assert item["icon"]["base64image"] == PNG and item["icon"]["resourceid"] == item["id"], item
    assert "icon" not in api.listVirtualMachines(id=vm["id"])["virtualmachine"][0]
    # Expunged with the instance: its icon and its root volume's are gone.
    admin.destroyVirtualMachine(id=vm["id"], expunge=True)
    wait_for(lambda: not admin.listVirtualMachines(id=vm["id"], listall=True).get("virtualmachine"), 60,
             "instance never went away")
    for ty, rid in (("VirtualMachine", vm["id"]), ("Volume", root["id"])):
        assert not admin.listResourceIcon(resourceids=rid, resourcetype=ty).get("icon"), ty
    admin.deleteAccount(id=acct["id"])
    wait_for(lambda: not admin.listResourceIcon(resourceids=acct["id"],
                                                resourcetype="Account").get("icon"),
             60, "the account's icon stayed")
    admin.deleteResourceIcon(resourceids=acct["domainid"], resourcetype="Domain")
