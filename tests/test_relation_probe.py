"""The relation-order probe: its task is the Positional skill's geometry, its metric scores order."""

import json

import pytest
import torch

from calibration_world import relation_probe as rp
from calibration_world.captions import parse_caption
from calibration_world.scenes import PALETTE


def _rgb(color: str) -> torch.Tensor:
    return torch.tensor(PALETTE[color], dtype=torch.float32) / 127.5 - 1


def test_layout_task_paints_what_the_caption_says():
    captions, targets, truth = rp.layout_task(200, 8, seed=3)
    assert targets.shape == (200, 3, 8, 8) and truth.shape == (200, 2, 3)
    seen = set()
    for cap, img in zip(captions, targets):
        req = parse_caption(cap)  # the world's own parser, not the probe's tables
        i, rel, j = req.relation
        subj, obj = _rgb(req.groups[i].color), _rgb(req.groups[j].color)
        seen.add(rel)
        # "A left of B": A has the smaller x, so A fills the left half; "A below B": B is on top
        first, second = (subj, obj) if rel in ("left", "above") else (obj, subj)
        if rel in ("left", "right"):
            a, b = img[:, :, :4], img[:, :, 4:]
        else:
            a, b = img[:, :4, :], img[:, 4:, :]
        torch.testing.assert_close(a, first[:, None, None].expand_as(a))
        torch.testing.assert_close(b, second[:, None, None].expand_as(b))
    assert seen == {"left", "right", "above", "below"}
    with pytest.raises(ValueError, match="even"):
        rp.layout_task(2, 7, seed=0)


def test_order_accuracy_tells_right_from_swapped_and_blind():
    _, targets, truth = rp.layout_task(100, 8, seed=1)
    assert rp.order_accuracy(targets, targets, truth) == 1.0
    swapped = torch.stack([t.flip(-1) if (t[..., :4, :] - t[..., 4:, :]).abs().max() < 1e-6 else t.flip(-2)
                           for t in targets])
    assert rp.order_accuracy(swapped, targets, truth) == 0.0
    blind = truth.mean(1)[:, :, None, None].expand_as(targets)
    assert rp.order_accuracy(blind, targets, truth) == 0.0  # a tie is not right
    # the order-blind loss: each half is off by half the colour difference
    expected = ((truth[:, 0] - truth[:, 1]) / 2).pow(2).mean()
    assert rp.mean_colour_loss(targets, truth) == pytest.approx(expected.item(), rel=1e-5)


def test_probe_config_scales_attention_and_checks_overrides():
    cfg = rp.probe_config("calworld-base-32", 16, {"query_pos": False, "channel_mult": [1, 2]})
    assert cfg.image_size == 16 and cfg.attn_resolutions == (8, 4)
    assert cfg.query_pos is False and cfg.channel_mult == (1, 2)
    with pytest.raises(ValueError, match="unknown UNetConfig fields"):
        rp.probe_config("calworld-base-32", 16, {"no_such_field": 1})
    with pytest.raises(ValueError, match="not a base U-Net"):
        rp.probe_config("calworld-sr-64", 16, {})
    with pytest.raises(ValueError, match="divide"):
        rp.probe_config("calworld-base-32", 12, {})


def test_run_probe_is_seeded():
    _, targets, truth = rp.layout_task(48, 8, seed=0)
    g = torch.Generator().manual_seed(0)
    emb, mask = torch.randn(48, 5, 384, generator=g), torch.ones(48, 5, dtype=torch.bool)
    cfg = rp.probe_config("calworld-base-32", 8, {})
    kw = dict(n_val=16, steps=6, batch_size=8, eval_every=3, seed=4, progress=False)
    curve = rp.run_probe(cfg, emb, mask, targets, truth, **kw)
    assert [r["step"] for r in curve] == [3, 6]
    assert all(0.0 <= r["order"] <= 1.0 and r["val_loss"] > 0 for r in curve)
    again = rp.run_probe(cfg, emb, mask, targets, truth, **kw)
    drop = lambda c: [{k: v for k, v in r.items() if k != "seconds"} for r in c]  # noqa: E731
    assert drop(again) == drop(curve)
    with pytest.raises(ValueError, match="none of"):
        rp.run_probe(cfg, emb, mask, targets, truth, **dict(kw, n_val=48))


def test_cli_writes_the_curve_and_rejects_bad_overrides(tmp_path, capsys):
    out = tmp_path / "probe.json"
    rc = rp.main(["--size", "8", "--steps", "2", "--captions", "24", "--val", "8", "--eval-every", "1",
                  "--set", "out_text_attention=0", "--out", str(out), "--no-progress"])
    assert rc == 0
    result = json.loads(out.read_text())
    assert result["overrides"] == {"out_text_attention": 0} and result["unet"]["out_text_attention"] == 0
    assert [r["step"] for r in result["curve"]] == [1, 2]
    assert 0.1 < result["order_blind_val_loss"] < 1.0
    assert str(out) in capsys.readouterr().out
    assert rp.main(["--set", "bogus=1", "--steps", "1"]) == 2
    assert "unknown UNetConfig fields" in capsys.readouterr().err
