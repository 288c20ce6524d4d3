"""The report as a person sees it: a demo-sized report opened in headless Chromium.

Debian's `chromium` (installed by .ci/run); the test skips, saying so, only
where no browser is installed. Checks: the page loads with no console message,
every embedded image decodes, the top-losses section shows its 16 images.
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from support import make_image_folder, write_spec
from test_report import DATA_URI, decoded_images, section
from tlzoo.engine.run import run_spec
from tlzoo.registry import get_registry
from tlzoo.spec import load_spec

BROWSER = next((path for name in ("chromium", "chromium-browser", "google-chrome")
                if (path := shutil.which(name))), None)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--hide-scrollbars", "--enable-logging=stderr", "--v=0"]
# Chromium prints what the page logs, throws or is refused as "CONSOLE(...)" / ":CONSOLE:" lines
CONSOLE = re.compile(r"CONSOLE|Uncaught|Refused to|Failed to load resource|net::ERR_")

pytestmark = pytest.mark.skipif(BROWSER is None, reason="no Chromium on this machine: apt-get install -y chromium "
                                                        "(.ci/run does) to run the report's browser test")


def chromium(tmp_path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"  # a fresh one per start
    return subprocess.run([BROWSER, *FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=180)


@pytest.fixture
def demo_sized_report(tmp_path, tiny_backbone, one_thread):
    """12 classes, 240 validation images, as the demo's flowers12 split; 16 top losses."""
    root = make_image_folder(tmp_path / "data", classes=12, per_class=2, val_per_class=20, size=32, noise=90)
    spec = write_spec(tmp_path, root, train__epochs=2, report__enabled=True)
    run_dir = run_spec(load_spec(spec, get_registry()), tmp_path / "run", stream=io.StringIO()).run_dir
    return run_dir / "report.html"


def test_the_report_renders_in_chromium_without_errors(tmp_path, demo_sized_report):
    page = demo_sized_report.as_uri()
    dumped = chromium(tmp_path, "--dump-dom", page)
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    console = [line for line in dumped.stderr.splitlines() if CONSOLE.search(line)]
    assert not console, "the page logged:\n" + "\n".join(console)
    dom = dumped.stdout
    assert "<h1>tiny</h1>" in dom
    losses = section(dom, "top-losses")
    assert len(DATA_URI.findall(losses)) == 16
    assert losses.count('<figure class="loss">') == 16
    # 3 figures + 16 thumbnails, each decoding to a real picture
    sizes = decoded_images(dom.replace(section(dom, "data-findings"), ""))
    assert len(sizes) == 19 and all(width >= 16 and height >= 16 for width, height in sizes)
    assert decoded_images(section(dom, "data-findings"))  # the data findings' thumbnails render too

    shot = tmp_path / "report.png"
    taken = chromium(tmp_path, "--window-size=1280,2400", f"--screenshot={shot}", page)
    assert taken.returncode == 0 and shot.is_file(), taken.stderr[-2000:]
    with Image.open(shot) as image:
        grey = np.asarray(image.convert("L").resize((64, 120)))
    # a rendered page, not a blank or error screen: many grey levels (figures, text, thumbnails)
    assert len(np.unique(grey)) > 40


def test_the_console_check_sees_what_a_broken_page_logs(tmp_path):
    """The check above can fail: a page fetching an outside image under the report's policy is caught."""
    from importlib import resources

    head = resources.files("tlzoo.report").joinpath("report.html").read_text().split("<body>")[0]  # its CSP
    html = head + '<body><img src="http://example.invalid/x.png"></body></html>'
    page = tmp_path / "broken.html"
    page.write_text(html.replace("{{ title }}", "broken"))
    dumped = chromium(tmp_path, "--dump-dom", page.as_uri())
    assert any(CONSOLE.search(line) and "example.invalid" in line for line in dumped.stderr.splitlines())
