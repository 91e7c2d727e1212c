"""A report that reads at a glance: the headline first, provenance last and collapsed, Pareto
plots that show the frontier, figures and tables that fit, CSVs of scalars, published numbers
only beside a run under the paper's protocol.

The runs are written by hand in the shape of `make demo` (a 5 × 3 guidance × thresholding COCO
sweep with w = 0, extra metric columns, the calibration checks' files, a DrawBench run, human
analysis files with long system names), so every check compares the report with known values
and nothing runs a model. The browser checks use Debian's /usr/bin/chromium through playwright.
"""
import ast
import csv
import itertools
import json
import math
import sys
import warnings
from pathlib import Path
from statistics import NormalDist

import matplotlib
import matplotlib.figure
import matplotlib.text
import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from test_report import build, parse_html, read_csv, write_csv  # noqa: E402
from test_report_browser import ARGS, CHROMIUM  # noqa: E402

GUIDANCE = ("0", "1", "3", "5", "8")
MODES = ("none", "static", "dynamic:0.995")
# a trade-off like the paper's: CLIP rises with w, FID falls then rises; w = 0 is far off
CLIP = {"0": 15.6, "1": 24.0, "3": 26.4, "5": 27.5, "8": 28.4}
FID = {"0": 98.0, "1": 13.5, "3": 10.0, "5": 11.0, "8": 12.5}
SHIFT = {"none": (-0.5, 2.5), "static": (-0.3, 1.2), "dynamic:0.995": (0.0, 0.0)}  # (clip, fid)
NET = "calibration_world"


def config_key(w: str, mode: str) -> str:
    return f"w{w}-{'dyn0.995' if mode.startswith('dynamic') else mode}-aug0-ddim12"


def summary_rows(n_images: int = 96) -> list[dict]:
    rows = []
    for mode, w in itertools.product(MODES, GUIDANCE):
        clip = CLIP[w] + (SHIFT[mode][0] if w != "0" else 0.0)
        fid = FID[w] + SHIFT[mode][1] * (1 + GUIDANCE.index(w) / 2) * (w != "0")
        row = {"config_key": config_key(w, mode), "guidance": w, "thresholding": mode,
               "aug_level": "0", "sampler": "ddim", "steps": "12", "n_images": str(n_images),
               "n_prompts": "48", "fid": repr(fid), "fid_ci_low": repr(fid - 1.5),
               "fid_ci_high": repr(fid + 2.0), "fid_inf": repr(fid - 3),
               "fid_inf_ci_low": repr(fid - 5), "fid_inf_ci_high": repr(fid - 1)}
        for q, v in (("cmmd", 1 / (1 + clip)), ("precision", clip / 100), ("recall", 0.5),
                     ("density", clip / 90), ("coverage", 0.3 + clip / 200)):
            col = f"{q}_{NET}_clip" if q == "cmmd" else f"{q}_{NET}"
            row.update({col: repr(v), f"{col}_ci_low": repr(v * 0.9),
                        f"{col}_ci_high": repr(v * 1.1)})
        row.update(clip_score=repr(clip), clip_score_ci_low=repr(clip - 0.4),
                   clip_score_ci_high=repr(clip + 0.5), clip_score_std="3.5",
                   clip_truncated="0", bootstrap_samples="200", bootstrap_seed="0",
                   seconds="12.5", fid_feature_extractor="calibration-world FeatureNet",
                   fid_dims="128", clip_model="calibration-world ClipTower")
        rows.append(row)
    return rows


def oracle_rows() -> list[dict]:
    rows = []
    for mode, w, (i, skill) in itertools.product(MODES, GUIDANCE, enumerate(
            ("color", "count", "shape", "relation", "binding", "all_right"))):
        acc = 0.2 + 0.05 * GUIDANCE.index(w) + 0.03 * i
        pair = {"n_paired": 96, "n_gained": 12, "n_lost": 3, "mcnemar_p": 0.0123, "delta": 0.094}
        rows.append({"config_key": config_key(w, mode), "guidance": w, "thresholding": mode,
                     "skill": skill, "n": 96, "accuracy": acc, "ci_lo": acc - 0.08,
                     "ci_hi": acc + 0.09, "baseline_key": config_key("1", mode),
                     **(pair if w != "1" else {k: "" for k in pair}),
                     **{f"vs0_{k}": (v if w != "0" else "") for k, v in pair.items()}})
    return rows


