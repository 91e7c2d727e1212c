"""Assemble a report: read the runs (and ratings), build the sections, render one HTML file.

The HTML is self-contained: the stylesheet is inlined, figures and thumbnails are data URIs,
there is no script and no external URL, so it opens from disk and prints as it shows. Every
table is also written as CSV next to it.
"""
from __future__ import annotations

import datetime
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from markupsafe import Markup, escape

from .calibration import calibration_section, calibration_statement
from .compare import compare_section
from .headline import headline_section
from .human import human_section, load_ratings
from .rundata import RunData, load_run
from .sections import coco_section, drawbench_section, grids_section, provenance_section

TEMPLATES = Path(__file__).with_name("templates")


@dataclass
class Report:
    path: Path
    sections: list[str]     # section ids, in order
    csv_files: list[Path]


SEPARATORS = re.compile(r"([-_/:,=])(?=\S)")


def breakable(value) -> Markup:
    """Escaped text with a <wbr> after each separator of keys and file names ('w0-none-aug0-'),
    so a narrow column breaks there and never inside a word or number."""
    return Markup(SEPARATORS.sub(r"\1<wbr>", str(escape(value))))


def lines(value, css: str = "") -> Markup:
    """A cell's text: '\\n' starts a new line; key cells break at their separators."""
    parts = [breakable(p) if "key" in css.split() else escape(p) for p in str(value).split("\n")]
    return Markup("<br>").join(parts)


def _env():
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES),
                             autoescape=jinja2.select_autoescape(["html"]),
                             undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True)
    env.filters.update(breakable=breakable, lines=lines)
    return env


def build_sections(runs: list[RunData], human=None, *, grid_prompts: int = 2) -> list[dict]:
    """The sections that have data, in reading order: the headline (results first), the
    benchmarks, human evaluation, image grids, comparisons, and provenance last (collapsed)."""
    sections = [headline_section(runs), coco_section(runs), drawbench_section(runs),
                calibration_section(runs)]
    if human is not None:
        sections.append(human_section(human))
    sections += [grids_section(runs, grid_prompts), compare_section(runs),
                 provenance_section(runs)]
    return [s for s in sections if s is not None]


def build_report(run_dirs: list[str | Path], out: str | Path, *, ratings: str | None = None,
                 title: str | None = None, grid_prompts: int = 2, n_boot: int = 1000,
                 seed: int = 0) -> Report:
    """Write the HTML report of `run_dirs` (and a ratings database or analysis folder) to `out`.

    Args:
        run_dirs: run directories of bench.coco_fid / bench.drawbench; runs of one benchmark are
            compared with the first of them.
        out: the HTML file; tables go next to it as CSV, a database's analysis into human/.
        ratings: a votes database (analysed with rater.analyze) or an analysis folder.
        grid_prompts: prompts per category in the image grids.
        n_boot, seed: bootstrap settings of the human-evaluation analysis.
    Returns: the report's path, its section ids and the CSV files.
    Raises: ReportInputError naming the file that is not what the report expects.
    """
    out = Path(out)
    runs = [load_run(d) for d in run_dirs]
    human = None
    if ratings is not None:
        human = load_ratings(str(ratings), out.parent / "human", n_boot=n_boot, seed=seed)
    sections = build_sections(runs, human, grid_prompts=grid_prompts)
    out.parent.mkdir(parents=True, exist_ok=True)
    csv_files = []
    for section in sections:
        for block in section["blocks"]:
            if block["kind"] == "table":
                csv_files.append(block["table"].write_csv(out.parent))
                block["csv"] = csv_files[-1].name
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    html = _env().get_template("report.html").render(
        title=title or "Evaluation report: " + ", ".join(r.name for r in runs),
        css=(TEMPLATES / "report.css").read_text(encoding="utf-8"),
        sections=sections, runs=runs, generated=now, calibration=calibration_statement(runs),
        ratings=Path(ratings).name if ratings else None,
        nav_after=1 if sections and sections[0]["id"] == "headline" else 0)
    _write_atomic(out, html)
    return Report(out, [s["id"] for s in sections], csv_files)


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; a report is for reading
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
