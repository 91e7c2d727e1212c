"""Tests for imagen_ref.text_encoder: offline loading, masks, families, errors, embedding cache."""
from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from transformers import (AutoModel, AutoTokenizer, CLIPConfig, CLIPModel, CLIPTextConfig,
                          CLIPTextModel, CLIPTokenizer, T5Config, T5EncoderModel, T5Tokenizer)

from imagen_ref import text_encoder as te
from imagen_ref.text_encoder import (DEFAULT_TEXT_ENCODER, EmbeddingCache, FrozenTextEncoder,
                                     TextEncoderNotFoundError, pad_embeddings, resolve_text_encoder)

TEXTS = ["a photo of a cat on the mat", "a red dog", "the blue cat"]
WORDS = ["a", "photo", "of", "cat", "dog", "red", "blue", "the", "on", "mat"]


def _randomize(model, seed: int = 0):
    """Overwrite every weight with seeded noise, so tests never touch the global RNG."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    return model


def _counting(monkeypatch, enc):
    """Wrap enc._forward so tests can see every model call and the texts it received."""
    calls = []
    real = enc._forward

    def spy(texts):
        calls.append(list(texts))
        return real(texts)

    monkeypatch.setattr(enc, "_forward", spy)
    return calls


@pytest.fixture(scope="module")
def minilm():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")  # must load with no hub access at all
        return FrozenTextEncoder(DEFAULT_TEXT_ENCODER, max_length=32, device="cpu")


@pytest.fixture(scope="module")
def tiny_t5_dir(tmp_path_factory):
    """Random 2-layer T5 encoder with a real T5 (Unigram) tokenizer over a 10-word vocabulary."""
    path = tmp_path_factory.mktemp("tiny_t5")
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    vocab += [("\u2581" + w, -3.0) for w in WORDS]
    T5Tokenizer(vocab=vocab, extra_ids=0).save_pretrained(path)
    config = T5Config(vocab_size=len(vocab), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4)
    _randomize(T5EncoderModel(config)).save_pretrained(path)
    return path


def _clip_tokenizer() -> CLIPTokenizer:
    """Byte-level BPE over single letters (no merges): every word splits into characters."""
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in "abcdefghijklmnopqrstuvwxyz":
        vocab[ch] = len(vocab)
        vocab[ch + "</w>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[])


def _clip_text_config(vocab_size: int) -> CLIPTextConfig:
    return CLIPTextConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                          num_attention_heads=4, max_position_embeddings=40, bos_token_id=0,
                          eos_token_id=1, pad_token_id=1)


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny_clip")
    tok = _clip_tokenizer()
    tok.save_pretrained(path)
    _randomize(CLIPTextModel(_clip_text_config(len(tok)))).save_pretrained(path)
    return path


# --------------------------------------------------------------------------------------------
# MiniLM (real pretrained weights, offline)


def test_minilm_shapes_mask_and_padding(minilm):
    emb, mask = minilm.encode(TEXTS)
    ref = minilm.tokenizer(TEXTS, padding="longest")["attention_mask"]
    assert minilm.dim == 384 and minilm.family == "bert" and minilm.max_length == 32
    assert emb.dtype == torch.float32 and mask.dtype == torch.bool
    assert emb.shape == (3, len(ref[0]), 384) and mask.shape == (3, len(ref[0]))
    assert mask.tolist() == [[bool(v) for v in row] for row in ref]
    assert mask[:, 0].all() and not mask.all()  # [CLS] always real; the short texts are padded
    assert (emb[~mask] == 0).all()  # padding positions carry nothing
    assert (emb[mask].abs().sum(-1) > 0).all()


def test_minilm_matches_direct_transformers(minilm):
    """Independent reference: AutoModel's last hidden state on the real tokens."""
    path = resolve_text_encoder(DEFAULT_TEXT_ENCODER).location
    model = AutoModel.from_pretrained(path, local_files_only=True).eval()
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    emb, mask = minilm.encode(TEXTS)
    for i, text in enumerate(TEXTS):
        batch = tok([text], return_tensors="pt")
        with torch.no_grad():
            ref = model(**batch).last_hidden_state[0]  # (n, 384)
        torch.testing.assert_close(emb[i, mask[i]], ref, atol=1e-5, rtol=1e-5)


