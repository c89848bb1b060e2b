#!/usr/bin/env python3
"""Generate tests/vectors/signatures.json: request-signature test vectors.

Every vector is a request exactly as a client puts it on the wire:

    {"client", "secret", "method", "query", "body", "valid", "note"}

`query` is the raw query string (without the leading "?"), `body` the raw
application/x-www-form-urlencoded body ("" for GET). The server parses both as
it would an HTTP request (merged into one parameter map, first value wins) and
must accept exactly the vectors marked `valid: true`. All vectors use the api
key "test-api-key" and the secret "test-secret-key/+=".

How each style is produced:

- cs: the real `cs` package from PyPI (cs.client.CloudStack). The request goes
  through the library's own path (_prepare_request -> transform -> _sign ->
  requests.Request(...).prepare()); only the HTTP session is replaced by a
  recorder that keeps the prepared request and never sends it. The library's
  clock (`cs.client.datetime`) is replaced by a fixed clock at
  2099-01-01T12:00:00Z, so cs writes signatureVersion=3 and
  expires=2099-01-01T12:10:00+0000 itself. The "expired" vector uses a clock in
  2001 the same way.
- libcloud: the real apache-libcloud CloudStackConnection. Connection.request()
  runs add_default_params, pre_connect_hook (-> _make_signature: keys
  lowercased then sorted, quote(v, safe="[]*")) and builds the URL with
  urlencode; the HTTP connection object is replaced by a recorder.
- cloudstack-go (Terraform): a Python port of apache/cloudstack-go
  newRawRequest/EncodeValues: keys sorted with sort.Strings and written raw,
  values escaped with url.QueryEscape then "+" -> "%20" and "%2A" -> "*", the
  whole string lowercased, HMAC-SHA1, base64. Extras: apiKey, command,
  response=json, signatureversion=3 (lowercase name) and expires as RFC3339
  UTC (2099-01-01T12:15:00Z). POST sends url.Values.Encode() of all the
  parameters plus the unescaped signature as the form body; GET sends
  "<EncodeValues>&signature=<QueryEscape(sig)>" as the query string.
- cmk (CloudMonkey): a Python port of encodeRequestParams/NewAPIRequest: same
  encoding as cloudstack-go, extras apiKey and response=json only (no
  expires), always GET with the query string "<encoded>&signature=<QueryEscape(sig)>".
- java: the server's own canonical form (ApiServer.verifyRequest): names sorted
  as received (case-sensitive), values through java.net.URLEncoder with "+" ->
  "%20", the whole string lowercased. Used for clients that sign exactly like
  the server, and for the negative vectors that need a correct signature over
  an otherwise unacceptable request.

After generating, the script checks every vector against a reference verifier
(`server_accepts` below: the Java canonical string plus the lenient client
variants) and refuses to write the file if any vector disagrees. The note of
each valid vector names the canonical-string variant(s) that accept it.

Requirements: cs and apache-libcloud (see requirements.txt in this folder).
Usage: python tests/vectors/make_vectors.py  [--check]
"""

from __future__ import annotations

import argparse
import base64
import datetime as _dt
import hashlib
import hmac
import json
import sys
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlsplit

import cs
import cs.client
import libcloud.common.cloudstack as lc_cloudstack

API_KEY = "test-api-key"
SECRET = "test-secret-key/+="
WRONG_SECRET = "not-the-secret-key"
ENDPOINT = "http://127.0.0.1:8080/client/api"

FUTURE = _dt.datetime(2099, 1, 1, 12, 0, 0, tzinfo=_dt.timezone.utc)
PAST = _dt.datetime(2001, 1, 1, 12, 0, 0, tzinfo=_dt.timezone.utc)
# Reference "now" used by the self-check (any time between 2001 and 2099 works).
CHECK_NOW = _dt.datetime(2030, 6, 1, 0, 0, 0, tzinfo=_dt.timezone.utc)

ZONE = "7a3c1d55-2e3f-4b6a-9d0e-1f2a3b4c5d6e"
OFFERING = "0b9f8e7d-6c5b-4a39-8281-7f6e5d4c3b2a"
TEMPLATE = "5d4c3b2a-1f0e-4d9c-8b7a-6f5e4d3c2b1a"
VM = "c2e1f3a4-5b6c-4d7e-8f90-a1b2c3d4e5f6"
USER = "9e8d7c6b-5a49-4837-a261-5f4e3d2c1b0a"
USERDATA = "1a2b3c4d-5e6f-4a8b-9c0d-e1f2a3b4c5d6"

SPECIAL = "web 01/a+b=c*d,e é"  # space / + = * , and non-ASCII; no ~ [ ]


