"""`python -m bench.report`: a report from real tiny runs (bench.coco_fid with 2 configs,
bench.drawbench with 4), hand-made copies with another FID protocol, and human-evaluation
analysis files; valid HTML5, no external URL, every section, the numbers of the run files.
"""
import base64
import csv
import io
import json
import re
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from bench.report import main

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from fakes import make_inception_weights  # noqa: E402
from test_coco_fid import write_clip_dir, write_coco_val, write_tiny_cascade  # noqa: E402
from test_drawbench_cli import prompts_file  # noqa: E402

_WORLD: dict = {}


def _one_thread(fn, argv) -> int:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fn(argv)
    finally:
        torch.set_num_threads(before)


def make_runs(root: Path) -> SimpleNamespace:
    """Real runs: COCO (w 1,3 × dynamic, 4 captions) and DrawBench (w 1,5 × none/dynamic,
    2 categories × 1 prompt × 2 images); tiny cascade, random Inception, tiny CLIP."""
    import bench.coco_fid
    import bench.drawbench

    ckpt, clip = write_tiny_cascade(root / "ckpt"), write_clip_dir(root / "clip")
    coco = root / "coco_run"
    argv = ["--model", str(ckpt), "--coco-root", str(write_coco_val(root / "coco")),
            "--num-samples", "4", "--guidance", "1,3", "--thresholding", "dynamic:0.995",
            "--steps", "2", "--batch-size", "4", "--device", "cpu", "--fid-dims", "64",
            "--inception-weights", str(make_inception_weights(root / "inception.pth")),
            "--clip-model", clip, "--stats-cache", str(root / "stats"), "--out", str(coco),
            "--no-progress"]
    assert _one_thread(bench.coco_fid.main, argv) == 0
    db = root / "db_run"
    argv = ["--model", str(ckpt), "--prompts", prompts_file(root), "--samples-per-prompt", "2",
            "--limit-per-category", "1", "--categories", "Colors,Counting", "--guidance", "1,5",
            "--thresholding", "none,dynamic:0.995", "--steps", "2", "--batch-size", "8",
            "--device", "cpu", "--clip-model", clip, "--bootstrap-samples", "50", "--out",
            str(db), "--no-progress"]
    assert _one_thread(bench.drawbench.main, argv) == 0
    return SimpleNamespace(root=root, coco=coco, db=db)


def world(tmp_path_factory) -> SimpleNamespace:
    """The runs, made once per session (the browser tests use them too)."""
    if "runs" not in _WORLD:
        _WORLD["runs"] = make_runs(tmp_path_factory.mktemp("report_runs"))
    return _WORLD["runs"]


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def copy_run(src: Path, dst: Path, *, fid_scale: float = 1.0, resize: str | None = None) -> Path:
    """A copy of a run with its FIDs scaled and, optionally, another FID resize protocol."""
    shutil.copytree(src, dst)
    summary = dst / "metrics" / "summary.csv"
    rows = read_csv(summary)
    for r in rows:
        r["fid"] = repr(float(r["fid"]) * fid_scale)
        if resize:
            r["fid_resize"] = resize
    write_csv(summary, rows)
    if resize:
        run = json.loads((dst / "run.json").read_text())
        run["spec"]["metrics"]["fid"]["resize"] = resize
        (dst / "run.json").write_text(json.dumps(run))
    return dst


