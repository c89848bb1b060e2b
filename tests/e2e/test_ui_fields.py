"""The fields CloudStack's web UI reads on its pages, in Orrery's answers.

Each row names a page of the UI (its section configuration: the list's
columns, the metrics view's columns and the details tab), the command the
page calls, and the fields of the first item that CloudStack always fills
for such a record, so the UI shows a value and not an empty cell. Fields
CloudStack itself leaves out for these records (a project's, IPv6, user
data not linked, statistics a simulated host does not report) are not
asked for."""

from __future__ import annotations

import pytest

from orrery_e2e import deploy, unique

RESOURCE_TYPES = ["vm", "cpu", "memory", "volume", "snapshot", "template", "primarystorage",
                  "secondarystorage", "ip", "network", "vpc", "project", "gpu"]

PAGES = [
    # (page, command, params, fields)
    ("compute: instances", "listVirtualMachines", {"id": "@vm"},
     ["name", "state", "instancename", "hostname", "account", "serviceofferingname", "zonename",
      "displayname", "id", "templatename", "osdisplayname", "isdynamicallyscalable", "haenable",
      "hypervisor", "boottype", "bootmode", "domain", "deleteprotection", "nic"]),
    ("compute: instances, metrics", "listVirtualMachinesMetrics", {"id": "@vm"},
     ["name", "state", "instancename", "cpunumber", "cputotal", "memorytotal", "hostname",
      "account", "zonename"]),
    ("compute: instance snapshots", "listVMSnapshot", {"virtualmachineid": "@vm"},
     ["displayname", "state", "name", "type", "current", "created", "account", "domain", "id",
      "virtualmachineid"]),
    ("compute: instance groups", "listInstanceGroups", {"listall": True},
     ["name", "account", "domain", "id", "created"]),
    ("compute: SSH key pairs", "listSSHKeyPairs", {"listall": True},
     ["name", "fingerprint", "account", "domain", "id"]),
    ("compute: affinity groups", "listAffinityGroups", {"listall": True},
     ["name", "type", "account", "domain", "id"]),
    ("infrastructure: zones", "listZonesMetrics", {},
     ["name", "allocationstate", "type", "networktype", "clusters", "cpuallocated", "cputotal",
      "memoryallocated", "memorytotal", "id", "guestcidraddress", "localstorageenabled",
      "securitygroupsenabled"]),
    ("infrastructure: clusters", "listClustersMetrics", {},
     ["name", "state", "allocationstate", "clustertype", "hypervisortype", "hosts", "podname",
      "zonename", "cpuallocated", "cputotal", "memoryallocated", "memorytotal", "id",
      "managedstate", "arch"]),
    ("infrastructure: hosts", "listHostsMetrics", {"type": "routing"},
     ["name", "state", "resourcestate", "ipaddress", "arch", "hypervisor", "version", "instances",
      "powerstate", "cpunumber", "cputotalghz", "cpuallocatedghz", "memorytotalgb",
      "memoryusedgb", "memoryallocatedgb", "clustername", "zonename", "managementservername",
      "id", "type", "podname", "created"]),
    ("infrastructure: primary storage", "listStoragePoolsMetrics", {},
     ["name", "state", "ipaddress", "scope", "type", "path", "disksizeusedgb", "disksizetotalgb",
      "disksizeallocatedgb", "disksizeunallocatedgb", "zonename", "id", "provider", "hypervisor",
      "overprovisionfactor", "disksizetotal", "disksizeallocated", "created"]),
    ("storage: volumes", "listVolumesMetrics", {"id": "@root"},
     ["name", "state", "size", "type", "vmname", "vmstate", "storage", "account", "zonename",
      "id", "storagetype", "deviceid", "sizegb", "provisioningtype"]),
    ("storage: snapshots", "listSnapshots", {"volumeid": "@root"},
     ["name", "state", "volumename", "intervaltype", "created", "account", "domain", "zonename",
      "id", "volumetype", "snapshottype", "physicalsize", "virtualsize"]),
    ("offerings: compute", "listServiceOfferings", {},
     ["name", "displaytext", "cpunumber", "cpuspeed", "memory", "id", "offerha",
      "provisioningtype", "storagetype", "iscustomized", "iscustomizediops", "limitcpuuse",
      "created", "dynamicscalingenabled", "diskofferingstrictness", "encryptroot"]),
    ("offerings: disk", "listDiskOfferings", {},
     ["name", "displaytext", "disksize", "id", "provisioningtype", "storagetype", "iscustomized",
      "disksizestrictness", "iscustomizediops", "created", "encrypt"]),
    ("offerings: network", "listNetworkOfferings", {},
     ["name", "state", "guestiptype", "traffictype", "id", "displaytext", "internetprotocol",
      "ispersistent", "egressdefaultpolicy", "availability", "conservemode", "specifyvlan",
      "specifyipranges", "supportspublicaccess", "supportsstrechedl2subnet", "service"]),
    ("images: templates", "listTemplates", {"templatefilter": "all"},
     ["name", "isready", "ostypename", "hypervisor", "size", "account", "templatetype", "id",
      "displaytext", "format", "physicalsize", "passwordenabled", "crossZones", "directdownload",
      "deployasis", "ispublic", "isfeatured", "isextractable", "isdynamicallyscalable", "domain",
      "created"]),
    ("events", "listEvents", {"listall": True, "type": "VM.CREATE", "keyword": "@vm"},
     ["level", "type", "state", "description", "username", "account", "domain", "created", "id",
      "resourcetype", "resourceid"]),
    ("accounts", "listAccounts", {"listall": True},
     ["name", "state", "rolename", "roletype", "domainpath", "id", "receivedbytes", "sentbytes",
      "created", "vmrunning", "vmstopped"]
     + [f"{t}{x}" for t in RESOURCE_TYPES for x in ("total", "limit", "available")]),
    ("domains", "listDomains", {"listall": True},
     ["name", "state", "path", "level", "id", "created"]),
    ("users", "listUsers", {"listall": True},
     ["username", "state", "firstname", "lastname", "account", "id", "usersource", "rolename",
      "roletype", "is2faenabled", "domain", "created"]),
]


