"""calibration_world: scenes, captions, the oracle, and the dataset on disk read by the project's loaders."""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from calibration_world import (CHECKS, SKILLS, CaptionParseError, Group, Oracle, OracleInputError,
                               Requirement, caption, captions, parse_caption, render, sample_scenes)
from calibration_world.__main__ import main
from calibration_world.captions import INVERSE, requirement
from calibration_world.dataset import read_truth, write_dataset
from calibration_world.oracle import score_detections
from calibration_world.scenes import COLORS, UNUSUAL, Obj, Scene

N_PER_SKILL = 50  # 250 scenes per size


@pytest.fixture(scope="module")
def scenes() -> list[Scene]:
    return sample_scenes(N_PER_SKILL * len(SKILLS), np.random.default_rng(123), skills=list(SKILLS))


@pytest.fixture(scope="module")
def oracle() -> Oracle:
    return Oracle()


@pytest.fixture(scope="module")
def detections(scenes, oracle) -> dict[int, list]:
    """size -> the oracle's detections on every scene rendered at that size."""
    return {size: [oracle.detect(render(s, size)) for s in scenes] for size in (32, 64)}


# ---------------------------------------------------------------------------------------------
# scenes and captions


def test_scene_mix(scenes):
    assert Counter(s.skill for s in scenes) == {k: N_PER_SKILL for k in SKILLS}
    for s in scenes:
        assert 1 <= len(s.objects) <= 4
        pairs = [(o.color, o.shape) for o in s.objects]
        if s.skill == "Binding":
            assert len({c for c, _ in pairs}) == len({sh for _, sh in pairs}) == len(pairs)
        if s.skill == "Conflicting":
            assert pairs[0] in UNUSUAL
        if s.skill == "Positional":
            assert s.relation is not None and len(set(pairs)) == 2
        else:
            assert s.relation is None
        for o in s.objects:  # inside the canvas
            assert o.size / 2 < o.x < 1 - o.size / 2 and o.size / 2 < o.y < 1 - o.size / 2


def test_captions_parse_back_to_the_scene(scenes):
    for s in scenes:
        truth = Counter((o.color, o.shape) for o in s.objects)
        texts = captions(s)
        assert texts[0] == caption(s) and len(set(texts)) == len(texts)
        for text in texts:
            req = parse_caption(text)
            assert req.pairs() == truth, text
            assert (req.relation is None) == (s.relation is None)
    assert caption(Scene((Obj("square", "orange", .5, .5, .3, (240, 125, 30)),), "Colors")) == \
        "an orange square"


def test_parse_caption():
    assert parse_caption("Three blue squares.") == Requirement((Group("blue", "square", 3),))
    assert parse_caption("two red circles and a blue square").n_objects == 3
    assert parse_caption("a red square, a blue circle and a green triangle").pairs() == \
        Counter({("red", "square"): 1, ("blue", "circle"): 1, ("green", "triangle"): 1})
    req = parse_caption("a green triangle to the left of a yellow circle")
    assert req.relation == (0, "left", 1) and req.groups[1] == Group("yellow", "circle")
    for bad in ("a horse riding an astronaut", "", "three blue square", "a blue squares",
                "two red circles above a blue square", "a red circle above a red circle"):
        with pytest.raises(CaptionParseError):
            parse_caption(bad)


def test_same_scene_agrees_across_sizes(scenes, detections):
    """A scene is a vector description: the objects read back at 32² and 64² are the same."""
    for i, s in enumerate(scenes[:60]):
        small, big = detections[32][i], detections[64][i]
        assert [(d.color, d.shape) for d in small] == [(d.color, d.shape) for d in big]
        for a, b in zip(small, big):
            assert abs(a.x - b.x) < 0.02 and abs(a.y - b.y) < 0.02


def test_render_deterministic_and_sized(scenes):
    s = scenes[0]
    a, b = render(s, 48), render(s, 48)
    assert a.size == (48, 48) and a.mode == "RGB" and a.tobytes() == b.tobytes()
    again = sample_scenes(5, np.random.default_rng(123), skills=list(SKILLS))
    assert again == scenes[:5]
    assert sample_scenes(5, np.random.default_rng(124), skills=list(SKILLS)) != scenes[:5]


# ---------------------------------------------------------------------------------------------
# the oracle on the generator's own images


def _true_centroid(o: Obj) -> tuple[float, float]:
    """Area centroid of a drawn shape: an apex-up triangle's lies a sixth of its height low."""
    return o.x, o.y + (o.size / 6 if o.shape == "triangle" else 0.0)


