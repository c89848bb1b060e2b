"""Operating the coordinator: health endpoints on the metrics listener,
`init --if-missing --keys-file` for a service's first start, and `backup`
of a store that is being served."""

from __future__ import annotations

import json
import os
import stat
import subprocess

import pytest
import requests

from orrery_e2e import Coordinator, unique


def test_health_endpoints(coordinator):
    base = f"http://127.0.0.1:{coordinator.metrics_port}"
    assert requests.get(f"{base}/healthz", timeout=5).text == "ok\n"
    r = requests.get(f"{base}/readyz", timeout=5)
    assert r.status_code == 200 and r.text == "ready\n"
    # Not on the API listener.
    api = coordinator.endpoint.replace("/client/api", "")
    assert requests.get(f"{api}/readyz", timeout=5).status_code == 404


def test_init_if_missing_writes_keys_once(tmp_path):
    c = Coordinator(tmp_path / "c", hosts=0)
    keys = tmp_path / "admin-keys.json"
    cmd = [str(c.binary), *c.store_args, "init", "--data-dir", str(c.data_dir), "--if-missing",
           "--keys-file", str(keys)]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    assert str(keys) in first.stdout and "secretkey" not in first.stdout
    assert stat.S_IMODE(os.stat(keys).st_mode) == 0o600
    written = json.loads(keys.read_text())
    assert written["apikey"] and written["secretkey"] and written["password"]
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and "nothing to do" in again.stdout
    assert json.loads(keys.read_text()) == written
    # Without --if-missing an initialised store is refused.
    plain = subprocess.run([a for a in cmd if a != "--if-missing"][:-2], capture_output=True, text=True, timeout=60)
    assert plain.returncode != 0 and "already initialised" in plain.stderr


def test_backup_while_serving_restores_the_records(fresh_coordinator, image, tmp_path):
    if fresh_coordinator.store_url:
        pytest.skip("`backup` copies SQLite stores; PostgreSQL's are backed up with pg_dump")
    from orrery_e2e import create_service_offering, find_os_type, register_template
    api = fresh_coordinator.client()
    zone = api.listZones()["zone"][0]
    offering = create_service_offering(api)
    template = register_template(api, zone["id"], find_os_type(api)["id"], image)
    names = []
    for _ in range(5):
        name = unique("bk")
        api.deployVirtualMachine(zoneid=zone["id"], serviceofferingid=offering["id"],
                                 templateid=template["id"], name=name, startvm=False)
        names.append(name)
    to = tmp_path / "copy"
    backup = [str(fresh_coordinator.binary), "backup", "--data-dir",
              str(fresh_coordinator.data_dir), "--to", str(to)]
    r = subprocess.run(backup, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert (to / "orrery.db").exists() and (to / "ca.key").exists()
    assert stat.S_IMODE(os.stat(to / "ca.key").st_mode) == 0o600
    # A second backup into the same place is refused.
    assert subprocess.run(backup, capture_output=True, text=True, timeout=120).returncode != 0
    # The copy serves: same keys, same instances.
    restored = Coordinator(tmp_path / "restored", hosts=0)
    restored.base_dir.mkdir()
    restored.data_dir = to
    restored.apikey, restored.secretkey = fresh_coordinator.apikey, fresh_coordinator.secretkey
    restored.start()
    try:
        listed = {v["name"] for v in restored.client().listVirtualMachines(listall=True)
                  .get("virtualmachine", [])}
        assert set(names) <= listed
    finally:
        restored.stop()
