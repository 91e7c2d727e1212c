"""Pairwise rating tasks for the rating app (Imagen paper §4.2 and App. E).

    python -m bench.drawbench pairs --a RUN[:CONFIG] --b RUN[:CONFIG] [--k 8] --out tasks.jsonl

DrawBench-style runs: per prompt, a set of k images of system A against k images of system B,
asked twice, as in the paper:
    fidelity   "Which set of images is of higher quality?"
    alignment  "Which set of images better represents the text caption: {caption}?"
COCO runs (`bench.coco_fid`): k = 1, a model image against the reference photo of its caption
(`--b` left out) or against another run's image:
    photorealism  "Which image is more photorealistic (looks more real)?"

One JSON object per line, validated by bench/rating_task.schema.json. The app shows only
`question` and the `left` / `right` image lists; images are copied next to the tasks file as
media/<sha256>.<ext>, so neither a path nor a name reveals the system. Which system is on which
side (a seeded coin per task) and the systems' identities are kept under `hidden`. Task ids are
a hash of (question, prompt, both systems, k): the same inputs always give the same ids.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from .coco_fid import HelpFormatter, UserError

SCHEMA_ID = "imagen_bench.rating_task/1"
SCHEMA_PATH = Path(__file__).with_name("rating_task.schema.json")
SHOWN_FIELDS = ("question_id", "question", "left", "right")  # what a rater may see
QUESTIONS = {
    "fidelity": "Which set of images is of higher quality?",
    "alignment": "Which set of images better represents the text caption: {caption}?",
    "photorealism": "Which image is more photorealistic (looks more real)?",
}

EPILOG = """examples:
  # DrawBench: two runs (or two configs of one run), 8 images a side, both questions
  python -m bench.drawbench pairs --a runs/drawbench --b runs/drawbench_other --out tasks.jsonl
  python -m bench.drawbench pairs --a runs/db:w1-none-aug0-ddim64 \\
      --b runs/db:w5-dyn0.995-aug0-ddim64 --out tasks/guidance.jsonl

  # COCO: each model image against the reference photo of its caption
  python -m bench.drawbench pairs --a runs/coco_fid30k:w1.35_8-dyn0.995-aug0-ddim64 \\
      --coco-root /data/coco --out tasks/coco.jsonl
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.drawbench pairs", description=__doc__,
                                epilog=EPILOG, formatter_class=HelpFormatter)
    p.add_argument("--a", required=True, metavar="RUN[:CONFIG]",
                   help="run directory of system A (and its config key if it has several)")
    p.add_argument("--b", default=None, metavar="RUN[:CONFIG]",
                   help="run directory of system B; left out for a COCO run: the reference photos")
    p.add_argument("--k", type=int, default=8, help="images per set (COCO tasks use 1)")
    p.add_argument("--out", required=True, metavar="FILE", help="tasks file (JSONL); images go "
                   "to media/ next to it")
    p.add_argument("--questions", default=None, metavar="Q,...",
                   help="fidelity,alignment (DrawBench default: both) or photorealism (COCO)")
    p.add_argument("--coco-root", default=None, metavar="DIR",
                   help="COCO folder with val2014/ (default: the one the COCO run recorded)")
    p.add_argument("--seed", type=int, default=0, help="seed of the left/right coin per task")
    return p


@dataclass
class System:
    """One side of a comparison: a run's config, or the COCO reference photos."""

    label: str                 # A | B | reference
    identity: dict             # hidden: run, model_id, config_key
    benchmark: str             # drawbench | coco_fid | reference
    prompts: dict              # prompt_id -> prompts.jsonl record
    images: dict               # prompt_id -> [(path, k, seed)] sorted by k

    @property
    def key(self) -> str:
        return f"{self.identity.get('model_id')}|{self.identity.get('config_key')}"


def _split_spec(spec: str) -> tuple[Path, str | None]:
    """'runs/x:w5-...' -> (runs/x, 'w5-...'); a path that exists as given wins."""
    if Path(spec).is_dir() or ":" not in spec:
        return Path(spec), None
    path, _, config = spec.rpartition(":")
    return Path(path), config


def open_run(spec: str, label: str) -> System:
    """A run's images of one config, per prompt; UserError on a missing or ambiguous run."""
    from .runs import RunDir

    path, config = _split_spec(spec)
    run = RunDir(path)
    record = run.read_run()
    if record is None or not run.samples.is_file():
        raise UserError(f"--{label.lower()} {spec}: {run.run_json} or {run.samples} not found; "
                        "pass a finished run directory (python -m bench.drawbench / coco_fid)")
    keys = [c["config_key"] for c in record["spec"]["grid"]]
    if config is None and len(keys) > 1:
        raise UserError(f"--{label.lower()} {spec}: the run has {len(keys)} configs; pass "
                        f"RUN:CONFIG with one of {', '.join(keys)}")
    config = config or keys[0]
    if config not in keys:
        raise UserError(f"--{label.lower()} {spec}: no config {config!r} in this run; it has "
                        f"{', '.join(keys)}")
    images: dict[str, list] = {}
    for (key, prompt_id, k), r in run.read_samples().items():
        if key == config:
            images.setdefault(prompt_id, []).append((run.root / r["path"], k, r["seed"]))
    for v in images.values():
        v.sort(key=lambda t: t[1])
    identity = {"run": str(path), "model_id": record["spec"]["model"]["model_id"],
                "config_key": config}
    return System(label, identity, record["spec"].get("benchmark", ""),
                  {p["prompt_id"]: p for p in run.read_prompts()}, images)


