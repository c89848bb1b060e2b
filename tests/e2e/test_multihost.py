"""Three lab hosts with real agents: enrolment, a guest on a chosen host,
libvirt TLS between hosts with the certificates the coordinator's CA issued,
a network partition noticed and healed, and a lab that cleans up after
itself."""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from lab import wait_host_state, wait_vm_state
from multihost import LAB_DIR, MultiLab, require_multihost
from orrery_e2e import unique, wait_for

pytestmark = pytest.mark.lab

ROOT_VIRSH = ["virsh", "-c", "qemu:///system"]


def root_domains() -> str:
    result = subprocess.run(ROOT_VIRSH + ["list", "--all"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def lab_netns() -> dict[str, int]:
    """Inode of every lab host's network namespace, by host."""
    out = {}
    netns = Path("/run/netns")
    if netns.is_dir():
        for entry in netns.iterdir():
            if entry.name.startswith("h") and entry.name[1:].isdigit():
                out[entry.name] = os.stat(entry).st_ino
    return out


def processes_in(inodes: set[int]) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            ino = os.stat(proc / "ns" / "net").st_ino
            if ino in inodes:
                found.append(f"{proc.name} {(proc / 'comm').read_text().strip()}")
        except OSError:
            continue
    return found


@pytest.fixture(scope="module")
def mlab():
    require_multihost()
    base = Path(tempfile.mkdtemp(prefix="orrery-multilab-", dir="/var/tmp"))
    base.chmod(0o755)
    lab = MultiLab(base, count=3)
    lab.root_domains_before = root_domains()
    try:
        lab.up()
    except BaseException:
        for host in lab.hosts or ("h1", "h2", "h3"):
            print(f"--- {host} agent log ---\n{lab.log_tail(host)}")
        print(f"--- coordinator log ---\n{lab.coordinator.log_tail()}")
        lab.down()
        raise
    yield lab
    lab.down()
    shutil.rmtree(base, ignore_errors=True)


def test_three_hosts_are_up_with_their_own_ids_and_addresses(mlab):
    ids = [mlab.host_id(h) for h in ("h1", "h2", "h3")]
    assert all(ids) and len(set(ids)) == 3, mlab.hosts
    listed = {h["id"]: h for h in mlab.api.listHosts().get("host", [])}
    for i, host_id in enumerate(ids, start=1):
        assert listed[host_id]["state"] == "Up", listed[host_id]
        # The configured address, not whatever was detected.
        assert listed[host_id]["ipaddress"] == f"10.99.0.{i}", listed[host_id]
        assert mlab.hosts[f"h{i}"]["libvirt_uri"] == f"qemu+tls://10.99.0.{i}/system"


def test_guest_on_h2_boots_and_h1_sees_it_over_libvirt_tls(mlab):
    vm = mlab.deploy(unique("mh"), "h2")
    assert vm["hostid"] == mlab.host_id("h2"), vm
    inst = vm["instancename"]
    mlab.wait_console("h2", inst, r"ORRERY-GUEST-BOOTED")
    assert mlab.console("h1", inst) == "" and mlab.console("h3", inst) == ""
    # From h1, with h1's client certificate, verifying h2's server
    # certificate against the coordinator's CA and h2's address.
    out = mlab.exec("h1", "virsh", "-c", "qemu+tls://10.99.0.2/system", "list", "--name").stdout
    assert inst in out.split(), out
    # h1 runs nothing itself.
    out = mlab.exec("h1", "virsh", "-c", "qemu:///system", "list", "--all", "--name").stdout
    assert inst not in out.split(), out
    assert wait_vm_state(mlab.api, vm["id"], "Running")["hostid"] == mlab.host_id("h2")


def test_h2_libvirt_certificate_is_issued_by_the_coordinator_ca(mlab):
    x509 = pytest.importorskip("cryptography.x509")
    pem = mlab.exec("h2", "cat", "/etc/pki/libvirt/servercert.pem").stdout.encode()
    cert = x509.load_pem_x509_certificate(pem)
    ca = x509.load_pem_x509_certificate(
        (mlab.coordinator.data_dir / "ca.pem").read_bytes())
    cert.verify_directly_issued_by(ca)
    assert cert.subject.rfc4514_string() == f"CN=host-{mlab.host_id('h2')}"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("10.99.0.2") in san.get_values_for_type(x509.IPAddress)
    assert "h2" in san.get_values_for_type(x509.DNSName)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert x509.oid.ExtendedKeyUsageOID.SERVER_AUTH in eku
    assert x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH in eku
    # QEMU's copy is the same certificate; the CA libvirt trusts is ours.
    assert mlab.exec("h2", "cat", "/etc/pki/qemu/server-cert.pem").stdout.encode() == pem
    ca_seen = mlab.exec("h2", "cat", "/etc/pki/CA/cacert.pem").stdout.encode()
    assert x509.load_pem_x509_certificate(ca_seen) == ca
    mode = mlab.exec("h2", "stat", "-c", "%a", "/etc/pki/libvirt/private/serverkey.pem")
    assert mode.stdout.strip() == "600"


def test_renewed_certificate_reaches_libvirt_and_qemu(mlab):
    x509 = pytest.importorskip("cryptography.x509")

    def files():
        return [mlab.exec("h1", "cat", f"/etc/pki/{p}").stdout
                for p in ("libvirt/servercert.pem", "libvirt/clientcert.pem",
                          "qemu/server-cert.pem", "qemu/client-cert.pem")]
    before = files()
    mlab.api.provisionCertificate(hostid=mlab.host_id("h1"))
    after = files()
    assert after != before and len(set(after)) == 1
    assert after[0] == (mlab.host_dir("h1") / "orrery" / "agent" / "host.pem").read_text()
    # Renewals name what enrolment recorded and the host's current address.
    cert = x509.load_pem_x509_certificate(after[0].encode())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("10.99.0.1") in san.get_values_for_type(x509.IPAddress)
    assert "h1" in san.get_values_for_type(x509.DNSName)
    # New TLS connections from h1 present the renewed client certificate.
    out = mlab.exec("h1", "virsh", "-c", "qemu+tls://10.99.0.3/system", "hostname").stdout
    assert out.strip() == "h3"


def vnc_port(mlab: MultiLab, host: str, instance: str) -> int:
    """The display libvirt gave the instance on its host (5900 + N)."""
    out = mlab.exec(host, "virsh", "-c", "qemu:///system", "vncdisplay", instance).stdout.strip()
    return 5900 + int(out.rsplit(":", 1)[1])


def vnc_without_the_proxy_certificate(address: str, port: int) -> str:
    """Speaks RFB to QEMU as any other client would: what it is offered, and
    how a TLS handshake without a client certificate ends."""
    import socket
    import ssl
    import struct

    s = socket.create_connection((address, port), timeout=10)
    s.recv(12)
    s.sendall(b"RFB 003.008\n")
    n = s.recv(1)[0]
    types = list(s.recv(n))
    if 19 not in types:
        return f"offered {types}"
    s.sendall(bytes([19]))
    s.recv(2)
    s.sendall(bytes([0, 2]))
    s.recv(1)
    count = s.recv(1)[0]
    subtypes = list(struct.unpack(f">{count}I", s.recv(4 * count)))
    s.sendall(struct.pack(">I", 261 if 261 in subtypes else subtypes[0]))
    s.recv(1)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        tls = ctx.wrap_socket(s)
        # TLS 1.3 reports a missing client certificate on the first read:
        # QEMU closes instead of sending its VNC challenge.
        data = tls.recv(16)
        if not data:
            return f"refused: closed after the handshake (offered {types} {subtypes})"
        return f"answered {data!r} without a certificate"
    except (ssl.SSLError, OSError) as exc:
        return f"refused: {exc}"


# A US keyboard: what Shift plus a key gives.
SHIFTED = dict(zip('~!@#$%^&*()_+{}|:"<>?', "`1234567890-=[]\\;',./"))


def type_like_a_person(driver, text: str) -> None:
    """Types as a keyboard does: Shift held down for upper-case letters and
    shifted symbols, so the guest's keymap sees real key presses."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    for ch in text:
        base = SHIFTED.get(ch) or (ch.lower() if ch.isupper() else None)
        chain = ActionChains(driver)
        if base:
            chain.key_down(Keys.SHIFT).send_keys(base).key_up(Keys.SHIFT)
        else:
            chain.send_keys(Keys.ENTER if ch == "\n" else ch)
        chain.perform()


def test_console_in_a_browser_through_the_proxy_over_vnc_tls(mlab):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from test_ui_browser import browser

    vm = mlab.deploy(unique("con"), "h1")
    inst = vm["instancename"]
    mlab.wait_console("h1", inst, r"ORRERY-GUEST-SSHD")
    port = vnc_port(mlab, "h1", inst)
    # Any client without the proxy's certificate is turned away.
    seen = vnc_without_the_proxy_certificate("10.99.0.1", port)
    assert seen.startswith("refused") and "[19] [261]" in seen, seen

    endpoint = mlab.api.createConsoleEndpoint(virtualmachineid=vm["id"])["consoleendpoint"]
    assert endpoint["success"] is True and endpoint["websocket"]["token"] in endpoint["url"]
    driver = browser()
    try:
        driver.get(endpoint["url"])
        status = lambda d: d.execute_script(  # noqa: E731
            "return (document.getElementById('status') || {}).textContent || ''")
        WebDriverWait(driver, 60).until(lambda d: "Connected" in status(d), "never connected")
        # The guest's screen: some pixel of the canvas is not black.
        lit = """
            const c = document.querySelector('canvas');
            if (!c || !c.width) return false;
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            for (let i = 0; i < d.length; i += 4) if (d[i] || d[i + 1] || d[i + 2]) return true;
            return false;"""
        WebDriverWait(driver, 60).until(lambda d: d.execute_script(lit), "the console stayed blank")
        canvas = driver.find_element(By.TAG_NAME, "canvas")
        ActionChains(driver).click(canvas).perform()
        # Typed at the console's shell; the guest writes the result to its
        # serial log, which only the host sees.
        type_like_a_person(driver, "echo ORRERY-KEYS-$((6*7)) >/dev/ttyS0\n")
        mlab.wait_console("h1", inst, r"ORRERY-KEYS-42", timeout=60)

        # The same URL a second time: the token is spent.
        driver.get(endpoint["url"])
        WebDriverWait(driver, 30).until(
            lambda d: any(w in status(d) for w in ("went wrong", "Failed", "Disconnected")),
            "a second use of the console URL was not refused")
        assert "Connected (" not in status(driver)
    finally:
        driver.quit()
    # Every session is an event.
    events = mlab.api.listEvents(type="VM.CONSOLE").get("event", [])
    assert any(vm["id"] in e["description"] for e in events), events


def test_console_endpoints_only_for_running_instances_the_caller_owns(mlab):
    from orrery_e2e import create_account, expect_api_error

    vm = mlab.deploy(unique("own"), "h2")
    other = create_account(mlab.api, accounttype=0)
    api = mlab.coordinator.client(other["apikey"], other["secretkey"])
    err = expect_api_error(api.createConsoleEndpoint, virtualmachineid=vm["id"])
    assert err.status == 431 and "virtualmachineid" in err.error["errortext"], err.error
    mlab.api.stopVirtualMachine(id=vm["id"], forced=True)
    err = expect_api_error(mlab.api.createConsoleEndpoint, virtualmachineid=vm["id"])
    assert err.status in (431, 530) and "Running" in err.error["errortext"], err.error


def test_partitioned_host_is_noticed_and_comes_back_when_healed(mlab):
    h3 = mlab.host_id("h3")
    mlab.hosts_sh("partition", "h3")
    try:
        wait_for(lambda: mlab.api.listHosts(id=h3)["host"][0]["state"] != "Up", 45,
                 lambda: f"h3 still Up: {mlab.api.listHosts(id=h3)}", interval=1)
        for other in ("h1", "h2"):
            assert mlab.api.listHosts(id=mlab.host_id(other))["host"][0]["state"] == "Up"
    finally:
        mlab.hosts_sh("heal", "h3")
    wait_host_state(mlab.api, h3, "Up", timeout=90)


def test_down_twice_leaves_nothing_behind(mlab):
    inodes = set(lab_netns().values())
    assert len(inodes) == 3
    mlab.coordinator.stop()
    mlab.hosts_sh("down")
    mlab.hosts_sh("down")
    assert lab_netns() == {}
    assert processes_in(inodes) == []
    assert subprocess.run(["ip", "link", "show", "orrlab0"], capture_output=True).returncode != 0
    assert not LAB_DIR.exists()
    assert root_domains() == mlab.root_domains_before
