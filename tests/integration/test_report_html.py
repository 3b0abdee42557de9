"""report.html in a real browser (headless Chromium): every figure decodes and renders.

The page is opened from disk with name resolution disabled, so anything that needed the
network would be missing.  A checker script, added to a copy of the page (the report
itself carries no script), lists each <img>'s natural size after the load event; a
deliberately broken image proves the check can fail.  A screenshot is saved for humans.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from chaoskit.report.results import write_run_report
from chaoskit.report.testing import SampleExperiment, write_sample_run

pytestmark = pytest.mark.integration

CHECKER = """<img class="canary-broken" alt="" src="data:image/png;base64,AAAA">
<script>
window.addEventListener("load", function () {
  var sizes = Array.prototype.map.call(document.images, function (img) {
    return {cls: img.className, w: img.naturalWidth, h: img.naturalHeight};
  });
  var page = {width: document.documentElement.scrollWidth, view: window.innerWidth};
  var out = document.createElement("pre");
  out.id = "figure-check";
  out.textContent = JSON.stringify({images: sizes, page: page});
  document.body.appendChild(out);
});
</script>
"""


def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail("chromium is not installed, and CI=true requires it (.ci/run installs it)")
    pytest.skip("chromium is not installed (Debian package 'chromium'; .ci/run installs it)")


def run_chromium(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [
        browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", f"--user-data-dir={profile}",
        "--host-resolver-rules=MAP * ~NOTFOUND",  # no name resolves: nothing remote can load
        *args,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    reports = tmp_path_factory.mktemp("reports")
    kill = SampleExperiment()
    hang = SampleExperiment(
        name="experiments/test_kill_serving.py::test_hang_serving", fault="hang", hang=True,
        ttd=1.4, rto=7.2, budgets={"ttd": 2.0, "rto": 5.0, "rpo": None},
    )  # fmt: skip
    write_sample_run(reports / "20261126-120000-aaaa", [SampleExperiment(rto=3.1)])
    write_run_report(reports / "20261126-120000-aaaa")
    write_sample_run(reports / "20261127-120000-bbbb", [kill, hang], start=86_400)
    write_run_report(reports / "20261127-120000-bbbb")
    return reports / "20261127-120000-bbbb" / "report.html"


def test_every_figure_renders_in_headless_chromium(
    report: Path, tmp_path: Path, record_property: pytest.RecordProperty
) -> None:
    browser = chromium()
    page = report.read_text()
    checked = tmp_path / "checked.html"
    checked.write_text(page.replace("</body>", CHECKER + "</body>"))
    dom = run_chromium(
        browser, tmp_path / "profile", "--window-size=1280,2000",
        "--virtual-time-budget=10000",  # let the load event and the checker run before the dump
        "--dump-dom", checked.as_uri(),
    ).stdout  # fmt: skip
    found = re.search(r'<pre id="figure-check">(.*?)</pre>', dom, re.S)
    assert found, "the checker never ran: the page did not finish loading"
    check = json.loads(found.group(1).replace("&quot;", '"'))
    sizes = check["images"]
    assert check["page"]["width"] <= check["page"]["view"], "the page scrolls sideways"
    broken = [s for s in sizes if s["cls"] == "canary-broken"]
    figures = [s for s in sizes if s["cls"] != "canary-broken"]
    assert broken == [{"cls": "canary-broken", "w": 0, "h": 0}]  # the check does detect failures
    assert [s["cls"] for s in figures] == ["timeline", "trend", "timeline"]  # hang: 1st run
    assert all(s["w"] >= 1000 and s["h"] >= 250 for s in figures), figures

    shot = tmp_path / "report.png"
    run_chromium(browser, tmp_path / "profile", f"--screenshot={shot}",
                 "--window-size=1280,2000", report.as_uri())  # fmt: skip
    record_property("screenshot", str(shot))
    image = Image.open(shot).convert("RGB")
    assert image.size == (1280, 2000)
    # The first timeline sits below the summary table: its plot area has many colours
    # (scatter, fault window, bars), where a missing image would leave a flat grey box.
    colors = image.crop((0, 400, 1280, 1400)).getcolors(maxcolors=1_000_000)
    assert colors is not None and len(colors) > 200, "no figure visible in the screenshot"
    print(f"screenshot: {shot}")
