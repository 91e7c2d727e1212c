"""The run machinery: sampling configs, run directories, sharded resumable generation, the
metric stage's tables and the Pareto plot — with fake models and fake metrics (fast)."""
import hashlib
import json
import zlib

import numpy as np
import pytest

from bench.adapters import AdapterError, ImagesDirAdapter, load_adapter, load_rgb
from bench.plots import pareto_plot
from bench.runner import Dist, generate, plan_items, png_bytes
from bench.runs import RunDir, RunSpecError, append_jsonl, read_jsonl
from bench.sampling import SamplingConfig, build_grid, parse_guidance
from bench.scoring import Scorers, clip_score_of, score_run
from imagen_ref.device import derive_seed

PROMPTS = [{"prompt_id": f"p{i}", "text": f"prompt number {i}", "category": "t"} for i in range(5)]


# ---------------------------------------------------------------------------------------------
# sampling configs


@pytest.mark.parametrize("cfg, key", [
    (SamplingConfig(5, "dynamic:0.995", 0, "ddim", 64), "w5-dyn0.995-aug0-ddim64"),
    (SamplingConfig((1.35, 8), "static", 0.1, "ddpm", 256), "w1.35_8-static-aug0.1-ddpm256"),
    (SamplingConfig(1.25, "none"), "w1.25-none-aug0-ddim64"),
    (SamplingConfig(3, "Dynamic:0.9950:2"), "w3-dyn0.995cap2-aug0-ddim64"),
])
def test_config_keys_are_readable_and_stable(cfg, key):
    assert cfg.config_key == key
    assert SamplingConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_grid_nests_thresholding_then_guidance_and_drops_duplicates():
    grid = build_grid("1,3,1.35/8,3", "none,dynamic:0.995", "0", "ddim", 8)
    assert [c.config_key for c in grid] == [
        "w1-none-aug0-ddim8", "w3-none-aug0-ddim8", "w1.35_8-none-aug0-ddim8",
        "w1-dyn0.995-aug0-ddim8", "w3-dyn0.995-aug0-ddim8", "w1.35_8-dyn0.995-aug0-ddim8"]
    settings = grid[2].stage_settings(3)
    assert [s.guidance for s in settings] == [1.35, 8.0, 8.0]
    assert {s.thresholding for s in settings} == {"none"}


@pytest.mark.parametrize("kwargs, match", [
    ({"guidance": "1,x"}, "--guidance"), ({"thresholding": "dynamic:2"}, "thresholding"),
    ({"aug_level": "0,2"}, "aug level"), ({"aug_level": "a"}, "--aug-level"),
])
def test_bad_grid_flags_name_the_flag(kwargs, match):
    args = {"guidance": "1", "thresholding": "none", "aug_level": "0", **kwargs}
    with pytest.raises(ValueError, match=match):
        build_grid(**args)
    assert parse_guidance("2/4") == [(2.0, 4.0)]


def test_per_image_seeds_are_shared_by_configs():
    grid = build_grid("1,5", "none,static")
    items = plan_items(grid, PROMPTS, 2, base_seed=7)
    assert len(items) == 4 * 5 * 2
    by_key = {}
    for it in items:
        assert it.seed == derive_seed(7, it.prompt_id, it.k)
        by_key.setdefault((it.prompt_id, it.k), set()).add(it.seed)
    assert all(len(s) == 1 for s in by_key.values())
    assert len({next(iter(s)) for s in by_key.values()}) == 10


# ---------------------------------------------------------------------------------------------
# generation with a fake model