def make_coco(root: Path, *, world: bool = True, n_images: int = 96, paper: bool = False,
              summary: list[dict] | None = None) -> Path:
    """A coco_fid run directory; `world`: a calibration-world run with the checks' files;
    `paper`: measured under the paper's FID protocol (official Inception, 2048-d, 256², val2014)."""
    grid = [{"config_key": config_key(w, m), "guidance": w, "thresholding": m, "aug_level": 0,
             "sampler": "ddim", "steps": 12} for m, w in itertools.product(MODES, GUIDANCE)]
    fid = ({"feature_extractor": "torch-fidelity inception-v3-compat", "dims": 2048,
            "resolution": 256, "weights_official": True, "resize": "pil-bicubic-center-crop"}
           if paper else {"feature_extractor": "calibration-world FeatureNet, not Inception",
                          "dims": 128, "resolution": 64, "weights_official": False})
    run = {"command": "python -m bench.coco_fid", "spec": {
        "benchmark": "coco_fid", "model": {"model_id": "imagen_ref:cascade@204a3a0ec40c"},
        "grid": grid, "base_seed": 0, "images_per_prompt": 2,
        "prompts": {"n": 48, "sha256": "ab" * 32},
        "metrics": {"fid": fid, "clip": {"model": "ViT-L-14"}, "reference": {"split": "val2014"},
                    "bootstrap": {"samples": 200, "seed": 0},
                    "extra": {"cmmd:calibration-world-clip": {"dims": 128},
                              "prdc:calibration-world": {"dims": 128}}}},
           "device": {"type": "cpu", "threads": 2}, "versions": {"torch": "2.x"}}
    if world:
        run["world"] = {"calibration_world": True, "root": "world", "seed": 0}
    rows = summary or summary_rows(n_images)
    if paper:
        for r in rows:
            r.update(fid_feature_extractor=fid["feature_extractor"], fid_dims="2048")
    metrics = root / "metrics"
    metrics.mkdir(parents=True)
    (root / "run.json").write_text(json.dumps(run))
    write_csv(metrics / "summary.csv", rows)
    if world:
        write_csv(metrics / "oracle_summary.csv", oracle_rows())
        write_csv(metrics / "saturation.csv", [
            {"config_key": config_key(w, m), "guidance": w, "thresholding": m, "n_images": 96,
             "saturated_fraction": 0.01 * GUIDANCE.index(w), "saturated_sd": 0.01}
            for m, w in itertools.product(MODES, GUIDANCE)])
        write_csv(metrics / "thresholding_modes.csv", [
            {"guidance": w, "aug_level": "0.0", "sampler": "ddim", "steps": 12, "mode_a": a,
             "mode_b": b, "key_a": config_key(w, a), "key_b": config_key(w, b), "skill": skill,
             "n_paired": 96, "accuracy_a": 0.125, "accuracy_b": 0.3125, "n_a_only": 2,
             "n_b_only": 20, "mcnemar_p": 4.2e-5, "saturated_a": 0.236, "saturated_b": 0.0012,
             "verdict": "a_worse"}
            for w in GUIDANCE for a, b in itertools.combinations(MODES, 2)
            for skill in ("color", "count", "shape", "relation", "binding", "all_right")])
        write_csv(metrics / "clip_auc.csv", [{"scope": s, "n_correct": 40, "n_wrong": 56,
                                              "auc": 0.71, "ci_lo": 0.6, "ci_hi": 0.8}
                                             for s in ("all", config_key("3", "static"))])
        write_csv(metrics / "degradations.csv", [
            {"kind": k, "strength": s, "n": 200, "distance": 1 + 10 * s, "monotonic": "yes"}
            for k in ("blur", "noise", "colour") for s in (0, 0.5, 1, 2)])
        write_csv(metrics / "metric_validity.csv", [
            {"rank": i + 1, "column": c, "metric": c.split("_")[0], "network": "calibration-world",
             "better": "lower", "n_configs": 15, "spearman": -0.9 + 0.1 * i,
             "agreement": 0.9 - 0.1 * i, "ci_low": 0.5, "ci_high": 0.95, "ladder": "1/3"}
            for i, c in enumerate((f"cmmd_{NET}_clip", "fid_inf", "fid", f"precision_{NET}"))])
    return root