def write_analysis(folder: Path) -> Path:
    """Analysis files in rater.analyze's format (two questions, two categories, 4 raters)."""
    folder.mkdir(parents=True)
    prefs = []
    for q, base in (("fidelity", 0.55), ("alignment", 0.40)):
        for cat, shift in (("all", 0.0), ("Colors", 0.1), ("Counting", -0.1)):
            a = base + shift
            prefs.append({"question_id": q, "category": cat, "system_a": "w5-dyn", "system_b":
                          "w5-none", "n_votes": 40, "n_raters": 4, "p_a": a, "p_a_lo": a - 0.1,
                          "p_a_hi": a + 0.1, "p_indifferent": 0.2, "p_indifferent_lo": 0.1,
                          "p_indifferent_hi": 0.3, "p_b": 0.8 - a, "p_b_lo": 0.7 - a,
                          "p_b_hi": 0.9 - a})
    write_csv(folder / "preferences.csv", prefs)
    write_csv(folder / "bradley_terry.csv", [
        {"question_id": q, "system": s, "strength": v, "ci_lo": v - 0.3, "ci_hi": v + 0.3,
         "rank": i + 1, "n_comparisons": 40}
        for q in ("fidelity", "alignment") for i, (s, v) in enumerate((("w5-dyn", 0.4),
                                                                       ("w5-none", -0.4)))])
    write_csv(folder / "agreement.csv", [{"question_id": "fidelity", "alpha": 0.4321,
                                          "level": "ordinal", "n_raters": 4, "n_items": 10}])
    write_csv(folder / "pareto_human.csv", [
        {"thresholding": t, "guidance": w, "system": f"w{w}-{t}", "reference_system": "w1-none",
         "fidelity_pref": f, "fidelity_lo": f - 0.1, "fidelity_hi": f + 0.1,
         "alignment_pref": a, "alignment_lo": a - 0.1, "alignment_hi": a + 0.1, "n": 20}
        for t, f0 in (("none", 0.3), ("dynamic:0.995", 0.6)) for w, f, a in
        ((1, f0, 0.5), (5, f0 - 0.1, 0.7))])
    write_csv(folder / "raters.csv", [
        {"rater_id": f"r{i}", "n_votes": 20, "n_controls": 4, "control_accuracy": acc,
         "excluded": acc < 0.8} for i, acc in enumerate((1.0, 0.75, 1.0, 0.5))])
    (folder / "summary.json").write_text(json.dumps({
        "n_votes": 80, "n_raters": 4, "n_excluded_raters": 2, "control_threshold": 0.8,
        "n_boot": 200, "seed": 0, "ci_method": "percentile bootstrap over raters",
        "app_versions": ["0.1.0"]}))
    return folder


def make_votes_db(path: Path, run_name: str) -> Path:
    """A votes database written by rater.simulate through rater.store.VoteStore: the DrawBench
    run's configs against w1-none, 6 simulated raters (one careless), 2 categories."""
    from rater.simulate import PreferenceModel, Raters, fill_store, simulate_votes, synthetic_tasks
    from rater.store import VoteStore

    systems = [f"{run_name}:{k}" for k in ("w1-none-aug0-ddim2", "w5-none-aug0-ddim2",
                                           "w1-dyn0.995-aug0-ddim2", "w5-dyn0.995-aug0-ddim2")]
    tasks = synthetic_tasks(systems, categories=("Colors", "Counting"), prompts_per_category=3,
                            pairs="reference", reference=systems[0])
    model = PreferenceModel({"fidelity": {systems[3]: 1.0, systems[1]: -0.5},
                             "alignment": {systems[3]: 1.0, systems[1]: 0.8}})
    votes = simulate_votes(tasks, model, Raters(n_raters=6, n_careless=1), seed=0)
    fill_store(VoteStore(f"sqlite:///{path}"), votes, progress=False)
    return path


def build(runs, out: Path, *extra: str) -> tuple[int, str, str]:
    """Run the CLI; (exit code, stdout, stderr) captured by hand (no capsys in helpers)."""
    import contextlib

    o, e = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(o), contextlib.redirect_stderr(e):
        code = main([*map(str, runs), "--out", str(out), *extra])
    return code, o.getvalue(), e.getvalue()


def full_report(tmp_path_factory) -> SimpleNamespace:
    """COCO run, its copy under another FID resize, DrawBench run, human analysis: the report."""
    if "full" not in _WORLD:
        w = world(tmp_path_factory)
        root = tmp_path_factory.mktemp("report_full")
        other = copy_run(w.coco, root / "coco_other", resize="pil-bilinear")
        db = make_votes_db(root / "ratings.db", w.db.name)
        out = root / "report" / "index.html"
        code, stdout, stderr = build([w.coco, w.db, other], out, "--ratings", str(db),
                                     "--n-boot", "20")
        assert code == 0, stderr
        _WORLD["full"] = SimpleNamespace(out=out, stdout=stdout, html=out.read_text(), w=w)
    return _WORLD["full"]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    return full_report(tmp_path_factory)


EXTERNAL = re.compile(r"""(?:src|href)\s*=\s*["']?\s*(?!data:|#)[a-z][a-z0-9+.-]*:""", re.I)


def external_urls(html: str) -> list[str]:
    """Every reference a browser would fetch: src/href with a scheme other than data:, url()
    with http(s), <script src>, <link href>."""
    found = EXTERNAL.findall(html)
    found += re.findall(r"url\(\s*['\"]?\s*(?:https?:)?//[^)]*\)", html, re.I)
    found += re.findall(r"<script[^>]*\bsrc\s*=", html, re.I)
    found += re.findall(r"<link[^>]*\bhref\s*=", html, re.I)
    found += re.findall(r"""(?:src|href)\s*=\s*["']?\s*//""", html, re.I)
    return found


