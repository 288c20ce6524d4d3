"""The serve page as a person uses it: Debian's chromium, driven by Playwright, uploads a real file.

Playwright's own browser download cannot work here, so it drives the system's
chromium (`executable_path`); the test skips, saying so, where there is none.
Checks: the page renders the file's top classes as `tlzoo predict` gives them,
logs nothing to the console (a CSP refusal would show there), and requests
nothing from anywhere but the server.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from serve_support import predicted, start_server, train_tiny_run

BROWSER = "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(BROWSER is None, reason="no Chromium at /usr/bin/chromium: apt-get install -y "
                                                        "chromium (make test does) to run the serve page's test")


def test_the_page_uploads_a_file_and_shows_its_top_classes(tmp_path, one_thread):
    playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright (tlzoo[dev] has it)")
    run_dir, images = train_tiny_run(tmp_path)
    image = images[2]
    expected = predicted(run_dir, [image], 3)[0]
    server = start_server(run_dir, "--top-k", "3")
    console, requests = [], []
    try:
        with playwright.sync_playwright() as driver:
            context = driver.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=BROWSER,
                                                                headless=True, args=FLAGS)
            try:
                page = context.new_page()
                page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
                page.on("pageerror", lambda error: console.append(f"error: {error}"))
                page.on("request", lambda sent: requests.append(sent.url))
                page.goto(server.url)
                page.wait_for_function("document.getElementById('model').textContent.includes('classes')")
                page.set_input_files("#files", str(image))
                page.wait_for_selector(".card .pred", timeout=30_000)
                card = page.locator(".card").first
                shown = [(row.locator(".name").inner_text(), row.locator(".value").inner_text())
                         for row in card.locator(".pred").all()]
                title = card.locator("h2").inner_text()
                widths = card.locator(".fill").evaluate_all("bars => bars.map(bar => bar.style.width)")
                status = page.locator("#status").inner_text()
            finally:
                context.close()
    finally:
        assert server.stop() == 0
    assert title == image.name and status.startswith("Done: 1 image")
    assert shown == [(entry["class"], f"{100 * entry['probability']:.1f}%") for entry in expected]
    assert widths == [f"{100 * entry['probability']:.1f}%" for entry in expected]
    assert not console, console
    outside = [url for url in requests if not url.startswith((server.url, "blob:", "data:"))]
    assert not outside, outside
