"""Instance details ("settings") through PyPI's cs: what users may see and
change under user.vm.denied.details and user.vm.readonly.details (the seed's
defaults), what admins may, and the names and values listDetailOptions
offers."""

from __future__ import annotations

from orrery_e2e import deploy, expect_api_error, get_vm


def test_hidden_and_read_only_details_for_users_and_admins(admin, env, user):
    vm = deploy(user["api"], env, startvm=False)
    # The admin sets a hidden one and a read-only one.
    admin.updateVirtualMachine(id=vm["id"], **{
        "details[0].rootdisksize": "20", "details[0].rootDiskController": "sata",
        "details[0].nicAdapter": "e1000"})
    as_admin = get_vm(admin, vm["id"])["details"]
    assert as_admin["rootdisksize"] == "20" and as_admin["rootDiskController"] == "sata"
    as_user = get_vm(user["api"], vm["id"])["details"]
    assert "rootdisksize" not in as_user
    assert as_user["rootDiskController"] == "sata" and as_user["nicAdapter"] == "e1000"

    for key in ("rootDiskController", "rootdisksize", "cpuOvercommitRatio"):
        err = expect_api_error(user["api"].updateVirtualMachine, id=vm["id"],
                               **{f"details[0].{key}": "virtio"})
        assert err.status == 431 and "parameter details" in err.error["errortext"] \
            and key in err.error["errortext"], err.error
    assert get_vm(admin, vm["id"])["details"] == as_admin
    # A free one the user may change; a cleanup keeps what the user cannot touch.
    user["api"].updateVirtualMachine(id=vm["id"], **{"details[0].nicAdapter": "virtio"})
    assert get_vm(user["api"], vm["id"])["details"]["nicAdapter"] == "virtio"
    user["api"].updateVirtualMachine(id=vm["id"], cleanupdetails=True)
    left = get_vm(admin, vm["id"])["details"]
    assert left.get("rootdisksize") == "20" and left.get("rootDiskController") == "sata"
    assert "nicAdapter" not in left
    admin.updateVirtualMachine(id=vm["id"], cleanupdetails=True)
    assert not get_vm(admin, vm["id"])["details"]

    # The lists are settings: emptied, users may change everything.
    # (An empty value restores the default; a lone comma names nothing.)
    admin.updateConfiguration(name="user.vm.readonly.details", value=",")
    try:
        user["api"].updateVirtualMachine(id=vm["id"], **{"details[0].rootDiskController": "virtio"})
        assert get_vm(user["api"], vm["id"])["details"]["rootDiskController"] == "virtio"
    finally:
        admin.updateConfiguration(name="user.vm.readonly.details",
                                  value="dataDiskController, rootDiskController")


def test_detail_options(admin, env, user):
    as_admin = admin.listDetailOptions(resourcetype="UserVm")["detailoptions"]["details"]
    assert set(as_admin["rootDiskController"]) == {"virtio", "sata", "ide"}
    assert "e1000" in as_admin["nicAdapter"]
    assert "rootdisksize" in as_admin and "guest.cpu.model" in as_admin
    assert isinstance(as_admin["kvm.guest.os.machine.type"], list)
    as_user = user["api"].listDetailOptions(resourcetype="UserVm")["detailoptions"]["details"]
    for hidden in ("rootdisksize", "rootDiskController", "dataDiskController", "guest.cpu.model"):
        assert hidden not in as_user
    assert "nicAdapter" in as_user
    vm = deploy(admin, env, startvm=False)
    err = expect_api_error(user["api"].listDetailOptions, resourcetype="UserVm", resourceid=vm["id"])
    assert err.status == 431 and "resourceid" in err.error["errortext"], err.error
    err = expect_api_error(admin.listDetailOptions, resourcetype="Network")
    assert err.status == 431 and "resourcetype" in err.error["errortext"], err.error


