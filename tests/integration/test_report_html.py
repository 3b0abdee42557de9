"""report.html in a real browser (headless Chromium): every figure decodes and renders.

The page is opened from disk with name resolution disabled, so anything that needed the
network would be missing.  A checker script, added to a copy of the page (the report
itself carries no script), lists each <img>'s natural size and how much of each third
of it is drawn; a broken and a truncated canary image prove the checks can fail.  A
screenshot is saved for humans and checked where the first timeline was laid out.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy
import pytest
from PIL import Image

from chaoskit.report.results import write_run_report
from chaoskit.report.testing import SampleExperiment, write_sample_run

pytestmark = pytest.mark.integration

CHECKER = """<img class="canary-broken" alt="" src="data:image/png;base64,AAAA">
<img class="canary-truncated" alt="" src="data:image/png;base64,TRUNCATED">
<script>
function ink(img) {
  // Sampled pixels that are drawn (not white, not transparent) in the top, middle and
  // bottom third: a PNG cut short still has its size but leaves the bottom empty.
  var canvas = document.createElement("canvas");
  canvas.width = img.naturalWidth;
  canvas.height = img.naturalHeight;
  if (!canvas.width) return [0, 0, 0];
  var g = canvas.getContext("2d");
  g.drawImage(img, 0, 0);
  var d = g.getImageData(0, 0, canvas.width, canvas.height).data, bands = [0, 0, 0];
  for (var y = 0; y < canvas.height; y += 2) {
    var band = Math.min(2, Math.floor(3 * y / canvas.height));
    for (var x = 0; x < canvas.width; x += 2) {
      var i = (y * canvas.width + x) * 4;
      if (d[i + 3] > 0 && (d[i] < 200 || d[i + 1] < 200 || d[i + 2] < 200)) bands[band]++;
    }
  }
  return bands;
}
window.addEventListener("load", function () {
  var images = Array.prototype.map.call(document.images, function (img) {
    var r = img.getBoundingClientRect();
    return {cls: img.className, w: img.naturalWidth, h: img.naturalHeight, ink: ink(img),
            rect: [r.left, r.top + window.scrollY, r.width, r.height]};
  });
  var page = {width: document.documentElement.scrollWidth, view: window.innerWidth};
  var out = document.createElement("pre");
  out.id = "figure-check";
  out.textContent = JSON.stringify({images: images, page: page});
  document.body.appendChild(out);
});
</script>
"""
MIN_INK = 300  # sampled drawn pixels per third of a figure; a real one has thousands


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
    first_png = re.search(r'src="data:image/png;base64,([^"]+)"', page)
    assert first_png
    truncated = first_png.group(1)[: len(first_png.group(1)) // 8 * 4]  # first half, whole
    checked = tmp_path / "checked.html"
    checker = CHECKER.replace("TRUNCATED", truncated)
    checked.write_text(page.replace("</body>", checker + "</body>"))
    dom = run_chromium(
        browser, tmp_path / "profile", "--window-size=1280,2000",
        "--virtual-time-budget=10000",  # let the load event and the checker run before the dump
        "--dump-dom", checked.as_uri(),
    ).stdout  # fmt: skip
    found = re.search(r'<pre id="figure-check">(.*?)</pre>', dom, re.S)
    assert found, "the checker never ran: the page did not finish loading"
    check = json.loads(found.group(1).replace("&quot;", '"'))
    assert check["page"]["width"] <= check["page"]["view"], "the page scrolls sideways"
    images = check["images"]
    canaries = {img["cls"]: img for img in images if img["cls"].startswith("canary")}
    figures = [img for img in images if not img["cls"].startswith("canary")]
    # the checks do detect failures: an undecodable image, and one cut short
    assert canaries["canary-broken"]["w"] == 0
    assert canaries["canary-truncated"]["w"] > 0 and canaries["canary-truncated"]["ink"][2] == 0
    assert [f["cls"] for f in figures] == ["timeline", "trend", "timeline"]  # hang: 1st run
    for figure in figures:
        assert figure["w"] >= 1000 and figure["h"] >= 250, figure
        assert min(figure["ink"]) >= MIN_INK, f"a figure is partly blank: {figure}"

    shot = tmp_path / "report.png"
    run_chromium(browser, tmp_path / "profile", f"--screenshot={shot}",
                 "--window-size=1280,2000", report.as_uri())  # fmt: skip
    record_property("screenshot", str(shot))
    image = Image.open(shot).convert("RGB")
    assert image.size == (1280, 2000)
    # Where the browser laid out the first timeline, the screenshot shows a drawn figure in
    # each third (the canaries sit at the end of the page, so the layout above is the same).
    left, top, width, height = (round(v) for v in figures[0]["rect"])
    assert top + height <= 2000, "the first timeline is not within the screenshot"
    for third in range(3):
        band = image.crop((left, top + third * height // 3, left + width,
                           top + (third + 1) * height // 3))  # fmt: skip
        drawn = int((numpy.asarray(band).min(axis=2) < 200).sum())
        assert drawn > 4 * MIN_INK, f"third {third} of the first timeline looks blank"
    print(f"screenshot: {shot}")
