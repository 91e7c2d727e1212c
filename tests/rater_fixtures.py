"""Tiny rating tasks for the rater tests, made with bench.pairs.build_tasks from PIL images.

The systems have distinctive names so a test can search every byte the browser gets for them.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from bench.pairs import System, build_tasks

# Strings that must never reach a rater's browser.
SECRET_A = {"run": "runs/PATHWOMBAT", "model_id": "ZEBRAMODEL", "config_key": "w7-QUOKKACFG"}
SECRET_B = {"run": "runs/PATHNARWHAL", "model_id": "OKAPIMODEL", "config_key": "w1-AXOLOTLCFG"}
SECRETS = ("WOMBAT", "ZEBRAMODEL", "QUOKKA", "NARWHAL", "OKAPIMODEL", "AXOLOTL")
SYSTEM_A = "ZEBRAMODEL:w7-QUOKKACFG"
SYSTEM_B = "OKAPIMODEL:w1-AXOLOTLCFG"


def _system(label: str, identity: dict, root: Path, prompts: dict, k: int, shade: int) -> System:
    images = {}
    for i, pid in enumerate(prompts):
        folder = root / identity["run"] / "images"
        folder.mkdir(parents=True, exist_ok=True)
        images[pid] = []
        for j in range(k):
            path = folder / f"{pid}_{j}.png"
            colour = ((shade + 37 * i + 11 * j) % 256, (3 * shade + j) % 256, (50 + i) % 256)
            Image.new("RGB", (16, 16), colour).save(path)
            images[pid].append((path, j, 1000 * i + j))
    return System(label, identity, "drawbench", prompts, images)


def make_tasks(root: Path, n_prompts: int = 3, k: int = 2,
               questions=("fidelity", "alignment")) -> Path:
    """Write root/tasks.jsonl (+ media/) with n_prompts prompts x questions; returns its path."""
    prompts = {f"p{i:03d}": {"prompt_id": f"p{i:03d}", "text": f"a red cube number {i}",
                             "category": ("Colors", "Counting")[i % 2]} for i in range(n_prompts)}
    a = _system("A", SECRET_A, root / "src", prompts, k, 10)
    b = _system("B", SECRET_B, root / "src", prompts, k, 200)
    out = root / "tasks" / "tasks.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    tasks = build_tasks(a, b, k=k, questions=list(questions), media=out.parent / "media", seed=0)
    out.write_text("".join(json.dumps(t) + "\n" for t in tasks))
    return out


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path) -> str:
    """A fresh vote store: a SQLite file, and a database on the test session's PostgreSQL
    server (tests/conftest.py pg_server). Import it into a test module to run its tests on both."""
    if request.param == "sqlite":
        return str(tmp_path / "r.db")
    return request.getfixturevalue("pg_url")