@pytest.mark.parametrize("size", [32, 64])
def test_oracle_recovers_ground_truth(scenes, detections, size):
    """Colours, shapes, counts and centroids against the scene descriptions, not the captions."""
    right = Counter()
    for s, dets in zip(scenes, detections[size]):
        truth = Counter((o.color, o.shape) for o in s.objects)
        got = Counter((d.color, d.shape) for d in dets)
        right["objects"] += got == truth
        right["count"] += len(dets) == len(s.objects)
        if got == truth:
            ok = True
            for d in dets:  # nearest true object of the same kind
                cands = [_true_centroid(o) for o in s.objects if (o.color, o.shape) == (d.color, d.shape)]
                ok &= min(np.hypot(d.x - x, d.y - y) for x, y in cands) < 0.6 / size + 0.01
            right["position"] += ok
    n = len(scenes)
    assert {k: v / n for k, v in right.items()} == pytest.approx(
        {"objects": 1.0, "count": 1.0, "position": 1.0}, abs=0.05)


@pytest.mark.parametrize("size", [32, 64])
def test_oracle_scores_own_captions(scenes, detections, size):
    """>= 95% per skill on the generator's own images and canonical captions."""
    acc = defaultdict(list)
    for s, dets in zip(scenes, detections[size]):
        result = score_detections(dets, requirement(s))
        assert set(result) == set(CHECKS)
        for k, v in result.items():
            if v is not None:
                acc[k].append(v)
    assert len(acc["relation"]) == N_PER_SKILL  # only the relational captions
    rates = {k: float(np.mean(v)) for k, v in acc.items()}
    assert min(rates.values()) >= 0.95, rates


def _wrong(req: Requirement, how: str) -> Requirement:
    g = list(req.groups)
    if how == "order":
        i, rel, j = req.relation
        return replace(req, relation=(i, INVERSE[rel], j))
    if how == "axis":
        i, rel, j = req.relation
        return replace(req, relation=(i, {"left": "above", "right": "below", "above": "left",
                                          "below": "right"}[rel], j))
    if how == "swap":  # colours exchanged between the first two objects
        g[0], g[1] = replace(g[0], color=g[1].color), replace(g[1], color=g[0].color)
    if how == "color":
        g[0] = replace(g[0], color=next(c for c in COLORS if c not in {x.color for x in g}))
    if how == "count":
        g[0] = replace(g[0], count=g[0].count % 4 + 1)
    return replace(req, groups=tuple(g))


@pytest.mark.parametrize("size", [32, 64])
def test_oracle_catches_wrong_captions(scenes, detections, size):
    """Each kind of caption error fails exactly the check it should, and leaves the others."""
    cases = {"order": ("Positional", "relation_order", "relation_axis"),
             "axis": ("Positional", "relation_axis", "color"),
             "swap": ("Binding", "binding", "shape"),
             "color": ("Colors", "color", "shape"),
             "count": ("Counting", "count", "color")}
    for how, (skill, fails, holds) in cases.items():
        results = [score_detections(d, _wrong(requirement(s), how))
                   for s, d in zip(scenes, detections[size]) if s.skill == skill]
        assert len(results) == N_PER_SKILL
        assert np.mean([not r[fails] for r in results]) >= 0.95, how
        assert np.mean([r[holds] for r in results]) >= 0.95, how
        assert not any(r["all_right"] for r in results), how


def test_oracle_on_noise_and_specks(oracle):
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    saturated = (rng.random((32, 32, 3)) > 0.5).astype(np.float32)  # every pixel at 0 or 1
    for image in (noise, saturated, np.zeros((32, 32, 3), np.uint8)):
        result = oracle.score(image, "a red circle to the left of a blue square")
        assert result["all_right"] is False and result["relation"] is False
    scene = Scene((Obj("circle", "red", 0.3, 0.5, 0.3, (215, 40, 40)),), "Colors",
                  background=(236, 236, 236))
    arr = np.asarray(render(scene, 64)).copy()
    arr[5, 50] = arr[60, 60] = arr[58, 20] = (40, 90, 215)   # blue specks
    arr[10:12, 40:42] = (215, 40, 40)                        # a 2x2 red speck
    dets = oracle.detect(arr)
    assert [(d.color, d.shape) for d in dets] == [("red", "circle")]
    assert oracle.score(arr, "a red circle")["all_right"]
    assert oracle.score(Image.fromarray(arr), "two red circles") == {
        "color": True, "count": False, "shape": True, "binding": True, "relation_axis": None,
        "relation_order": None, "relation": None, "all_right": False}


def test_oracle_rejects_malformed_input(oracle):
    ok = np.full((32, 32, 3), 0.9)
    with pytest.raises(OracleInputError, match="mode 'L'.*convert"):
        oracle.detect(Image.new("L", (32, 32)))
    with pytest.raises(OracleInputError, match="NaN"):
        oracle.detect(np.where(np.eye(32)[:, :, None] > 0, np.nan, ok))
    with pytest.raises(OracleInputError, match=r"\[0, 1\].*\(x \+ 1\) / 2"):
        oracle.detect(ok * 4 - 1)
    with pytest.raises(OracleInputError, match="channels last"):
        oracle.detect(np.zeros((3, 32, 32), np.uint8))
    with pytest.raises(OracleInputError, match="dtype"):
        oracle.detect(np.zeros((32, 32, 3), np.int64))
    with pytest.raises(CaptionParseError, match="elephant"):
        oracle.score(ok, "a pink elephant")


