"""The MLflow UI, in a real headless Chromium: the experiment opens in the model-training view with the
training runs listed, a run page shows the loss of a pretrain submitted to the cluster, and a run page
shows a sample table.

Chromium comes from the OS packages (``make browser``, run by ``make test``, installs Debian's
``chromium``); Playwright drives that binary with a fresh, empty profile; no browser is downloaded.
Screenshots go to the test's tmp dir; their paths are printed (``pytest -s`` shows them) and named in
every failure.

The sample table is written by the code rank 0 of an sft job runs (``SFTTask.log_samples``, a tiny
model, through the job's MLflow sink) into an sft run of the cluster's server, without a Ray job: a
table is the same artifact whichever process writes it, and this keeps the test to the UI.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from orchestrator.tracking.ui import ui_link

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
SERVER_WAIT_S = float(os.environ.get("MLFLOW_UI_WAIT_S", "300"))
"""How long the MLflow server may take to answer /health (a loaded 2-core machine needed minutes)."""
PAGE_WAIT_MS = 120_000


@pytest.fixture(scope="module")
def chromium_path() -> str:
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium (apt) before the tests")
        pytest.skip("no OS chromium (`make browser` as root, or apt-get install chromium chromium-driver)")
    pytest.importorskip("playwright.sync_api")
    return CHROMIUM


def wait_for_server(url: str, log: Path, timeout_s: float = SERVER_WAIT_S) -> None:
    """Poll ``<url>/health`` until it answers 200; fail naming the URL, the wait and the server's log."""
    import requests

    deadline, last = time.monotonic() + timeout_s, "no answer"
    while time.monotonic() < deadline:
        try:
            r = requests.get(f"{url}/health", timeout=10)
            if r.status_code == 200:
                return
            last = f"HTTP {r.status_code}"
        except requests.RequestException as exc:
            last = type(exc).__name__
        time.sleep(2)
    tail = log.read_text()[-2000:] if log.exists() else "(no log)"
    pytest.fail(f"MLflow server {url} did not answer /health within {timeout_s:.0f}s ({last}; raise MLFLOW_UI_WAIT_S "
                f"on a loaded machine); {log}:\n{tail}")


