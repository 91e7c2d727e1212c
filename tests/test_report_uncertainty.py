"""Intervals in plots and reports: error bars on the FID-vs-CLIP Pareto points (bench.plots and
the report's figure), FID / FID∞ / CLIP score with their 95% CIs in the COCO summary table, and
the paired comparisons against the reference config with non-significant differences marked;
runs from before the intervals (no CI columns, no comparisons.csv) still build.

The run directories are written by hand: the numbers are chosen, not measured, so every check
compares the report with known values.
"""
import json
import math
import sys
import warnings
from pathlib import Path

import matplotlib.axes
import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from test_report import build, parse_html, read_csv, write_csv  # noqa: E402

BASE = ["config_key", "guidance", "thresholding", "aug_level", "sampler", "steps", "n_images",
        "n_prompts"]
PROTOCOL = {"fid_resize": "pil-bicubic-center-crop", "fid_dims": "2048",
            "clip_model": "ViT-L-14", "clip_pretrained": "openai"}
# config -> (fid, ci low, ci high, fid_inf, inf low, inf high, clip, clip low, clip high)
VALUES = {
    ("1", "dynamic:0.995"): ("31.234567", "29.876543", "33.012345", "27.5", "26.1", "29.25",
                             "24.3125", "23.9", "24.7512"),
    ("3", "dynamic:0.995"): ("25.5", "24.0", "27.75", "22.125", "20.5", "23.875",
                             "26.0625", "25.5", "26.5"),
    ("1", "none"): ("33.0", "31.0", "35.5", "29.0", "27.0", "31.0", "24.0", "23.5", "24.5"),
    ("3", "none"): ("40.0", "37.5", "42.0", "36.0", "34.0", "38.0", "25.0", "24.25", "25.75"),
}
REFERENCE = "w1-dyn0.995-aug0-ddim8"


def key(w: str, mode: str) -> str:
    return f"w{w}-{'dyn0.995' if mode.startswith('dynamic') else mode}-aug0-ddim8"


def summary_rows(with_intervals: bool = True) -> list[dict]:
    rows = []
    for (w, mode), v in VALUES.items():
        row = {"config_key": key(w, mode), "guidance": w, "thresholding": mode, "aug_level": "0",
               "sampler": "ddim", "steps": "8", "n_images": "8", "n_prompts": "4", "fid": v[0]}
        if with_intervals:
            row.update(fid_ci_low=v[1], fid_ci_high=v[2], fid_inf=v[3], fid_inf_slope="120.5",
                       fid_inf_ci_low=v[4], fid_inf_ci_high=v[5])
        row.update(clip_score=v[6])
        if with_intervals:
            row.update(clip_score_ci_low=v[7], clip_score_ci_high=v[8])
        row.update(clip_score_std="3.5", clip_truncated="0")
        if with_intervals:
            row.update(bootstrap_samples="200", bootstrap_seed="7")
        rows.append({**row, "seconds": "1.5", **PROTOCOL})
    return rows


def comparison_rows() -> list[dict]:
    """Against w1-dyn: w3-dyn differs significantly in FID but not in CLIP; w1-none in neither;
    w3-none in both (p = 0: below the bootstrap's resolution)."""
    def row(k, d_fid, fid_ci, p_fid, d_clip, clip_ci, p_clip):
        w, mode = next((w, m) for (w, m) in VALUES if key(w, m) == k)
        return {"config_key": k, "reference_key": REFERENCE, "guidance": w, "thresholding": mode,
                "aug_level": "0", "sampler": "ddim", "steps": "8", "n_prompts": "4",
                "n_images": "8", "delta_fid": d_fid, "delta_fid_ci_low": fid_ci[0],
                "delta_fid_ci_high": fid_ci[1], "delta_fid_p": p_fid, "delta_clip": d_clip,
                "delta_clip_ci_low": clip_ci[0], "delta_clip_ci_high": clip_ci[1],
                "delta_clip_p": p_clip, "paired": "True", "bootstrap_samples": "200",
                "bootstrap_seed": "7"}
    return [row(REFERENCE, "0.0", ("", ""), "", "0.0", ("", ""), ""),
            row(key("3", "dynamic:0.995"), "-5.734567", ("-8.25", "-3.125"), "0.015",
                "1.75", ("-0.5", "3.875"), "0.31"),
            row(key("1", "none"), "1.765433", ("-1.5", "4.0"), "0.42",
                "-0.3125", ("-1.0", "0.375"), "0.5"),
            row(key("3", "none"), "8.765433", ("6.0", "11.5"), "0.0",
                "0.6875", ("0.25", "1.125"), "0.0")]


