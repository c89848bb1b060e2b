"""`serve --ui-dir` (here through the config file's `ui_dir`): a built web
UI's files at `/` beside `/client/api`, index.html for paths that name no
file, nothing outside the directory, and the API unchanged."""

from __future__ import annotations

import os

import requests

from orrery_e2e import Coordinator


def test_a_built_ui_is_served_beside_the_api(tmp_path):
    site = tmp_path / "ui"
    (site / "js").mkdir(parents=True)
    (site / "index.html").write_text("<!doctype html><title>ui</title><div id=app></div>")
    (site / "js" / "app.1234.js").write_text("console.log('ui');")
    (site / "config.json").write_text('{"apiBase": "/client/api"}')
    secret = tmp_path / "secret.txt"
    secret.write_text("outside")
    os.symlink(secret, site / "escape.txt")

    coordinator = Coordinator(tmp_path / "c", hosts=0)
    coordinator.config = {"ui_dir": str(site)}
    coordinator.init()
    coordinator.start()
    try:
        base = f"http://127.0.0.1:{coordinator.port}"
        root = requests.get(base + "/", timeout=10)
        assert root.status_code == 200 and "<div id=app>" in root.text
        assert root.headers["content-type"].startswith("text/html")
        assert root.headers["cache-control"] == "no-cache"
        js = requests.get(base + "/js/app.1234.js", timeout=10)
        assert js.status_code == 200 and js.text == "console.log('ui');"
        assert js.headers["content-type"].startswith("text/javascript")
        assert "max-age" in js.headers["cache-control"]
        assert requests.get(base + "/config.json", timeout=10).json() == {
            "apiBase": "/client/api"}
        # A path the browser routes gets the entry page.
        deep = requests.get(base + "/project/42/instances", timeout=10)
        assert deep.status_code == 200 and "<div id=app>" in deep.text
        # Nothing outside the directory, by .. or by a link.
        for path in ("/..%2f..%2fsecret.txt", "/js/../../secret.txt", "/escape.txt"):
            r = requests.get(base + path, timeout=10)
            assert "outside" not in r.text, (path, r.status_code)
        # The API is still the API.
        api = requests.get(base + "/client/api", params={"command": "listZones",
                                                          "response": "json"}, timeout=10)
        assert api.status_code == 401
        assert coordinator.client().listCapabilities()["capability"]["dynamicrolesenabled"]
    finally:
        coordinator.stop()


def test_without_ui_dir_the_root_is_not_served(coordinator):
    r = requests.get(f"http://127.0.0.1:{coordinator.port}/", timeout=10)
    assert r.status_code == 404
