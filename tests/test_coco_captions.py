"""coco.captions: the COCO annotation reader, the sampling rule, user caption files."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from coco.captions import (CaptionRecord, CocoFormatError, Prompt, load_val_captions,
                           read_caption_file, sample_captions)

SHARED_SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "coco" / "captions_val2014.json_samples.json"


def write_coco(root: Path, n_images: int = 20, captions_per_image: int = 5) -> Path:
    """A small, referentially consistent captions_val2014.json under root/annotations/."""
    images = [{"id": 100 + i, "file_name": f"COCO_val2014_{100 + i:012d}.jpg", "width": 64,
               "height": 64} for i in range(n_images)]
    anns = [{"id": 1000 * (i + 1) + j, "image_id": 100 + i, "caption": f"  image {i} caption {j}\n"}
            for i in range(n_images) for j in range(captions_per_image)]
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    path = root / "annotations" / "captions_val2014.json"
    path.write_text(json.dumps({"info": {}, "images": images, "annotations": anns, "licenses": []}))
    return root


@pytest.fixture
def coco_root(tmp_path) -> Path:
    return write_coco(tmp_path)


def test_load_records(coco_root):
    records = load_val_captions(coco_root)
    assert len(records) == 20
    assert [r.image_id for r in records] == sorted(r.image_id for r in records)
    assert records[0] == CaptionRecord(100, "COCO_val2014_000000000100.jpg",
                                       [f"image 0 caption {j}" for j in range(5)])  # stripped


def test_real_sample_file():
    """The real COCO file format (first 100 items of each list, so few images have captions)."""
    if not SHARED_SAMPLE.is_file():
        pytest.skip(f"{SHARED_SAMPLE} not present (the shared data folder is not mounted)")
    records = load_val_captions(SHARED_SAMPLE)
    data = json.loads(SHARED_SAMPLE.read_text())
    ids = {im["id"] for im in data["images"]} & {a["image_id"] for a in data["annotations"]}
    assert ids and {r.image_id for r in records} == ids
    by_id = {r.image_id: r for r in records}
    for image_id in ids:
        texts = [a["caption"].strip() for a in sorted(data["annotations"], key=lambda a: a["id"])
                 if a["image_id"] == image_id]
        assert by_id[image_id].captions == [" ".join(t.split()) for t in texts]
    prompts = sample_captions(records, len(ids), seed=0)
    assert {p.image_id for p in prompts} == ids
    assert all(p.text in by_id[p.image_id].captions for p in prompts)
    with pytest.raises(ValueError, match=f"only {len(ids)} captioned images"):
        sample_captions(records, len(ids) + 1, seed=0)


def test_sampling_rule(coco_root):
    records = load_val_captions(coco_root)
    a = sample_captions(records, 12, seed=7)
    assert a == sample_captions(list(reversed(records)), 12, seed=7)  # order-independent
    assert a != sample_captions(records, 12, seed=8)
    assert len({p.image_id for p in a}) == 12  # distinct images
    for p in a:
        assert p.prompt_id == f"coco-{p.image_id}"
        rec = next(r for r in records if r.image_id == p.image_id)
        assert p.text == rec.captions[p.caption_index]
    # the caption index is random too, not always the first caption
    assert len({p.caption_index for p in sample_captions(records, 20, seed=1)}) > 1


def test_sampling_is_the_documented_rule(coco_root):
    """random.Random(seed): sample N images sorted by id, then one randrange per image."""
    import random

    records = load_val_captions(coco_root)
    rng = random.Random(3)
    chosen = rng.sample(sorted(records, key=lambda r: r.image_id), 5)
    expected = [(r.image_id, rng.randrange(len(r.captions))) for r in chosen]
    assert [(p.image_id, p.caption_index) for p in sample_captions(records, 5, 3)] == expected


@pytest.mark.parametrize("drop, key", [("images", "images"), ("annotations", "annotations"),
                                       ("caption", "caption"), ("image_id", "image_id"),
                                       ("file_name", "file_name")])
def test_malformed_annotations_name_the_key(tmp_path, drop, key):
    root = write_coco(tmp_path, n_images=3)
    path = root / "annotations" / "captions_val2014.json"
    data = json.loads(path.read_text())
    if drop in data:
        del data[drop]
    elif drop in data["annotations"][1]:
        del data["annotations"][1][drop]
    else:
        del data["images"][2][drop]
    path.write_text(json.dumps(data))
    with pytest.raises(CocoFormatError, match=f"'{key}'") as err:
        load_val_captions(root)
    assert str(path) in str(err.value)


def test_bad_json_and_missing_file(tmp_path):
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "captions_val2014.json").write_text('{"images": [')
    with pytest.raises(CocoFormatError, match="not valid JSON"):
        load_val_captions(tmp_path)
    with pytest.raises(FileNotFoundError, match="captions_val2014.json"):
        load_val_captions(tmp_path / "nowhere")


def test_text_caption_file(tmp_path):
    path = tmp_path / "caps.txt"
    path.write_bytes(b"\xef\xbb\xbf  a red cube \r\n\r\n\tTwo dogs\r\n   \nlast line no newline")
    assert read_caption_file(path) == [Prompt("cap-00000", "a red cube"), Prompt("cap-00001", "Two dogs"),
                                       Prompt("cap-00002", "last line no newline")]


def test_csv_caption_file(tmp_path):
    path = tmp_path / "caps.csv"
    path.write_bytes(b'id,Caption ,other\r\n7," a cat\r\non a mat ",x\r\n\r\n8,"say ""hi""",y\r\n9,,z\r\n')
    assert read_caption_file(path) == [Prompt("7", "a cat on a mat"), Prompt("8", 'say "hi"')]
    path.write_text("prompt\nfirst\n\nsecond\n")
    assert [p.text for p in read_caption_file(path)] == ["first", "second"]
    assert [p.prompt_id for p in read_caption_file(path)] == ["cap-00000", "cap-00001"]


def test_tsv_and_parti_style_header(tmp_path):
    path = tmp_path / "p.tsv"
    path.write_text("Prompt\tCategory\nA bowl of fruit\tFood\n")
    assert read_caption_file(path) == [Prompt("cap-00000", "A bowl of fruit")]


def test_caption_file_errors(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("title,body\na,b\n")
    with pytest.raises(CocoFormatError, match="no caption column.*'title'"):
        read_caption_file(path)
    path.write_text("id,caption\n1,a\n1,b\n")
    with pytest.raises(CocoFormatError, match="appears twice"):
        read_caption_file(path)
    path.write_text("caption\n\n")
    with pytest.raises(CocoFormatError, match="no captions"):
        read_caption_file(path)
    with pytest.raises(FileNotFoundError):
        read_caption_file(tmp_path / "missing.txt")
