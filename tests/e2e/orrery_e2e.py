"""Helpers shared by the end-to-end tests: starting the coordinator, API clients,
request signing in the styles of the different CloudStack clients, and waiting."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote

import requests
from cs import CloudStack, CloudStackApiException

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BIN = REPO_ROOT / "target" / "debug" / "orrery-coordinator"

READY_TIMEOUT = 30.0
JOB_TIMEOUT = 120
POLL_INTERVAL = 0.1

SIGNATURE_ERROR = "unable to verify user credentials and/or request signature"
DATE_RE = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}[+-]\d{4}$"

PENDING, SUCCEEDED, FAILED = 0, 1, 2


def coordinator_bin() -> Path:
    return Path(os.environ.get("ORRERY_COORDINATOR_BIN", str(DEFAULT_BIN)))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def wait_for(predicate: Callable[[], Any], timeout: float, message: str | Callable[[], str],
             interval: float = 0.1) -> Any:
    """Call predicate until it returns something truthy; fail after timeout.

    `message` may be a callable, evaluated only when the wait fails."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            raise AssertionError(f"timed out after {timeout:.0f}s: {text} (last value: {last!r})")
        time.sleep(interval)


class CoordinatorError(RuntimeError):
    pass


def pg_admin_url() -> str | None:
    """A PostgreSQL superuser's URL (tests/lab/postgres.sh prints one): when
    set, every coordinator the tests start keeps its records in a database
    of its own there instead of SQLite."""
    return os.environ.get("ORRERY_TEST_PG") or None


def new_pg_database() -> str:
    """Creates an empty database on the test server; returns its URL."""
    admin = pg_admin_url()
    assert admin, "ORRERY_TEST_PG is not set"
    name = f"orrery_{uuid.uuid4().hex[:16]}"
    subprocess.run(["psql", admin, "-qc", f"CREATE DATABASE {name}"], check=True,
                   capture_output=True, timeout=60)
    url = admin.rsplit("/", 1)[0] + "/" + name
    # With the server's CA at hand (tests/lab/postgres.sh), coordinators
    # talk to it over TLS, verifying it.
    ca = os.environ.get("ORRERY_TEST_PG_CA")
    if ca and os.path.isfile(ca):
        url += f"?sslmode=verify-full&sslrootcert={ca}"
    return url