def test_minilm_encoder_id_is_stable(minilm):
    again = resolve_text_encoder(DEFAULT_TEXT_ENCODER)
    assert minilm.encoder_id == again.encoder_id
    assert minilm.encoder_id.startswith("minilm-l6-") and len(minilm.encoder_id) == len("minilm-l6-") + 8


def test_truncation_to_max_length():
    enc = FrozenTextEncoder(DEFAULT_TEXT_ENCODER, max_length=6, device="cpu")
    emb, mask = enc.encode(["a photo of a very big cat sitting on a very red mat", "cat"])
    assert emb.shape == (2, 6, 384)
    assert mask[0].all() and mask[1].sum() == 3  # [CLS] cat [SEP]


def test_same_text_alone_and_in_batch(minilm):
    alone, m_alone = minilm.encode([TEXTS[1]])
    batch, m_batch = minilm.encode(TEXTS)
    n = int(m_alone.sum())
    assert int(m_batch[1].sum()) == n
    torch.testing.assert_close(batch[1, :n], alone[0, :n], atol=1e-5, rtol=1e-5)


def test_embeddings_work_in_autograd(minilm):
    """Outputs are normal tensors, not inference tensors: a trained layer can consume them."""
    emb, mask = minilm.encode(TEXTS)
    layer = torch.nn.Linear(384, 4)
    (layer(emb) * mask[..., None]).sum().backward()
    assert layer.weight.grad is not None and not emb.requires_grad


def test_encode_input_checks(minilm):
    with pytest.raises(TypeError, match="single str"):
        minilm.encode("a cat")
    emb, mask = minilm.encode([])
    assert emb.shape == (0, 0, 384) and mask.shape == (0, 0)


# --------------------------------------------------------------------------------------------
# Embedding cache


def test_cache_identical_and_skips_model(tmp_path, monkeypatch, minilm):
    enc = FrozenTextEncoder(DEFAULT_TEXT_ENCODER, max_length=32, device="cpu", cache_dir=tmp_path)
    calls = _counting(monkeypatch, enc)
    first = enc.encode(TEXTS)
    assert calls == [TEXTS]
    uncached = minilm.encode(TEXTS)
    assert torch.equal(first[0], uncached[0]) and torch.equal(first[1], uncached[1])

    second = enc.encode(TEXTS)  # a later epoch / guidance weight
    assert len(calls) == 1
    assert torch.equal(second[0], first[0]) and torch.equal(second[1], first[1])

    mixed = enc.encode([TEXTS[2], "a new caption", TEXTS[2], TEXTS[0]])  # one unseen text
    assert calls[1:] == [["a new caption"]]
    ref = minilm.encode([TEXTS[2], "a new caption", TEXTS[2], TEXTS[0]])
    assert torch.equal(mixed[1], ref[1])
    torch.testing.assert_close(mixed[0], ref[0], atol=1e-5, rtol=1e-5)


def test_cache_shared_by_a_new_encoder(tmp_path, monkeypatch):
    FrozenTextEncoder(DEFAULT_TEXT_ENCODER, max_length=32, device="cpu", cache_dir=tmp_path).encode(TEXTS)
    enc = FrozenTextEncoder(DEFAULT_TEXT_ENCODER, max_length=32, device="cpu", cache_dir=tmp_path)
    calls = _counting(monkeypatch, enc)
    enc.encode(TEXTS[::-1])
    assert calls == []
    other_len = FrozenTextEncoder(DEFAULT_TEXT_ENCODER, max_length=8, device="cpu", cache_dir=tmp_path)
    calls = _counting(monkeypatch, other_len)
    other_len.encode(TEXTS[:1])  # max_length is part of the key
    assert calls == [TEXTS[:1]]


def test_cache_files_are_unpadded_safetensors(tmp_path, minilm):
    cache = EmbeddingCache(tmp_path)
    emb, mask = minilm.encode(TEXTS)
    for i, text in enumerate(TEXTS):
        cache.put("enc", 32, text, emb[i, mask[i]])
    assert sorted(p.suffix for p in tmp_path.rglob("*") if p.is_file()) == [".safetensors"] * 3
    row = cache.get("enc", 32, TEXTS[1])
    assert row.shape == (int(mask[1].sum()), 384) and torch.equal(row, emb[1, mask[1]])
    assert cache.get("enc", 31, TEXTS[1]) is None and cache.get("other", 32, TEXTS[1]) is None
    keys = {EmbeddingCache.key(*k) for k in [("a", 1, "x"), ("a", 2, "x"), ("b", 1, "x"), ("a", 1, "y")]}
    assert len(keys) == 4
    back, back_mask = pad_embeddings([cache.get("enc", 32, t) for t in TEXTS], 384)
    assert torch.equal(back, emb) and torch.equal(back_mask, mask)


