"""Open every page of a reports folder in headless Chromium at a laptop's width and check it.

    python scripts/report_pages.py reports/reference/cpu-quick/index.html [--shots DIR]

For each page linked from the index (and the index itself): every image loads, nothing runs
off the page at 1,400 px (an element wider than the viewport is fine only inside a scrolling
box of its own), no console error or failed request, and on the index the claims' verdict
table starts within the first screen (900 px). ``--shots DIR`` saves each page's first screen
as DIR/<folder>-<page>.png, what a reader sees before scrolling. Exit 1 with the problems listed.

The test suite runs the same check (tests/test_reports.py) on a smoke run's reports and on
every committed reference. Needs playwright (the test extras) and a Chromium: Debian's
``chromium`` package, or ``playwright install chromium``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

WIDTH, HEIGHT = 1400, 900  # a laptop's screen

OVERFLOW_JS = """() => {
  const width = document.documentElement.clientWidth, bad = [];
  const scrolls = el => { for (let p = el.parentElement; p; p = p.parentElement) {
      const o = getComputedStyle(p).overflowX; if (o === 'auto' || o === 'scroll' || o === 'hidden') return true; }
    return false; };
  if (document.documentElement.scrollWidth > width + 1) bad.push('the page scrolls sideways');
  for (const el of document.body.querySelectorAll('*')) {
    const r = el.getBoundingClientRect();
    if (r.width && r.right > width + 1 && !scrolls(el))
      bad.push(`${el.tagName.toLowerCase()}.${el.className} ends at ${Math.round(r.right)} px`);
    if (bad.length > 5) break;
  }
  return bad;
}"""


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    return None


def check_reports(indexes: list[Path], shots: Path | None = None, chromium: str | None = None) -> list[str]:
    """The problems found on every page reachable from these index pages (none: an empty list).
    ``shots``: save each page's first screen there, as <folder>-<page>.png."""
    from playwright.sync_api import sync_playwright

    problems: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium or chromium_path(), headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run", "--allow-file-access-from-files"])
        page = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})
        page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
        for index in indexes:
            index = index.resolve()
            page.goto(index.as_uri())
            links = page.eval_on_selector_all("a[href]", "els => els.map(e => e.href)")
            pages = [index.as_uri()] + [u for u in dict.fromkeys(links) if u.startswith("file:") and u.endswith(".html")]
            for url in pages:
                path = Path(url.removeprefix("file://"))
                if not path.exists():
                    problems.append(f"{index}: broken link {url}")
                    continue
                page.goto(url)
                page.wait_for_load_state("load")
                where = f"{path.parent.name}/{path.name}"
                images = page.eval_on_selector_all(
                    "img", "els => els.map(e => [e.currentSrc.slice(0, 40), e.complete, e.naturalWidth])")
                problems += [f"{where}: image {src} did not load" for src, complete, w in images if not (complete and w)]
                problems += [f"{where} at {WIDTH:,} px: {o}" for o in page.evaluate(OVERFLOW_JS)]
                if path == index:
                    top = page.eval_on_selector("table.claims", "t => t.getBoundingClientRect().top") \
                        if page.query_selector("table.claims") else None
                    if top is None or top >= HEIGHT:
                        problems.append(f"{where}: the claims' verdicts are not in the first screen (top {top})")
                if shots is not None:
                    shots.mkdir(parents=True, exist_ok=True)
                    page.screenshot(path=str(shots / f"{path.parent.name}-{path.stem}.png"))
        browser.close()
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("indexes", nargs="+", type=Path, help="index.html of each reports folder")
    ap.add_argument("--shots", type=Path, help="save each page's first screen here (PNG)")
    args = ap.parse_args(argv)
    if chromium_path() is None:
        print("no Chromium found: apt-get install chromium (or playwright install chromium)", file=sys.stderr)
        return 2
    problems = check_reports(args.indexes, args.shots)
    for line in problems:
        print(line)
    print(f"{len(problems)} problem(s) on the pages of {len(args.indexes)} report folder(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