def make_run(folder: Path, *, with_intervals: bool = True, comparisons: bool = True,
             summary: list[dict] | None = None) -> Path:
    """A COCO run directory as the benchmark writes it, less the images (no grids section)."""
    grid = [{"config_key": key(w, m), "guidance": w, "thresholding": m, "aug_level": 0,
             "sampler": "ddim", "steps": 8} for w, m in VALUES]
    run = {"command": "python -m bench.coco_fid ...", "spec": {
        "benchmark": "coco_fid", "model": {"model_id": "tiny/fake"}, "grid": grid,
        "base_seed": 0, "images_per_prompt": 2, "prompts": {"n": 4, "sha256": "ab" * 32},
        "metrics": {"fid": {"resize": PROTOCOL["fid_resize"], "dims": 2048},
                    "clip": {"model": "ViT-L-14", "pretrained": "openai"},
                    "bootstrap": {"samples": 200, "seed": 7}}}}
    (folder / "metrics").mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps(run))
    (folder / "prompts.jsonl").write_text("".join(
        json.dumps({"prompt_id": f"coco-{i}", "text": f"a caption {i}", "category": "coco"}) + "\n"
        for i in range(4)))
    write_csv(folder / "metrics" / "summary.csv", summary or summary_rows(with_intervals))
    if comparisons:
        write_csv(folder / "metrics" / "comparisons.csv", comparison_rows())
    return folder


@pytest.fixture
def errorbars(monkeypatch):
    """Every Axes.errorbar call as (x, y, kwargs); matplotlib still draws it."""
    calls = []
    original = matplotlib.axes.Axes.errorbar

    def record(self, x, y, *args, **kwargs):
        calls.append((list(x), list(y), kwargs))
        return original(self, x, y, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "errorbar", record)
    return calls


def expected_errors(rows: list[dict], est: str, low: str, high: str) -> list[list[float]]:
    return [[float(r[est]) - float(r[low]) for r in rows],
            [float(r[high]) - float(r[est]) for r in rows]]


def curve(rows: list[dict], mode: str) -> list[dict]:
    return sorted((r for r in rows if r["thresholding"] == mode), key=lambda r: float(r["guidance"]))


def check_bars(calls: list, rows: list[dict]) -> None:
    """One errorbar call per thresholding mode, with the rows' asymmetric intervals."""
    assert len(calls) == 2
    for mode in ("dynamic:0.995", "none"):
        pts = curve(rows, mode)
        x, y, kw = next(c for c in calls if c[2]["label"] == mode)
        assert x == [float(r["clip_score"]) for r in pts] and y == [float(r["fid"]) for r in pts]
        for got, want in ((kw["xerr"], expected_errors(pts, "clip_score", "clip_score_ci_low",
                                                       "clip_score_ci_high")),
                          (kw["yerr"], expected_errors(pts, "fid", "fid_ci_low", "fid_ci_high"))):
            assert len(got) == 2 and [list(g) for g in got] == [pytest.approx(w) for w in want]
        assert min(min(kw["xerr"][0]), min(kw["yerr"][1])) >= 0


