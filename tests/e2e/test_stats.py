"""Instance statistics through PyPI's cs (simulated hosts sample like agents),
and the Prometheus endpoint."""

import requests
from prometheus_client.parser import text_string_to_metric_families

from orrery_e2e import deploy, expect_api_error, get_vm, unique, wait_for

VM_STAT_KEYS = {"timestamp", "cpuused", "diskioread", "diskiowrite", "diskiopstotal",
                "diskkbsread", "diskkbswrite", "memorykbs", "memoryintfreekbs",
                "memorytargetkbs", "networkkbsread", "networkkbswrite", "networkread",
                "networkwrite"}


def test_usage_history_metrics_and_interval_change(admin, env, coordinator):
    vm = deploy(admin, env, name=unique("stats"))
    # A new interval applies without a restart.
    admin.updateConfiguration(name="vm.stats.interval", value="1000")
    try:
        def history():
            r = admin.listVirtualMachinesUsageHistory(id=vm["id"])
            items = r.get("virtualmachine", [])
            return items if items and len(items[0]["stats"]) >= 3 else None

        items = wait_for(history, 30, "three samples at a one-second interval", interval=0.5)
        assert len(items) == 1 and items[0]["id"] == vm["id"]
        assert items[0]["name"] == vm["name"] and items[0]["displayname"] == vm["displayname"]
        stats = items[0]["stats"]
        for s in stats:
            assert set(s) == VM_STAT_KEYS, s
            assert s["cpuused"].endswith("%") and 0 <= float(s["cpuused"][:-1]) <= 100
            assert s["networkread"].endswith(" MiB")
            assert s["memorykbs"] == 256 * 1024
        times = [s["timestamp"] for s in stats]
        assert times == sorted(times)
        # Traffic only grows on the simulated hosts: every interval after the
        # first has some.
        assert all(s["networkkbsread"] > 0 for s in stats[1:])

        # Dates narrow the range; an empty range leaves stats empty.
        later = admin.listVirtualMachinesUsageHistory(id=vm["id"], startdate="2100-01-01 00:00:00")
        assert later["virtualmachine"][0]["stats"] == []
        err = expect_api_error(admin.listVirtualMachinesUsageHistory, id=vm["id"],
                               startdate="yesterday")
        assert err.status == 431 and "startdate" in err.error["errortext"]

        listed = get_vm(admin, vm["id"])
        assert listed["cpuused"].endswith("%")
        for k in ("networkkbsread", "networkkbswrite", "diskkbsread", "diskkbswrite",
                  "diskioread", "diskiowrite", "memorykbs", "memoryintfreekbs",
                  "memorytargetkbs"):
            assert isinstance(listed[k], int), (k, listed)
        metrics = admin.listVirtualMachinesMetrics(id=vm["id"])["virtualmachine"][0]
        assert metrics["id"] == vm["id"] and metrics["cpuused"].endswith("%")
        assert metrics["cputotal"].endswith(" Ghz") and metrics["memorytotal"] == "0.25 GiB"

        vols = admin.listVolumesUsageHistory(listall=True).get("volume", [])
        assert vols and all("stats" in v and "id" in v for v in vols)

        # Prometheus text format, as a real Prometheus parses it.
        text = requests.get(f"http://127.0.0.1:{coordinator.metrics_port}/metrics", timeout=10)
        assert text.status_code == 200
        assert text.headers["content-type"].startswith("text/plain; version=0.0.4")
        families = {f.name: f for f in text_string_to_metric_families(text.text)}
        lat = families["orrery_api_request_duration_seconds"]
        assert lat.type == "histogram"
        assert any(s.labels.get("command") == "listVirtualMachinesUsageHistory"
                   for s in lat.samples)
        assert {s.labels["status"] for s in families["orrery_jobs"].samples} == {
            "pending", "succeeded", "failed"}
        assert "orrery_agents_connected" in families
        hosts = families["orrery_host_up"].samples
        assert len(hosts) >= 3 and all(s.value == 1 for s in hosts)
        cpu = [s for s in families["orrery_instance_cpu_used_percent"].samples
               if s.labels["instance"] == vm["id"]]
        assert len(cpu) == 1 and 0 <= cpu[0].value <= 100
    finally:
        admin.updateConfiguration(name="vm.stats.interval", value="60000")
