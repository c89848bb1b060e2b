"""Enrolment and mutual TLS between agents and the coordinator: every way a
host could present the wrong credentials is refused."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from lab import Agent, agent_bin, token, wait_host_state
from orrery_e2e import Coordinator, CoordinatorError, expect_api_error, wait_for


@pytest.fixture(scope="module")
def coord(tmp_path_factory):
    if not agent_bin().is_file():
        pytest.fail(f"agent binary missing: {agent_bin()}", pytrace=False)
    c = Coordinator(tmp_path_factory.mktemp("tls") / "coordinator", hosts=0)
    try:
        c.init()
        c.start()
    except CoordinatorError as exc:
        c.stop()
        pytest.fail(str(exc), pytrace=False)
    yield c
    c.stop()


def new_agent(coord, tmp_path, name: str) -> Agent:
    base = tmp_path / name
    base.mkdir()
    return Agent(base, coord)


def ping(agent: Agent) -> subprocess.CompletedProcess:
    return agent.run("debug", "ping-coordinator", check=False, timeout=60)


def cert_for(cn: str, issuer_cert, issuer_key, *, days_from=-1, days_to=365,
             key=None, ca=False):
    key = key or ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    builder = (x509.CertificateBuilder()
               .subject_name(name)
               .issuer_name(issuer_cert.subject if issuer_cert is not None else name)
               .public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now + dt.timedelta(days=days_from))
               .not_valid_after(now + dt.timedelta(days=days_to))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    cert = builder.sign(issuer_key or key, hashes.SHA256())
    return cert, key


def pem(cert) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def install(agent: Agent, cert, key) -> None:
    (agent.state_dir / "host.pem").write_bytes(pem(cert))
    (agent.state_dir / "host.key").write_bytes(key_pem(key))


def coordinator_ca(coord):
    ca_cert = x509.load_pem_x509_certificate((coord.data_dir / "ca.pem").read_bytes())
    ca_key = serialization.load_pem_private_key((coord.data_dir / "ca.key").read_bytes(), None)
    return ca_cert, ca_key


def clone(agent: Agent, coord, tmp_path, name: str) -> Agent:
    other = new_agent(coord, tmp_path, name)
    shutil.copytree(agent.state_dir, other.state_dir)
    return other


def test_enrolment_writes_private_credentials_and_is_accepted(coord, tmp_path):
    agent = new_agent(coord, tmp_path, "a")
    out = json.loads(agent.enroll(token(coord)).stdout)
    assert out["hostid"] == agent.host_id()
    for f in ("host.key", "host.pem", "ca.pem", "agent.json"):
        assert (agent.state_dir / f).stat().st_mode & 0o777 == 0o600, f
    cert = x509.load_pem_x509_certificate((agent.state_dir / "host.pem").read_bytes())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == \
        f"host-{agent.host_id()}"
    # The key was made on the host; the coordinator only ever saw a CSR.
    if coord.store_url:
        stored = subprocess.run(["pg_dump", coord.store_url], capture_output=True,
                                check=True, timeout=60).stdout
    else:
        stored = (coord.data_dir / "orrery.db").read_bytes()
    assert stored and b"PRIVATE KEY" not in stored
    r = ping(agent)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["accepted"] is True


def test_a_token_works_once(coord, tmp_path):
    t = token(coord)
    assert new_agent(coord, tmp_path, "first").enroll(t).returncode == 0
    second = new_agent(coord, tmp_path, "second").enroll(t, check=False)
    assert second.returncode != 0
    assert "already used" in second.stderr


def test_an_expired_token_is_refused(coord, tmp_path):
    t = token(coord, "--ttl", "1")
    time.sleep(2.2)
    r = new_agent(coord, tmp_path, "late").enroll(t, check=False)
    assert r.returncode != 0 and "expired" in r.stderr


def test_a_token_pinning_another_ca_is_refused_before_it_is_sent(coord, tmp_path):
    t = token(coord)
    secret = t.split(".")[1]
    forged = f"orr1.{secret}.{'0' * 64}"
    r = new_agent(coord, tmp_path, "pin").enroll(forged, check=False)
    assert r.returncode != 0 and "fingerprint" in r.stderr
    # The genuine token was never presented, so it still works.
    assert new_agent(coord, tmp_path, "pin2").enroll(t).returncode == 0


def test_a_certificate_from_another_ca_is_refused(coord, tmp_path):
    agent = new_agent(coord, tmp_path, "foreign")
    agent.enroll(token(coord))
    other_ca, other_key = cert_for("Some other CA", None, None, ca=True)
    cert, key = cert_for(f"host-{agent.host_id()}", other_ca, other_key)
    install(agent, cert, key)
    r = ping(agent)
    assert r.returncode != 0, r.stdout


def test_an_expired_certificate_is_refused(coord, tmp_path):
    agent = new_agent(coord, tmp_path, "expired")
    agent.enroll(token(coord))
    ca_cert, ca_key = coordinator_ca(coord)
    cert, key = cert_for(f"host-{agent.host_id()}", ca_cert, ca_key, days_from=-10, days_to=-1)
    install(agent, cert, key)
    r = ping(agent)
    assert r.returncode != 0, r.stdout


def test_a_certificate_the_coordinator_did_not_issue_to_that_host_is_refused(coord, tmp_path):
    agent = new_agent(coord, tmp_path, "forged")
    agent.enroll(token(coord))
    # Signed by the right CA (as if its key leaked) but not the host's
    # current certificate: the serial does not match the host record.
    ca_cert, ca_key = coordinator_ca(coord)
    cert, key = cert_for(f"host-{agent.host_id()}", ca_cert, ca_key)
    install(agent, cert, key)
    r = ping(agent)
    assert r.returncode != 0 and "not the current certificate" in r.stderr


def test_a_certificate_for_another_host_cannot_claim_this_one(coord, tmp_path):
    mine = new_agent(coord, tmp_path, "mine")
    mine.enroll(token(coord))
    theirs = new_agent(coord, tmp_path, "theirs")
    theirs.enroll(token(coord))
    # mine's identity with theirs' (valid) certificate and key.
    shutil.copy(theirs.state_dir / "host.pem", mine.state_dir / "host.pem")
    shutil.copy(theirs.state_dir / "host.key", mine.state_dir / "host.key")
    mine.config.write_text('libvirt_uri = "test:///default"\n')
    mine.start()
    try:
        wait_for(lambda: "the hello claims" in mine.log_path.read_text(errors="replace"), 30,
                 lambda: mine.log_tail())
    finally:
        mine.stop()
    api = coord.client()
    host = api.listHosts(id=mine.host_id())["host"][0]
    assert host["state"] != "Up"


def test_a_deleted_host_is_refused(coord, tmp_path):
    agent = new_agent(coord, tmp_path, "revoked")
    agent.enroll(token(coord))
    assert ping(agent).returncode == 0
    api = coord.client()
    api.deleteHost(id=agent.host_id(), forced=True)
    r = ping(agent)
    assert r.returncode != 0 and "removed" in r.stderr
    err = expect_api_error(api.deleteHost, id=agent.host_id())
    assert err.status == 431


def test_provision_certificate_renews_over_the_live_stream(coord, tmp_path):
    agent = new_agent(coord, tmp_path, "renew")
    agent.enroll(token(coord))
    agent.config.write_text('libvirt_uri = "test:///default"\n')
    old = clone(agent, coord, tmp_path, "renew-old")
    agent.start()
    try:
        api = coord.client()
        wait_host_state(api, agent.host_id(), "Up")
        before = (agent.state_dir / "host.pem").read_bytes()
        api.provisionCertificate(hostid=agent.host_id())
        after = (agent.state_dir / "host.pem").read_bytes()
        assert after != before
        # The live session was not dropped for it.
        assert api.listHosts(id=agent.host_id())["host"][0]["state"] == "Up"
        assert "session ended" not in agent.log_path.read_text(errors="replace")
        # The new certificate works; the superseded one does not.
        assert ping(agent).returncode == 0
        r = ping(old)
        assert r.returncode != 0 and "not the current certificate" in r.stderr
    finally:
        agent.stop()