CATEGORIES = ("Colors", "Conflicting", "Counting", "DALL-E", "Descriptions", "Gary Marcus et al.",
              "Misspellings", "Positional", "Rare Words", "Reddit", "Text")


def make_drawbench(root: Path) -> Path:
    keys = [config_key(w, m) for m in ("none", "dynamic:0.995") for w in ("1", "5")]
    rows = [{"config_key": k, "category": c, "n_prompts": 4, "n_images": 8,
             "clip_score": 20 + i + j, "ci_low": 18 + i + j, "ci_high": 22 + i + j}
            for i, k in enumerate(keys) for j, c in enumerate(("overall",) + CATEGORIES)]
    (root / "metrics").mkdir(parents=True)
    (root / "run.json").write_text(json.dumps({"spec": {
        "benchmark": "drawbench", "model": {"model_id": "imagen_ref:cascade@204a3a0ec40c"},
        "prompts": {"n": 44, "version": "drawbench-v1"}, "metrics": {
            "bootstrap": {"samples": 200, "seed": 0}}}}))
    write_csv(root / "metrics" / "categories.csv", rows)
    return root


def make_analysis(folder: Path) -> Path:
    a, b = "drawbench:w5-dyn0.995-aug0-ddim12", "drawbench:w1-none-aug0-ddim12"
    folder.mkdir(parents=True)
    prefs = []
    for q in ("fidelity", "alignment"):
        for i, cat in enumerate(("all", "Binding", "Colors", "Conflicting", "Counting")):
            p = 0.3 + 0.05 * i
            prefs.append({"question_id": q, "category": cat, "system_a": a, "system_b": b,
                          "n_votes": 68, "n_raters": 20, "p_a": p, "p_a_lo": p - 0.1,
                          "p_a_hi": p + 0.1, "p_indifferent": 0.3, "p_indifferent_lo": 0.2,
                          "p_indifferent_hi": 0.4, "p_b": 0.7 - p, "p_b_lo": 0.6 - p,
                          "p_b_hi": 0.8 - p})
    write_csv(folder / "preferences.csv", prefs)
    write_csv(folder / "pareto_human.csv", [
        {"thresholding": m, "guidance": w, "system": f"drawbench:{config_key(w, m)}",
         "reference_system": b, "fidelity_pref": f, "fidelity_lo": f - 0.1, "fidelity_hi": f + 0.1,
         "alignment_pref": al, "alignment_lo": al - 0.1, "alignment_hi": al + 0.1, "n": 40}
        for m, f0 in (("none", 0.4), ("dynamic:0.995", 0.6)) for w, f, al in
        (("1", f0, 0.5), ("5", f0 - 0.1, 0.7))])
    (folder / "summary.json").write_text(json.dumps({
        "n_votes": 680, "n_raters": 20, "n_excluded_raters": 1, "control_threshold": 0.8,
        "n_boot": 200, "seed": 0, "ci_method": "percentile bootstrap over raters",
        "app_versions": ["0.1.0"]}))
    return folder


def text_outside_canvas(fig) -> list[str]:
    """What a figure draws outside its canvas: texts (measured by the renderer; tick labels
    through the axes' tight box, as ticks beyond the limits are not drawn), and the figure's
    tight box."""
    renderer = fig.canvas.get_renderer()
    w, h = fig.canvas.get_width_height()
    ticks = {id(t) for ax in fig.axes for axis in (ax.xaxis, ax.yaxis)
             for tick in axis.get_major_ticks() + axis.get_minor_ticks()
             for t in (tick.label1, tick.label2)}
    out = []
    for t in fig.findobj(matplotlib.text.Text):
        if id(t) not in ticks and t.get_visible() and t.get_text().strip() and t.figure is fig:
            box = t.get_window_extent(renderer)
            if box.x0 < -1 or box.y0 < -1 or box.x1 > w + 1 or box.y1 > h + 1:
                out.append(t.get_text())
    tight = fig.get_tightbbox(renderer)  # inches
    fw, fh = fig.get_size_inches()
    if tight.x0 < -0.01 or tight.y0 < -0.01 or tight.x1 > fw + 0.01 or tight.y1 > fh + 0.01:
        out.append(f"tight box {tight.bounds} beyond {fw}x{fh} in")
    return out


