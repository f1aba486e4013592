"""Execute the notebooks with papermill and export self-contained HTML reports.

    reports/index.html          links every report; the depth figure first
    reports/<name>.html         one report (figures embedded, code hidden)
    reports/<name>/             its figures as PNG, tables as CSV, the executed notebook

The HTML loads nothing from the network (no MathJax, require.js or mermaid), so it
opens offline and in any browser.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from jupyter_client.manager import KernelManager

from .. import stopping
from ..fileio import atomic_write_text

NOTEBOOKS_DIR = Path(__file__).resolve().parents[2] / "notebooks"  # the repository's notebooks/


@dataclass(frozen=True)
class Report:
    name: str          # notebook file stem and output name
    title: str
    description: str
    experiments: tuple[str, ...]  # experiment files it reads


# In the order the index lists them: the degradation in one picture first.
REPORTS = (
    Report("depth", "Degradation at a glance", "Final training and test error against depth, plain nets vs ResNets.",
           ("figure6",)),
    Report("figure1", "Figure 1", "Training and test error of plain-20 and plain-56.", ("figure1",)),
    Report("figure6", "Figure 6", "Plain nets, ResNets, and ResNet-110 vs ResNet-1202, against iterations.",
           ("figure6",)),
    Report("table6", "Table 6", "Final test error per network beside the paper's Table 6 (mean +- std over seeds).",
           ("figure6", "table6")),
    Report("figure7", "Figure 7", "Standard deviation of every 3x3 layer's response, plain nets vs ResNets.",
           ("figure1", "figure6")),
    Report("signals", "Why plain nets degrade", "Forward and backward signals per layer during training, plain nets "
           "beside ResNets, and the paper's Sec. 4.1 claim (C8) judged.", ("figure1", "figure6")),
    Report("ablations", "Ablations", "Every row of experiments/ablations.yaml against its baseline.",
           ("ablations", "figure6")),
    Report("remedies", "Remedies for degradation", "Highway, Fixup, SkipInit, ReZero, delta-orthogonal and "
           "looks-linear plain nets, and nets without BN, against plain-56 and ResNet-56, with their layer signals.",
           ("remedies",)),
)

class IPCKernelManager(KernelManager):
    """The notebooks' kernel talks to papermill over local IPC sockets, not TCP: no port is
    opened, and ipykernel has no reason to warn about unencrypted TCP."""

    def __init__(self, **kwargs: object) -> None:
        # an absolute socket prefix of its own: kernels run side by side, each in its own cwd
        self._socket_dir = tempfile.mkdtemp(prefix="resnet-exp-kernel-")
        super().__init__(transport="ipc", ip=os.path.join(self._socket_dir, "kernel"), **kwargs)

    def cleanup_resources(self, restart: bool = False) -> None:
        super().cleanup_resources(restart)
        if not restart:
            shutil.rmtree(self._socket_dir, ignore_errors=True)


# nbconvert's lab template, minus the three scripts it fetches from a CDN.
_OFFLINE_TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
"""


def export_html(notebook_path: Path, html_path: Path, show_code: bool = False) -> None:
    import nbformat
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="lab", extra_loaders=[DictLoader({"offline.html.j2": _OFFLINE_TEMPLATE})],
                            exclude_input=not show_code, exclude_input_prompt=True, exclude_output_prompt=True)
    exporter.template_file = "offline.html.j2"
    body, _ = exporter.from_notebook_node(nbformat.read(notebook_path, as_version=4))
    atomic_write_text(html_path, body)