def parse_html(html: str):
    import html5lib

    return html5lib.HTMLParser(strict=True, namespaceHTMLElements=False).parse(html)


# ---------------------------------------------------------------------------------------------


def test_report_has_every_section_parses_as_html5_and_fetches_nothing(report):
    doc = parse_html(report.html)  # strict: any parse error raises
    ids = [s.get("id") for s in doc.iter("section")]
    assert ids == ["section-headline", "section-coco", "section-drawbench", "section-human",
                   "section-grids", "section-compare", "section-provenance"]
    provenance = doc.find(".//section[@id='section-provenance']")
    assert provenance.find("details/summary") is not None  # collapsed, at the end
    assert provenance.find("details//table[@id='table-provenance_coco-run']") is not None
    assert external_urls(report.html) == []
    assert "<script" not in report.html and "<link" not in report.html
    assert external_urls('<img src="https://x/y.png">') and \
        external_urls("a { background: url(http://x) }")  # the check itself can fail
    assert report.stdout.strip().splitlines()[-1] == f"report: {report.out}"
    images = list(doc.iter("img"))
    assert images and all(i.get("src").startswith("data:image/") for i in images)
    assert all(i.get("alt") for i in images)


def test_coco_section_shows_the_runs_numbers_and_the_pareto_figure(report):
    doc = parse_html(report.html)
    summary = read_csv(report.w.coco / "metrics" / "summary.csv")
    table = read_csv(report.out.parent / "coco_summary_coco-run.csv")
    assert [r["fid"] for r in table] == [r["fid"] for r in summary]  # the values, unchanged
    assert table[0]["fid_resize"] == "pil-bicubic-center-crop"  # protocol columns kept in CSV
    best = min(summary, key=lambda r: float(r["fid"]))
    rows = {tr.get("data-key"): tr.get("class")
            for tr in doc.find(".//table[@id='table-coco_summary_coco-run']/tbody")}
    assert rows[best["config_key"]] == "best" and list(rows.values()).count("best") == 1
    fig = doc.find(".//figure[@id='fig-pareto-coco-run']")
    assert "pareto" in fig.get("class")
    png = base64.b64decode(fig.find("img").get("src").split(",", 1)[1])
    assert png[:4] == b"\x89PNG"
    caption = "".join(fig.find("figcaption").itertext())
    assert "sampling configs" in caption
    # 64-d features of random Inception weights on 4 images: not the paper's protocol, so no
    # published numbers (tests/test_report_layout.py has a run under the paper's protocol)
    assert "published" not in caption.lower()
    assert not (report.out.parent / "published_fid30k.csv").exists()


def test_drawbench_section_has_category_cis_and_worst_best_prompts(report):
    rows = read_csv(report.out.parent / "categories_db-run.csv")
    run_rows = read_csv(report.w.db / "metrics" / "categories.csv")
    assert [(r["config_key"], r["category"], r["clip_score"], r["ci_low"], r["ci_high"])
            for r in rows] == [(r["config_key"], r["category"], r["clip_score"], r["ci_low"],
                                r["ci_high"]) for r in run_rows]
    r = run_rows[0]
    shown = f"{float(r['clip_score']):.2f} [{float(r['ci_low']):.2f}, {float(r['ci_high']):.2f}]"
    assert shown in report.html and 'id="fig-categories-db-run"' in report.html
    extremes = read_csv(report.out.parent / "prompt_extremes_db-run.csv")
    assert [e["which"] for e in extremes] == ["worst", "best"]
    per_image = read_csv(report.w.db / "metrics" / "per_image.csv")
    overall = [x for x in run_rows if x["category"] == "overall"]
    config = max(overall, key=lambda x: float(x["clip_score"]))["config_key"]
    scores = {}
    for x in per_image:
        if x["config_key"] == config:
            scores.setdefault(x["prompt_id"], []).append(100 * max(float(x["clip_cosine"]), 0))
    means = {p: sum(v) / len(v) for p, v in scores.items()}
    assert extremes[0]["prompt_id"] == min(means, key=lambda p: (means[p], p))
    assert float(extremes[1]["clip_score"]) == pytest.approx(max(means.values()))
    assert extremes[0]["image"].startswith("db_run/images/" + config + "/")