# --------------------------------------------------------------------------
# cs (real library)
# --------------------------------------------------------------------------


class _Captured(Exception):
    def __init__(self, prepped):
        super().__init__("captured")
        self.prepped = prepped


class _RecordingSession:
    """Stands in for requests.Session: keeps the prepared request, sends nothing."""

    def send(self, prepped, **_kwargs):
        raise _Captured(prepped)


def _fixed_clock(moment: _dt.datetime):
    class FixedDatetime(_dt.datetime):
        @classmethod
        def now(cls, tz=None):
            return moment if tz is None else moment.astimezone(tz)

    return FixedDatetime


def cs_request(command, *, method="get", secret=SECRET, clock=FUTURE, **params):
    """Run the cs library's request path and return (method, query, body)."""
    saved = cs.client.datetime
    cs.client.datetime = _fixed_clock(clock)
    try:
        api = cs.CloudStack(
            endpoint=ENDPOINT,
            key=API_KEY,
            secret=secret,
            method=method,
            session=_RecordingSession(),
        )
        try:
            getattr(api, command)(**params)
        except _Captured as captured:
            prepped = captured.prepped
        else:  # pragma: no cover
            raise RuntimeError("cs did not send a request")
    finally:
        cs.client.datetime = saved
    query = urlsplit(prepped.url).query
    body = prepped.body or ""
    if isinstance(body, bytes):
        body = body.decode("ascii")
    return prepped.method, query, body


# --------------------------------------------------------------------------
# libcloud (real library)
# --------------------------------------------------------------------------


class _RecordingHTTP:
    def request(self, method, url, body=None, headers=None, stream=False):
        raise _Captured((method, url, body))


def libcloud_request(command, **params):
    conn = lc_cloudstack.CloudStackConnection(
        user_id=API_KEY, key=SECRET, secure=False, host="127.0.0.1", port=8080
    )
    conn.connection = _RecordingHTTP()
    request_params = dict(params)
    request_params["command"] = command
    try:
        conn.request(action="/client/api", params=request_params, method="GET")
    except _Captured as captured:
        method, url, body = captured.prepped
    else:  # pragma: no cover
        raise RuntimeError("libcloud did not send a request")
    return method, urlsplit(url).query, body or ""


# --------------------------------------------------------------------------
# Go clients (cloudstack-go, cmk): ports of the Go code
# --------------------------------------------------------------------------

_GO_UNRESERVED = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~"
)


def go_query_escape(value: str) -> str:
    """net/url.QueryEscape."""
    out = []
    for byte in value.encode("utf-8"):
        if byte in _GO_UNRESERVED:
            out.append(chr(byte))
        elif byte == 0x20:
            out.append("+")
        else:
            out.append("%%%02X" % byte)
    return "".join(out)


def go_values_encode(values: dict) -> str:
    """net/url.Values.Encode (keys sorted, keys and values QueryEscape'd)."""
    return "&".join(
        f"{go_query_escape(k)}={go_query_escape(values[k])}" for k in sorted(values)
    )


def go_encode_values(values: dict) -> str:
    """cloudstack-go EncodeValues / cmk encodeRequestParams."""
    parts = []
    for key in sorted(values):  # sort.Strings: byte order
        escaped = go_query_escape(values[key]).replace("+", "%20").replace("%2A", "*")
        parts.append(f"{key}={escaped}")
    return "&".join(parts)


def go_sign(encoded: str, secret: str) -> str:
    mac = hmac.new(secret.encode(), encoded.lower().encode(), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode()


def cloudstack_go_request(command, *, post, expires=FUTURE, secret=SECRET, **params):
    values = dict(params)
    values["signatureversion"] = "3"
    values["expires"] = (expires + _dt.timedelta(minutes=15)).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    values["apiKey"] = API_KEY
    values["command"] = command
    values["response"] = "json"
    encoded = go_encode_values(values)
    signature = go_sign(encoded, secret)
    if post:
        values["signature"] = signature
        return "POST", "", go_values_encode(values)
    return "GET", f"{encoded}&signature={go_query_escape(signature)}", ""


def cmk_request(command, **params):
    values = dict(params)
    values["command"] = command
    values["response"] = "json"
    values["apiKey"] = API_KEY
    encoded = go_encode_values(values)
    signature = go_sign(encoded, SECRET)
    return "GET", f"{encoded}&signature={go_query_escape(signature)}", ""


# --------------------------------------------------------------------------
# Java canonical form (the server's primary algorithm)
# --------------------------------------------------------------------------

_JAVA_SAFE = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.-*_"
)