# ---------------------------------------------------------------------------------------------
# bench.plots.pareto_plot (pareto.png of bench.coco_fid)


def test_pareto_plot_draws_asymmetric_error_bars_without_warnings(tmp_path, errorbars):
    from bench.plots import pareto_plot

    rows = summary_rows()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        path = pareto_plot(rows, tmp_path / "pareto.png", title="t")
    assert path.read_bytes()[:4] == b"\x89PNG"
    check_bars(errorbars, rows)
    # the intervals are asymmetric: a symmetric bar (e.g. the mean half-width) would fail this
    x, y, kw = next(c for c in errorbars if c[2]["label"] == "dynamic:0.995")
    assert kw["yerr"][0][0] == pytest.approx(31.234567 - 29.876543)
    assert kw["yerr"][1][0] == pytest.approx(33.012345 - 31.234567)


def test_pareto_plot_without_intervals_is_unchanged_and_a_missing_one_draws_no_bar(tmp_path,
                                                                                  errorbars):
    from bench.plots import interval_errors, pareto_plot

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert pareto_plot(summary_rows(with_intervals=False), tmp_path / "old.png").is_file()
    assert errorbars == []
    rows = summary_rows()
    rows[0].update(fid_ci_low="", fid_ci_high="")  # e.g. the bootstrap failed for one config
    errors = interval_errors(rows, "fid", "fid_ci_low", "fid_ci_high")
    assert math.isnan(errors[0][0]) and math.isnan(errors[1][0]) and errors[0][1] == 1.5
    assert interval_errors(summary_rows(False), "fid", "fid_ci_low", "fid_ci_high") is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert pareto_plot(rows, tmp_path / "partial.png").is_file()


# ---------------------------------------------------------------------------------------------
# the report


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("uncertainty")
    calls = []
    original = matplotlib.axes.Axes.errorbar

    def record(self, x, y, *args, **kwargs):
        calls.append((list(x), list(y), kwargs))
        return original(self, x, y, *args, **kwargs)

    run = make_run(root / "ci_run")
    out = root / "report" / "index.html"
    with pytest.MonkeyPatch.context() as mp, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mp.setattr(matplotlib.axes.Axes, "errorbar", record)
        code, _, err = build([run], out)
    assert code == 0, err
    html = out.read_text()
    return {"run": run, "out": out, "html": html, "doc": parse_html(html), "calls": calls,
            "warnings": [w for w in caught if "matplotlib" in w.filename
                         or "reports" in w.filename or "bench" in w.filename]}


def cells(doc, table_id: str) -> dict[str, list]:
    """config key (the row's data-key) -> the row's <td> elements."""
    body = doc.find(f".//table[@id='table-{table_id}']/tbody")
    assert body is not None, table_id
    return {tr.get("data-key"): tr.findall("td") for tr in body}


def headers(doc, table_id: str) -> list[str]:
    return ["".join(th.itertext()) for th in doc.find(f".//table[@id='table-{table_id}']/thead")
            .iter("th")]


def test_report_pareto_figure_has_error_bars_and_says_so(report):
    assert report["warnings"] == []
    check_bars(report["calls"], summary_rows())
    fig = report["doc"].find(".//figure[@id='fig-pareto-ci-run']")
    assert fig.find("img").get("src").startswith("data:image/png;base64,")
    assert "Error bars: 95% bootstrap CIs over prompts" in "".join(
        fig.find("figcaption").itertext())


