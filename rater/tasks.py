"""Read a tasks.jsonl of `python -m bench.drawbench pairs` and group it into screens.

One task line is one (prompt, pair of systems, question). The app shows one *screen* per
(prompt, pair): the two image sets once, then each of the screen's questions in turn, so a
rater judges fidelity and alignment of the same images one after the other, as in the paper
(Imagen App. E). Which set goes left is decided by the app per (rater, screen); the task
file's own coin is not used for display.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

SCHEMA_ID = "imagen_bench.rating_task/1"   # the same string as bench.pairs.SCHEMA_ID
REQUIRED = ("schema", "task_id", "question_id", "question", "left", "right", "meta", "hidden")


class TaskFileError(ValueError):
    """A tasks file that cannot be used; the message names the file and line."""


def system_name(hidden_side: dict) -> str:
    """'model_id:config_key' (just model_id without a config key; 'reference' for COCO photos)."""
    if hidden_side.get("label") == "reference":
        return "reference"
    config = hidden_side.get("config_key")
    return hidden_side["model_id"] if config is None else f"{hidden_side['model_id']}:{config}"


@dataclass(frozen=True)
class Side:
    """One image set of a screen: shown images (absolute paths) and the hidden system."""

    label: str                 # A | B | reference (hidden)
    system: str                # hidden: model_id:config_key
    images: tuple[Path, ...]   # files under media/, named by content hash


@dataclass(frozen=True)
class Question:
    """One task line of a screen."""

    task_id: str
    question_id: str
    text: str


@dataclass
class Screen:
    """The tasks of one prompt and one pair of systems, shown on one screen."""

    screen_id: str
    prompt_id: str
    category: str
    caption: str
    k: int
    sides: tuple[Side, Side]   # sorted by label: (A, B) or (A, reference)
    questions: list[Question] = field(default_factory=list)
    is_control: bool = False

    def keys(self) -> list[tuple[str, str]]:
        """(task_id, question_id) of every question."""
        return [(q.task_id, q.question_id) for q in self.questions]


def _fail(path: Path, line: int, message: str) -> TaskFileError:
    return TaskFileError(f"{path}:{line}: {message}")


def _check_task(task, path: Path, line: int) -> None:
    """Raise TaskFileError unless the line has what the app needs."""
    if not isinstance(task, dict):
        raise _fail(path, line, "expected a JSON object per line")
    missing = [k for k in REQUIRED if k not in task]
    if missing:
        raise _fail(path, line, f"missing key(s) {', '.join(missing)}; regenerate the file with "
                    "python -m bench.drawbench pairs")
    if task["schema"] != SCHEMA_ID:
        raise _fail(path, line, f"schema {task['schema']!r} is not {SCHEMA_ID!r}")
    for side in ("left", "right"):
        images = task[side].get("images") if isinstance(task[side], dict) else None
        if not images or not all(isinstance(i, str) and i.startswith("media/") for i in images):
            raise _fail(path, line, f"{side}.images must be a non-empty list of media/ files")
        hidden = task["hidden"].get(side)
        if not isinstance(hidden, dict) or "label" not in hidden or "model_id" not in hidden:
            raise _fail(path, line, f"hidden.{side} needs label and model_id")
    for key in ("prompt_id", "caption"):
        if key not in task["meta"]:
            raise _fail(path, line, f"meta.{key} missing")


def read_tasks(path: str | Path) -> list[dict]:
    """The task lines of a tasks.jsonl, checked; TaskFileError names the file and line."""
    path = Path(path)
    if not path.is_file():
        raise TaskFileError(f"{path}: tasks file not found; write one with "
                            "python -m bench.drawbench pairs --out FILE")
    tasks, seen = [], {}
    with path.open(encoding="utf-8") as f:
        for line_no, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                task = json.loads(raw)
            except json.JSONDecodeError as e:
                raise _fail(path, line_no, f"not valid JSON ({e.msg} at column {e.colno})") from None
            _check_task(task, path, line_no)
            key = (task["task_id"], task["question_id"])
            if key in seen:
                raise _fail(path, line_no, f"task {key[0]} / {key[1]} repeats line {seen[key]}")
            seen[key] = line_no
            task["_line"] = line_no
            tasks.append(task)
    if not tasks:
        raise TaskFileError(f"{path}: no tasks in the file")
    return tasks


def group_screens(tasks: list[dict], root: Path) -> list[Screen]:
    """Group task lines by (prompt, both systems, k) into screens, in file order.

    Args:
        tasks: lines from read_tasks.
        root: folder of the tasks file (image paths are relative to it).
    """
    screens: dict[tuple, Screen] = {}
    for t in tasks:
        sides = []
        for side in ("left", "right"):
            hidden = t["hidden"][side]
            images = tuple((root / p).resolve() for p in t[side]["images"])
            sides.append(Side(hidden["label"], system_name(hidden), images))
        sides.sort(key=lambda s: (s.label, s.system))
        meta = t["meta"]
        key = (meta["prompt_id"], sides[0], sides[1])
        if key not in screens:
            digest = hashlib.sha256(json.dumps(
                [meta["prompt_id"], [(s.label, s.system, [p.name for p in s.images]) for s in sides]]
            ).encode()).hexdigest()[:16]
            screens[key] = Screen(f"s-{digest}", meta["prompt_id"], meta.get("category", ""),
                                  meta["caption"], int(meta.get("k", len(sides[0].images))),
                                  (sides[0], sides[1]))
        screens[key].questions.append(Question(t["task_id"], t["question_id"], t["question"]))
    return list(screens.values())


def load_screens(path: str | Path) -> list[Screen]:
    """read_tasks + group_screens, checking that every image file exists."""
    path = Path(path)
    tasks = read_tasks(path)
    screens = group_screens(tasks, path.parent)
    by_key = {(t["task_id"], t["question_id"]): t["_line"] for t in tasks}
    for s in screens:
        for side in s.sides:
            for image in side.images:
                if not image.is_file():
                    line = by_key[s.keys()[0]]
                    raise _fail(path, line, f"image {image.name} not found under "
                                f"{path.parent / 'media'}; copy the media/ folder with the tasks file")
    return screens


def add_session_args(p) -> None:
    """The rating-session flags shared by `python -m rater serve` and `rater/app.py`."""
    p.add_argument("--control-rate", type=float, default=0.1,
                   help="share of each rater's screens that are control trials")
    p.add_argument("--seed", type=int, default=0, help="seed of screen order, sides and controls")
    p.add_argument("--min-answer-s", type=float, default=0.3,
                   help="answers sooner than this after a question appears are dropped "
                   "(double clicks)")
    p.add_argument("--ratings-per-task", type=int, default=3, metavar="R",
                   help="distinct raters each screen (prompt and pair, all its questions) goes "
                        "to, filling the study evenly; 0: every rater rates every screen")
    p.add_argument("--tasks-per-rater", type=int, default=None, metavar="N",
                   help="a rater's quota of screens (default: no limit)")
    p.add_argument("--claim-timeout-min", type=float, default=30.0, metavar="MIN",
                   help="a screen whose rater has not voted for this long goes to the next rater")
    p.add_argument("--completion-url", default=None, metavar="URL",
                   help="shown at the end of a rater's quota with its completion code (the cc "
                        "parameter), e.g. https://app.prolific.com/submissions/complete?cc=CODE")
    p.add_argument("--require-signed-links", action="store_true",
                   help="accept a rater id only with its token (python -m rater links)")
    p.add_argument("--link-secret-env", default="RATER_LINK_SECRET", metavar="NAME",
                   help="environment variable holding the secret of the signed links")


def session_flags(args) -> list[str]:
    """`add_session_args` flags of parsed args, as a command line (for the app's)."""
    out = ["--control-rate", str(args.control_rate), "--seed", str(args.seed),
           "--min-answer-s", str(args.min_answer_s),
           "--ratings-per-task", str(args.ratings_per_task),
           "--claim-timeout-min", str(args.claim_timeout_min),
           "--link-secret-env", args.link_secret_env]
    if args.tasks_per_rater is not None:
        out += ["--tasks-per-rater", str(args.tasks_per_rater)]
    if args.completion_url:
        out += ["--completion-url", args.completion_url]
    if args.require_signed_links:
        out.append("--require-signed-links")
    return out


def check_session_args(args) -> str | None:
    """The first problem of the session flags as a message, or None."""
    if not 0 <= args.control_rate < 1:
        return f"--control-rate {args.control_rate} must be in [0, 1)"
    if args.ratings_per_task < 0:
        return f"--ratings-per-task {args.ratings_per_task} must be >= 0 (0: no assignment)"
    if args.tasks_per_rater is not None and args.tasks_per_rater < 1:
        return f"--tasks-per-rater {args.tasks_per_rater} must be >= 1"
    if args.claim_timeout_min <= 0:
        return f"--claim-timeout-min {args.claim_timeout_min} must be > 0"
    if args.completion_url and not args.completion_url.startswith(("https://", "http://")):
        return f"--completion-url {args.completion_url!r} must be an http(s) URL"
    return None
