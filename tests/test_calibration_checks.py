"""calibration_world.checks and the report's calibration section, on a hand-made run with known
truth: config w1 renders each prompt's own scene (some corrupted), w5 corrupts other prompts,
w3 (no w = 1 partner) is blank with a known share of saturated rows. Expected numbers come
from the scene descriptions and independent formulas (Wilson, exact binomial, pairwise AUC,
scipy sqrtm), never from the code under test.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import math
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bench.sampling import SamplingConfig
from calibration_world import checks
from calibration_world.captions import caption
from calibration_world.scenes import COLORS, PALETTE, render, sample_scene

W1 = SamplingConfig(guidance=1.0, thresholding="static", steps=4)
W5 = SamplingConfig(guidance=5.0, thresholding="static", steps=4)
W3 = SamplingConfig(guidance=3.0, thresholding="dynamic:0.995", steps=4)
SKILLS_OF_PROMPTS = ["Positional"] * 6 + ["Counting"] * 5 + ["Colors"] * 5
K = 2
W1_CORRUPT = {0, 7, 12}            # prompt indices corrupted at w1 (both k)
W5_CORRUPT = {1, 2, 3, 7, 8, 13}   # ... at w5
W5_CORRUPT_K = {(4, 1), (9, 0)}    # (prompt, k) corrupted at w5: the images of a prompt differ


def corrupt(scene):
    """Swap a relation's objects, drop a counted object, or recolour a single object."""
    objs = list(scene.objects)
    if scene.relation is not None:
        a, b = objs
        objs = [dataclasses.replace(a, x=b.x, y=b.y), dataclasses.replace(b, x=a.x, y=a.y)]
    elif len(objs) > 1:
        objs = objs[:-1]
    else:
        other = next(c for c in COLORS if c != objs[0].color)
        objs = [dataclasses.replace(objs[0], color=other, rgb=PALETTE[other])]
    return dataclasses.replace(scene, objects=tuple(objs))


def truth(asked, drawn) -> dict:
    """Per-skill truth of a drawn object list against the asked scene, from descriptions."""
    want = Counter((o.color, o.shape) for o in asked.objects)
    got = Counter((o.color, o.shape) for o in drawn)
    out = {"color": {c for c, _ in got} == {c for c, _ in want},
           "count": sum(got.values()) == sum(want.values()),
           "shape": {s for _, s in got} == {s for _, s in want},
           "binding": set(got) == set(want), "relation": None}
    if asked.relation is not None:
        i, rel, j = asked.relation
        pos = {(o.color, o.shape): (o.x, o.y) for o in drawn}
        a = pos.get((asked.objects[i].color, asked.objects[i].shape))
        b = pos.get((asked.objects[j].color, asked.objects[j].shape))
        out["relation"] = bool(a and b and {"left": a[0] < b[0], "right": a[0] > b[0],
                                             "above": a[1] < b[1], "below": a[1] > b[1]}[rel])
    out["all_right"] = got == want and out["relation"] is not False
    return out


def _save(run: Path, key: str, pid: str, k: int, img: Image.Image) -> str:
    rel = f"images/{key}/{pid}/{k}.png"
    (run / rel).parent.mkdir(parents=True, exist_ok=True)
    img.save(run / rel)
    return rel


def cosine(ok: bool, i: int) -> float:
    """Overlapping scores: correct images somewhat higher."""
    return 0.30 + 0.01 * (i % 5) if ok else 0.27 + 0.01 * (i % 7)