def test_summary_table_shows_fid_fid_inf_and_clip_with_cis(report):
    doc = report["doc"]
    head = headers(doc, "coco_summary_ci-run")
    assert "FID ↓ [95% CI]" in head and "FID∞ ↓ [95% CI]" in head
    assert "CLIP score ↑ (100·cos) [95% CI]" in head
    rows = cells(doc, "coco_summary_ci-run")
    texts = [td.text for td in rows[REFERENCE]]
    assert "31.23 [29.88, 33.01]" in texts           # FID
    assert "27.50 [26.10, 29.25]" in texts           # FID∞
    assert "24.31 [23.90, 24.75]" in texts           # CLIP score
    note = "".join(doc.find(".//table[@id='table-coco_summary_ci-run']/..").find(
        "p[@class='note']").itertext())
    assert "bootstrap over prompts (200 resamples, seed 7)" in note and "Chong & Forsyth" in note
    # the CSV keeps the full-precision values and intervals, each column once
    with open(report["out"].parent / "coco_summary_ci-run.csv") as f:
        header = f.readline().strip().split(",")
    assert len(header) == len(set(header))
    table = read_csv(report["out"].parent / "coco_summary_ci-run.csv")
    source = summary_rows()
    for k in ("fid", "fid_ci_low", "fid_ci_high", "fid_inf", "fid_inf_slope", "fid_inf_ci_low",
              "fid_inf_ci_high", "clip_score", "clip_score_ci_low", "clip_score_ci_high",
              "bootstrap_samples", "fid_resize", "clip_model"):
        assert [r[k] for r in table] == [r[k] for r in source], k


def test_comparison_table_marks_only_the_non_significant_differences(report):
    doc = report["doc"]
    name = "comparisons_ci-run"
    head = headers(doc, name)
    assert head == ["config", "prompts", "ΔFID ↓ [95% CI]", "p", "ΔCLIP ↑ [95% CI]", "p"]
    caption = "".join(doc.find(f".//table[@id='table-{name}']/caption").itertext())
    assert "paired comparisons against the reference config w1 · dyn0.995 · 8 steps" in caption
    rows = cells(doc, name)

    def marked(td) -> bool:
        return "ns" in (td.get("class") or "").split() and td.text.endswith(" n.s.")

    def plain(td) -> bool:
        return "ns" not in (td.get("class") or "").split() and "n.s." not in td.text

    sig_fid = rows[key("3", "dynamic:0.995")]  # ΔFID p = 0.015, ΔCLIP p = 0.31
    assert sig_fid[2].text == "-5.73 [-8.25, -3.12]" and plain(sig_fid[2])
    assert sig_fid[3].text == "0.015" and "ns" not in (sig_fid[3].get("class") or "")
    assert marked(sig_fid[4]) and sig_fid[4].text == "+1.75 [-0.50, +3.88] n.s."
    assert "ns" in sig_fid[5].get("class") and sig_fid[5].text == "0.310"
    neither = rows[key("1", "none")]
    assert marked(neither[2]) and marked(neither[4])
    both = rows[key("3", "none")]  # p = 0 with 200 resamples: below 1/200
    assert plain(both[2]) and plain(both[4]) and both[3].text == both[5].text == "<0.005"
    ref = rows[REFERENCE]
    assert ref[2].text == ref[4].text == "reference" and plain(ref[2]) and plain(ref[4])
    table = doc.find(f".//table[@id='table-{name}']")
    assert table.find(".//tr[@class='reference']") is not None
    note = "".join(doc.find(f".//table[@id='table-{name}']/..").find(
        "p[@class='note']").itertext())
    assert "n.s." in note and "p ≥ 0.05" in note and "not significant" in note
    csv_rows = read_csv(report["out"].parent / f"{name}.csv")
    assert [(r["config_key"], r["delta_fid"], r["delta_fid_ci_low"], r["delta_clip_p"])
            for r in csv_rows] == [(r["config_key"], r["delta_fid"], r["delta_fid_ci_low"],
                                    r["delta_clip_p"]) for r in comparison_rows()]


