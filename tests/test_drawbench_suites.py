"""Prompt suites: the real DrawBench and PartiPrompts files, malformed files, the download cache.

The real files live in ../shared/data (their licence does not let the project ship them); the
tests that read them skip, saying why, where that folder is absent.
"""
import hashlib
import io
import json
import urllib.error
from pathlib import Path

import pytest

from drawbench.suites import (DRAWBENCH_COUNTS, DRAWBENCH_URL, PARTI_COUNTS, SuiteFormatError,
                              SuiteNotAvailableError, load_drawbench, load_parti,
                              load_prompt_file, load_suite, select)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
DRAWBENCH_CSV = DATA / "drawbench" / "DrawBench.csv"
PARTI_TSV = DATA / "parti" / "PartiPrompts.tsv"
needs_drawbench = pytest.mark.skipif(not DRAWBENCH_CSV.is_file(),
                                     reason=f"{DRAWBENCH_CSV} absent (the file is not shipped)")
needs_parti = pytest.mark.skipif(not PARTI_TSV.is_file(),
                                 reason=f"{PARTI_TSV} absent (the file is not shipped)")


# ---------------------------------------------------------------------------------------------
# the real files


@needs_drawbench
def test_real_drawbench_has_200_prompts_in_the_11_published_categories():
    suite = load_suite(str(DRAWBENCH_CSV))
    assert suite.name == "drawbench" and len(suite.records) == 200
    assert suite.categories() == DRAWBENCH_COUNTS and len(suite.categories()) == 11
    assert sum(DRAWBENCH_COUNTS.values()) == 200
    assert suite.sha256 == hashlib.sha256(DRAWBENCH_CSV.read_bytes()).hexdigest()
    marcus = [r for r in suite.records if r.category == "Gary Marcus et al."]
    assert len(marcus) == 10 and all(r.extra["category_raw"] == "Gary Marcus et al. "
                                     for r in marcus)
    ids = [r.prompt_id for r in suite.records]
    assert len(set(ids)) == 200 and ids[0] == "drawbench-colors-01"
    assert "drawbench-gary-marcus-et-al-10" in ids and "drawbench-reddit-38" in ids
    assert any("Schönhausen" in r.text for r in suite.records)
    assert suite.describe()["version"] == f"drawbench@{suite.sha256[:12]}"


@needs_parti
def test_real_partiprompts_keeps_the_leading_quote_and_its_columns():
    suite = load_suite(str(PARTI_TSV))
    assert suite.name == "parti" and len(suite.records) == 1632
    assert suite.categories() == dict(sorted(PARTI_COUNTS.items())) == PARTI_COUNTS
    quoted = [r for r in suite.records if r.text.startswith('"G I G G L E"')]
    assert len(quoted) == 1
    first = suite.records[0]
    assert (first.prompt_id, first.text, first.category) == ("parti-0001", "bond", "Abstract")
    assert first.extra["challenge"] == "Basic" and first.extra["note"]
    challenges = {r.extra["challenge"] for r in suite.records}
    assert len(challenges) == 11


@needs_drawbench
def test_select_limits_per_category_and_names_unknown_categories():
    records = load_drawbench(DRAWBENCH_CSV).records
    two = select(records, limit_per_category=2)
    assert len(two) == 22 and len({r.category for r in two}) == 11
    some = select(records, ["colors", "gary marcus et al. "])
    assert len(some) == 35
    with pytest.raises(ValueError, match="unknown category 'Colours'.*Colors"):
        select(records, ["Colours"])


@needs_drawbench
def test_a_changed_drawbench_fails_verification(tmp_path):
    lines = DRAWBENCH_CSV.read_text().splitlines()
    path = tmp_path / "DrawBench.csv"
    path.write_text("\n".join(lines[:-1]) + "\n")  # drop one Text prompt
    with pytest.raises(SuiteFormatError, match=r"Text: 20 \(expected 21\)"):
        load_drawbench(path)
    assert len(load_drawbench(path, verify=False).records) == 199


# ---------------------------------------------------------------------------------------------
# the download cache (no network: urlopen is replaced)