# ---------------------------------------------------------------------------------------------
# the dataset on disk


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("world")
    write_dataset(root, n_train=20, n_val=12, size=32, seed=5, n_prompts=6, progress=False)
    return root


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_dataset_is_deterministic(world, tmp_path):
    write_dataset(tmp_path / "a", n_train=20, n_val=12, size=32, seed=5, n_prompts=6, progress=False)
    write_dataset(tmp_path / "b", n_train=20, n_val=12, size=32, seed=6, n_prompts=6, progress=False)
    same, other = _files(world), _files(tmp_path / "a")
    assert same == other and len(same) == 20 + 12 + 6
    different = _files(tmp_path / "b")
    assert different.keys() == same.keys() and different != same
    # a larger split keeps its first images
    write_dataset(tmp_path / "c", n_train=25, n_val=12, size=32, seed=5, n_prompts=6, progress=False)
    first = "train2014/COCO_train2014_000000000020.png"
    assert _files(tmp_path / "c")[first] == same[first]


def test_dataset_skill_weights_set_the_scene_mix(tmp_path):
    write_dataset(tmp_path / "rel", n_train=12, n_val=0, size=32, seed=5, n_prompts=2,
                  progress=False, skill_weights={"Positional": 1, "Colors": 0})
    truth = read_truth(tmp_path / "rel" / "truth_train2014.jsonl")
    assert len(truth) == 12 and {s.skill for s in truth.values()} == {"Positional"}
    assert all(s.relation is not None and len(s.objects) == 2 for s in truth.values())
    assert read_truth(tmp_path / "rel" / "truth_val2014.jsonl") == {}
    for bad in ({"Relations": 1}, {"Positional": 0}, {"Positional": -1, "Colors": 2}):
        with pytest.raises(ValueError, match="skill weights"):
            write_dataset(tmp_path / "bad", n_train=1, n_val=0, skill_weights=bad, progress=False)


def test_dataset_reads_through_coco_and_trainer(world, oracle):
    from coco.captions import load_val_captions
    from coco.reference import list_images
    from imagen_ref.data import find_records, load_rgb

    records = load_val_captions(world)
    truth = read_truth(world / "truth_val2014.jsonl")
    assert len(records) == 12 and {r.image_id for r in records} == set(truth)
    assert len(list_images(world / "val2014")) == 12
    for r in records:
        assert r.captions == captions(truth[r.image_id])
        image = Image.open(world / "val2014" / r.file_name).convert("RGB")
        assert image.size == (32, 32)
        assert all(oracle.score(image, c)["all_right"] for c in r.captions)
    train, layout = find_records(world)
    assert layout == "coco" and len(train) == 20
    assert load_rgb(train[0].path).size == (32, 32)
    assert not set(read_truth(world / "truth_train2014.jsonl")) & set(truth)  # ids never shared


def test_prompts_read_through_drawbench_loaders(world):
    from drawbench.suites import load_drawbench, load_suite

    suite = load_suite(str(world / "prompts.csv"))  # what --prompts PATH does
    assert suite.name == "file" and len(suite.records) == 6 * len(SKILLS)
    assert Counter(r.category for r in suite.records) == {k: 6 for k in SKILLS}
    assert suite.records[0].prompt_id == "colors-001"
    for r in suite.records:
        parse_caption(r.text)
    sheet = load_drawbench(world / "prompts.csv", verify=False)  # the DrawBench CSV reader
    assert [r.text for r in sheet.records] == [r.text for r in suite.records]
    assert {r.category for r in sheet.records} == set(SKILLS)


def test_cli(tmp_path, capsys):
    out = tmp_path / "cw"
    argv = ["make", "--out", str(out), "--n-train", "3", "--n-val", "2", "--size", "16",
            "--n-prompts", "1", "--no-progress"]
    assert main(argv) == 0
    assert str(out) in capsys.readouterr().out
    assert (out / "world.json").is_file() and len(list((out / "train2014").iterdir())) == 3
    assert main(argv) == 2
    assert "not empty; pass --overwrite" in capsys.readouterr().err
    argv[4] = "2"
    assert main(argv + ["--overwrite"]) == 0
    assert len(list((out / "train2014").iterdir())) == 2
    assert main(["make", "--out", str(tmp_path / "x"), "--size", "8"]) == 2
    assert "--size 8" in capsys.readouterr().err
