"""The report in headless Chromium (Debian's /usr/bin/chromium through playwright; never
`playwright install`): loads from file:// with no console error and no request other than the
file itself and its data URIs, the Pareto figure is visible, and print media hides navigation."""
from pathlib import Path

import pytest

from test_report import full_report

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not CHROMIUM.exists(),
                                 reason="no /usr/bin/chromium (apt-get install chromium)")]


def test_report_renders_without_errors_and_the_pareto_figure_is_visible(tmp_path_factory,
                                                                       tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    report = full_report(tmp_path_factory)
    url = report.out.resolve().as_uri()
    errors, failed, requests = [], [], []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("requestfailed", lambda r: failed.append(r.url))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(url, wait_until="load")
            figure = page.locator("figure.pareto img").first
            figure.scroll_into_view_if_needed()
            box = figure.bounding_box()
            assert box and box["width"] > 100 and box["height"] > 100
            assert 0 <= box["y"] < 900 and box["y"] + box["height"] > 0  # in the viewport
            assert figure.evaluate("img => img.complete && img.naturalWidth") > 0
            broken = page.evaluate("[...document.images].filter(i => !i.naturalWidth).length")
            assert broken == 0
            shot = tmp_path / "report.png"
            page.screenshot(path=str(shot))
            assert shot.stat().st_size > 10_000
            page.emulate_media(media="print")
            assert page.evaluate("getComputedStyle(document.querySelector('nav')).display") \
                == "none"
        finally:
            browser.close()
    assert errors == [] and failed == []
    assert [u for u in requests if not u.startswith(("data:", url))] == []