class _Response(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _sheet(n_per_category=DRAWBENCH_COUNTS) -> bytes:
    rows = ["Prompts,Category"]
    for category, n in n_per_category.items():
        raw = "Gary Marcus et al. " if category == "Gary Marcus et al." else category
        rows += [f'"A prompt, number {i}",{raw}' for i in range(n)]
    return "\n".join(rows).encode()


def test_first_use_downloads_into_the_cache_and_records_url_sha_date(tmp_path, monkeypatch):
    calls = []

    def urlopen(url, timeout):
        calls.append(url)
        return _Response(_sheet())

    monkeypatch.setattr("urllib.request.urlopen", urlopen)
    suite = load_suite("drawbench", cache_dir=tmp_path)
    assert calls == [DRAWBENCH_URL] and len(suite.records) == 200
    meta = json.loads((tmp_path / "DrawBench.csv.source.json").read_text())
    assert meta["url"] == DRAWBENCH_URL and meta["sha256"] == hashlib.sha256(_sheet()).hexdigest()
    assert meta["downloaded"][:2] == "20"
    assert suite.describe()["url"] == DRAWBENCH_URL and suite.describe()["downloaded"]
    again = load_suite("drawbench", cache_dir=tmp_path)  # the cached copy, no second download
    assert calls == [DRAWBENCH_URL] and again.sha256 == suite.sha256


def test_offline_without_a_copy_is_one_clear_error(tmp_path, monkeypatch):
    def urlopen(url, timeout):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr("urllib.request.urlopen", urlopen)
    with pytest.raises(SuiteNotAvailableError) as e:
        load_parti(cache_dir=tmp_path)
    msg = str(e.value)
    assert "no local copy" in msg and "PartiPrompts.tsv" in msg and "--prompts parti:PATH" in msg
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------------------------------------
# a user's own files


def test_user_csv_tsv_and_jsonl(tmp_path):
    csv_path = tmp_path / "mine.csv"
    csv_path.write_text('prompt,category,style\n"a cat, sitting",animals,photo\na dog,,sketch\n')
    suite = load_suite(str(csv_path))
    assert suite.name == "file"
    assert [(r.prompt_id, r.text, r.category) for r in suite.records] == [
        ("prompt-0001", "a cat, sitting", "animals"), ("prompt-0002", "a dog", "")]
    assert suite.records[0].to_json() == {"prompt_id": "prompt-0001", "text": "a cat, sitting",
                                          "category": "animals", "style": "photo", "line": 2}
    tsv = tmp_path / "mine.tsv"
    tsv.write_text('id\ttext\n q1 \t"quoted" start\n')
    assert [(r.prompt_id, r.text) for r in load_prompt_file(tsv).records] == [
        ("q1", '"quoted" start')]
    jsonl = tmp_path / "mine.jsonl"
    jsonl.write_text('{"prompt_id": "a", "text": "x", "category": "c"}\n\n{"text": "y"}\n')
    assert [(r.prompt_id, r.category) for r in load_suite(f"file:{jsonl}").records] == [
        ("a", "c"), ("prompt-0002", "")]


@pytest.mark.parametrize("name, content, message", [
    ("DrawBench.csv", b"Prompts,Kategorie\nx,Colors\n", "line 1: missing column 'Category'"),
    ("p.csv", b"id,caption_text\n1,x\n", "line 1: missing column 'text'"),
    ("p.csv", b"text,category\na cat,c\n   ,c\n", "line 3: empty prompt"),
    ("p.csv", b"id,text\na,x\nb,y\na,z\n", "line 4: duplicate id 'a' (first on line 2)"),
    ("p.csv", b"text\nok\ncaf\xe9\n", "line 3: not UTF-8"),
    ("p.csv", b"text,category\na,b,c\n", "line 2: 3 fields, the header has 2"),
    ("p.jsonl", b'{"text": "a"}\n{"text": \n', "line 2: not JSON"),
    ("p.jsonl", b'{"text": "a"}\n{"caption_x": "b"}\n', "line 2: no 'text' field"),
    ("p.tsv", b"text\tcategory\nx\ty\n\tz\n", "line 3: empty prompt"),
    ("p.xlsx", b"whatever", "unknown prompt file type"),
])
def test_malformed_files_give_one_error_naming_the_line(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    spec = f"drawbench:{path}" if name == "DrawBench.csv" else str(path)
    with pytest.raises(SuiteFormatError) as e:
        load_suite(spec)
    assert message in str(e.value) and str(path) in str(e.value)


def test_a_drawbench_file_is_recognised_by_its_header(tmp_path):
    path = tmp_path / "sheet.csv"
    path.write_bytes(_sheet())
    suite = load_suite(str(path))
    assert suite.name == "drawbench" and suite.categories() == DRAWBENCH_COUNTS
    path.write_bytes(_sheet({**DRAWBENCH_COUNTS, "Colors": 24}))
    with pytest.raises(SuiteFormatError, match=r"Colors: 24 \(expected 25\)"):
        load_suite(str(path))
