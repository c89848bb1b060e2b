"""The pages Orrery itself serves for a web UI, in a real headless browser
(Debian's chromium and chromium-driver, PyPI's selenium): a fixture site at
`/` through `--ui-dir`, a browser route answered with the entry page, and
the page's own script reaching `/client/api`, which stays the API."""

from __future__ import annotations

import shutil

import pytest

from orrery_e2e import Coordinator

INDEX = """<!doctype html>
<html><head><title>fixture ui</title><link rel="stylesheet" href="/css/site.css"></head>
<body><div id="app">loading</div>
<script src="/js/app.js"></script></body></html>
"""

APP = """
document.getElementById('app').textContent = 'app ran at ' + location.pathname;
fetch('/client/api?command=listCapabilities&response=json')
  .then(r => r.json().then(body => {
    const el = document.createElement('div');
    el.id = 'api';
    el.textContent = r.status + ' ' + Object.keys(body)[0];
    document.body.appendChild(el);
  }));
"""


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium = shutil.which("chromium")
    driver = shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.fail("chromium and chromium-driver are needed (tests/lab/install-deps.sh)",
                    pytrace=False)
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        opts.add_argument(a)
    return webdriver.Chrome(service=Service(executable_path=driver), options=opts)


def test_the_ui_site_runs_in_a_browser_beside_the_api(tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    site = tmp_path / "ui"
    (site / "js").mkdir(parents=True)
    (site / "css").mkdir()
    (site / "index.html").write_text(INDEX)
    (site / "js" / "app.js").write_text(APP)
    (site / "css" / "site.css").write_text("#app { color: rgb(1, 2, 3); }")
    coordinator = Coordinator(tmp_path / "c", hosts=0)
    coordinator.config = {"ui_dir": str(site)}
    coordinator.init()
    coordinator.start()
    b = browser()
    try:
        base = f"http://127.0.0.1:{coordinator.port}"
        for path in ("/", "/instances/some-route"):
            b.get(base + path)
            wait = WebDriverWait(b, 20)
            wait.until(lambda d: d.find_element(By.ID, "app").text.startswith("app ran"))
            assert b.find_element(By.ID, "app").text == f"app ran at {path}"
            # The stylesheet came through with its media type.
            color = b.find_element(By.ID, "app").value_of_css_property("color")
            assert color in ("rgba(1, 2, 3, 1)", "rgb(1, 2, 3)"), color
            # The page's own request reached the API, which wants a login.
            wait.until(lambda d: d.find_elements(By.ID, "api"))
            assert b.find_element(By.ID, "api").text == "401 listcapabilitiesresponse"
    finally:
        b.quit()
        coordinator.stop()