class FakeModel:
    """Images that depend only on (config, seed), like a batch-independent sampler."""

    kind = "fake"
    model_id = "fake"

    def __init__(self, fail_after=None):
        self.calls, self.fail_after, self.made = [], fail_after, 0

    def describe(self):
        return {"kind": "fake"}

    def check(self, items, config):
        pass

    def generate(self, items, config):
        self.calls.append(len(items))
        out = []
        for it in items:
            if self.fail_after is not None and self.made >= self.fail_after:
                raise KeyboardInterrupt("simulated kill")
            g = np.random.default_rng([it.seed, zlib.crc32(config.config_key.encode())])
            out.append(g.integers(0, 256, (8, 8, 3), dtype=np.uint8))
            self.made += 1
        return out


class SequentialDist(Dist):
    """A rank of a pretend world whose ranks run one after another (barriers are no-ops)."""

    def barrier(self):
        pass


def _files(root):
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((root / "images").rglob("*.png"))}


def _samples(run):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in read_jsonl(run.samples)]


@pytest.fixture
def grid():
    return build_grid("1,4", "none,dynamic:0.9", steps=2)


def _generate(root, grid, model, batch_size=3, dist=Dist()):
    run = RunDir(root)
    run.write_prompts(PROMPTS)
    items = plan_items(grid, PROMPTS, 2, 0)
    return run, generate(run, model, grid, items, batch_size=batch_size, dist=dist, progress=False)


def test_generation_writes_images_and_a_log(tmp_path, grid):
    run, stats = _generate(tmp_path / "run", grid, FakeModel())
    assert (stats.total, stats.skipped, stats.generated) == (40, 0, 40)
    records = read_jsonl(run.samples)
    assert len(records) == 40 and not run.rank_logs()
    r = records[0]
    assert set(r) == {"config_key", "prompt_id", "k", "seed", "path", "sha256", "seconds"}
    assert r["path"] == f"images/{grid[0].config_key}/p0/0.png"
    assert hashlib.sha256((run.root / r["path"]).read_bytes()).hexdigest() == r["sha256"]
    assert not list(run.root.rglob("*.tmp"))


def test_a_killed_run_resumes_to_the_same_files(tmp_path, grid):
    ref, _ = _generate(tmp_path / "ref", grid, FakeModel())
    with pytest.raises(KeyboardInterrupt):
        _generate(tmp_path / "run", grid, FakeModel(fail_after=13))
    run = RunDir(tmp_path / "run")
    assert not run.samples.exists() and len(read_jsonl(run.rank_log(0))) == 13  # 3+3+3+1, then 3
    # a torn log line and a half-written temporary file, as a kill during a write leaves them
    with open(run.rank_log(0), "a") as f:
        f.write('{"config_key": "w1-none')
    (run.images / "stray.png.123.tmp").parent.mkdir(parents=True, exist_ok=True)
    (run.images / "stray.png.123.tmp").write_bytes(b"\x89PNG partial")
    model = FakeModel()
    _, stats = _generate(tmp_path / "run", grid, model)
    assert (stats.skipped, stats.generated) == (13, 27)
    assert _files(ref.root) == _files(run.root)
    assert _samples(ref) == _samples(run)
    _, again = _generate(tmp_path / "run", grid, model)  # nothing left to do
    assert again.generated == 0 and sum(model.calls) == 27


def test_a_deleted_image_is_made_again(tmp_path, grid):
    run, _ = _generate(tmp_path / "run", grid, FakeModel())
    first = read_jsonl(run.samples)[5]
    (run.root / first["path"]).unlink()
    _, stats = _generate(tmp_path / "run", grid, FakeModel())
    assert stats.generated == 1 and (run.root / first["path"]).is_file()


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_split_by_item_index_and_make_the_same_files(tmp_path, grid, world):
    ref, _ = _generate(tmp_path / "ref", grid, FakeModel(), batch_size=4)
    made = []
    for rank in reversed(range(world)):  # rank 0 last: it merges the logs
        _, stats = _generate(tmp_path / "run", grid, FakeModel(), batch_size=4,
                             dist=SequentialDist(rank, world))
        made.append(stats.generated)
    assert sum(made) == 40 and max(made) - min(made) <= 1
    run = RunDir(tmp_path / "run")
    assert _files(ref.root) == _files(run.root)
    assert _samples(ref) == _samples(run) and not run.rank_logs()


