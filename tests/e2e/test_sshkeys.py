"""SSH key pairs through PyPI's cs: created (private key once, usable by
OpenSSH), registered (RSA, ECDSA, Ed25519 made by ssh-keygen, fingerprints as
`ssh-keygen -E md5` prints them), listed and deleted per account, given to
instances at deploy and reset while they are stopped; malformed keys and
unknown names refused with the parameter named, nothing changed."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from orrery_e2e import create_account, deploy, expect_api_error, get_vm, unique


def keygen(tmp_path: Path, kind: str, bits: str | None = None) -> tuple[str, str]:
    """A public key made by OpenSSH and its MD5 fingerprint."""
    path = tmp_path / unique(kind)
    args = ["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", "e2e@test", "-f", str(path)]
    if bits:
        args += ["-b", bits]
    subprocess.run(args, check=True, capture_output=True)
    public = path.with_suffix(".pub") if path.suffix else Path(str(path) + ".pub")
    fp = subprocess.run(["ssh-keygen", "-l", "-E", "md5", "-f", str(public)], check=True,
                        capture_output=True, text=True).stdout.split()[1]
    assert fp.startswith("MD5:")
    return public.read_text().strip(), fp[4:]


@pytest.fixture(scope="module")
def tenant(admin, coordinator):
    acct = create_account(admin, accounttype=0)
    acct["api"] = coordinator.client(acct["apikey"], acct["secretkey"])
    return acct


def test_created_pairs_work_with_openssh_and_show_the_private_key_once(tenant, tmp_path):
    api = tenant["api"]
    name = unique("kp")
    kp = api.createSSHKeyPair(name=name)["keypair"]
    assert kp["name"] == name and kp["account"] == tenant["name"]
    assert kp["privatekey"].startswith("-----BEGIN RSA PRIVATE KEY-----")
    key = tmp_path / "id_rsa"
    key.write_text(kp["privatekey"])
    key.chmod(0o600)
    # OpenSSH derives the same public key, with the fingerprint shown.
    derived = subprocess.run(["ssh-keygen", "-y", "-f", str(key)], check=True,
                             capture_output=True, text=True).stdout.strip()
    (tmp_path / "derived.pub").write_text(derived + "\n")
    fp = subprocess.run(["ssh-keygen", "-l", "-E", "md5", "-f", str(tmp_path / "derived.pub")],
                        check=True, capture_output=True, text=True).stdout.split()[1]
    assert fp == "MD5:" + kp["fingerprint"]
    assert derived.startswith("ssh-rsa ")
    listed = api.listSSHKeyPairs(name=name)["sshkeypair"]
    assert [k["fingerprint"] for k in listed] == [kp["fingerprint"]]
    assert "privatekey" not in listed[0]
    err = expect_api_error(api.createSSHKeyPair, name=name)
    assert err.status == 431 and name in err.error["errortext"], err
    api.deleteSSHKeyPair(name=name)
    assert not api.listSSHKeyPairs(name=name).get("sshkeypair")


@pytest.mark.parametrize("kind,bits", [("rsa", "3072"), ("ecdsa", "256"), ("ecdsa", "521"),
                                       ("ed25519", None)])
def test_registered_keys_have_ssh_keygens_fingerprint(tenant, tmp_path, kind, bits):
    api = tenant["api"]
    public, fingerprint = keygen(tmp_path, kind, bits)
    name = unique("reg")
    kp = api.registerSSHKeyPair(name=name, publickey=public)["keypair"]
    assert kp["fingerprint"] == fingerprint and "privatekey" not in kp
    assert api.listSSHKeyPairs(fingerprint=fingerprint)["sshkeypair"][0]["name"] == name
    # The same key twice in one account is refused.
    err = expect_api_error(api.registerSSHKeyPair, name=unique("again"), publickey=public)
    assert err.status == 431 and "publickey" in err.error["errortext"], err
    api.deleteSSHKeyPair(name=name)


@pytest.mark.parametrize("bad", [
    "", "ssh-dss AAAAB3NzaC1kc3MAAACBAP", "ssh-rsa", "ssh-rsa not-base64!",
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAEIinMqu9rMFOkvOAsqOZ+ow=",
    "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIIinMqu9rMFOkvOAsqOZ+owuN4xkc0/AG0m7Blr0t9gm",
    "-----BEGIN RSA PRIVATE KEY-----", "x" * 9000,
])
def test_malformed_public_keys_are_refused(tenant, bad):
    api = tenant["api"]
    name = unique("bad")
    params = {"name": name, "publickey": bad} if bad else {"name": name, "publickey": " "}
    err = expect_api_error(api.registerSSHKeyPair, **params)
    assert err.status == 431 and "publickey" in err.error["errortext"], err
    assert not api.listSSHKeyPairs(name=name).get("sshkeypair")


def test_pairs_are_per_account(tenant, admin, coordinator, tmp_path):
    other = create_account(admin, accounttype=0)
    other_api = coordinator.client(other["apikey"], other["secretkey"])
    public, _ = keygen(tmp_path, "ed25519")
    name = unique("mine")
    kp = tenant["api"].registerSSHKeyPair(name=name, publickey=public)["keypair"]
    # Another account may use the same name and key for its own pair.
    theirs = other_api.registerSSHKeyPair(name=name, publickey=public)["keypair"]
    assert theirs["id"] != kp["id"]
    assert [k["id"] for k in other_api.listSSHKeyPairs(listall=True)["sshkeypair"]] == \
        [theirs["id"]]
    assert not other_api.listSSHKeyPairs(id=kp["id"]).get("sshkeypair")
    # Naming the owner does not reach it either.
    err = expect_api_error(other_api.deleteSSHKeyPair, name=name, account=tenant["name"],
                           domainid=tenant["domainid"])
    assert err.status in (431, 531), err
    other_api.deleteSSHKeyPair(name=name)
    assert tenant["api"].listSSHKeyPairs(id=kp["id"])["sshkeypair"][0]["name"] == name
    # The root admin sees it by id and can delete it for the owner.
    assert admin.listSSHKeyPairs(id=kp["id"])["sshkeypair"][0]["account"] == tenant["name"]
    admin.deleteSSHKeyPair(name=name, account=tenant["name"], domainid=tenant["domainid"])
    assert not tenant["api"].listSSHKeyPairs(name=name).get("sshkeypair")
    err = expect_api_error(tenant["api"].deleteSSHKeyPair, name=name)
    assert err.status == 431 and name in err.error["errortext"], err


def test_instances_get_pairs_at_deploy_and_reset_while_stopped(tenant, admin, env, tmp_path):
    api = tenant["api"]
    a, b = unique("a"), unique("b")
    api.createSSHKeyPair(name=a)
    api.registerSSHKeyPair(name=b, publickey=keygen(tmp_path, "ed25519")[0])
    err = expect_api_error(api.deployVirtualMachine,
                           **env.deploy_args(name=unique("vm"), keypairs=f"{a},nosuchpair"))
    assert err.status == 431 and "nosuchpair" in err.error["errortext"], err
    assert "keypairs" in err.error["errortext"]
    vm = deploy(api, env, name=unique("kvm"), keypairs=f"{a},{b}")
    assert get_vm(api, vm["id"])["keypairs"] == f"{a},{b}"
    # Running: refused, nothing changed.
    err = expect_api_error(api.resetSSHKeyForVirtualMachine, id=vm["id"], keypair=b)
    assert "Stopped" in str(err.error), err
    assert get_vm(api, vm["id"])["keypairs"] == f"{a},{b}"
    api.stopVirtualMachine(id=vm["id"])
    err = expect_api_error(api.resetSSHKeyForVirtualMachine, id=vm["id"], keypair="nosuchpair")
    assert "nosuchpair" in str(err.error), err
    reset = api.resetSSHKeyForVirtualMachine(id=vm["id"], keypair=b)["virtualmachine"]
    assert reset["keypairs"] == b
    # A deleted pair leaves the instance with the key it was given.
    api.deleteSSHKeyPair(name=b)
    assert get_vm(api, vm["id"])["keypairs"] == b
    api.deleteSSHKeyPair(name=a)
    admin.destroyVirtualMachine(id=vm["id"], expunge=True)