def build_reports(results: str | Path = "results", out: str | Path = "reports",
                  experiments_dir: str | Path = "experiments", only: list[str] | None = None,
                  show_code: bool = False, parallel: int | None = None) -> Path:
    """Run every notebook (or ``only`` these), ``parallel`` at a time (each is its own
    kernel process; default: the CPUs, at most 4), and write the index. Returns its path.

    A notebook that fails is reported in the index and raises at the end, after the
    other reports are written."""
    from concurrent.futures import ThreadPoolExecutor

    results, out, experiments_dir = Path(results).resolve(), Path(out).resolve(), Path(experiments_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    chosen = [rep for rep in REPORTS if not only or rep.name in only]
    workers = parallel or min(4, os.cpu_count() or 1, len(chosen))
    stopping.pause_for_test("reports")
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        outcomes = list(pool.map(lambda rep: _build_one(rep, results, out, experiments_dir, show_code), chosen))
    except KeyboardInterrupt:  # a stop signal: start no other notebook; the ones running end with their kernels
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    failures = {rep.name: error for rep, error in zip(chosen, outcomes) if error}
    index = write_index(out, results, experiments_dir, failures)
    if failures:
        raise RuntimeError(f"{len(failures)} report(s) failed: {', '.join(failures)}; see {index}")
    return index


def _build_one(rep: Report, results: Path, out: Path, experiments_dir: Path, show_code: bool) -> str | None:
    """Execute one notebook and export its HTML; the error, or None."""
    import papermill as pm

    # A report owns <out>/<name>.html and <out>/<name>/: cleared first, so a report never
    # shows a figure or a table left by another results folder or an earlier failure.
    if stopping.received is not None:  # stopping: leave this report as it was
        return "not built: stopped"
    rep_dir = out / rep.name
    shutil.rmtree(rep_dir, ignore_errors=True)
    (out / f"{rep.name}.html").unlink(missing_ok=True)
    rep_dir.mkdir(parents=True)
    executed = rep_dir / f"{rep.name}.ipynb"
    print(f"[report] {rep.name}: executing notebooks/{rep.name}.ipynb", flush=True)
    error = None
    try:
        pm.execute_notebook(str(NOTEBOOKS_DIR / f"{rep.name}.ipynb"), str(executed),
                            parameters={"results_dir": str(results), "experiments_dir": str(experiments_dir),
                                        "out_dir": str(rep_dir), "experiments": list(rep.experiments)},
                            kernel_name="python3", progress_bar=False,
                            kernel_manager_class=f"{__name__}.IPCKernelManager")
        # no cwd=: papermill would os.chdir the whole process for it, and reports built in
        # parallel threads then restore each other's directories, leaving this process in a
        # report folder. The notebooks get absolute paths and need no cwd of their own.
    except Exception as e:  # keep going: the other reports are still worth having
        error = f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}"
        print(f"[report] {rep.name} FAILED: {error}", flush=True)
    if executed.exists():
        export_html(executed, out / f"{rep.name}.html", show_code)
    return error


def write_index(out: Path, results: Path, experiments_dir: Path, failures: dict[str, str]) -> Path:
    from .claims import check_claims, claims_html
    from .reference import compare, compare_html, is_reference, load_reference, without_reference
    from .results import load_results, provenance_html

    res = load_results(results)
    claims, notes = check_claims(res)
    is_ref = is_reference(results)  # a reference is not compared with itself
    ref = None if is_ref else load_reference(res)
    # as the user would type it from where the reports were built (and no machine's path in a committed page)
    shown = results.relative_to(Path.cwd()) if results.is_relative_to(Path.cwd()) else results
    exp_files = sorted({experiments_dir / f"{e}.yaml" for r in REPORTS for e in r.experiments})
    e = html.escape
    items, links = [], []  # the list with descriptions at the end; the links alone at the top
    for rep in REPORTS:
        if not (out / f"{rep.name}.html").exists():
            continue
        status = f' <span style="color:#c00">(notebook failed: {e(failures[rep.name])})</span>' \
            if rep.name in failures else ""
        items.append(f'<li><a href="{rep.name}.html">{e(rep.title)}</a>: {e(rep.description)}{status}</li>')
        links.append(f'<a href="{rep.name}.html">{e(rep.title)}</a>{" (failed)" if rep.name in failures else ""}')
    depth_png = out / "depth" / "depth.png"  # embedded, as the reports embed theirs: no stale file shown
    figure = ('<p><a href="depth.html"><img src="data:image/png;base64,'
              f'{base64.b64encode(depth_png.read_bytes()).decode()}" alt="final error against depth" '
              'style="max-width:100%;border:1px solid #ccc"></a></p>') if depth_png.exists() else ""
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>resnet-exp reports</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;line-height:1.4}}
td,th{{vertical-align:top;padding:2px 4px}} code{{font-size:90%}}</style></head>
<body>
<h1>resnet-exp: the degradation experiment of He et al. (2016) on CIFAR-10</h1>
<nav class="reports" style="margin:0 0 1em">Reports: {' &middot; '.join(links)}</nav>
{provenance_html(res, exp_files, part="warnings")}
<h2>Which of the paper's claims held on these runs</h2>
<p>Verdict first, the numbers folded under each claim; computed from the runs' logs by
<code>resnet_exp/reporting/claims.py</code> (also <code>python -m resnet_exp claims --results {e(str(shown))}</code>).</p>
{claims_html(claims, notes)}
<h2>What these runs are</h2>
{provenance_html(res, exp_files, part="facts", every_run=True)}
<h2>Your runs beside the reference of the same schedule</h2>
<p>From <code>resnet_exp/reporting/reference.py</code> (also <code>python -m resnet_exp compare --results
{e(str(shown))}</code>): each finished run against the committed reference's seeds of the same row.</p>
{'<p>These are the committed reference runs of their schedule: others are compared with them.</p>'
 if is_ref else compare_html(compare(res, ref), ref, without_reference(res, ref))}
<h2>The degradation problem in one picture</h2>
{figure or '<p>No depth figure yet: no figure6 run has logged an evaluation.</p>'}
<h2>Reports</h2>
<ul>
{chr(10).join(items)}
</ul>
<p style="color:#666">Results folder: {e(str(shown))}. Made {_dt.datetime.now():%Y-%m-%d %H:%M}
by <code>python -m resnet_exp report</code>.</p>
</body></html>
"""
    index = out / "index.html"
    atomic_write_text(index, page)
    return index