def test_image_grids_show_the_same_prompt_across_guidance_and_thresholding(report):
    from PIL import Image

    doc = parse_html(report.html)
    grids = [t for t in doc.iter("table") if t.get("class") == "image-grid"]
    db = [g for g in grids if "drawbench-colors" in "".join(g.find("caption").itertext())]
    assert len(db) == 1
    head = [th.text for th in db[0].find("thead").iter("th")]
    assert head == ["thresholding \\ guidance", "w=1", "w=5"]
    body = db[0].find("tbody").findall("tr")
    assert [tr.find("th").text for tr in body] == ["none", "dynamic:0.995"]
    cells = [img for tr in body for img in tr.iter("img")]
    assert [c.get("title") for c in cells] == ["w1-none-aug0-ddim2", "w5-none-aug0-ddim2",
                                              "w1-dyn0.995-aug0-ddim2", "w5-dyn0.995-aug0-ddim2"]
    for c in cells:  # each cell is the downscaled image 0 of that config
        thumb = Image.open(io.BytesIO(base64.b64decode(c.get("src").split(",", 1)[1])))
        source = Image.open(report.w.db / "images" / c.get("title") / "drawbench-colors-01" /
                            "0.png")
        assert thumb.format == "JPEG" and max(thumb.size) <= 160
        assert thumb.size == source.size or max(thumb.size) < max(source.size)
    assert len({c.get("src") for c in cells}) == 4
    coco = [g for g in grids if "(coco-" in "".join(g.find("caption").itertext())]
    assert len(coco) == 4  # --grid-prompts 2 of the 4 captions, in both COCO runs


def test_human_section_from_a_votes_database(report):
    """rater.analyze ran on the simulated votes; the section shows its files' numbers."""
    human = report.out.parent / "human"
    summary = json.loads((human / "summary.json").read_text())
    assert summary["n_raters"] == 6 and summary["n_boot"] == 20
    doc = parse_html(report.html)
    section = doc.find(".//section[@id='section-human']")
    text = "".join(section.itertext())
    assert f"{summary['n_excluded_raters']} (control-question accuracy below 0.8)" in text
    prefs = read_csv(human / "preferences.csv")
    first = prefs[0]
    assert (f"{100 * float(first['p_a']):.1f}% [{100 * float(first['p_a_lo']):.1f}, "
            f"{100 * float(first['p_a_hi']):.1f}]") in text
    for q in {r["question_id"] for r in prefs}:
        assert section.find(f".//figure[@id='fig-preferences-{q}']") is not None
    assert section.find(".//figure[@id='fig-human-pareto']") is not None
    assert len(read_csv(report.out.parent / "human_pareto.csv")) == \
        len(read_csv(human / "pareto_human.csv"))


def test_human_section_from_analysis_files(tmp_path_factory, tmp_path):
    w = world(tmp_path_factory)
    out = tmp_path / "r" / "index.html"
    code, _, err = build([w.db], out, "--ratings", str(write_analysis(tmp_path / "analysis")))
    assert code == 0, err
    report = SimpleNamespace(out=out, html=out.read_text())
    doc = parse_html(report.html)
    section = doc.find(".//section[@id='section-human']")
    text = "".join(section.itertext())
    assert "2 (control-question accuracy below 0.8)" in text
    assert "55.0% [45.0, 65.0]" in text  # fidelity, all: p_a with its CI
    assert "20.0% [10.0, 30.0]" in text  # indifferent
    for fig in ("fig-preferences-fidelity", "fig-preferences-alignment", "fig-human-pareto"):
        assert section.find(f".//figure[@id='{fig}']") is not None, fig
    bt = read_csv(report.out.parent / "human_bradley_terry_fidelity.csv")
    assert [r["system"] for r in bt] == ["w5-dyn", "w5-none"]
    assert "0.432" in text and "Krippendorff" in text
    excluded = section.findall(".//tr[@class='excluded']")
    assert len(excluded) == 2


def test_comparison_of_different_fid_protocols_warns_and_withholds_the_difference(report):
    doc = parse_html(report.html)
    section = doc.find(".//section[@id='section-compare']")
    warnings = [w for w in section.iter("div") if w.get("class") == "warning"]
    assert len(warnings) == 1
    text = "".join(warnings[0].itertext())
    assert "FID protocols differ" in text and "resize: pil-bicubic-center-crop vs pil-bilinear" \
        in text and "CLIP" not in text
    rows = read_csv(report.out.parent / "compare_summary_coco-run_vs_coco-other.csv")
    assert rows and all(r["fid_delta"] == "not compared: FID protocol differs" for r in rows)
    assert all(float(r["clip_delta"]) == 0.0 for r in rows)  # same CLIP protocol: compared
    proto = read_csv(report.out.parent / "compare_protocol_coco-run_vs_coco-other.csv")
    assert [r["field"] for r in proto if r["status"] == "DIFFERS"] == ["FID resize"]