def test_append_repairs_a_torn_line(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text('{"a": 1}\n{"a": 2')
    append_jsonl(path, {"a": 3})
    assert read_jsonl(path) == [{"a": 1}, {"a": 3}]


def test_png_is_deterministic_and_lossless(tmp_path):
    img = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    assert png_bytes(img) == png_bytes(img.copy())
    (tmp_path / "x.png").write_bytes(png_bytes(img))
    assert np.array_equal(load_rgb(tmp_path / "x.png"), img)


def test_run_spec_mismatch_is_a_user_error(tmp_path):
    run = RunDir(tmp_path / "run")
    spec = {"model": {"model_id": "a"}, "grid": [1], "metrics": {"clip": "x"}}
    run.start(spec, {"started": "t0"})
    run.start(json.loads(json.dumps(spec)), {"started": "t1"})  # same spec: resumes
    assert run.read_run()["history"] == ["t0", "t1"]
    with pytest.raises(RunSpecError, match=r"grid: \[1\] \(recorded\) vs \[2\] \(now\).*new --out"):
        run.start({**spec, "grid": [2]}, {})
    (run.metrics).mkdir()
    with pytest.raises(RunSpecError, match="delete its metrics/ folder"):
        run.start({**spec, "metrics": {"clip": "y"}}, {})
    run.metrics.rmdir()
    run.start({**spec, "metrics": {"clip": "y"}}, {})  # rescoring with new metric settings


# ---------------------------------------------------------------------------------------------
# images:DIR


def test_images_dir_adapter_reads_flat_and_per_config_layouts(tmp_path, grid):
    src, _ = _generate(tmp_path / "src", grid, FakeModel())
    items = plan_items(grid, PROMPTS, 2, 0)
    adapter = load_adapter(f"images:{src.images}")
    adapter.check_grid(grid)
    cfg = grid[1]
    mine = [it for it in items if it.config_key == cfg.config_key]
    adapter.check(mine, cfg)
    got = adapter.generate(mine[:2], cfg)
    want = FakeModel().generate(mine[:2], cfg)
    assert all(np.array_equal(a, b) for a, b in zip(got, want))
    flat = ImagesDirAdapter(src.images / cfg.config_key)
    with pytest.raises(AdapterError, match="no subfolder"):
        flat.check_grid(grid)
    flat.check_grid([cfg])
    (src.images / cfg.config_key / "p3" / "1.png").unlink()
    with pytest.raises(AdapterError, match=r"1 of 10 images are missing.*p3/1.png"):
        flat.check(mine, cfg)


def test_unknown_models_are_user_errors(tmp_path):
    with pytest.raises(AdapterError, match="does not exist"):
        load_adapter(f"images:{tmp_path / 'nope'}")
    with pytest.raises(AdapterError, match="cascade.json"):
        load_adapter(str(tmp_path))
    pytest.importorskip("diffusers")
    with pytest.raises(AdapterError, match="diffusers pipeline folder x does not exist"):
        load_adapter("diffusers:x")


# ---------------------------------------------------------------------------------------------
# the metric stage with fake metrics


class FakeExtractor:
    """Per-channel mean pixel values as a 3-d stand-in for a FID network."""

    dims, feature_name, protocol = 3, "fake", {"resize": "fake"}

    def __init__(self, calls=None):
        self.calls = calls if calls is not None else []

    def __call__(self, images):
        assert images.dtype.is_floating_point is False and images.shape[1] == 3
        self.calls.append(len(images))
        return images.double().mean(dim=(2, 3)) / 255.0


def fake_reference():
    from coco.reference import ReferenceStats

    rng = np.random.default_rng(0)
    return ReferenceStats.from_features(rng.uniform(0, 1, (50, 3)), {"resize": "fake"})


class FakeClip:
    def cosines(self, images, texts):
        assert len(images) == len(texts)
        return np.array([len(t) / 100 - 0.1 * (i % 3) for i, t in enumerate(texts)]), 1


def test_metric_stage_writes_tables_and_resumes_per_config(tmp_path, grid):
    from bench.feature_store import load_features
    from bench.metrics.frechet import frechet_distance
    from bench.statistics import StatsOptions

    run, _ = _generate(tmp_path / "run", grid, FakeModel())
    options = StatsOptions(bootstrap=20)
    scorers = Scorers(FakeExtractor(), FakeClip(), fake_reference(), options,
                      protocol={"fid_resize": "fake"})
    rows = score_run(run, grid, scorers, batch_size=4, progress=False)
    summary = (run.summary).read_text().splitlines()
    assert summary[0] == ("config_key,guidance,thresholding,aug_level,sampler,steps,n_images,"
                          "n_prompts,fid,fid_ci_low,fid_ci_high,fid_inf,fid_inf_slope,"
                          "fid_inf_ci_low,fid_inf_ci_high,clip_score,clip_score_ci_low,"
                          "clip_score_ci_high,clip_score_std,clip_truncated,bootstrap_samples,"
                          "bootstrap_seed,seconds,fid_resize")
    assert len(summary) == 1 + len(grid)
    assert [r["config_key"] for r in rows] == [c.config_key for c in grid]
    per_image = run.per_image.read_text().splitlines()
    assert per_image[0] == "config_key,prompt_id,k,clip_cosine" and len(per_image) == 41
    cos = [float(line.split(",")[3]) for line in per_image[1:11]]
    assert float(rows[0]["clip_score"]) == pytest.approx(clip_score_of(cos)[0])
    assert rows[0]["clip_truncated"] == 3  # one per batch of the fake scorer
    # the stored features are the network's, in per_image.csv order; FID is computed from them
    keys = [(line.split(",")[1], int(line.split(",")[2])) for line in per_image[1:11]]
    feats = np.asarray(load_features(run.metrics, grid[0].config_key, "fake", keys), np.float64)
    ref = fake_reference()
    expected = frechet_distance(feats.mean(0), np.cov(feats, rowvar=False), ref.mu, ref.sigma)
    assert float(rows[0]["fid"]) == pytest.approx(expected, rel=1e-9)
    assert float(rows[0]["fid_ci_low"]) <= float(rows[0]["fid"]) <= float(rows[0]["fid_ci_high"])
    # a rerun after the summary was lost rebuilds it from the per-config files alone
    before = run.summary.read_text()
    run.summary.unlink()
    (run.config_metrics / f"{grid[0].config_key}.json").unlink()
    calls = []
    score_run(run, grid, Scorers(FakeExtractor(calls), FakeClip(), fake_reference(), options,
                                 protocol={"fid_resize": "fake"}), batch_size=4, progress=False)
    assert sum(calls) == 10 and run.summary.read_text() == before


def test_clip_score_is_100_mean_max_cos_0():
    assert clip_score_of(np.array([0.3, -0.2, 0.1])) == pytest.approx(
        (100 * 0.4 / 3, np.std([30, 0, 10], ddof=1)))


def test_pareto_plot_draws_one_curve_per_mode(tmp_path):
    rows = [{"guidance": w, "thresholding": m, "aug_level": 0, "sampler": "ddim", "steps": 4,
             "fid": 10 + float(w) + (m == "none"), "clip_score": 20 + float(w)}
            for m in ("none", "dynamic:0.995") for w in ("1", "3", "10")]
    rows.append({**rows[0], "fid": "nan"})
    path = pareto_plot(rows, tmp_path / "pareto.png", title="t")
    assert path.read_bytes()[:4] == b"\x89PNG"
    assert pareto_plot([{**rows[0], "fid": "nan"}], tmp_path / "none.png") is None