class Coordinator:
    """One coordinator process with its own data directory."""

    def __init__(self, base_dir: Path, hosts: int = 3, agent_listen_host: str = "127.0.0.1"):
        self.base_dir = Path(base_dir)
        # Where agents are accepted: loopback unless agents run elsewhere
        # (lab hosts in network namespaces dial the lab bridge's address).
        self.agent_listen_host = agent_listen_host
        self.data_dir = self.base_dir / "data"
        self.log_path = self.base_dir / "coordinator.log"
        self.hosts = hosts
        self.binary = coordinator_bin()
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None
        self.agent_port: int | None = None
        self.metrics_port: int | None = None
        self.console_port: int | None = None
        # Extra coordinator.toml settings, written next to the data dir.
        self.config: dict[str, Any] = {}
        # Run in the child before exec (resource limits, for instance).
        self.preexec: Callable[[], None] | None = None
        self.apikey: str | None = None
        self.secretkey: str | None = None
        self.init_output: dict | None = None
        # The records' PostgreSQL database, when the tests run on PostgreSQL.
        self.store_url: str | None = new_pg_database() if pg_admin_url() else None

    @property
    def store_args(self) -> list[str]:
        """The global flag that points a coordinator command at the store."""
        return ["--store", self.store_url] if self.store_url else []

    # -- process control --------------------------------------------------

    def check_binary(self) -> None:
        if not self.binary.is_file() or not os.access(self.binary, os.X_OK):
            raise CoordinatorError(
                f"coordinator binary not found or not executable: {self.binary} "
                "(run `cargo build`, or set ORRERY_COORDINATOR_BIN)")

    def run_init(self) -> subprocess.CompletedProcess:
        self.check_binary()
        self.base_dir.mkdir(parents=True, exist_ok=True)
        return subprocess.run(
            [str(self.binary), *self.store_args, "init", "--data-dir", str(self.data_dir)],
            capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)

    def init(self) -> dict:
        result = self.run_init()
        if result.returncode != 0:
            raise CoordinatorError(
                f"`init` exited with {result.returncode}\nstdout:\n{result.stdout}\n"
                f"stderr:\n{result.stderr}")
        try:
            output = json.loads(result.stdout)
        except ValueError as exc:
            raise CoordinatorError(
                f"`init` must print one JSON object on stdout, got:\n{result.stdout}") from exc
        if not isinstance(output, dict):
            raise CoordinatorError(f"`init` printed {type(output).__name__}, expected an object")
        self.init_output = output
        self.apikey = output["apikey"]
        self.secretkey = output["secretkey"]
        return output

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/client/api"

    def start(self, same_port: bool = False) -> None:
        self.check_binary()
        attempts = 1 if same_port else 3
        for _ in range(attempts):
            if not (same_port and self.port):
                self.port = free_port()
                self.agent_port = free_port()
                self.metrics_port = free_port()
                self.console_port = free_port()
            config_args = []
            if self.config:
                config_path = self.base_dir / "coordinator.toml"
                config_path.write_text("".join(
                    f"{k} = {json.dumps(v)}\n" for k, v in self.config.items()))
                config_args = ["--config", str(config_path)]
            with open(self.log_path, "ab") as log:
                log.write(f"\n===== serve on port {self.port} =====\n".encode())
                log.flush()
                self.proc = subprocess.Popen(
                    [str(self.binary)] + config_args + self.store_args
                    + ["serve", "--data-dir", str(self.data_dir),
                       "--api-listen", f"127.0.0.1:{self.port}",
                       "--agent-listen", f"{self.agent_listen_host}:{self.agent_port}",
                       "--metrics-listen", f"127.0.0.1:{self.metrics_port}",
                       "--console-listen", f"127.0.0.1:{self.console_port}"]
                    + (["--simulated-hosts", str(self.hosts)] if self.hosts else []),
                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    preexec_fn=self.preexec)
            if self._wait_listening():
                return
        raise CoordinatorError(
            f"coordinator did not start (exit code {self.proc.returncode}); "
            f"log:\n{self.log_tail()}")

    def _wait_listening(self) -> bool:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                requests.get(self.endpoint, params={"command": "listZones", "response": "json"},
                             timeout=2)
                return True
            except requests.RequestException:
                time.sleep(0.1)
        self.stop()
        raise CoordinatorError(
            f"coordinator did not answer on {self.endpoint} within {READY_TIMEOUT:.0f}s; "
            f"log:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        self.proc = None

    def kill_hard(self) -> None:
        """SIGKILL: no chance to finish jobs or flush anything."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=15)
        self.proc = None

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    # -- clients ------------------------------------------------------------

    def client(self, key: str | None = None, secret: str | None = None,
               fetch_result: bool = True) -> CloudStack:
        return CloudStack(
            endpoint=self.endpoint,
            key=key or self.apikey,
            secret=secret or self.secretkey,
            fetch_result=fetch_result,
            timeout=60,
            job_timeout=JOB_TIMEOUT,
            poll_interval=POLL_INTERVAL,
        )


# -- API error helpers ---------------------------------------------------------


@dataclass
class ApiError:
    status: int
    error: dict
    exception: CloudStackApiException


def expect_api_error(call: Callable[..., Any], **params) -> ApiError:
    """Run an API call that must fail and return the HTTP status and error object.

    A failed async job also raises CloudStackApiException; its HTTP status is 200
    and `error` is the job result."""
    try:
        result = call(**params)
    except CloudStackApiException as exc:
        status = exc.response.status_code if exc.response is not None else None
        return ApiError(status=status, error=exc.error, exception=exc)
    raise AssertionError(f"expected an API error, got {result!r}")


# -- common resources -----------------------------------------------------------


@dataclass
class Image:
    path: Path
    format: str

    @property
    def url(self) -> str:
        return self.path.as_uri()


def make_image(directory: Path) -> Image:
    directory.mkdir(parents=True, exist_ok=True)
    qemu_img = shutil.which("qemu-img")
    if qemu_img:
        path = directory / "tiny.qcow2"
        subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", str(path), "1M"],
                       check=True, capture_output=True)
        return Image(path, "QCOW2")
    path = directory / "tiny.raw"
    path.write_bytes(b"\0" * (1 << 20))
    return Image(path, "RAW")


def find_os_type(api: CloudStack, description: str = "Other Linux (64-bit)") -> dict:
    ostypes = api.listOsTypes(fetch_list=True)
    for ostype in ostypes:
        if ostype.get("description") == description:
            return ostype
    raise AssertionError(f"OS type {description!r} not found among {len(ostypes)} OS types")


def create_service_offering(api: CloudStack, name: str | None = None, cpunumber: int = 1,
                            cpuspeed: int = 500, memory: int = 256) -> dict:
    name = name or unique("e2e-offering")
    resp = api.createServiceOffering(name=name, displaytext=f"{name} (e2e)",
                                     cpunumber=cpunumber, cpuspeed=cpuspeed, memory=memory)
    offering = resp["serviceoffering"]
    assert offering["name"] == name
    assert offering["cpunumber"] == cpunumber
    assert offering["memory"] == memory
    return offering


def register_template(api: CloudStack, zone_id: str, ostype_id: str, image: Image,
                      name: str | None = None, timeout: float = 60) -> dict:
    name = name or unique("e2e-template")
    resp = api.registerTemplate(name=name, displaytext=f"{name} (e2e)", url=image.url,
                                format=image.format, hypervisor="Simulator",
                                ostypeid=ostype_id, zoneid=zone_id, ispublic=True)
    # registerTemplate answers a list: {"count": 1, "template": [...]}
    assert isinstance(resp.get("template"), list) and len(resp["template"]) == 1, resp
    template_id = resp["template"][0]["id"]

    def ready():
        found = api.listTemplates(templatefilter="all", id=template_id).get("template", [])
        return found[0] if found and found[0].get("isready") is True else None

    return wait_for(ready, timeout, f"template {template_id} to become ready", interval=0.2)


@dataclass
class Fixtures:
    zone: dict
    offering: dict
    template: dict

    def deploy_args(self, **extra) -> dict:
        args = {"zoneid": self.zone["id"], "serviceofferingid": self.offering["id"],
                "templateid": self.template["id"]}
        args.update(extra)
        return args


def deploy(api: CloudStack, env: Fixtures, **params) -> dict:
    """deployVirtualMachine, waiting for the job; returns the virtualmachine object."""
    result = api.deployVirtualMachine(**env.deploy_args(**params))
    assert set(result) == {"virtualmachine"}, result
    return result["virtualmachine"]


def get_vm(api: CloudStack, vm_id: str, **params) -> dict:
    resp = api.listVirtualMachines(id=vm_id, **params)
    vms = resp.get("virtualmachine", [])
    assert len(vms) == 1, resp
    assert resp.get("count") == 1, resp
    return vms[0]


def create_account(admin: CloudStack, accounttype: int = 0) -> dict:
    """createAccount + registerUserKeys; returns names, password, ids and keys."""
    name = unique("e2e-acct")
    password = "Pa55-" + uuid.uuid4().hex[:12]
    resp = admin.createAccount(accounttype=accounttype, account=name, username=name,
                               password=password, email=f"{name}@example.com",
                               firstname="E2E", lastname="Tester")
    account = resp["account"]
    assert account["name"] == name, account
    user = account["user"][0]
    keys = admin.registerUserKeys(id=user["id"])["userkeys"]
    assert keys["apikey"] and keys["secretkey"], keys
    return {"name": name, "username": name, "password": password, "account": account,
            "user": user, "domainid": account["domainid"], "apikey": keys["apikey"],
            "secretkey": keys["secretkey"]}


# -- bulk operations ------------------------------------------------------------------


class ClientPool:
    """One cs client per thread (a requests.Session is not shared between threads)."""

    def __init__(self, make_client: Callable[[], CloudStack], workers: int = 16):
        self._make_client = make_client
        self._local = threading.local()
        self.workers = workers

    def client(self) -> CloudStack:
        api = getattr(self._local, "api", None)
        if api is None:
            api = self._local.api = self._make_client()
        return api

    def map(self, fn: Callable[[CloudStack, Any], Any], items) -> list:
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            return list(pool.map(lambda item: fn(self.client(), item), items))


def wait_jobs(pool: ClientPool, jobids: list[str], timeout: float = 120) -> dict[str, dict]:
    """Poll queryAsyncJobResult for many jobs until none is pending."""
    results: dict[str, dict] = {}
    pending = list(jobids)
    deadline = time.monotonic() + timeout
    while pending:
        answers = pool.map(
            lambda api, jobid: api.queryAsyncJobResult(jobid=jobid, fetch_result=False), pending)
        still = []
        for jobid, answer in zip(pending, answers):
            if answer["jobstatus"] == PENDING:
                still.append(jobid)
            else:
                results[jobid] = answer
        pending = still
        if pending:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(pending)} jobs still pending after {timeout:.0f}s")
            time.sleep(0.2)
    return results


# -- request signing in the styles of the different clients ----------------------------

_JAVA_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.-*_")
_GO_UNRESERVED = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~")


def _hmac_b64(message: str, secret: str) -> str:
    digest = hmac.new(secret.encode(), message.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def java_encode(value: str) -> str:
    return "".join(chr(b) if b in _JAVA_SAFE else "%%%02X" % b for b in value.encode())


def go_query_escape(value: str) -> str:
    out = []
    for b in value.encode():
        if b in _GO_UNRESERVED:
            out.append(chr(b))
        elif b == 0x20:
            out.append("+")
        else:
            out.append("%%%02X" % b)
    return "".join(out)


def sign_java(params: dict, secret: str) -> str:
    """The server's canonical form (names sorted case-sensitively, URLEncoder values)."""
    pairs = [f"{k}={java_encode(params[k])}" for k in sorted(params)]
    return _hmac_b64("&".join(pairs).lower(), secret)


def sign_libcloud(params: dict, secret: str) -> str:
    """libcloud CloudStackConnection._make_signature."""
    items = sorted(((k.lower(), v) for k, v in params.items()), key=lambda kv: kv[0])
    pairs = [f"{quote(k, safe='[]')}={quote(str(v), safe='[]*')}" for k, v in items]
    return _hmac_b64("&".join(pairs).lower().replace("+", "%20"), secret)


def go_encode_values(params: dict) -> str:
    """cloudstack-go EncodeValues / cmk encodeRequestParams."""
    return "&".join(
        f"{k}={go_query_escape(params[k]).replace('+', '%20').replace('%2A', '*')}"
        for k in sorted(params))


def sign_go(params: dict, secret: str) -> str:
    return _hmac_b64(go_encode_values(params).lower(), secret)


def go_expires(minutes: int = 15) -> str:
    moment = dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=minutes)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