def test_cache_corrupt_file_is_a_miss(tmp_path, monkeypatch):
    enc = FrozenTextEncoder(DEFAULT_TEXT_ENCODER, max_length=32, device="cpu", cache_dir=tmp_path)
    ref = enc.encode(TEXTS[:1])
    path = enc.cache.path(enc.encoder_id, 32, TEXTS[0])
    path.write_bytes(path.read_bytes()[:40])  # a file cut short
    calls = _counting(monkeypatch, enc)
    again = enc.encode(TEXTS[:1])
    assert calls == [TEXTS[:1]] and torch.equal(again[0], ref[0])
    assert enc.cache.get(enc._cache_id, 32, TEXTS[0]) is not None  # rewritten whole


def test_cache_concurrent_writers_and_readers(tmp_path):
    """Writers of one key never expose a partial file to readers (temp file + os.replace)."""
    cache = EmbeddingCache(tmp_path)
    row = torch.arange(64 * 384, dtype=torch.float32).reshape(64, 384)

    def work(i):
        if i % 2:
            cache.put("enc", 8, "same text", row)
            return True
        got = cache.get("enc", 8, "same text")
        return got is None or torch.equal(got, row)

    with ThreadPoolExecutor(4) as pool:
        assert all(pool.map(work, range(80)))
    assert torch.equal(cache.get("enc", 8, "same text"), row)
    assert [p.name for p in tmp_path.rglob("*.tmp")] == []


# --------------------------------------------------------------------------------------------
# Other families


def test_t5_family_encoder_only(tiny_t5_dir):
    enc = FrozenTextEncoder(str(tiny_t5_dir), max_length=16, device="cpu")
    emb, mask = enc.encode(["a photo of a cat", "dog"])
    assert enc.family == "t5" and enc.dim == 32 and isinstance(enc.model, T5EncoderModel)
    assert emb.shape == (2, 6, 32) and mask.sum(1).tolist() == [6, 2]  # words + </s>
    ref_model = T5EncoderModel.from_pretrained(tiny_t5_dir).eval()
    tok = T5Tokenizer.from_pretrained(tiny_t5_dir)
    with torch.no_grad():
        ref = ref_model(**tok(["dog"], return_tensors="pt")).last_hidden_state[0]
    torch.testing.assert_close(emb[1, :2], ref, atol=1e-5, rtol=1e-5)
    assert (emb[1, 2:] == 0).all()
    assert enc.encoder_id.startswith(tiny_t5_dir.name + "-")


def test_t5_bf16_weights_give_float32(tiny_t5_dir, tmp_path, monkeypatch):
    enc = FrozenTextEncoder(str(tiny_t5_dir), device="cpu", dtype=torch.bfloat16, cache_dir=tmp_path)
    emb, _ = enc.encode(["a red cat"])
    assert emb.dtype == torch.float32 and enc.model.dtype == torch.bfloat16
    assert enc._cache_id.endswith("@bfloat16")  # never mixed with fp32 entries
    calls = _counting(monkeypatch, enc)
    assert torch.equal(enc.encode(["a red cat"])[0], emb) and calls == []


def test_clip_takes_penultimate_layer(tiny_clip_dir):
    enc = FrozenTextEncoder(str(tiny_clip_dir), max_length=40, device="cpu")
    texts = ["a red cat", "dog"]
    emb, mask = enc.encode(texts)
    assert enc.family == "clip" and enc.dim == 32
    model = CLIPTextModel.from_pretrained(tiny_clip_dir).eval()
    batch = CLIPTokenizer.from_pretrained(tiny_clip_dir)(texts, padding="longest", return_tensors="pt")
    with torch.no_grad():
        out = model(**batch, output_hidden_states=True)
    assert mask.tolist() == batch["attention_mask"].bool().tolist()
    for i in range(2):
        torch.testing.assert_close(emb[i, mask[i]], out.hidden_states[-2][i, mask[i]], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(emb[0, mask[0]], out.last_hidden_state[0, mask[0]], atol=1e-3)


def test_clip_full_checkpoint_and_position_limit(tmp_path):
    tok = _clip_tokenizer()
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                  image_size=32, patch_size=16)
    config = CLIPConfig(text_config=_clip_text_config(len(tok)).to_dict(), vision_config=vision)
    _randomize(CLIPModel(config)).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    enc = FrozenTextEncoder(str(tmp_path), max_length=40, device="cpu")
    assert enc.family == "clip" and enc.encode(["a cat"])[0].shape == (1, 6, 32)  # bos a</w> c a t</w> eos
    with pytest.raises(ValueError, match="max_length <= 40"):
        FrozenTextEncoder(str(tmp_path), max_length=128, device="cpu")