def test_comparison_under_the_same_protocol_shows_differences_and_no_warning(tmp_path_factory,
                                                                              tmp_path):
    w = world(tmp_path_factory)
    other = copy_run(w.coco, tmp_path / "coco_better", fid_scale=0.5)
    out = tmp_path / "r" / "index.html"
    code, _, err = build([w.coco, other], out)
    assert code == 0, err
    html = out.read_text()
    parse_html(html)
    assert 'class="warning"' not in html and "not compared" not in html
    a = {r["config_key"]: float(r["fid"]) for r in read_csv(w.coco / "metrics" / "summary.csv")}
    rows = read_csv(out.parent / "compare_summary_coco-run_vs_coco-better.csv")
    for r in rows:
        assert float(r["fid_delta"]) == pytest.approx(-0.5 * a[r["config_key"]])
    assert 'id="section-human"' not in html and 'id="section-drawbench"' not in html
    assert "different numbers of cascade stages" not in html


def test_comparison_of_runs_with_different_stage_counts_says_so(tmp_path_factory, tmp_path):
    w = world(tmp_path_factory)
    base = copy_run(w.coco, tmp_path / "coco_base")
    run = json.loads((base / "run.json").read_text())
    stages = run["spec"]["model"].get("num_stages")
    run["spec"]["model"]["num_stages"] = other = (stages or 1) + 1
    (base / "run.json").write_text(json.dumps(run))
    out = tmp_path / "r" / "index.html"
    code, _, err = build([w.coco, base], out)
    assert code == 0, err
    section = parse_html(out.read_text()).find(".//section[@id='section-compare']")
    text = " ".join("".join(n.itertext()) for n in section.iter("li"))
    assert f"different numbers of cascade stages ({stages or 'all'} vs {other})" in text


def test_protocol_fields_compare_json_and_csv_spellings_equal():
    from reports.compare import _canon, protocol_diff

    a = {k: _canon(v) for k, v in {"dims": 64, "official": False, "aug": 0.0}.items()}
    b = {k: _canon(v) for k, v in {"dims": "64", "official": "False", "aug": "0.0"}.items()}
    assert protocol_diff(a, b, ()) == ([], [])
    defining, versions = protocol_diff({"x": "1", "pillow": "10"}, {"x": "2", "pillow": "11"},
                                       ("pillow",))
    assert defining == [("x", "1", "2")] and versions == [("pillow", "10", "11")]


def _broken(tmp_path_factory, tmp_path, name: str, edit) -> tuple[Path, Path]:
    run = shutil.copytree(world(tmp_path_factory).coco, tmp_path / name)
    return run, edit(run)


@pytest.mark.parametrize("case", ["no_dir", "no_run_json", "bad_json", "short_row", "not_number",
                                  "missing_column", "ratings_dir", "ratings_missing"])
def test_bad_input_exits_2_with_one_message_naming_the_file(tmp_path_factory, tmp_path, case):
    run = shutil.copytree(world(tmp_path_factory).coco, tmp_path / "run")
    summary = run / "metrics" / "summary.csv"
    lines = summary.read_text().splitlines()
    extra = []
    if case == "no_dir":
        run, named = tmp_path / "nowhere", "nowhere"
    elif case == "no_run_json":
        (run / "run.json").unlink()
        named = "run.json is missing"
    elif case == "bad_json":
        (run / "run.json").write_text("{\n  \"spec\": {,\n}")
        named = "run.json, line 2"
    elif case == "short_row":
        summary.write_text("\n".join(lines[:2] + [lines[2].rsplit(",", 3)[0]]) + "\n")
        named = "summary.csv, line 3: expected"
    elif case == "not_number":
        summary.write_text("\n".join([lines[0], lines[1].replace(",ddim,2,4,", ",ddim,2,four,")]
                                     + lines[2:]) + "\n")
        named = "summary.csv, line 2: column n_images is 'four'"
    elif case == "missing_column":
        summary.write_text("\n".join([lines[0].replace("clip_score,", "clip,", 1)] + lines[1:]))
        named = "summary.csv: missing column(s) clip_score"
    elif case == "ratings_dir":
        (tmp_path / "analysis").mkdir()
        extra, named = ["--ratings", str(tmp_path / "analysis")], "summary.json is missing"
    else:
        extra, named = ["--ratings", str(tmp_path / "votes.db")], "votes.db: no such"
    out = tmp_path / "report" / "index.html"
    code, stdout, err = build([run], out, *extra)
    assert code == 2 and stdout == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and named in lines[0], err
    assert not out.exists()