def test_comparison_table_without_fid_has_no_fid_columns():
    """A DrawBench run's comparisons.csv has empty delta_fid cells: only ΔCLIP is shown."""
    from reports.rundata import RunData
    from reports.sections import comparisons_table

    rows = [{**r, "delta_fid": "", "delta_fid_ci_low": "", "delta_fid_ci_high": "",
             "delta_fid_p": ""} for r in comparison_rows()]
    table = comparisons_table(RunData(root=Path("db_run"), run={"spec": {}}, comparisons=rows))
    assert [c.label for c in table.columns] == ["config", "prompts", "ΔCLIP ↑ [95% CI]", "p"]
    shown = {r["key"]: r["cells"] for r in table.display()}
    assert shown[key("1", "none")][2][:2] == ("-0.31 [-1.00, +0.38] n.s.", "num ns")
    assert shown[key("3", "none")][2][:2] == ("+0.69 [+0.25, +1.12]", "num")
    assert "ΔFID" not in table.note and "ΔCLIP > 0 favours the config" in table.note
    assert comparisons_table(RunData(root=Path("db_run"), run={"spec": {}})) is None
    # one reference per thresholding mode (as bench.drawbench writes it): a reference column
    rows[2]["reference_key"], rows[3]["paired"] = "w1-none-aug0-ddim8", "false"
    table = comparisons_table(RunData(root=Path("db_run"), run={"spec": {}}, comparisons=rows))
    assert [c.label for c in table.columns] == ["config", "reference", "prompts",
                                                "ΔCLIP ↑ [95% CI]", "p", "paired"]
    assert table.title.endswith("reference configs (one per row)")
    assert "paired = false" in table.note


def test_run_from_before_the_intervals_still_builds(tmp_path, errorbars):
    run = make_run(tmp_path / "old_run", with_intervals=False, comparisons=False)
    out = tmp_path / "report" / "index.html"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, _, err = build([run], out)
    assert code == 0, err
    assert [w for w in caught if "matplotlib" in w.filename] == []
    assert errorbars == []  # plain curves
    doc = parse_html(out.read_text())
    head = headers(doc, "coco_summary_old-run")
    assert "FID ↓" in head and "CLIP score ↑ (100·cos)" in head
    assert not any("CI" in h or "FID∞" in h for h in head)
    row = cells(doc, "coco_summary_old-run")[REFERENCE]
    assert row[0].get("title") == REFERENCE and row[2].text == "31.23"
    assert doc.find(".//table[@id='table-comparisons_old-run']") is None
    assert not (out.parent / "comparisons_old-run.csv").exists()
    assert doc.find(".//figure[@id='fig-pareto-old-run']") is not None


def test_runs_whose_intervals_differ_are_compared_without_a_protocol_warning(tmp_path):
    """CI and FID∞ columns are values, not protocol fields: two runs under one protocol with
    different intervals are compared, with no warning."""
    a = make_run(tmp_path / "run_a")
    other = summary_rows()
    for r in other:
        for k in ("fid", "fid_ci_low", "fid_ci_high", "fid_inf", "fid_inf_ci_low",
                  "fid_inf_ci_high", "clip_score_ci_low", "clip_score_ci_high"):
            r[k] = repr(float(r[k]) * 0.9)
    b = make_run(tmp_path / "run_b", summary=other)
    out = tmp_path / "report" / "index.html"
    code, _, err = build([a, b], out)
    assert code == 0, err
    html = out.read_text()
    assert 'id="section-compare"' in html
    assert 'class="warning"' not in html and "not compared" not in html
    proto = read_csv(out.parent / "compare_protocol_run-a_vs_run-b.csv")
    assert not any("ci_" in r["field"] or "inf" in r["field"] for r in proto)


def test_bad_comparisons_file_exits_2_naming_it(tmp_path):
    run = make_run(tmp_path / "run")
    rows = comparison_rows()
    rows[1]["delta_clip_p"] = "small"
    write_csv(run / "metrics" / "comparisons.csv", rows)
    out = tmp_path / "report" / "index.html"
    code, stdout, err = build([run], out)
    assert code == 2 and stdout == "" and not out.exists()
    assert "comparisons.csv, line 3: column delta_clip_p is 'small'" in err
