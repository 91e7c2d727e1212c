"""Plugins: packages that add feature networks, CLIP scorers and data defaults to the suite.

A plugin is a function `register()` named by an entry point of the group `imagen_bench.plugins`
in its package's metadata, for example in pyproject.toml:

    [project.entry-points."imagen_bench.plugins"]
    my_world = "my_package.plugin:register"

`load_plugins()` calls each once, the first time a registry is consulted; `register()` calls
`bench.metrics.networks.register_network`, `bench.metrics.clip_score.register_clip_scorer` and
`register_data_defaults` below. The suite's own calibration world is such a plugin, so bench/
imports nothing from it.
"""
from __future__ import annotations

import importlib.metadata as md
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

GROUP = "imagen_bench.plugins"
_loaded = False
_loading = False


def load_plugins() -> None:
    """Call every installed plugin's register() once (a failing plugin is reported and skipped)."""
    global _loaded, _loading
    if _loaded or _loading:
        return
    _loading = True
    try:
        for ep in md.entry_points(group=GROUP):
            try:
                ep.load()()
            except Exception as e:  # a broken plugin must not take the suite down with it
                print(f"warning: imagen_bench plugin {ep.name} ({ep.value}) failed to load: {e}",
                      file=sys.stderr)
        _loaded = True
    finally:
        _loading = False


@dataclass(frozen=True)
class DataDefaults:
    """What a command does when it is given no data (a plugin's embedded default).

    All callables take and return plain values, so the commands stay ignorant of the plugin:
        default_model() -> str                   the --model used when it is left out
        ensure_data(progress) -> Path            a data folder made on first use
        is_data(path) -> bool                    whether a folder is this plugin's data
        flags(command) -> dict                   flag defaults on its data ('coco_fid', 'drawbench')
        record(path, filled) -> dict             run.json "world": what the data is
        demo_layout() -> dict[str, Path]         the demo's run folders (report without arguments)
    """

    name: str
    default_model: Callable[[], str]
    ensure_data: Callable[..., Path]
    is_data: Callable[[object], bool]
    flags: Callable[[str], dict]
    record: Callable[[object, dict], dict]
    demo_layout: Callable[[], dict] | None = None


_DEFAULTS: list[DataDefaults] = []


def register_data_defaults(defaults: DataDefaults) -> None:
    """Make `defaults` the data default of the commands (the last registered wins)."""
    _DEFAULTS[:] = [d for d in _DEFAULTS if d.name != defaults.name] + [defaults]


def data_defaults() -> DataDefaults | None:
    """The registered data default, or None when no plugin gives one."""
    load_plugins()
    return _DEFAULTS[-1] if _DEFAULTS else None


def defaults_of(path) -> DataDefaults | None:
    """The plugin whose data `path` is (None: the paper's data)."""
    load_plugins()
    if path is None:
        return None
    for d in reversed(_DEFAULTS):
        if d.is_data(Path(path)):
            return d
    return None
