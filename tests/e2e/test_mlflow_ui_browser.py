"""The MLflow UI, in a real headless Chromium, shows the loss of a pretrain run submitted to the cluster.

Chromium comes from the OS packages (``make test`` installs Debian's ``chromium``); Playwright drives
that binary with a fresh, empty profile; no browser is downloaded. The screenshot is kept in
``test-artifacts/mlflow_ui_run.png``.
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
SCREENSHOT = REPO / "test-artifacts" / "mlflow_ui_run.png"


@pytest.fixture(scope="module")
def chromium_path() -> str:
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium (apt) before the tests")
        pytest.skip("no OS chromium (apt-get install chromium chromium-driver)")
    pytest.importorskip("playwright.sync_api")
    return CHROMIUM


def test_run_page_shows_the_loss_of_the_finished_pretrain(local_cluster, finished_pretrain, chromium_path, tmp_path):
    from playwright.sync_api import sync_playwright

    run = local_cluster.mlflow_get("runs/get", run_id=finished_pretrain.run_id)["run"]
    assert run["info"]["status"] == "FINISHED"
    latest_loss = next(m["value"] for m in run["data"]["metrics"] if m["key"] == "loss")
    url = f"{local_cluster.mlflow_uri}/#/experiments/{run['info']['experiment_id']}/runs/{finished_pretrain.run_id}"

    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=chromium_path,
                                                   headless=True, args=CHROMIUM_ARGS,
                                                   viewport={"width": 1400, "height": 1000})
        try:
            page = ctx.new_page()
            page.goto(url, wait_until="domcontentloaded", timeout=120_000)
            page.get_by_text(finished_pretrain.run_id).first.wait_for(timeout=120_000)  # the run's page, not a list
            search = page.get_by_placeholder("Search metrics")
            search.wait_for(timeout=60_000)
            search.fill("loss")
            link = page.get_by_role("link", name="loss", exact=True)
            link.first.wait_for(timeout=60_000)
            row = page.locator("[role=row]").filter(has=link)
            name, value = row.first.inner_text().split()
            link.first.scroll_into_view_if_needed()
            page.screenshot(path=str(SCREENSHOT))
            body = page.inner_text("body")
        finally:
            ctx.close()
    assert name == "loss"
    assert math.isclose(float(value), latest_loss, rel_tol=1e-4), (value, latest_loss)
    assert "Finished" in body and run["info"]["run_name"] in body
    assert SCREENSHOT.stat().st_size > 10_000