def make_run(root: Path) -> dict:
    """The run directory and its truth {(config_key, prompt_id, k): truth dict}."""
    rng = np.random.default_rng(3)
    scenes = [dataclasses.replace(sample_scene(rng, s), texture="plain") for s in SKILLS_OF_PROMPTS]
    prompts = [{"prompt_id": f"p{i:02d}", "text": caption(s), "category": s.skill}
               for i, s in enumerate(scenes)]
    samples, per_image, known, sat = [], [], {}, {}
    for key, size, bad in ((W1.config_key, 32, W1_CORRUPT), (W5.config_key, 64, W5_CORRUPT),
                           (W3.config_key, 32, None)):
        for i, (p, scene) in enumerate(zip(prompts, scenes)):
            for k in range(K):
                if bad is None:  # blank grey with i % 4 + k rows at 255
                    arr = np.full((32, 32, 3), 200, np.uint8)
                    arr[: i % 4 + k] = 255
                    img, drawn = Image.fromarray(arr), ()
                    sat[(p["prompt_id"], k)] = (i % 4 + k) / 32
                else:
                    hit = i in bad or (key == W5.config_key and (i, k) in W5_CORRUPT_K)
                    drawn_scene = corrupt(scene) if hit else scene
                    img, drawn = render(drawn_scene, size), drawn_scene.objects
                t = truth(scene, drawn)
                known[(key, p["prompt_id"], k)] = t
                rel = _save(root, key, p["prompt_id"], k, img)
                samples.append({"config_key": key, "prompt_id": p["prompt_id"], "k": k,
                                "seed": 1000 + 10 * i + k, "path": rel, "sha256": "", "seconds": 0})
                per_image.append({"config_key": key, "prompt_id": p["prompt_id"], "k": k,
                                  "clip_cosine": cosine(t["all_right"], len(per_image))})
    (root / "metrics").mkdir()
    run = {"format": "imagen_bench.run", "version": 1,
           "spec": {"benchmark": "drawbench", "model": {"model_id": "fake"},
                    "grid": [c.to_dict() for c in (W1, W5, W3)], "base_seed": 0}}
    (root / "run.json").write_text(json.dumps(run))
    (root / "prompts.jsonl").write_text("".join(json.dumps(p) + "\n" for p in prompts))
    (root / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    with open(root / "metrics" / "per_image.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["config_key", "prompt_id", "k", "clip_cosine"])
        w.writeheader()
        w.writerows(per_image)
    return {"truth": known, "saturation": sat, "cosine": per_image}


def read(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        root = tmp_path_factory.mktemp("cw_checks") / "cw_run"
        root.mkdir()
        facts = make_run(root)
        assert checks.main([str(root), "--n-boot", "200", "--no-progress"]) == 0
    finally:
        torch.set_num_threads(before)  # later tests (batch invariance) depend on the thread count
    return root, facts


def wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def exact_mcnemar(g: int, lost: int) -> float:
    n = g + lost
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(g, lost) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def test_oracle_per_image_matches_truth(run):
    root, facts = run
    rows = read(root / "metrics" / "oracle_per_image.csv")
    assert len(rows) == len(facts["truth"]) == 3 * len(SKILLS_OF_PROMPTS) * K
    for r in rows:
        t = facts["truth"][(r["config_key"], r["prompt_id"], int(r["k"]))]
        for skill in ("color", "count", "shape", "binding", "relation", "all_right"):
            want = "" if t[skill] is None else str(int(t[skill]))
            assert r[skill] == want, (r, skill)


def test_oracle_summary_against_independent_counts(run):
    root, facts = run
    rows = {(r["config_key"], r["skill"]): r for r in read(root / "metrics" / "oracle_summary.csv")}
    assert len(rows) == 3 * 6
    t = facts["truth"]
    items = [(p, k) for p in {pid for _, pid, _ in t} for k in range(K)]
    for key in (W1.config_key, W5.config_key, W3.config_key):
        for skill in checks.SKILLS:
            vals = [t[(key, *it)][skill] for it in items if t[(key, *it)][skill] is not None]
            r = rows[(key, skill)]
            assert int(r["n"]) == len(vals)
            assert float(r["accuracy"]) == pytest.approx(sum(vals) / len(vals))
            lo, hi = wilson(sum(vals), len(vals))
            assert (float(r["ci_lo"]), float(r["ci_hi"])) == pytest.approx((lo, hi), abs=1e-9)
    # w5 against w1: gained / lost from the corrupted sets, exact McNemar by hand
    for skill in checks.SKILLS:
        both = [it for it in items if t[(W1.config_key, *it)][skill] is not None]
        gained = sum(t[(W5.config_key, *it)][skill] and not t[(W1.config_key, *it)][skill] for it in both)
        lost = sum(t[(W1.config_key, *it)][skill] and not t[(W5.config_key, *it)][skill] for it in both)
        r = rows[(W5.config_key, skill)]
        assert r["baseline_key"] == W1.config_key and int(r["n_paired"]) == len(both)
        assert (int(r["n_gained"]), int(r["n_lost"])) == (gained, lost), skill
        assert float(r["mcnemar_p"]) == pytest.approx(exact_mcnemar(gained, lost), rel=1e-9)
        assert float(r["delta"]) == pytest.approx((gained - lost) / len(both))
    all_right = rows[(W5.config_key, "all_right")]
    # prompts 0 and 12 are corrupted at w1 only, 7 at both, 1,2,3,8,13 and two images at w5 only
    assert (int(all_right["n_gained"]), int(all_right["n_lost"])) == (2 * K, 5 * K + 2)
    assert rows[(W1.config_key, "all_right")]["mcnemar_p"] == ""        # the reference itself
    assert rows[(W3.config_key, "all_right")]["baseline_key"] == ""      # no w = 1 in its mode
    assert rows[(W3.config_key, "all_right")]["accuracy"] == "0.0"


def test_saturation_known_fractions(run):
    root, facts = run
    rows = {r["config_key"]: r for r in read(root / "metrics" / "saturation.csv")}
    assert float(rows[W1.config_key]["saturated_fraction"]) == 0.0
    assert float(rows[W5.config_key]["saturated_fraction"]) == 0.0
    want = list(facts["saturation"].values())
    assert float(rows[W3.config_key]["saturated_fraction"]) == pytest.approx(np.mean(want))
    assert int(rows[W3.config_key]["n_images"]) == len(want)
    img = np.full((10, 10, 3), 128, np.uint8)
    img[0, :7, 0] = 255       # 7 pixels with one channel at 255
    img[5, 2:5] = 0           # 3 pixels fully black
    img[9, 9, 2] = 254        # not an extreme
    assert checks.saturated_fraction(img) == pytest.approx(0.10)


def test_clip_auc_against_pairwise_count(run):
    root, facts = run
    rows = {r["scope"]: r for r in read(root / "metrics" / "clip_auc.csv")}
    t = facts["truth"]

    def hand_auc(keys):
        cos = [(r["clip_cosine"], t[(r["config_key"], r["prompt_id"], r["k"])]["all_right"])
               for r in facts["cosine"] if r["config_key"] in keys]
        pos = [c for c, ok in cos if ok]
        neg = [c for c, ok in cos if not ok]
        wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
        return wins / (len(pos) * len(neg)), len(pos), len(neg)

    for scope, keys in (("all", {W1.config_key, W5.config_key, W3.config_key}),
                        (W5.config_key, {W5.config_key})):
        value, n_pos, n_neg = hand_auc(keys)
        r = rows[scope]
        assert (int(r["n_correct"]), int(r["n_wrong"])) == (n_pos, n_neg)
        assert float(r["auc"]) == pytest.approx(value, abs=1e-12)
        assert float(r["ci_lo"]) <= value <= float(r["ci_hi"])
        assert 0.5 < value < 1.0
    assert rows[W3.config_key]["auc"] == ""       # no oracle-correct image there
    assert checks.auc([1, 2], [0, 2]) == pytest.approx((1 + 1 + 0 + 0.5) / 4)


# ---------------------------------------------------------------------------------------------
# degradation ladder


def world_images(n: int = 48, size: int = 32) -> np.ndarray:
    rng = np.random.default_rng(11)
    return np.stack([np.asarray(render(sample_scene(rng), size)) for _ in range(n)])


def sqrtm_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance with scipy.linalg.sqrtm (the independent reference)."""
    from scipy import linalg

    m1, m2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(s1 @ s2).real
    return float(((m1 - m2) ** 2).sum() + np.trace(s1 + s2 - 2 * root))


def test_ladder_monotonic_simple_features_and_matches_sqrtm():
    images = world_images()
    rows = checks.degradation_ladder(images, checks.simple_features, progress=False)
    assert [(r["kind"], r["strength"]) for r in rows] == [
        (k, s) for k, v in checks.KINDS.items() for s in v]
    assert {r["monotonic"] for r in rows} == {"yes"}
    ref = checks.simple_features(images[:24].transpose(0, 3, 1, 2))
    for r in rows[5:7]:  # noise at 0 and 0.02, recomputed with sqrtm
        test = checks.degrade(images[24:], r["kind"], r["strength"], seed=0)
        other = checks.simple_features(test.transpose(0, 3, 1, 2))
        with warnings.catch_warnings():  # 24 images, 36 features: singular covariances
            warnings.simplefilter("ignore")
            want = sqrtm_distance(ref, other)
        assert r["distance"] == pytest.approx(want, rel=1e-6, abs=1e-9)
    clean = [r["distance"] for r in rows if r["strength"] == 0]
    assert len(set(clean)) == 1 and clean[0] > 0


def test_ladder_flags_a_blind_feature_map():
    """Channel means ignore blur: the blur ladder must not be called monotonic."""
    rows = checks.degradation_ladder(world_images(), lambda x: x.double().mean(dim=(2, 3)),
                                     progress=False)
    flags = {r["kind"]: r["monotonic"] for r in rows}
    assert flags["blur"] == "no" and flags["color"] == "yes"


def test_ladder_monotonic_random_conv_net():
    g = torch.Generator().manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(16, 24, 3, stride=2, padding=1), torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)

    def features(x):
        with torch.no_grad():
            return net(x.float() / 127.5 - 1.0)

    rows = checks.degradation_ladder(world_images(), features, progress=False)
    assert {r["kind"]: r["monotonic"] for r in rows} == {"blur": "yes", "noise": "yes", "color": "yes"}


def test_ladder_cli_on_a_world(tmp_path, run):
    from calibration_world.dataset import write_dataset

    root, _ = run
    world = tmp_path / "world"
    write_dataset(world, n_train=1, n_val=16, size=32, n_prompts=1, progress=False)
    copy = tmp_path / "run"
    import shutil

    shutil.copytree(root, copy)
    assert checks.main([str(copy), "--world", str(world), "--n-real", "16", "--n-boot", "20",
                        "--no-progress"]) == 0
    rows = read(copy / "metrics" / "degradations.csv")
    assert len(rows) == 15 and {r["n"] for r in rows} == {"8"}
    assert json.loads((copy / "run.json").read_text())["world"]["root"] == str(world)


def test_cli_rejects_a_run_of_other_prompts(tmp_path, run, capsys):
    import shutil

    root, _ = run
    copy = tmp_path / "run"
    shutil.copytree(root, copy)
    lines = (copy / "prompts.jsonl").read_text().splitlines()
    lines[2] = json.dumps({"prompt_id": "p02", "text": "a photo of a cat", "category": "x"})
    (copy / "prompts.jsonl").write_text("\n".join(lines) + "\n")
    assert checks.main([str(copy), "--no-progress"]) == 2
    assert "prompts.jsonl, line 3" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# the report


def parse(html: str):
    import html5lib

    return html5lib.HTMLParser(strict=True, namespaceHTMLElements=False).parse(html)


def build(runs, out: Path):
    from bench.report import main

    assert main([*map(str, runs), "--out", str(out), "--grid-prompts", "0"]) == 0
    return parse(out.read_text())


def text_of(node) -> str:
    return " ".join("".join(node.itertext()).split())


def test_report_shows_the_calibration_section(run, tmp_path):
    root, _ = run
    doc = build([root], tmp_path / "report" / "index.html")
    header = doc.find(".//header")
    statement = header.find(".//div[@id='calibration-statement']")
    assert statement is not None and "not comparable with published" in text_of(statement)
    section = doc.find(".//section[@id='section-calibration']")
    assert section is not None
    ids = {f.get("id") for f in section.iter("figure")}
    assert {"fig-calibration-skills-cw-run", "fig-calibration-saturation-cw-run",
            "fig-calibration-ladder-cw-run"} - ids == {"fig-calibration-ladder-cw-run"}
    summary = {(r["config_key"], r["skill"]): r for r in read(root / "metrics" / "oracle_summary.csv")}

    def table_rows(table_id):
        table = section.find(f".//table[@id='{table_id}']")
        heads = [text_of(th) for th in table.iter("th")]
        return heads, {tr.get("data-key"): [text_of(td) for td in tr.findall("td")]
                       for tr in table.find("tbody").findall("tr")}

    # configs show in their compact form (the key is the row's data-key); guidance and
    # thresholding are in the CSV
    heads, rows = table_rows("table-calibration_oracle_cw-run")
    assert heads == ["config", "n images", "colour [95% CI]", "count [95% CI]", "shape [95% CI]",
                         "relation [95% CI]", "binding [95% CI]", "all right [95% CI]"]
    for key in (W1.config_key, W5.config_key, W3.config_key):
        for col, skill in zip(rows[key][2:], checks.SKILLS):
            s = summary[(key, skill)]
            expected = (f"{100 * float(s['accuracy']):.1f}% [{100 * float(s['ci_lo']):.1f}, "
                        f"{100 * float(s['ci_hi']):.1f}]")
            assert col.replace(" ", "") == expected.replace(" ", ""), (key, skill)  # two lines
    heads, rows = table_rows("table-calibration_oracle_vs_w1_cw-run")
    assert set(rows) == {W5.config_key}             # w1 is the reference, w3 has none
    assert len(rows[W5.config_key]) == 1 + len(checks.SKILLS)
    for col, skill in zip(rows[W5.config_key][1:], checks.SKILLS):
        s = summary[(W5.config_key, skill)]
        assert col.startswith(f"+{s['n_gained']}/−{s['n_lost']} ({100 * float(s['delta']):+.1f} pts)")
        assert f"p={float(s['mcnemar_p']):.2g}" in col
    assert section.find(".//table[@id='table-calibration_clip_auc_cw-run']") is not None
    assert section.find(".//table[@id='table-calibration_saturation_cw-run']") is not None
    assert (tmp_path / "report" / "calibration_oracle_cw-run.csv").is_file()
    assert section.find(".//table[@id='table-calibration_oracle_vs_w0_cw-run']") is None  # no w = 0


def test_summary_and_report_compare_each_config_with_w0(run, tmp_path):
    """Against the unconditional config of the same thresholding: hand counts, exact McNemar,
    and the report's table of them."""
    import shutil

    grid = {"w0": ("0", "static"), "w1": ("1", "static"), "w3": ("3", "static"),
            "w3d": ("3", "dynamic:0.995"), "w0d": ("0/0", "dynamic:0.995")}
    configs = {k: {"config_key": k, "guidance": g, "thresholding": t} for k, (g, t) in grid.items()}
    rng = np.random.default_rng(7)
    truth = {}  # (config, prompt, skill) -> True / False / None (does not apply)
    rows = []
    for key in grid:
        for i in range(40):
            row = {"config_key": key, "prompt_id": f"p{i}", "k": "0", "seed": str(i)}
            for skill in checks.SKILLS:
                applies = skill != "relation" or i % 2 == 0
                ok = bool(rng.random() < {"w0": 0.2, "w0d": 0.3}.get(key, 0.7)) if applies else None
                truth[(key, i, skill)] = ok
                row[skill] = "" if ok is None else str(int(ok))
            rows.append(row)
    summary = {(r["config_key"], r["skill"]): r for r in checks.summarize(rows, configs)}
    pairs = {"w1": "w0", "w3": "w0", "w3d": "w0d"}
    for key, ref in pairs.items():
        for skill in checks.SKILLS:
            both = [i for i in range(40) if truth[(key, i, skill)] is not None]
            gained = sum(truth[(key, i, skill)] and not truth[(ref, i, skill)] for i in both)
            lost = sum(truth[(ref, i, skill)] and not truth[(key, i, skill)] for i in both)
            r = summary[(key, skill)]
            assert r["uncond_key"] == ref and r["vs0_n_paired"] == len(both)
            assert (r["vs0_n_gained"], r["vs0_n_lost"]) == (gained, lost), (key, skill)
            assert r["vs0_mcnemar_p"] == pytest.approx(exact_mcnemar(gained, lost), rel=1e-9)
            assert r["vs0_delta"] == pytest.approx((gained - lost) / len(both))
    assert "uncond_key" not in summary[("w0", "color")]              # the reference itself
    assert summary[("w3", "color")]["baseline_key"] == "w1"         # the w = 1 comparison stays
    assert "n_paired" not in summary[("w3d", "color")]              # no w = 1 in its mode
    # the report: one row per config that has a w = 0 partner, cells from those columns
    root, _ = run
    copy = tmp_path / "vs0_run"
    shutil.copytree(root, copy)
    checks._write(copy / "metrics" / "oracle_summary.csv", list(summary.values()),
                  checks.SUMMARY_FIELDS)
    doc = build([copy], tmp_path / "r" / "index.html")
    table = doc.find(".//table[@id='table-calibration_oracle_vs_w0_vs0-run']")
    cells = {tr.get("data-key"): [text_of(td) for td in tr.findall("td")]
             for tr in table.find("tbody").findall("tr")}
    assert set(cells) == set(pairs)
    for key in pairs:
        for col, skill in zip(cells[key][1:], checks.SKILLS):
            r = summary[(key, skill)]
            assert col.startswith(f"+{r['vs0_n_gained']}/−{r['vs0_n_lost']} "
                                  f"({100 * r['vs0_delta']:+.1f} pts)"), (key, skill, col)
            assert f"p={r['vs0_mcnemar_p']:.2g}" in col


def test_thresholding_modes_against_each_other_hand_counts_and_report(run, tmp_path):
    """Every pair of thresholding modes at the same guidance weight (and sampler and steps), per
    skill: hand counts of the discordant images, exact McNemar, mean saturation, verdict; a
    config of another sampler is not paired; the report's table shows the all-right rows."""
    import shutil

    grid = {"w1n": ("1", "none", "ddpm"), "w1s": ("1", "static", "ddpm"),
            "w5n": ("5", "none", "ddpm"), "w5s": ("5", "static", "ddpm"),
            "w5d": ("5", "dynamic:0.995", "ddpm"), "w5s_ddim": ("5", "static", "ddim")}
    configs = {k: {"config_key": k, "guidance": g, "thresholding": t, "aug_level": 0.0,
                   "sampler": smp, "steps": 12} for k, (g, t, smp) in grid.items()}
    rate = {"w1n": 0.6, "w1s": 0.6, "w5n": 0.15, "w5s": 0.7, "w5d": 0.6, "w5s_ddim": 0.7}
    rng = np.random.default_rng(11)
    truth, sat, rows = {}, {}, []
    for key in grid:
        for i in range(60):
            if key == "w5d" and i == 59:
                continue  # an image w5d lacks: pairs use the images both modes have
            row = {"config_key": key, "prompt_id": f"p{i}", "k": "0", "seed": str(i)}
            sat[(key, i)] = float(rng.random() * (0.4 if key == "w5n" else 0.05))
            row["saturated"] = f"{sat[(key, i)]:.6g}"
            for skill in checks.SKILLS:
                applies = skill != "relation" or i % 3 == 0
                ok = bool(rng.random() < rate[key]) if applies else None
                truth[(key, i, skill)] = ok
                row[skill] = "" if ok is None else str(int(ok))
            rows.append(row)
    out = checks.mode_comparisons(rows, configs)
    got = {(r["key_a"], r["key_b"], r["skill"]): r for r in out}
    pairs = [("w1n", "w1s"), ("w5n", "w5s"), ("w5n", "w5d"), ("w5s", "w5d")]
    assert {(a, b) for a, b, _ in got} == set(pairs)  # w5s_ddim: another sampler, unpaired
    assert len(out) == len(pairs) * len(checks.SKILLS)
    for a, b in pairs:
        images = [i for i in range(60) if (a, i) in sat and (b, i) in sat]
        for skill in checks.SKILLS:
            both = [i for i in images if truth[(a, i, skill)] is not None]
            a_only = sum(truth[(a, i, skill)] and not truth[(b, i, skill)] for i in both)
            b_only = sum(truth[(b, i, skill)] and not truth[(a, i, skill)] for i in both)
            r = got[(a, b, skill)]
            assert (r["mode_a"], r["mode_b"]) == (grid[a][1], grid[b][1])
            assert r["guidance"] == grid[a][0] and r["sampler"] == "ddpm"
            assert (r["n_paired"], r["n_a_only"], r["n_b_only"]) == (len(both), a_only, b_only)
            p = exact_mcnemar(a_only, b_only)
            assert r["mcnemar_p"] == pytest.approx(p, rel=1e-9)
            assert r["accuracy_a"] == pytest.approx(np.mean([truth[(a, i, skill)] for i in both]))
            assert r["accuracy_b"] == pytest.approx(np.mean([truth[(b, i, skill)] for i in both]))
            assert r["saturated_a"] == pytest.approx(np.mean([sat[(a, i)] for i in images]), abs=1e-6)
            assert r["saturated_b"] == pytest.approx(np.mean([sat[(b, i)] for i in images]), abs=1e-6)
            want = ("no_difference" if p >= 0.05 else "a_worse" if a_only < b_only else "b_worse")
            assert r["verdict"] == want, (a, b, skill)
    # the planted effect: no thresholding at w = 5 is worse than both others on all right
    assert got[("w5n", "w5s", "all_right")]["verdict"] == "a_worse"
    assert got[("w5n", "w5d", "all_right")]["verdict"] == "a_worse"
    # the report: one row per pair (its all-right comparison), in guidance order
    root, _ = run
    copy = tmp_path / "modes_run"
    shutil.copytree(root, copy)
    checks._write(copy / "metrics" / "thresholding_modes.csv", out, checks.MODE_FIELDS)
    doc = build([copy], tmp_path / "r" / "index.html")
    table = doc.find(".//table[@id='table-calibration_thresholding_modes-run']")
    body = [[text_of(td) for td in tr.findall("td")] for tr in table.find("tbody").findall("tr")]
    assert [(c[0], c[1]) for c in body] == [("1", "none vs static"), ("5", "none vs static"),
                                            ("5", "none vs dynamic:0.995"),
                                            ("5", "static vs dynamic:0.995")]
    for cells, (a, b) in zip(body, pairs):
        r = got[(a, b, "all_right")]
        assert cells[3].replace(" ", "") == f"{r['n_a_only']}/{r['n_b_only']}"
        assert cells[4].startswith(f"{r['mcnemar_p']:.2g}")
        assert cells[5] == {"no_difference": "no difference",
                            "a_worse": f"{grid[a][1]} worse than {grid[b][1]}",
                            "b_worse": f"{grid[b][1]} worse than {grid[a][1]}"}[r["verdict"]]
    assert (tmp_path / "r" / "calibration_thresholding_modes-run.csv").is_file()


def test_report_ladder_and_statement_rules(run, tmp_path):
    import shutil

    root, _ = run
    # a run with the ladder: its figure and monotonic column
    ladder = tmp_path / "ladder_run"
    shutil.copytree(root, ladder)
    rows = checks.degradation_ladder(world_images(16), checks.simple_features, progress=False)
    checks._write(ladder / "metrics" / "degradations.csv", rows, checks.DEGRADATION_FIELDS)
    doc = build([ladder], tmp_path / "r1" / "index.html")
    section = doc.find(".//section[@id='section-calibration']")
    assert section.find(".//figure[@id='fig-calibration-ladder-ladder-run']") is not None
    table = section.find(".//table[@id='table-calibration_degradations_ladder-run']")
    assert {text_of(tr.findall("td")[-1]) for tr in table.find("tbody").findall("tr")} <= {"yes", "no"}
    # no calibration files, no world: neither section nor statement
    plain = tmp_path / "plain_run"
    shutil.copytree(root, plain)
    for f in ("oracle_per_image", "oracle_summary", "saturation", "thresholding_modes", "clip_auc"):
        (plain / "metrics" / f"{f}.csv").unlink()
    doc = build([plain], tmp_path / "r2" / "index.html")
    assert doc.find(".//section[@id='section-calibration']") is None
    assert doc.find(".//div[@id='calibration-statement']") is None
    # run.json "world" alone: the statement, no section
    run_json = json.loads((plain / "run.json").read_text())
    (plain / "run.json").write_text(json.dumps({**run_json, "world": {"root": "w"}}))
    doc = build([plain], tmp_path / "r3" / "index.html")
    assert doc.find(".//div[@id='calibration-statement']") is not None
    assert doc.find(".//section[@id='section-calibration']") is None
    # a drawbench prompt file inside a world folder: the statement
    (tmp_path / "world").mkdir()
    (tmp_path / "world" / "world.json").write_text("{}")
    (plain / "run.json").write_text(json.dumps({**run_json, "prompt_source": {
        "suite": "drawbench", "path": str(tmp_path / "world" / "prompts.csv")}}))
    doc = build([plain], tmp_path / "r4" / "index.html")
    assert doc.find(".//div[@id='calibration-statement']") is not None