@pytest.fixture(scope="module")
def populated(admin, env):
    """One of each record the pages list."""
    vm = deploy(admin, env, name=unique("ui"))
    admin.createVMSnapshot(virtualmachineid=vm["id"])
    admin.createInstanceGroup(name=unique("grp"))
    admin.createSSHKeyPair(name=unique("key"))
    admin.createAffinityGroup(name=unique("aff"), type="host anti-affinity")
    admin.stopVirtualMachine(id=vm["id"])
    root = admin.listVolumes(virtualmachineid=vm["id"], type="ROOT")["volume"][0]
    admin.createSnapshot(volumeid=root["id"])
    admin.startVirtualMachine(id=vm["id"])
    return {"@vm": vm["id"], "@root": root["id"], "@name": vm["name"]}


@pytest.mark.parametrize("page,command,params,fields", PAGES, ids=[p[0] for p in PAGES])
def test_each_page_finds_its_fields(admin, populated, page, command, params, fields):
    params = {k: populated.get(v, v) if isinstance(v, str) else v for k, v in params.items()}
    answer = getattr(admin, command)(**params)
    lists = [v for k, v in answer.items() if k != "count" and isinstance(v, list)]
    assert lists and lists[0], f"{page}: {command} listed nothing: {answer}"
    item = lists[0][0]
    missing = [f for f in fields if f not in item]
    assert not missing, f"{page}: {command} lacks {missing}: {item}"


def test_account_totals_follow_what_it_holds(admin, env, user):
    """The usage dashboard's figures: an account's instances, their CPUs and
    memory, volumes and snapshots, counted as they come and go."""
    api = user["api"]

    def mine() -> dict:
        return admin.listAccounts(id=user["account"]["id"])["account"][0]

    before = mine()
    vm = deploy(api, env, name=unique("tot"))
    after = mine()
    offering = admin.listServiceOfferings(id=env.offering["id"])["serviceoffering"][0]
    assert after["vmtotal"] == before["vmtotal"] + 1
    assert after["vmrunning"] == before["vmrunning"] + 1
    assert after["cputotal"] == before["cputotal"] + offering["cpunumber"]
    assert after["memorytotal"] == before["memorytotal"] + offering["memory"]
    assert after["volumetotal"] == before["volumetotal"] + 1
    assert after["vmlimit"] == "Unlimited" and after["vmavailable"] == "Unlimited"
    api.stopVirtualMachine(id=vm["id"])
    root = api.listVolumes(virtualmachineid=vm["id"], type="ROOT")["volume"][0]
    api.createSnapshot(volumeid=root["id"])
    stopped = mine()
    assert stopped["vmstopped"] == before["vmstopped"] + 1
    assert stopped["snapshottotal"] == before["snapshottotal"] + 1
    admin.destroyVirtualMachine(id=vm["id"], expunge=True)
    gone = mine()
    assert gone["vmtotal"] == before["vmtotal"]
    assert gone["cputotal"] == before["cputotal"]
    assert gone["volumetotal"] == before["volumetotal"]


def test_a_subdomain_names_its_parent(admin):
    child = admin.createDomain(name=unique("sub"))["domain"]
    listed = admin.listDomains(id=child["id"])["domain"][0]
    assert listed["parentdomainname"] == "ROOT", listed