def build_checked(runs, out: Path, *extra) -> dict:
    """Build with every warning an error; every figure checked for text outside its canvas
    and its published-number artists counted (gid 'published')."""
    figures = []
    original = matplotlib.figure.Figure.savefig

    def savefig(fig, *args, **kwargs):
        fig.canvas.draw()
        figures.append({"outside": text_outside_canvas(fig), "published": sum(
            a.get_gid() == "published" for a in fig.findobj())})
        return original(fig, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp, warnings.catch_warnings():
        warnings.simplefilter("error")
        mp.setattr(matplotlib.figure.Figure, "savefig", savefig)
        code, stdout, err = build(runs, out, *extra)
    assert code == 0, err
    html = out.read_text()
    return {"out": out, "html": html, "doc": parse_html(html), "figures": figures}


_CACHE: dict = {}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo-shaped report: calibration-world COCO sweep, DrawBench, human analysis."""
    if "demo" not in _CACHE:
        root = tmp_path_factory.mktemp("layout")
        runs = [make_coco(root / "coco_fid"), make_drawbench(root / "drawbench")]
        report = build_checked(runs, root / "report" / "index.html", "--ratings",
                               str(make_analysis(root / "human")))
        _CACHE["demo"] = {**report, "root": root}
    return _CACHE["demo"]


# ---------------------------------------------------------------------------------------------


def test_building_raises_no_warning_and_no_text_leaves_a_figure(demo):
    assert len(demo["figures"]) >= 8  # pareto, categories, skills, saturation, ladder, human
    assert [f["outside"] for f in demo["figures"] if f["outside"]] == []


def is_container(cell: str) -> bool:
    s = cell.strip()
    if not s.startswith(("{", "[", "(")):
        return False
    for parse in (json.loads, ast.literal_eval):
        try:
            return isinstance(parse(s), (dict, list, tuple, set))
        except (ValueError, SyntaxError):
            pass
    return s.startswith(("{", "["))


def test_every_csv_beside_the_report_holds_scalars_only(demo):
    assert is_container("{'config_key': 'w0'}") and is_container('["a", 1]')  # the check bites
    assert not is_container("(not recorded)") and not is_container("24.31 [23.90, 24.75]")
    files = sorted(demo["out"].parent.rglob("*.csv"))
    assert len(files) >= 15
    for path in files:
        with open(path, newline="") as f:
            for line, row in enumerate(csv.reader(f), 1):
                bad = [c for c in row if is_container(c)]
                assert not bad, f"{path.name}, line {line}: {bad[0][:60]}"
    oracle = read_csv(demo["out"].parent / "calibration_oracle_coco-fid.csv")
    assert float(oracle[0]["color_accuracy"]) == pytest.approx(0.2)


def test_headline_comes_first_with_the_best_config_per_metric(demo):
    doc = demo["doc"]
    ids = [s.get("id") for s in doc.iter("section")]
    assert ids[0] == "section-headline" and ids[-1] == "section-provenance"
    assert doc.find(".//section[@id='section-provenance']/details/summary") is not None
    best = {(r["run"], r["metric"]): r for r in read_csv(demo["out"].parent / "headline_best.csv")}
    rows = summary_rows()
    for metric, lower in (("fid", True), ("clip_score", False), (f"cmmd_{NET}_clip", True),
                          (f"precision_{NET}", False)):
        want = (min if lower else max)(rows, key=lambda r: float(r[metric]))
        got = best[("coco_fid", metric)]
        assert got["config_key"] == want["config_key"], metric
        assert (got["value"], got["ci_low"], got["ci_high"]) == (
            want[metric], want[f"{metric}_ci_low"], want[f"{metric}_ci_high"])
    oracle = [r for r in oracle_rows() if r["skill"] == "all_right"]
    assert best[("coco_fid", "oracle")]["config_key"] == max(
        oracle, key=lambda r: r["accuracy"])["config_key"]
    assert best[("drawbench", "clip_score")]["config_key"] == config_key("5", "dynamic:0.995")
    cell = doc.find(".//table[@id='table-headline_best']/tbody/tr/td[3]")
    assert "·" in cell.text and cell.get("title", "").startswith("w")  # compact, full as title


def test_leaderboard_tests_each_run_against_the_first(tmp_path):
    better = summary_rows()
    for r in better:  # run B: FID 3 lower everywhere, same intervals' widths
        for k in ("fid", "fid_ci_low", "fid_ci_high"):
            r[k] = repr(float(r[k]) - 3.0)
    runs = [make_coco(tmp_path / "run_a"), make_coco(tmp_path / "run_b", summary=better)]
    report = build_checked(runs, tmp_path / "report" / "index.html")
    rows = {r["run"]: r for r in read_csv(tmp_path / "report" / "leaderboard_coco-fid_1.csv")}
    assert rows["run_a"]["fid_delta"] == "" and float(rows["run_b"]["fid_delta"]) == \
        pytest.approx(-3.0)
    se = 3.5 / (2 * NormalDist().inv_cdf(0.975))  # the CI is [fid - 1.5, fid + 2.0]
    assert float(rows["run_b"]["fid_p"]) == pytest.approx(
        2 * NormalDist().cdf(-3.0 / math.hypot(se, se)), rel=1e-6)
    table = report["doc"].find(".//table[@id='table-leaderboard_coco-fid_1']")
    head = ["".join(th.itertext()) for th in table.find("thead").iter("th")]
    run_b = next(tr.findall("td") for tr in table.find("tbody")
                 if "".join(tr.find("td").itertext()).startswith("run_b"))
    fid_cell = "".join(run_b[head.index("FID ↓ [95% CI]")].itertext())
    assert "p=" in fid_cell and ("better" if float(rows["run_b"]["fid_p"]) < 0.05 else "n.s.") \
        in fid_cell


def test_calibration_world_report_has_no_published_numbers(demo):
    assert sum(f["published"] for f in demo["figures"]) == 0
    assert not (demo["out"].parent / "published_fid30k.csv").exists()
    caption = "".join(demo["doc"].find(".//figure[@id='fig-pareto-coco-fid']/figcaption")
                      .itertext())
    assert "published" not in caption.lower()
    assert "Off the plotted range" in caption and "w0 · none · 12 steps" in caption


@pytest.mark.parametrize("n_images", [30000, 1000])
def test_paper_protocol_run_shows_the_published_numbers(tmp_path, n_images):
    rows = summary_rows(n_images)
    for r in rows:  # real COCO FIDs near the published ones
        r["fid"] = repr(float(r["fid"]) - 2.0)
    run = make_coco(tmp_path / "coco_paper", world=False, paper=True, summary=rows)
    report = build_checked([run], tmp_path / "report" / "index.html")
    assert report["figures"][0]["published"] > 0
    assert (tmp_path / "report" / "published_fid30k.csv").is_file()
    caption = "".join(report["doc"].find(".//figure[@id='fig-pareto-coco-paper']/figcaption")
                      .itertext())
    assert "published numbers" in caption
    assert ("not 30K" in caption) == (n_images < 30000)
    world = make_coco(tmp_path / "coco_world", world=True, paper=True, summary=summary_rows())
    report = build_checked([world], tmp_path / "world" / "index.html")
    assert report["figures"][0]["published"] == 0  # the calibration world never


def front(rows: list[dict]) -> list[dict]:
    """Non-dominated rows (CLIP higher and FID lower are better), by brute force."""
    def dominated(r):
        return any(float(o["clip_score"]) >= float(r["clip_score"]) and
                   float(o["fid"]) <= float(r["fid"]) and o is not r and
                   (float(o["clip_score"]), float(o["fid"])) != (float(r["clip_score"]),
                                                                 float(r["fid"])) for o in rows)
    return [r for r in rows if not dominated(r)]


def test_pareto_plot_shows_the_frontier_with_labels_that_do_not_overlap(tmp_path):
    import matplotlib.pyplot as plt

    from bench.plots import draw_pareto

    rows = summary_rows()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig, ax = plt.subplots(figsize=(8.8, 4.6), dpi=110)
        layout = draw_pareto(ax, rows, best_key=config_key("3", "dynamic:0.995"), title="t")
        fig.savefig(tmp_path / "pareto.png")
    renderer = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in layout.labels]
    assert len(boxes) >= 8
    for a, b in itertools.combinations(boxes, 2):
        assert not a.overlaps(b), (a, b)
    expected = front(rows)
    assert {r["config_key"] for r in layout.frontier} == {r["config_key"] for r in expected}
    labelled = {(round(t.xy[0], 6), round(t.xy[1], 6)) for t in layout.labels}
    assert all((round(float(r["clip_score"]), 6), round(float(r["fid"]), 6)) in labelled
               for r in expected)
    for axis, lim in (("clip_score", ax.get_xlim()), ("fid", ax.get_ylim())):
        values = [float(r[axis]) for r in expected]
        assert max(values) - min(values) >= 0.5 * (lim[1] - lim[0]), axis
    assert {r["guidance"] for r in layout.off} >= {"0"}  # w = 0: an arrow at the edge
    assert ax.get_xlim()[0] > CLIP["0"] and ax.get_ylim()[1] < FID["0"]
    plt.close(fig)


def test_compact_config_keys():
    from reports.tables import compact_key

    assert compact_key("w3-static-aug0-ddim12") == "w3 · static · 12 steps"
    assert compact_key("w1.35_8-dyn0.995-aug0.1-ddpm256") == \
        "w1.35/8 · dyn0.995 · aug 0.1 · ddpm · 256 steps"
    assert compact_key("drawbench:w5-none-aug0-ddim2") == "drawbench: w5 · none · 2 steps"
    assert compact_key("overall") == "overall"


REPO = HERE.parent


@pytest.mark.skipif(not (REPO / "runs/demo/coco_fid/metrics/summary.csv").is_file(),
                    reason="no demo runs (make demo)")
def test_the_demo_report_builds_without_warnings(tmp_path):
    runs = [REPO / "runs/demo" / n for n in ("coco_fid", "drawbench")
            if (REPO / "runs/demo" / n / "run.json").is_file()]
    extra = ["--ratings", str(REPO / "runs/demo/human")] \
        if (REPO / "runs/demo/human/summary.json").is_file() else []
    report = build_checked(runs, tmp_path / "report" / "index.html", *extra)
    assert [f["outside"] for f in report["figures"] if f["outside"]] == []
    assert sum(f["published"] for f in report["figures"]) == 0


# ---------------------------------------------------------------------------------------------
# in the browser


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium")
def test_report_fits_1280_and_800_pixels_with_the_headline_on_the_first_screen(demo):
    playwright = pytest.importorskip("playwright.sync_api")
    url = demo["out"].resolve().as_uri()
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            for width in (1280, 800):
                page = browser.new_page(viewport={"width": width, "height": 900})
                page.goto(url, wait_until="load")
                sizes = page.evaluate("[document.documentElement.scrollWidth, "
                                      "document.documentElement.clientWidth]")
                assert sizes[0] <= sizes[1], (width, sizes)
                row = page.locator("#section-headline tbody tr").first.bounding_box()
                assert page.locator("#section-headline").bounding_box()["y"] < 900
                assert row["y"] + row["height"] <= 900, width
                wide = page.evaluate("[...document.querySelectorAll('.table-wrap')]"
                                     ".filter(d => d.scrollWidth > d.clientWidth + 1)"
                                     ".map(d => d.querySelector('table').id)")
                if width == 1280:
                    assert wide == []  # every table fits: none scrolls sideways
                keys = page.evaluate("[...document.querySelectorAll('td.key')].map(td => { "
                                     "const s = getComputedStyle(td); return (td.clientHeight - "
                                     "parseFloat(s.paddingTop) - parseFloat(s.paddingBottom)) / "
                                     "(1.45 * parseFloat(s.fontSize)); })")
                assert max(keys) < 3.5  # compact keys take at most three lines
                page.emulate_media(media="print")
                avoid = page.evaluate("[...document.querySelectorAll('figure, table')].every("
                                      "e => getComputedStyle(e).breakInside === 'avoid')")
                assert avoid
                prov = page.locator("#table-provenance_coco-fid").bounding_box()
                assert prov and prov["height"] > 50  # collapsed provenance prints in full
                page.close()
        finally:
            browser.close()