# --------------------------------------------------------------------------------------------
# Missing weights: one actionable error


def test_missing_hub_model_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    name = "no-such-org/no-such-text-encoder"
    with pytest.raises(TextEncoderNotFoundError) as info:
        FrozenTextEncoder(name, device="cpu")
    msg = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert name in msg and f"hf download {name}" in msg and "HF_HOME" in msg and "local directory" in msg
    assert info.value.__cause__ is None and info.value.__suppress_context__  # no transformers traceback


def test_hub_unreachable_gives_same_error(monkeypatch):
    """Online but the hub cannot be reached: transformers' OSError becomes the same message."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)

    def unreachable(*args, **kwargs):
        assert kwargs.get("local_files_only") is False
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")

    monkeypatch.setattr(te.AutoConfig, "from_pretrained", unreachable)
    with pytest.raises(TextEncoderNotFoundError, match="google/t5-v1_1-xxl.*not available") as info:
        FrozenTextEncoder("google/t5-v1_1-xxl", device="cpu")
    assert "hf download google/t5-v1_1-xxl" in str(info.value)


def test_missing_local_directory(tmp_path):
    missing = tmp_path / "no" / "such" / "encoder"
    with pytest.raises(TextEncoderNotFoundError, match="does not exist") as info:
        FrozenTextEncoder(str(missing), device="cpu")
    assert str(missing) in str(info.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(TextEncoderNotFoundError, match="no config.json"):
        FrozenTextEncoder(str(tmp_path / "empty"), device="cpu")


def test_local_directory_without_weights_or_tokenizer(tmp_path, tiny_t5_dir):
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    shutil.copy(tiny_t5_dir / "config.json", no_weights)
    with pytest.raises(TextEncoderNotFoundError, match="no_weights") as info:
        FrozenTextEncoder(str(no_weights), device="cpu")
    assert info.value.__cause__ is None
    no_tok = tmp_path / "no_tokenizer"
    no_tok.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_t5_dir / name, no_tok)
    with pytest.raises(TextEncoderNotFoundError, match="no tokenizer files"):
        FrozenTextEncoder(str(no_tok), device="cpu")


def test_local_encoder_id_follows_config(tmp_path, tiny_t5_dir):
    copy = tmp_path / tiny_t5_dir.name
    shutil.copytree(tiny_t5_dir, copy)
    assert resolve_text_encoder(str(copy)).encoder_id == resolve_text_encoder(str(tiny_t5_dir)).encoder_id
    config = (copy / "config.json").read_text().replace('"num_layers": 2', '"num_layers": 1')
    (copy / "config.json").write_text(config)
    assert resolve_text_encoder(str(copy)).encoder_id != resolve_text_encoder(str(tiny_t5_dir)).encoder_id
    hub = resolve_text_encoder("google/t5-v1_1-xxl")
    assert hub.encoder_id == "google/t5-v1_1-xxl" and not hub.local


def test_embeddings_do_not_depend_on_the_other_texts_of_the_batch():
    """Texts are padded to max_length inside the encoder, so a text's embedding is bit-identical
    whatever it is batched with (the cache and batch-independent sampling rely on this)."""
    from imagen_ref.text_encoder import FrozenTextEncoder
    enc = FrozenTextEncoder("minilm-l6", max_length=24, device="cpu")
    texts = ["a red circle", "two blue squares to the left of a much longer green triangle", "x"]
    batch, bmask = enc.encode(texts, fixed_length=True)
    assert batch.shape == (3, 24, enc.dim)
    for i, text in enumerate(texts):
        alone, amask = enc.encode([text], fixed_length=True)
        assert torch.equal(alone[0], batch[i]) and torch.equal(amask[0], bmask[i])
    short, smask = enc.encode(texts)
    assert short.shape[1] == int(bmask.sum(1).max()) and torch.equal(short, batch[:, : short.shape[1]])
