"""Captions of calibration-world scenes, and their parser back into structured requirements.

Grammar (every caption the generator writes, and what `parse_caption` accepts):
    caption  := group | group " and " group | group ", " group " and " group ...
              | single " " relation " " single
    group    := ("a" | "an" | "one") color shape | number color shape "s"     (number: two..four)
    single   := ("a" | "an") color shape
    relation := "to the left of" | "to the right of" | "above" | "below"
e.g. "a red circle", "three blue squares", "two red circles and a blue square",
"a red square, a blue circle and a green triangle", "a green triangle to the left of a yellow circle".
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from .scenes import COLORS, SHAPES, Scene

NUMBERS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4}
NUMBER_WORDS = {2: "two", 3: "three", 4: "four"}
PHRASES = {"left": "to the left of", "right": "to the right of", "above": "above", "below": "below"}
INVERSE = {"left": "right", "right": "left", "above": "below", "below": "above"}
AXIS = {"left": "x", "right": "x", "above": "y", "below": "y"}


class CaptionParseError(ValueError):
    """A caption outside the calibration world's grammar; the message quotes it."""


@dataclass(frozen=True)
class Group:
    """`count` objects of one colour and shape."""

    color: str
    shape: str
    count: int = 1


@dataclass(frozen=True)
class Requirement:
    """What a caption asks for: object groups and, for relational captions, one relation."""

    groups: tuple[Group, ...]
    relation: tuple[int, str, int] | None = None  # (subject group, RELATIONS item, object group)

    @property
    def n_objects(self) -> int:
        return sum(g.count for g in self.groups)

    def pairs(self) -> Counter:
        """Counter of (colour, shape) -> number of objects."""
        out: Counter = Counter()
        for g in self.groups:
            out[(g.color, g.shape)] += g.count
        return out


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def phrase(group: Group) -> str:
    """'a red circle', 'an orange square', 'three blue squares'."""
    if group.count == 1:
        return f"{_article(group.color)} {group.color} {group.shape}"
    return f"{NUMBER_WORDS[group.count]} {group.color} {group.shape}s"


def _groups(scene: Scene) -> list[Group]:
    """Objects grouped by (colour, shape), in order of first appearance."""
    counts = Counter((o.color, o.shape) for o in scene.objects)
    order = list(dict.fromkeys((o.color, o.shape) for o in scene.objects))
    return [Group(c, s, counts[(c, s)]) for c, s in order]


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def captions(scene: Scene) -> list[str]:
    """Every caption of the scene the templates give (the first is the canonical one):
    a relation read from either object, and each rotation of a list of groups."""
    if scene.relation is not None:
        i, rel, j = scene.relation
        a = Group(scene.objects[i].color, scene.objects[i].shape)
        b = Group(scene.objects[j].color, scene.objects[j].shape)
        return [f"{phrase(a)} {PHRASES[rel]} {phrase(b)}",
                f"{phrase(b)} {PHRASES[INVERSE[rel]]} {phrase(a)}"]
    parts = [phrase(g) for g in _groups(scene)]
    rotations = [parts[k:] + parts[:k] for k in range(len(parts))]
    return list(dict.fromkeys(_join(r) for r in rotations))


def caption(scene: Scene) -> str:
    """The canonical caption of the scene."""
    return captions(scene)[0]


def requirement(scene: Scene) -> Requirement:
    """The scene's ground truth as a Requirement (what its canonical caption parses to)."""
    return parse_caption(caption(scene))


_GROUP = (rf"(?P<num{{k}}>{'|'.join(NUMBERS)}) (?P<color{{k}}>{'|'.join(COLORS)}) "
          rf"(?P<shape{{k}}>{'|'.join(SHAPES)})(?P<plural{{k}}>s?)")
_RELATION = re.compile(rf"^{_GROUP.format(k=0)} (?P<rel>{'|'.join(PHRASES.values())}) "
                       rf"{_GROUP.format(k=1)}$")
_SINGLE = re.compile(rf"^{_GROUP.format(k=0)}$")


def _group(m: re.Match, k: int, text: str) -> Group:
    num, plural = m.group(f"num{k}"), m.group(f"plural{k}")
    count = NUMBERS[num]
    if (count > 1) != bool(plural):
        raise CaptionParseError(f"caption {text!r}: '{num} ... {m.group(f'shape{k}')}{plural}' "
                                "mixes singular and plural")
    return Group(m.group(f"color{k}"), m.group(f"shape{k}"), count)


def parse_caption(text: str) -> Requirement:
    """The groups and relation a caption asks for.

    Raises:
        CaptionParseError: the caption is not one of the calibration world's templates.
    """
    clean = " ".join(str(text).lower().replace(".", " ").split())
    m = _RELATION.match(clean)
    if m:
        a, b = _group(m, 0, text), _group(m, 1, text)
        if a.count != 1 or b.count != 1:
            raise CaptionParseError(f"caption {text!r}: a relation needs one object on each side")
        if (a.color, a.shape) == (b.color, b.shape):
            raise CaptionParseError(f"caption {text!r}: the two objects of a relation must differ")
        rel = next(k for k, v in PHRASES.items() if v == m.group("rel"))
        return Requirement((a, b), (0, rel, 1))
    pieces = [p for chunk in clean.split(" and ") for p in chunk.split(", ")] if clean else []
    groups = []
    for piece in pieces:
        g = _SINGLE.match(piece.strip())
        if not g:
            raise CaptionParseError(
                f"caption {text!r}: cannot read {piece!r}; expected '<a|one|two|three|four> "
                f"<{'|'.join(COLORS)}> <{'|'.join(SHAPES)}>[s]' joined by ', ' / ' and ', or a "
                "relation (to the left of, to the right of, above, below)")
        groups.append(_group(g, 0, text))
    if not groups:
        raise CaptionParseError(f"caption {text!r} is empty")
    return Requirement(tuple(groups))

