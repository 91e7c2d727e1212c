"""The `info` and `sample` commands, on checkpoints the test writes (random tiny U-Nets)."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from imagen_ref import __main__ as info_cli
from imagen_ref import sample as sample_cli
from imagen_ref.checkpoint import save_stage
from imagen_ref.configs import build_unet, get_config
from imagen_ref.diffusion import Schedule
from imagen_ref.pipeline import Cascade, StageSampling, to_uint8


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    from imagen_ref.text_encoder import FrozenTextEncoder
    enc = FrozenTextEncoder("minilm-l6", max_length=16, device="cpu")
    meta = {"name_or_path": "minilm-l6", "encoder_id": enc.encoder_id, "max_length": 16, "dim": enc.dim}
    d = tmp_path_factory.mktemp("ckpt")
    g = torch.Generator().manual_seed(0)
    for key, name in (("base", "tiny-base"), ("sr64", "tiny-sr")):
        model = build_unet(get_config(name))
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=g) * 0.05)
        save_stage(d, key, model, schedule=Schedule(), aug_schedule=Schedule() if key != "base" else None,
                   text_encoder_meta=meta, training_meta={"step": 0})
    return d


@pytest.mark.parametrize("name,paper", [("imagen-base-64", 2e9), ("imagen-sr-256", 6e8), ("imagen-sr-1024", 4e8)])
def test_info_json_reports_meta_device_params(name, paper, capsys):
    assert info_cli.main(["info", "--config", name, "--json"]) == 0
    params = json.loads(capsys.readouterr().out)["params"]
    assert isinstance(params, int) and abs(params - paper) / paper <= 0.15


def test_info_unknown_config_is_a_user_error(capsys):
    assert info_cli.main(["info", "--config", "nope"]) == 2


def test_sample_writes_the_pipeline_image(ckpt, tmp_path, capsys):
    out = tmp_path / "img.png"
    argv = ["--model", str(ckpt), "--prompt", "a red circle", "--guidance", "3,2", "--thresholding",
            "dynamic:0.995", "--steps", "3,2", "--aug-level", "0,0.2", "--seed", "7", "--device", "cpu",
            "--save-stages", "--out", str(out)]
    assert sample_cli.main(argv) == 0
    assert "wrote 1 image" in capsys.readouterr().out
    img = Image.open(out)
    assert img.size == (64, 64) and Image.open(tmp_path / "img.base.png").size == (32, 32)
    # the command's image is exactly the pipeline's for the same seed and settings
    cascade = Cascade.from_pretrained(ckpt, device="cpu")
    settings = [StageSampling(guidance=3, thresholding="dynamic:0.995", steps=3),
                StageSampling(guidance=2, thresholding="dynamic:0.995", steps=2, aug_level=0.2)]
    expected = to_uint8(cascade.sample(["a red circle"], [7], settings)[-1])[0]
    assert torch.equal(torch.from_numpy(np.array(img)), expected)


def test_sample_missing_checkpoint_exits_2(tmp_path, capsys):
    assert sample_cli.main(["--model", str(tmp_path / "none"), "--prompt", "x", "--out",
                            str(tmp_path / "a.png")]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "none" in err
    assert not (tmp_path / "a.png").exists()


def test_sample_bad_thresholding_exits_2(ckpt, tmp_path, capsys):
    assert sample_cli.main(["--model", str(ckpt), "--prompt", "x", "--thresholding", "dynamic:7",
                            "--out", str(tmp_path / "a.png")]) == 2
    assert "bad thresholding mode" in capsys.readouterr().err



HELP = {  # module: argv whose help lists flags
    "bench.coco_fid": [], "bench.drawbench": [], "bench.report": [], "bench.perf_votes": [],
    "bench.perf": ["sampling"], "calibration_world.demo": [], "calibration_world.evaluate": [],
    "calibration_world.train_cascade": [], "calibration_world.train_metrics": ["clip"],
    "calibration_world.relation_probe": [], "rater.analyze": [], "rater.simulate": [],
}


@pytest.mark.parametrize("module", list(HELP))
def test_help_shows_defaults_but_never_default_none(module, capsys):
    """Every command's --help gives its defaults; a flag filled in later says its own default
    (bench.cli.HelpFormatter) instead of a bare "(default: None)"."""
    import importlib

    with pytest.raises(SystemExit) as info:
        importlib.import_module(module).main([*HELP[module], "--help"])
    text = capsys.readouterr().out
    assert info.value.code == 0 and "(default: " in text
    assert "(default: None)" not in text