def test_extraconfig_needs_the_account_setting_and_the_allow_list(admin, env, user):
    from urllib.parse import quote

    xml = "<memoryBacking><nosharepages/></memoryBacking>"
    err = expect_api_error(user["api"].deployVirtualMachine,
                           **env.deploy_args(startvm=False, extraconfig=quote(xml)))
    assert err.status == 431 and "parameter extraconfig" in err.error["errortext"] \
        and "not enabled" in err.error["errortext"], err.error
    account_id = user["account"]["id"]
    admin.updateConfiguration(name="enable.additional.vm.configuration", value="true",
                              accountid=account_id)
    admin.updateConfiguration(name="allow.additional.vm.configuration.list.kvm",
                              value="memoryBacking, cputune")
    try:
        vm = deploy(user["api"], env, startvm=False, extraconfig=quote(xml))
        err = expect_api_error(user["api"].updateVirtualMachine, id=vm["id"],
                               extraconfig=quote("<devices><hostdev mode='subsystem'/></devices>"))
        assert err.status == 431 and "devices" in err.error["errortext"], err.error
        err = expect_api_error(user["api"].updateVirtualMachine, id=vm["id"],
                               extraconfig=quote("<cputune>"))
        assert err.status == 431 and "parameter extraconfig" in err.error["errortext"], err.error
        user["api"].updateVirtualMachine(id=vm["id"], extraconfig=quote("<cputune><shares>7</shares></cputune>"))
        # Another account still has it off.
        err = expect_api_error(admin.deployVirtualMachine,
                               **env.deploy_args(startvm=False, extraconfig=quote(xml)))
        assert err.status == 431 and "not enabled" in err.error["errortext"], err.error
    finally:
        admin.updateConfiguration(name="enable.additional.vm.configuration", value="false",
                                  accountid=account_id)
        admin.updateConfiguration(name="allow.additional.vm.configuration.list.kvm", value=",")


def test_detail_values_the_hosts_refuse_are_refused_when_set(admin, env):
    vm = deploy(admin, env, startvm=False)
    for details in ({"details[0].nicAdapter": "ne2k"},
                    {"details[0].tpmversion": "1.2", "details[0].tpmmodel": "tpm-crb"},
                    {"details[0].rootDiskController": "floppy"}):
        err = expect_api_error(admin.updateVirtualMachine, id=vm["id"], **details)
        assert err.status == 431 and "parameter details" in err.error["errortext"], err.error
    assert not get_vm(admin, vm["id"])["details"]
    err = expect_api_error(admin.deployVirtualMachine,
                           **env.deploy_args(startvm=False, **{"details[0].tpmmodel": "tpm-spapr"}))
    assert err.status == 431 and "tpmmodel" in err.error["errortext"], err.error
    # A version that is not one means the default; accepted.
    admin.updateVirtualMachine(id=vm["id"], **{"details[0].tpmversion": "3.0",
                                               "details[0].tpmmodel": "tpm-tis"})
    assert get_vm(admin, vm["id"])["details"]["tpmmodel"] == "tpm-tis"


def test_guest_cpu_model_is_the_root_admins(admin, env, user):
    vm = deploy(user["api"], env, startvm=False)
    for key in ("guest.cpu.model", "guest.cpu.mode"):
        err = expect_api_error(user["api"].updateVirtualMachine, id=vm["id"],
                               **{f"details[0].{key}": "Westmere"})
        assert err.status == 431 and key in err.error["errortext"] \
            and "root admin" in err.error["errortext"], err.error
    err = expect_api_error(user["api"].deployVirtualMachine,
                           **env.deploy_args(startvm=False, **{"details[0].guest.cpu.model": "Westmere"}))
    assert err.status == 431 and "guest.cpu.model" in err.error["errortext"], err.error
    admin.updateVirtualMachine(id=vm["id"], **{"details[0].guest.cpu.model": "Westmere"})
    assert get_vm(admin, vm["id"])["details"]["guest.cpu.model"] == "Westmere"
