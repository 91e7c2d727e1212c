"""`python -m bench.drawbench pairs`: rating tasks from two runs (hand-made run directories), the
JSON schema, stable ids, and no system identity in what the app shows."""
import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from PIL import Image

from bench.drawbench import main
from bench.pairs import SCHEMA_PATH, SHOWN_FIELDS, shown_part

PROMPTS = [{"prompt_id": f"drawbench-colors-0{i}", "text": f"A red car number {i}.",
            "category": "Colors"} for i in range(1, 4)]


def write_run(root: Path, model_id: str, configs: list[str], *, k: int, prompts=PROMPTS,
              benchmark="drawbench", extra_run: dict | None = None) -> Path:
    """A finished run directory as bench.drawbench / bench.coco_fid write it (images, logs)."""
    root.mkdir(parents=True)
    samples = []
    for c, config in enumerate(configs):
        for p, prompt in enumerate(prompts):
            for kk in range(k):
                path = root / "images" / config / prompt["prompt_id"] / f"{kk}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                pixels = np.full((8, 8, 3), (c * 50 + p * 7 + kk) % 256, dtype=np.uint8)
                pixels[0, 0] = sum(model_id.encode()) % 256  # different bytes per system
                Image.fromarray(pixels).save(path)
                samples.append({"config_key": config, "prompt_id": prompt["prompt_id"], "k": kk,
                                "seed": 1000 * p + kk, "path": path.relative_to(root).as_posix(),
                                "sha256": "0" * 64, "seconds": 0.1})
    spec = {"benchmark": benchmark, "model": {"model_id": model_id},
            "grid": [{"config_key": c} for c in configs]}
    (root / "run.json").write_text(json.dumps({"spec": spec, **(extra_run or {})}))
    (root / "prompts.jsonl").write_text("".join(json.dumps(p) + "\n" for p in prompts))
    (root / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    return root


@pytest.fixture
def runs(tmp_path):
    a = write_run(tmp_path / "secret_alpha_run", "imagen_ref:alphamodel@abc123",
                  ["w1-none-aug0-ddim2"], k=3)
    b = write_run(tmp_path / "secret_beta_run", "images:betamodel",
                  ["w3-none-aug0-ddim2", "w5-dyn0.995-aug0-ddim2"], k=3)
    return a, b


def read_tasks(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def validator():
    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    assert tuple(schema["x-shown-fields"]) == SHOWN_FIELDS
    return jsonschema.Draft202012Validator(schema)


def test_drawbench_pairs_validate_and_hide_the_systems(runs, tmp_path, capsys):
    a, b = runs
    out = tmp_path / "tasks" / "tasks.jsonl"
    assert main(["pairs", "--a", str(a), "--b", f"{b}:w5-dyn0.995-aug0-ddim2", "--k", "2",
                 "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    tasks = read_tasks(out)
    assert len(tasks) == 6  # 3 prompts × (fidelity, alignment)
    check = validator()
    for t in tasks:
        check.validate(t)
    assert [t["question_id"] for t in tasks[:2]] == ["fidelity", "alignment"]
    assert tasks[0]["question"] == "Which set of images is of higher quality?"
    assert tasks[1]["question"] == ("Which set of images better represents the text caption: "
                                    "A red car number 1.?")
    names = ["secret", "alpha", "beta", "w5-dyn", "w1-none", "images:", "imagen_ref", "ddim",
             str(tmp_path)]
    for t in tasks:
        shown = json.dumps(shown_part(t))
        assert not [n for n in names if n in shown], shown
        assert len(t["left"]["images"]) == len(t["right"]["images"]) == 2
        for side in ("left", "right"):
            for ref in t[side]["images"]:
                assert (out.parent / ref).is_file()
        a_side = t["hidden"]["a_side"]
        assert t["hidden"][a_side]["model_id"] == "imagen_ref:alphamodel@abc123"
        other = "right" if a_side == "left" else "left"
        assert t["hidden"][other]["config_key"] == "w5-dyn0.995-aug0-ddim2"
        hidden_paths = [Path(i["path"]) for i in t["hidden"][a_side]["images"]]
        assert all(p.parts[-4] == "images" for p in hidden_paths)
    assert {t["hidden"]["a_side"] for t in tasks} == {"left", "right"}  # the coin does flip
    assert len({t["task_id"] for t in tasks}) == 6


def test_task_ids_and_sides_are_stable_across_reruns(runs, tmp_path):
    a, b = runs
    argv = ["pairs", "--a", str(a), "--b", f"{b}:w3-none-aug0-ddim2", "--k", "3"]
    assert main(argv + ["--out", str(tmp_path / "x" / "t.jsonl")]) == 0
    assert main(argv + ["--out", str(tmp_path / "y" / "t.jsonl")]) == 0
    assert (tmp_path / "x" / "t.jsonl").read_text() == (tmp_path / "y" / "t.jsonl").read_text()
    swapped = ["pairs", "--a", f"{b}:w3-none-aug0-ddim2", "--b", str(a), "--k", "3"]
    assert main(swapped + ["--out", str(tmp_path / "z" / "t.jsonl")]) == 0
    ids = {t["task_id"] for t in read_tasks(tmp_path / "x" / "t.jsonl")}
    assert ids.isdisjoint(t["task_id"] for t in read_tasks(tmp_path / "z" / "t.jsonl"))


def test_coco_run_against_the_reference_photos(tmp_path):
    coco = tmp_path / "coco"
    (coco / "val2014").mkdir(parents=True)
    prompts = [{"prompt_id": f"coco-{i}", "text": f"a photo {i}", "image_id": i,
                "caption_index": 0, "category": "coco"} for i in (7, 9)]
    for p in prompts:
        Image.new("RGB", (16, 16), (p["image_id"], 0, 0)).save(
            coco / "val2014" / f"COCO_val2014_{p['image_id']:012d}.jpg")
    run = write_run(tmp_path / "coco_secret_run", "imagen_ref:cocomodel@1", ["w1-none-aug0-ddim2"],
                    k=1, prompts=prompts, benchmark="coco_fid",
                    extra_run={"prompt_source": {"coco_root": str(coco)}})
    out = tmp_path / "coco_tasks.jsonl"
    assert main(["pairs", "--a", str(run), "--out", str(out)]) == 0
    tasks = read_tasks(out)
    check = validator()
    assert len(tasks) == 2
    for t in tasks:
        check.validate(t)
        assert t["question"] == "Which image is more photorealistic (looks more real)?"
        assert t["meta"]["k"] == 1 and len(t["left"]["images"]) == 1
        shown = json.dumps(shown_part(t))
        assert "secret" not in shown and "reference" not in shown and "coco" not in shown
        sides = {t["hidden"][s]["label"] for s in ("left", "right")}
        assert sides == {"A", "reference"}
        ref = "left" if t["hidden"]["left"]["label"] == "reference" else "right"
        assert t[ref]["images"][0].endswith(".jpg")


@pytest.mark.parametrize("argv, message", [
    (["--b", "{b}"], "the run has 2 configs"),
    (["--b", "{b}:w9-none"], "no config 'w9-none'"),
    (["--b", "{b}:w3-none-aug0-ddim2", "--k", "8"], "has 3 image(s) of prompt"),
    ([], "--b RUN[:CONFIG] is required"),
    (["--b", "{tmp}/nowhere"], "not found"),
])
def test_pairs_user_errors_exit_2(runs, tmp_path, capsys, argv, message):
    a, b = runs
    argv = [x.format(b=b, tmp=tmp_path) for x in argv]
    assert main(["pairs", "--a", str(a), *argv, "--out", str(tmp_path / "t.jsonl")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert not (tmp_path / "t.jsonl").exists()
