"""The real thing: JupyterLab in Debian's Chromium, driven by Playwright.

JupyterLab serves a copy of ``04_planning.ipynb`` (so the repository's notebook is never saved
with outputs) on 127.0.0.1, a random free port, with a token; Chromium (``/usr/bin/chromium``,
never a downloaded browser) opens it, runs all cells, drags PlanExplorer's θ slider to its left
end, and the test checks that the pipeline view changed (the plan's table: θ, bits, Σω). A
screenshot goes to ``tests/artifacts/04_planning_theta.png`` (git-ignored); its path is printed.
Skipped, with the reason, where Chromium or Playwright is missing (``.ci/run`` installs both).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from notebook_paths import NEEDS_EXTRA, NOTEBOOKS, REPO

pytest.importorskip("jupyterlab", reason=NEEDS_EXTRA)

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
ARTIFACTS = REPO / "tests" / "artifacts"
NOTEBOOK = "04_planning.ipynb"
SERVER_START_S, RUN_ALL_S, REPLAN_S = 90, 150, 60

sync_api = pytest.importorskip(
    "playwright.sync_api", reason='needs Playwright: pip install -e ".[browser]"'
)
pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium: apt-get install -y chromium"),
]  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_server(url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"jupyter lab exited with {proc.returncode}:\n{log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200 and json.load(r):
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"jupyter lab did not answer within {SERVER_START_S} s:\n{log.read_text()[-2000:]}")


@pytest.fixture
def jupyter_lab(tmp_path: Path, notebook_env: dict[str, str]) -> Iterator[str]:
    """A JupyterLab server on a copy of the planning notebook; yields the notebook's URL."""
    root = tmp_path / "lab"
    root.mkdir()
    shutil.copy(NOTEBOOKS / NOTEBOOK, root / NOTEBOOK)
    (root / "config").symlink_to(REPO / "config")  # the notebook finds its root by config/
    settings = tmp_path / "lab-settings"
    tracker = settings / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings"
    tracker.parent.mkdir(parents=True)
    tracker.write_text(json.dumps({"windowingMode": "none"}))  # every cell in the DOM
    news = settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    news.parent.mkdir(parents=True)
    news.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))  # offline
    port, token = free_port(), secrets.token_hex(16)
    env = notebook_env | {
        "JUPYTERLAB_SETTINGS_DIR": str(settings),
        "JUPYTER_CONFIG_DIR": str(tmp_path / "jupyter-config"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "jupyter-runtime"),
        "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces"),
    }
    log = tmp_path / "jupyter.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1",
             f"--port={port}", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
             "--ServerApp.port_retries=0", "--allow-root", "--LabApp.extension_manager=readonly",
             "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
             f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}"],
            cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        wait_for_server(f"http://127.0.0.1:{port}/api/status?token={token}", proc, log)
        yield f"http://127.0.0.1:{port}/lab/tree/{NOTEBOOK}?token={token}"
    finally:
        proc.send_signal(signal.SIGTERM)  # the server shuts its kernels down
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the group of the server this fixture started
            proc.wait()


def summary_text(page) -> str:
    return page.locator(".llmpq-plan-summary").first.inner_text()


def run_all(page, timeout_error: type[Exception]) -> None:
    """Wait for the kernel, run every cell, wait for the last cell's "ok"."""
    page.locator(".jp-Notebook").wait_for(timeout=SERVER_START_S * 1000)
    select = page.get_by_role("button", name="Select", exact=True)  # "Select Kernel" dialog
    try:
        select.wait_for(timeout=15_000)
        select.click()
    except timeout_error:
        pass  # the notebook's kernelspec was taken as is
    page.get_by_text("Kernel status: Idle").first.wait_for(
        state="attached", timeout=SERVER_START_S * 1000
    )
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_text("Run All Cells", exact=True).click()
    # the last cell prints "ok" once every assert held
    page.locator(".jp-OutputArea-output").filter(has_text=re.compile(r"^ok\s*$")).wait_for(
        timeout=RUN_ALL_S * 1000
    )


def test_theta_slider_changes_the_pipeline_view(jupyter_lab: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "04_planning_theta.png"
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(jupyter_lab)
            try:
                run_all(page, sync_api.TimeoutError)
            except Exception:
                page.screenshot(path=str(ARTIFACTS / "04_planning_failure.png"), full_page=True)
                raise
            summary = page.locator(".llmpq-plan-summary").first
            summary.wait_for(timeout=REPLAN_S * 1000)
            before = summary_text(page)
            assert "θ 1000" in before, before

            slider = page.locator(".widget-hslider").filter(
                has=page.locator(".widget-label", has_text=re.compile(r"^θ$"))
            )
            slider.scroll_into_view_if_needed()
            handle = slider.locator(".noUi-handle").first
            track = slider.locator(".noUi-target").first
            hb, tb = handle.bounding_box(), track.bounding_box()
            page.mouse.move(hb["x"] + hb["width"] / 2, hb["y"] + hb["height"] / 2)
            page.mouse.down()
            page.mouse.move(
                tb["x"] - 20, hb["y"] + hb["height"] / 2, steps=10
            )  # left end: θ = 1e-3
            page.mouse.up()

            deadline = time.monotonic() + REPLAN_S
            after = before
            while after == before and time.monotonic() < deadline:
                time.sleep(0.5)
                after = summary_text(page)
            summary.scroll_into_view_if_needed()
            page.screenshot(path=str(shot))
            print(f"screenshot: {shot}")
            assert after != before, "the pipeline view did not change after moving θ"
            assert "θ 0.001" in after, after
            omega = [float(m) for m in re.findall(r"Σω ([0-9.e+-]+)", before + "\n" + after)]
            assert omega[1] > omega[0], (before, after)  # speed bought with quantization
            readout = slider.locator(".widget-readout").inner_text()
            assert float(readout) == pytest.approx(1e-3), readout
        finally:
            browser.close()