def coco_reference(a: System, coco_root: str | None, a_spec: str) -> System:
    """The reference photos of a COCO run's captions (val2014 file names from the image ids)."""
    run_record = json.loads((Path(a.identity["run"]) / "run.json").read_text())
    root = coco_root or run_record.get("prompt_source", {}).get("coco_root")
    if not root:
        raise UserError(f"--a {a_spec}: the run records no COCO folder; pass --coco-root DIR")
    images = {}
    for pid, p in a.prompts.items():
        if "image_id" not in p:
            raise UserError(f"--a {a_spec}: prompt {pid} has no COCO image_id; pass --b RUN")
        path = Path(root) / "val2014" / f"COCO_val2014_{int(p['image_id']):012d}.jpg"
        if not path.is_file():
            raise UserError(f"reference photo {path} not found; pass --coco-root with val2014/")
        images[pid] = [(path, 0, None)]
    identity = {"run": None, "model_id": "coco-val2014-reference", "config_key": None,
                "coco_root": str(root)}
    return System("reference", identity, "reference", a.prompts, images)


def _media(path: Path, folder: Path) -> str:
    """Copy an image to folder/<sha256><ext> (content-addressed) and return 'media/<name>'."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    name = f"{digest}{path.suffix.lower()}"
    target = folder / name
    if not target.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    return f"{folder.name}/{name}"


def task_id(question: str, prompt_id: str, a: System, b: System, k: int) -> str:
    text = json.dumps([question, prompt_id, a.key, b.key, k])
    return "t-" + hashlib.sha256(text.encode()).hexdigest()[:16]


def _side(system: System, prompt_id: str, k: int, media: Path) -> tuple[dict, dict]:
    """(shown side, hidden side) of one system for one prompt."""
    chosen = system.images[prompt_id][:k]
    shown = {"images": [_media(path, media) for path, _, _ in chosen]}
    hidden = {"label": system.label, **system.identity,
              "images": [{"path": str(path), "k": kk, "seed": seed} for path, kk, seed in chosen]}
    return shown, hidden


def build_tasks(a: System, b: System, *, k: int, questions: list[str], media: Path,
                seed: int = 0) -> list[dict]:
    """Every (prompt, question) task over the prompts both systems have, in A's order."""
    from imagen_ref.device import derive_seed

    shared = [pid for pid in a.prompts if pid in b.prompts]
    for prompt_id in shared:  # every check before the first image is copied
        prompt = a.prompts[prompt_id]
        if b.prompts[prompt_id]["text"] != prompt["text"]:
            raise UserError(f"prompt {prompt_id} differs between the runs "
                            f"({prompt['text']!r} vs {b.prompts[prompt_id]['text']!r}); compare "
                            "runs of the same prompt suite")
        for system in (a, b):
            n = len(system.images.get(prompt_id, []))
            if n < k:
                raise UserError(f"{system.identity.get('run') or system.label} has {n} image(s) "
                                f"of prompt {prompt_id}; --k {k} needs {k} (pass a smaller --k or "
                                "finish the run)")
    if not shared:
        raise UserError("the two runs share no prompt; compare runs of the same prompt suite")
    tasks = []
    for prompt_id in shared:
        prompt = a.prompts[prompt_id]
        for question in questions:
            tid = task_id(question, prompt_id, a, b, k)
            a_left = derive_seed(seed, tid) % 2 == 0
            first, second = (a, b) if a_left else (b, a)
            left, hl = _side(first, prompt_id, k, media)
            right, hr = _side(second, prompt_id, k, media)
            tasks.append({
                "schema": SCHEMA_ID, "task_id": tid, "question_id": question,
                "question": QUESTIONS[question].format(caption=prompt["text"]),
                "left": left, "right": right,
                "meta": {"prompt_id": prompt_id, "category": prompt.get("category", ""),
                         "caption": prompt["text"], "k": k},
                "hidden": {"a_side": "left" if a_left else "right", "left": hl, "right": hr,
                           "coin_seed": seed},
            })
    return tasks


def shown_part(task: dict) -> dict:
    """The fields of a task the rating app may show a rater."""
    return {f: task[f] for f in SHOWN_FIELDS}


def make_pairs(args) -> tuple[Path, list[dict]]:
    a = open_run(args.a, "A")
    coco = a.benchmark == "coco_fid"
    b = open_run(args.b, "B") if args.b else None
    if b is None:
        if not coco:
            raise UserError("--b RUN[:CONFIG] is required (only a COCO run is compared with the "
                            "reference photos when --b is left out)")
        b = coco_reference(a, args.coco_root, args.a)
    if b.key == a.key and b.identity.get("run") == a.identity.get("run"):
        raise UserError("--a and --b name the same system")
    default = ["photorealism"] if coco else ["fidelity", "alignment"]
    questions = [q.strip() for q in args.questions.split(",")] if args.questions else default
    unknown = [q for q in questions if q not in QUESTIONS]
    if unknown:
        raise UserError(f"--questions: unknown {unknown[0]!r}; expected {', '.join(QUESTIONS)}")
    k = 1 if coco else args.k
    if k < 1:
        raise UserError("--k must be at least 1")
    out = Path(args.out)
    tasks = build_tasks(a, b, k=k, questions=questions, media=out.parent / "media",
                        seed=args.seed)
    from .runs import atomic_write_text

    atomic_write_text(out, "".join(json.dumps(t) + "\n" for t in tasks))
    return out, tasks


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        out, tasks = make_pairs(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{len(tasks)} tasks ({', '.join(sorted({t['question_id'] for t in tasks}))})")
    print(f"tasks: {out}  images: {out.parent / 'media'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