@pytest.fixture(scope="module")
def samples_run(local_cluster, tmp_path_factory):
    """An sft run on the cluster's server holding one sample table (see the module docstring)."""
    import torch
    from transformers import AutoTokenizer

    from orchestrator.config.model import ModelConfig
    from orchestrator.data import arithmetic
    from orchestrator.data.tokenizer import train_bpe_tokenizer
    from orchestrator.kinds import load
    from orchestrator.kinds.sft import SFTTask
    from orchestrator.models.build import build_causal_lm
    from orchestrator.tracking import MetricsLogger, job_run
    from orchestrator.training.records import collate, encode_records
    from orchestrator.training.task import WorkerContext

    wait_for_server(local_cluster.mlflow_uri, local_cluster.dir / "mlflow.log")
    records = arithmetic.sft_records(200, 0)
    tok = AutoTokenizer.from_pretrained(train_bpe_tokenizer([r["prompt"] + r["response"] for r in records], 400,
                                                            tmp_path_factory.mktemp("tok")))
    cfg = load("sft", [f"workspace={local_cluster.workspace}", "run_name=browser-samples", "tracking=server",
                       f"tracking.uri={local_cluster.mlflow_uri}", "tracking.log_system_metrics=false",
                       "trainer.max_steps=1", "sft.sample_every=1", "sft.num_samples_logged=3",
                       "sft.sample_max_new_tokens=4"])
    ids = {"pad_token_id": tok.pad_token_id, "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id}
    torch.manual_seed(0)
    model = build_causal_lm(ModelConfig(vocab_size=len(tok), seq_len=64), 0, ids)
    held_out = [collate(encode_records(tok, records[:3], "sft", 64, 48), "sft", tok.pad_token_id, 64, False)]
    ctx = WorkerContext(cfg=cfg, plan=SimpleNamespace(tp_size=1, pp_size=1), rank=0, dp_rank=0, model_dir=None,
                        tokenizer_dir=None, special_ids=ids, tokenizer=tok)
    with job_run(cfg) as tracker:
        local = SFTTask().log_samples(SimpleNamespace(module=model), ctx, 1, held_out, None,
                                      MetricsLogger(tracker.client, tracker.run_id))
    return SimpleNamespace(run_id=tracker.run_id, experiment_id=tracker.experiment_id,
                           table=json.loads(Path(local).read_text()))


@pytest.fixture(scope="module")
def browser(chromium_path, tmp_path_factory):
    """One headless Chromium page for the module, and where its screenshots go."""
    from playwright.sync_api import sync_playwright

    shots = tmp_path_factory.mktemp("screenshots")
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(str(shots / "profile"), executable_path=chromium_path, headless=True,
                                                   args=CHROMIUM_ARGS, viewport={"width": 1400, "height": 1000})
        try:
            yield SimpleNamespace(page=ctx.new_page(), shots=shots)
        finally:
            ctx.close()


def shoot(browser, name: str) -> Path:
    path = browser.shots / f"{name}.png"
    browser.page.screenshot(path=str(path))
    print(f"screenshot: {path}")
    return path


def visible(browser, locator, what: str, name: str, timeout_ms: int = PAGE_WAIT_MS) -> None:
    """Wait for ``locator``; on a timeout fail with what was missing, the page's URL and a screenshot."""
    try:
        locator.first.wait_for(timeout=timeout_ms)
    except Exception:
        shot = shoot(browser, f"{name}-failed")
        body = browser.page.inner_text("body")[:1500]
        pytest.fail(f"{what} not shown within {timeout_ms / 1000:.0f}s at {browser.page.url} (screenshot {shot}):\n{body}")


def test_experiment_opens_in_the_model_training_view_listing_the_training_runs(local_cluster, finished_pretrain,
                                                                             samples_run, browser):
    run = local_cluster.mlflow_get("runs/get", run_id=finished_pretrain.run_id)["run"]
    page = browser.page
    page.goto(ui_link(local_cluster.mlflow_uri, run["info"]["experiment_id"]), wait_until="domcontentloaded",
              timeout=PAGE_WAIT_MS)
    for name in (run["info"]["run_name"], "browser-samples"):
        visible(browser, page.get_by_role("link", name=name, exact=True), f"training run {name!r} in the runs list",
                "runs")
    shot = shoot(browser, "runs")
    body = page.inner_text("body")
    assert "/runs" in page.url and "workflowType=machine_learning" in page.url, page.url
    assert "Evaluation runs" not in body and "Detect Issues" not in body  # the GenAI view's pages
    assert shot.stat().st_size > 10_000


def test_run_page_shows_the_loss_of_the_finished_pretrain(local_cluster, finished_pretrain, browser):
    run = local_cluster.mlflow_get("runs/get", run_id=finished_pretrain.run_id)["run"]
    assert run["info"]["status"] == "FINISHED"
    latest_loss = next(m["value"] for m in run["data"]["metrics"] if m["key"] == "loss")
    page = browser.page
    page.goto(ui_link(local_cluster.mlflow_uri, run["info"]["experiment_id"], finished_pretrain.run_id),
              wait_until="domcontentloaded", timeout=PAGE_WAIT_MS)
    visible(browser, page.get_by_text(finished_pretrain.run_id), "the run id on its page", "run")
    search = page.get_by_placeholder("Search metrics")
    visible(browser, search, "the metrics search box", "run")
    search.fill("loss")
    link = page.get_by_role("link", name="loss", exact=True)
    visible(browser, link, "the loss metric", "run")
    name, value = page.locator("[role=row]").filter(has=link).first.inner_text().split()
    link.first.scroll_into_view_if_needed()
    shoot(browser, "run")
    body = page.inner_text("body")
    assert name == "loss"
    assert math.isclose(float(value), latest_loss, rel_tol=1e-4), (value, latest_loss)
    assert "Finished" in body and run["info"]["run_name"] in body


def test_run_page_shows_its_sample_table(local_cluster, samples_run, browser):
    page = browser.page
    page.goto(ui_link(local_cluster.mlflow_uri, samples_run.experiment_id, samples_run.run_id, "artifacts"),
              wait_until="domcontentloaded", timeout=PAGE_WAIT_MS)
    visible(browser, page.get_by_text("samples", exact=True), "the samples folder", "samples")
    page.get_by_text("samples", exact=True).first.click()
    visible(browser, page.get_by_text("step_000001.json", exact=True), "the step-1 table file", "samples")
    page.get_by_text("step_000001.json", exact=True).first.click()
    visible(browser, page.get_by_text("View as table"), "the table view switch", "samples")
    table = samples_run.table
    visible(browser, page.get_by_text(table["prompt"][0], exact=True), "the first prompt in a table cell", "samples")
    shoot(browser, "samples")
    body = page.inner_text("body")
    header = ["step", "prompt", "response", "reference", "match", "reference_nll"]
    assert all(f"\n{column}\n" in body for column in header), body[:2000]
    assert all(prompt in body for prompt in table["prompt"]) and len(table["prompt"]) == 3
    assert all(reference in body for reference in table["reference"])