def _percent_encode(value: str, safe: frozenset) -> str:
    out = []
    for byte in value.encode("utf-8"):
        out.append(chr(byte) if byte in safe else "%%%02X" % byte)
    return "".join(out)


def java_urlencode(value: str) -> str:
    """java.net.URLEncoder.encode(v, "UTF-8").replaceAll("\\+", "%20")."""
    return _percent_encode(value, _JAVA_SAFE)


def _java_sort_key(name: str):
    # String.compareTo: UTF-16 code units.
    return name.encode("utf-16-be")


def java_canonical(params: dict) -> str:
    names = sorted((k for k in params if k.lower() != "signature"), key=_java_sort_key)
    return "&".join(f"{k}={java_urlencode(params[k])}" for k in names).lower()


def hmac_b64(message: str, secret: str) -> str:
    mac = hmac.new(secret.encode(), message.encode(), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode()


def java_request(params: dict, *, secret=SECRET, method="GET"):
    """A client that signs exactly like the server and encodes the wire the Java way."""
    values = dict(params)
    values["signature"] = hmac_b64(java_canonical(values), secret)
    wire = "&".join(
        f"{java_urlencode(k)}={java_urlencode(v)}" for k, v in values.items()
    )
    if method == "POST":
        return "POST", "", wire
    return "GET", wire, ""


# --------------------------------------------------------------------------
# Reference verifier (what the server does)
# --------------------------------------------------------------------------

VARIANTS = {
    # name: (safe characters besides the Java set, sort names after lowercasing)
    "java": (b"", False),
    "tilde-raw": (b"~", False),
    "lower-sort": (b"", True),
    "tilde-raw+lower-sort": (b"~", True),
    "brackets-tilde-raw+lower-sort": (b"~[]", True),
    "brackets-tilde-raw": (b"~[]", False),
}


def parse_request(query: str, body: str) -> dict:
    params: dict = {}
    for part in (query, body):
        for name, value in parse_qsl(
            part, keep_blank_values=True, encoding="utf-8", errors="strict"
        ):
            params.setdefault(name, value)
    return params


def canonical(params: dict, extra_safe: bytes, lower_sort: bool) -> str:
    safe = _JAVA_SAFE | frozenset(extra_safe)
    names = [k for k in params if k.lower() != "signature"]
    if lower_sort:
        names.sort(key=lambda k: _java_sort_key(k.lower()))
    else:
        names.sort(key=_java_sort_key)
    return "&".join(f"{k}={_percent_encode(params[k], safe)}" for k in names).lower()


def _parse_expires(text: str) -> _dt.datetime | None:
    for fmt in ("%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%SZ%z"):
        try:
            return _dt.datetime.strptime(text, fmt)
        except ValueError:
            pass
    return None


def matching_variants(params: dict, secret: str) -> list[str]:
    signature = next((v for k, v in params.items() if k.lower() == "signature"), None)
    if signature is None:
        return []
    found = []
    for name, (extra_safe, lower_sort) in VARIANTS.items():
        expected = hmac_b64(canonical(params, extra_safe, lower_sort), secret)
        if hmac.compare_digest(expected, signature):
            found.append(name)
    return found


def server_accepts(vector: dict, now: _dt.datetime = CHECK_NOW) -> tuple[bool, str]:
    params = parse_request(vector["query"], vector["body"])
    api_key = next((v for k, v in params.items() if k.lower() == "apikey"), None)
    if api_key != API_KEY:
        return False, "unknown api key"
    variants = matching_variants(params, vector["secret"])
    if not variants:
        return False, "no signature variant matches"
    version = next(
        (v for k, v in params.items() if k.lower() == "signatureversion"), None
    )
    if version == "3":
        expires_text = next(
            (v for k, v in params.items() if k.lower() == "expires"), None
        )
        if expires_text is None:
            return False, "signatureVersion=3 without expires"
        expires = _parse_expires(expires_text)
        if expires is None:
            return False, "unparseable expires"
        if expires <= now:
            return False, "expired"
    return True, ", ".join(variants)


# --------------------------------------------------------------------------
# The vectors
# --------------------------------------------------------------------------


def vec(client, request, valid, note):
    method, query, body = request
    return {
        "client": client,
        "secret": SECRET,
        "method": method.upper(),
        "query": query,
        "body": body,
        "valid": valid,
        "note": note,
    }


def tamper(query: str, old: str, new: str) -> str:
    assert old in query, (old, query)
    return query.replace(old, new, 1)


def drop_param(query: str, name: str) -> str:
    kept = [p for p in query.split("&") if p.split("=", 1)[0].lower() != name.lower()]
    assert len(kept) < len(query.split("&")), (name, query)
    return "&".join(kept)


def build_vectors() -> list[dict]:
    v = []

    # ---- cs ----------------------------------------------------------------
    v.append(vec("cs", cs_request("listVirtualMachines", listall=True, state="Running"),
                 True, "cs GET, signatureVersion=3, expires +0000 form, bool sent as 'true'"))
    v.append(vec("cs", cs_request("listZones"), True, "cs GET, no arguments"))
    v.append(vec("cs", cs_request(
        "deployVirtualMachine", zoneid=ZONE, serviceofferingid=OFFERING, templateid=TEMPLATE,
        name="web-01", displayname=SPECIAL, group="grp a,grp b", keypairs=["k1", "k2"],
        startvm=False),
        True, "cs GET, value with space / + = * , and é; list value joined with commas"))
    v.append(vec("cs", cs_request(
        "deployVirtualMachine", zoneid=ZONE, serviceofferingid=OFFERING, templateid=TEMPLATE,
        details={"cpuNumber": 2, "cpuSpeed": 1000, "memory": 512}),
        True, "cs GET, map parameter details[0].cpuNumber=2 (dict through cs transform)"))
    v.append(vec("cs", cs_request(
        "updateVirtualMachine", id=VM, displayname="tilde~name ~home"),
        True, "cs GET, value with ~ (cs leaves ~ raw in the canonical string; Java writes %7E)"))
    v.append(vec("cs", cs_request(
        "deployVirtualMachine", method="post", zoneid=ZONE, serviceofferingid=OFFERING,
        templateid=TEMPLATE, displayname=SPECIAL, userdata="I2Nsb3VkLWNvbmZpZwo=",
        details={"cpuNumber": 2}),
        True, "cs POST (method=post): everything, signature included, in the form body; "
              "base64 userdata with + / = characters"))
    v.append(vec("cs", cs_request(
        "listVirtualMachines", fetch_list=True, keyword="a*b"),
        True, "cs fetch_list first page: page=1, pagesize=500, * kept raw"))
    v.append(vec("cs", cs_request(
        "listVirtualMachines", userId=USER, userdataid=USERDATA),
        True, "cs GET, names userId/userdataid sort differently case-sensitively "
              "(userId first) and after lowercasing (userdataid first); cs uses case-sensitive order"))

    # ---- libcloud ----------------------------------------------------------
    v.append(vec("libcloud", libcloud_request("listVirtualMachines"),
                 True, "libcloud GET, no expires"))
    v.append(vec("libcloud", libcloud_request(
        "deployVirtualMachine", zoneid=ZONE, serviceofferingid=OFFERING, templateid=TEMPLATE,
        name="node-1", displayname=SPECIAL, startvm="False"),
        True, "libcloud GET deploy, startvm=False, special characters in a value"))
    v.append(vec("libcloud", libcloud_request(
        "updateVirtualMachine", id=VM, displayname="web[1] ~a"),
        True, "libcloud GET, value with [ ] and ~ kept raw in the canonical string"))
    v.append(vec("libcloud", libcloud_request(
        "listVirtualMachines", userId=USER, userdataid=USERDATA),
        True, "libcloud GET, names sorted after lowercasing (userdataid before userId)"))
    v.append(vec("libcloud", libcloud_request(
        "deployVirtualMachine", zoneid=ZONE, serviceofferingid=OFFERING, templateid=TEMPLATE,
        **{"details[0].cpuNumber": "2", "details[0].memory": "512"}),
        True, "libcloud GET, map parameters details[0].cpuNumber / details[0].memory"))

    # ---- cloudstack-go (Terraform) -----------------------------------------
    v.append(vec("cloudstack-go", cloudstack_go_request(
        "deployVirtualMachine", post=True, zoneid=ZONE, serviceofferingid=OFFERING,
        templateid=TEMPLATE, name="tf-1", displayname=SPECIAL, startvm="true",
        **{"details[0].cpuNumber": "2", "details[1].memory": "512"}),
        True, "cloudstack-go POST form, signatureversion=3 (lowercase name), expires RFC3339 Z, "
              "signature raw in the form, one map key per index"))
    v.append(vec("cloudstack-go", cloudstack_go_request(
        "listVirtualMachines", post=False, id=VM, listall="true"),
        True, "cloudstack-go GET, query string is EncodeValues output + &signature=QueryEscape(sig)"))
    v.append(vec("cloudstack-go", cloudstack_go_request(
        "updateVirtualMachine", post=True, id=VM, displayname="a~b c*d"),
        True, "cloudstack-go POST, value with ~ (kept raw) and * (kept raw)"))

    # ---- cmk ---------------------------------------------------------------
    v.append(vec("cmk", cmk_request("listZones"), True, "cmk GET, no expires"))
    v.append(vec("cmk", cmk_request(
        "deployVirtualMachine", zoneid=ZONE, serviceofferingid=OFFERING, templateid=TEMPLATE,
        displayname=SPECIAL, **{"details[0].cpuNumber": "2"}),
        True, "cmk GET, %20 for space in the query string, * raw, map parameter"))
    v.append(vec("cmk", cmk_request("listVirtualMachines", keyword="~tilde"),
                 True, "cmk GET, value with ~"))

    # ---- java (server canonical form) --------------------------------------
    base = {"command": "listVirtualMachines", "response": "json", "apiKey": API_KEY}
    v.append(vec("java", java_request({**base, "keyword": "a~b[c]"}),
                 True, "signed exactly like the server: ~ [ ] encoded as %7E %5B %5D"))
    v.append(vec("java", java_request(
        {"command": "listZones", "response": "json", "apikey": API_KEY}),
        True, "parameter name 'apikey' in lowercase (matched case-insensitively)"))
    v.append(vec("java", java_request(
        {**base, "signatureVersion": "3", "expires": "2099-01-01T12:00:00Z"}, method="POST"),
        True, "POST form, signatureVersion=3 with expires in ISO form ending in Z"))
    v.append(vec("java", java_request(
        {**base, "name": "MiXeD"}),
        True, "signed with name=MiXeD"))
    # value case changed after signing: still valid, the canonical string is lowercased
    method, query, body = v[-1]["method"], v[-1]["query"], v[-1]["body"]
    v.append(vec("java", (method, tamper(query, "name=MiXeD", "name=mixed"), body),
                 True, "value case changed after signing (name=mixed): still accepted "
                       "because the whole canonical string is lowercased"))

    # ---- negative ----------------------------------------------------------
    v.append(vec("cs", cs_request("listVirtualMachines", secret=WRONG_SECRET),
                 False, "signed with a different secret"))
    good = cs_request("listVirtualMachines", state="Running")
    v.append(vec("cs", (good[0], tamper(good[1], "state=Running", "state=Stopped"), good[2]),
                 False, "value changed after signing (state=Running -> state=Stopped)"))
    v.append(vec("cs", (good[0], good[1] + "&listall=true", good[2]),
                 False, "extra parameter appended after signing (every parameter is signed)"))
    v.append(vec("cs", (good[0], drop_param(good[1], "signature"), good[2]),
                 False, "signature parameter missing"))
    v.append(vec("cs", cs_request("listVirtualMachines", clock=PAST),
                 False, "correctly signed by cs, but signatureVersion=3 and expires in 2001"))
    v.append(vec("cloudstack-go", cloudstack_go_request(
        "listVirtualMachines", post=True, expires=PAST),
        False, "correctly signed cloudstack-go POST, expires 2001-01-01T12:15:00Z is in the past"))
    v.append(vec("java", java_request({**base, "signatureVersion": "3"}),
                 False, "correctly signed, signatureVersion=3 but no expires"))
    v.append(vec("java", java_request(
        {**base, "signatureVersion": "3", "expires": "not-a-date"}),
        False, "correctly signed, signatureVersion=3 with an unparseable expires"))
    v.append(vec("libcloud", (lambda r: (r[0], tamper(r[1], "node-1", "node-2"), r[2]))(
        libcloud_request("deployVirtualMachine", zoneid=ZONE, serviceofferingid=OFFERING,
                         templateid=TEMPLATE, name="node-1")),
        False, "libcloud request with name changed after signing"))
    return v


def annotate_and_check(vectors: list[dict]) -> list[str]:
    problems = []
    for i, vector in enumerate(vectors):
        accepted, detail = server_accepts(vector)
        if accepted != vector["valid"]:
            problems.append(f"vector {i} ({vector['note']}): expected valid={vector['valid']}, "
                            f"reference verifier says {accepted} ({detail})")
        elif accepted:
            vector["note"] += f" [accepted by canonical variant(s): {detail}]"
        else:
            vector["note"] += f" [rejected: {detail}]"
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="only compare with the committed file, do not write")
    parser.add_argument("--output", type=Path,
                        default=Path(__file__).resolve().parent / "signatures.json")
    args = parser.parse_args()

    vectors = build_vectors()
    problems = annotate_and_check(vectors)
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    text = json.dumps(vectors, indent=2, ensure_ascii=False) + "\n"
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is out of date; run {Path(__file__).name}", file=sys.stderr)
            return 1
        print(f"{args.output}: {len(vectors)} vectors, up to date")
        return 0
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {len(vectors)} vectors to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
