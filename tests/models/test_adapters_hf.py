"""Hugging Face adapters on tiny random-weight CLIP / SigLIP / BLIP models saved to a temp folder.

Each model is built from its config (hidden size 32, 2 layers, image size 30, patch 6, a 24-word vocab
with the special tokens inside it), saved with ``save_pretrained`` next to a processor built offline
(a word-level ``tokenizers`` tokenizer + the model family's PIL image processor) and loaded back through
``load_model("hf:<folder>")``. The adapter's scores are compared with the model's own forward pass.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers", reason="the hf extra (transformers) is not installed")

from alignlab.core.errors import ConfigError, DataError, DependencyError, ModelError  # noqa: E402
from alignlab.models.adapters import add_model_arguments, download_allowed, model_options  # noqa: E402
from alignlab.models.cache import CachedEncoder  # noqa: E402
from alignlab.models.factory import load_model  # noqa: E402

WORDS = [
    "a",
    "the",
    "red",
    "blue",
    "green",
    "yellow",
    "circle",
    "square",
    "triangle",
    "star",
    "left",
    "right",
    "of",
    "above",
    "below",
    "and",
    "is",
    "not",
    "big",
    "small",
    "one",
    "two",
]
VOCAB = {"[PAD]": 0, "[UNK]": 1, "[BOS]": 2, "[EOS]": 3, **{w: i + 4 for i, w in enumerate(WORDS)}}
TEXTS = [
    "a red circle",
    "a blue square left of a big green triangle",
    "two small stars",
    "the yellow star is not above the circle",
    "one big square",
    "a red circle",
]
VISION = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    image_size=30,
    patch_size=6,
)
TEXT = dict(
    vocab_size=len(VOCAB),
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    max_position_embeddings=16,
    bos_token_id=2,
    eos_token_id=3,
    pad_token_id=0,
)


def _tokenizer(template: str):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    tok = Tokenizer(models.WordLevel(VOCAB, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(
        single=template, special_tokens=[("[BOS]", 2), ("[EOS]", 3)]
    )
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="[BOS]",
        eos_token="[EOS]",
        pad_token="[PAD]",
        unk_token="[UNK]",
        model_max_length=16,
    )


def _image_processor(name: str, **kw):
    # The PIL backends need no torchvision (which does not import beside this torch).
    cls = getattr(transformers, f"{name}Pil", None) or getattr(transformers, name)
    return cls(**kw)


def _build(root: Path) -> dict[str, Path]:
    torch.manual_seed(0)
    dirs = {k: root / k for k in ("clip", "siglip", "blip")}
    clip = transformers.CLIPModel(
        transformers.CLIPConfig(text_config=TEXT, vision_config=VISION, projection_dim=16)
    )
    clip.save_pretrained(dirs["clip"])
    transformers.CLIPProcessor(
        image_processor=_image_processor(
            "CLIPImageProcessor", size={"shortest_edge": 30}, crop_size={"height": 30, "width": 30}
        ),
        tokenizer=_tokenizer("[BOS] $A [EOS]"),
    ).save_pretrained(dirs["clip"])

    siglip = transformers.SiglipModel(transformers.SiglipConfig(text_config=TEXT, vision_config=VISION))
    with torch.no_grad():  # non-trivial scale and bias, so that the test can tell them apart
        siglip.logit_scale.fill_(math.log(10.0))
        siglip.logit_bias.fill_(-2.5)
    siglip.save_pretrained(dirs["siglip"])
    transformers.SiglipProcessor(
        image_processor=_image_processor("SiglipImageProcessor", size={"height": 30, "width": 30}),
        tokenizer=_tokenizer("$A [EOS]"),
    ).save_pretrained(dirs["siglip"])

    # A larger init spreads the random ITM scores apart (the default 0.02 makes them all ~equal).
    blip = transformers.BlipForImageTextRetrieval(
        transformers.BlipConfig(
            text_config={**TEXT, "sep_token_id": 3, "encoder_hidden_size": 32, "initializer_range": 0.2},
            vision_config={**VISION, "initializer_range": 0.2},
            image_text_hidden_size=16,
            initializer_range=0.2,
        )
    )
    blip.save_pretrained(dirs["blip"])
    transformers.BlipProcessor(
        image_processor=_image_processor("BlipImageProcessor", size={"height": 30, "width": 30}),
        tokenizer=_tokenizer("[BOS] $A [EOS]"),
    ).save_pretrained(dirs["blip"])
    return dirs


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory) -> dict[str, Path]:
    return _build(tmp_path_factory.mktemp("tiny_hf"))


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    imgs = torch.randint(0, 256, (5, 3, 40, 52), generator=g, dtype=torch.uint8)
    imgs[1, 0] = 255  # a strongly red image and a dark one, for some spread between rows
    imgs[2] //= 8
    return imgs


def _pil(images: torch.Tensor):
    from PIL import Image

    return [Image.fromarray(a.permute(1, 2, 0).numpy()) for a in images]


def _reference(folder: Path):
    """The model and processor loaded with transformers alone."""
    cls = {"clip": "CLIPModel", "siglip": "SiglipModel", "blip": "BlipForImageTextRetrieval"}[folder.name]
    model = getattr(transformers, cls).from_pretrained(folder)
    return model.eval(), transformers.AutoProcessor.from_pretrained(folder)


# --- scores equal the model's own forward ------------------------------------------------------------


def test_clip_scores_equal_clip_logits_per_image(tiny_dirs, images):
    adapter = load_model(f"hf:{tiny_dirs['clip']}")
    model, proc = _reference(tiny_dirs["clip"])
    with torch.no_grad():
        ref = model(
            **proc(text=TEXTS, images=_pil(images), return_tensors="pt", padding=True)
        ).logits_per_image
    got = adapter.score(images, TEXTS)
    assert adapter.score_semantics == "cosine" and adapter.is_dual
    assert adapter.score_scale == pytest.approx(float(model.logit_scale.detach().exp()))
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    # PIL input and aligned pairs give the same numbers.
    torch.testing.assert_close(adapter.score(_pil(images), TEXTS), got)
    torch.testing.assert_close(
        adapter.score_pairs(images, TEXTS[:5]), torch.diagonal(got[:, :5]), atol=1e-5, rtol=1e-5
    )
    assert got.std() > 0.01  # the test would be empty if every score were equal


def test_siglip_score_is_its_sigmoid_logit_scale_cos_plus_bias(tiny_dirs, images):
    adapter = load_model(f"hf:{tiny_dirs['siglip']}")
    model, proc = _reference(tiny_dirs["siglip"])
    inputs = proc(text=TEXTS, images=_pil(images), return_tensors="pt", padding="max_length")
    with torch.no_grad():  # as SigLIP was trained: max-length padding, no attention mask
        ref = model(input_ids=inputs["input_ids"], pixel_values=inputs["pixel_values"]).logits_per_image
    got = adapter.score(images, TEXTS)
    assert adapter.score_semantics == "logit"
    assert adapter.score_scale == pytest.approx(10.0, rel=1e-5)
    assert adapter.score_bias == pytest.approx(-2.5)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    cos = adapter.encode_images(images) @ adapter.encode_texts(TEXTS).T
    torch.testing.assert_close(got, 10.0 * cos - 2.5, atol=1e-4, rtol=1e-5)


def _blip_pair_forward(model, proc, images, texts, use_itm_head=True):
    n, m = len(images), len(texts)
    pil = _pil(images)
    rows = []
    with torch.no_grad():
        for i in range(n):
            inputs = proc(text=texts, images=[pil[i]] * m, return_tensors="pt", padding=True)
            out = model(
                input_ids=inputs["input_ids"],
                pixel_values=inputs["pixel_values"],
                attention_mask=inputs["attention_mask"],
                use_itm_head=use_itm_head,
            ).itm_score
            rows.append(out)
    return torch.stack(rows)  # [n, m, 2]


def test_blip_itm_score_is_the_itm_head_match_probability(tiny_dirs, images):
    adapter = load_model(f"hf:{tiny_dirs['blip']}", pair_batch_size=7)  # odd chunk: rows split across passes
    model, proc = _reference(tiny_dirs["blip"])
    logits = _blip_pair_forward(model, proc, images, TEXTS)
    got = adapter.score(images, TEXTS)
    assert adapter.score_semantics == "itm_probability" and not adapter.is_dual
    torch.testing.assert_close(got, logits.softmax(-1)[..., 1], atol=1e-5, rtol=1e-5)
    assert float(got.min()) >= 0.0 and float(got.max()) <= 1.0 and got.std() > 1e-3
    torch.testing.assert_close(
        adapter.score_pairs(images, TEXTS[:5]), torch.diagonal(got[:, :5]), atol=1e-5, rtol=1e-5
    )
    as_logit = load_model(f"hf:{tiny_dirs['blip']}#itm-logit")
    assert as_logit.score_semantics == "logit"
    torch.testing.assert_close(
        as_logit.score(images, TEXTS), torch.logit(got.double()).float(), atol=1e-4, rtol=1e-4
    )


def test_blip_itc_mode_equals_forward_without_itm_head(tiny_dirs, images):
    adapter = load_model(f"hf:{tiny_dirs['blip']}#itc")
    model, proc = _reference(tiny_dirs["blip"])
    with torch.no_grad():
        inputs = proc(text=TEXTS, images=_pil(images), return_tensors="pt", padding=True)
        ref = model(**inputs, use_itm_head=False).itm_score
    assert adapter.is_dual and adapter.score_semantics == "cosine" and adapter.score_scale == 1.0
    torch.testing.assert_close(adapter.score(images, TEXTS), ref, atol=1e-5, rtol=1e-5)
    same = load_model(f"hf:{tiny_dirs['blip']}", mode="itc")
    torch.testing.assert_close(same.encode_texts(TEXTS), adapter.encode_texts(TEXTS))
    assert same.identity == adapter.identity
    assert adapter.identity != load_model(f"hf:{tiny_dirs['blip']}").identity


def test_batch_size_does_not_change_embeddings(tiny_dirs, images):
    big = load_model(f"hf:{tiny_dirs['clip']}", batch_size=64)
    small = load_model(f"hf:{tiny_dirs['clip']}", batch_size=2)
    torch.testing.assert_close(small.encode_images(images), big.encode_images(images), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(small.encode_texts(TEXTS), big.encode_texts(TEXTS), atol=1e-5, rtol=1e-5)
    assert small.encode_texts([]).shape == (0, 16)
    long = " ".join(["a big red circle left of a small blue square"] * 4)  # 40 words > 16 positions
    assert small.tokenize([long])["input_ids"].shape == (1, 16)  # truncated to the model's length
    torch.testing.assert_close(small.encode_texts([long]), small.encode_texts([" ".join(long.split()[:14])]))


def test_dual_adapter_embeddings_are_differentiable_for_training(tiny_dirs, images):
    adapter = load_model(f"hf:{tiny_dirs['clip']}")
    img = adapter.embed_images(adapter.preprocess_images(images[:2]))
    txt = adapter.embed_texts(adapter.tokenize(TEXTS[:2]))
    (img @ txt.T).diagonal().sum().backward()
    grads = [p.grad for p in adapter.model.vision_model.parameters() if p.grad is not None]
    assert grads and any(float(g.abs().sum()) > 0 for g in grads)
    assert torch.allclose(img.norm(dim=-1), torch.ones(2), atol=1e-5)


# --- retrieval end to end ----------------------------------------------------------------------------


def test_retrieval_evaluation_end_to_end_matches_the_reference_scores(tiny_dirs, images):
    retrieval = pytest.importorskip("alignlab.retrieval")
    relevance = [[0, 5], [1], [2], [3], [4]]  # caption 5 repeats caption 0 (same image)
    clip = load_model(f"hf:{tiny_dirs['clip']}")
    model, proc = _reference(tiny_dirs["clip"])
    with torch.no_grad():
        ref = model(
            **proc(text=TEXTS, images=_pil(images), return_tensors="pt", padding=True)
        ).logits_per_image
    want = retrieval.evaluate_scores(ref, relevance)
    cached = CachedEncoder(clip)
    rep = retrieval.evaluate_embeddings(cached.encode_images(images), cached.encode_texts(TEXTS), relevance)
    assert rep.i2t_ranks.tolist() == want.i2t_ranks.tolist()
    assert rep.t2i_ranks.tolist() == want.t2i_ranks.tolist()
    assert rep.metrics == pytest.approx(want.metrics)
    assert cached.stats["text_encoded"] == 5  # the repeated caption was encoded once

    blip = load_model(f"hf:{tiny_dirs['blip']}")
    ref_itm = _blip_pair_forward(*_reference(tiny_dirs["blip"]), images, TEXTS).softmax(-1)[..., 1]
    got = retrieval.evaluate_scores(blip.score(images, TEXTS), relevance)
    want = retrieval.evaluate_scores(ref_itm, relevance)
    assert got.i2t_ranks.tolist() == want.i2t_ranks.tolist()
    assert got.t2i_ranks.tolist() == want.t2i_ranks.tolist()


# --- offline by default ------------------------------------------------------------------------------


def _fake_hub_cache(cache: Path, repo: str, src: Path) -> Path:
    """Lay ``src`` out as the hub cache does: models--org--name/{refs/main, snapshots/<commit>/...}."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    base = cache / ("models--" + repo.replace("/", "--"))
    snap = base / "snapshots" / commit
    shutil.copytree(src, snap)
    (base / "refs").mkdir(parents=True)
    (base / "refs" / "main").write_text(commit)
    return snap


def test_hub_id_without_opt_in_fails_clearly_and_touches_nothing(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(
        transformers.AutoConfig,
        "from_pretrained",
        classmethod(lambda cls, *a, **k: calls.append(a) or (_ for _ in ()).throw(AssertionError)),
    )
    with pytest.raises(DependencyError) as e:  # the conftest also fails any socket connection
        load_model("hf:someorg/not-downloaded-clip", cache_dir=str(tmp_path))
    msg = str(e.value)
    assert "not in the local Hugging Face cache" in msg and "downloads are off" in msg
    assert "hf download someorg/not-downloaded-clip" in msg and "--allow-download" in msg
    assert calls == []  # refused before transformers was even asked


def test_download_opt_in_comes_from_argument_or_environment(monkeypatch):
    monkeypatch.delenv("ALIGNLAB_ALLOW_DOWNLOAD", raising=False)
    assert download_allowed() is False and download_allowed(True) is True
    monkeypatch.setenv("ALIGNLAB_ALLOW_DOWNLOAD", "1")
    assert download_allowed() is True and download_allowed(False) is False


def test_opted_in_download_that_cannot_happen_is_a_clear_error(tmp_path, monkeypatch):
    # The test session is in HF offline mode, so the opted-in fetch fails inside huggingface_hub.
    with pytest.raises(DependencyError) as e:
        load_model("hf:someorg/not-downloaded-clip", allow_download=True, cache_dir=str(tmp_path))
    assert "someorg/not-downloaded-clip" in str(e.value)


def test_hub_id_in_the_local_cache_loads_offline(tiny_dirs, tmp_path, images):
    _fake_hub_cache(tmp_path, "alignlab/tiny-clip", tiny_dirs["clip"])
    from_hub = load_model("hf:alignlab/tiny-clip", cache_dir=str(tmp_path))
    from_dir = load_model(f"hf:{tiny_dirs['clip']}")
    torch.testing.assert_close(from_hub.score(images, TEXTS), from_dir.score(images, TEXTS))
    assert from_hub.describe()["source"]["hub_id"] == "alignlab/tiny-clip"
    assert from_hub.name == "hf:alignlab/tiny-clip"
    with pytest.raises(DependencyError):  # another revision is not cached
        load_model("hf:alignlab/tiny-clip@v2", cache_dir=str(tmp_path))


# --- bad input ---------------------------------------------------------------------------------------


def test_unsupported_model_type_names_the_supported_ones(tmp_path):
    transformers.BertConfig(
        vocab_size=30, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    ).save_pretrained(tmp_path)
    with pytest.raises(ModelError) as e:
        load_model(f"hf:{tmp_path}")
    msg = str(e.value)
    assert "unsupported model type 'bert'" in msg
    for cls in ("CLIPModel", "SiglipModel", "BlipForImageTextRetrieval"):
        assert cls in msg


def test_blip_without_an_itm_head_is_refused(tiny_dirs, tmp_path):
    folder = tmp_path / "blip_caption"
    shutil.copytree(tiny_dirs["blip"], folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["architectures"] = ["BlipForConditionalGeneration"]
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelError, match="no image–text matching head"):
        load_model(f"hf:{folder}")


def test_folder_without_processor_says_how_to_add_it(tiny_dirs, tmp_path):
    folder = tmp_path / "clip_no_proc"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_dirs["clip"] / name, folder / name)
    with pytest.raises(ModelError, match="processor"):
        load_model(f"hf:{folder}")


def test_bad_modes_options_and_devices_are_config_errors(tiny_dirs):
    with pytest.raises(ConfigError, match="does not apply"):
        load_model(f"hf:{tiny_dirs['clip']}#itc")
    with pytest.raises(ConfigError, match="contradicts"):
        load_model(f"hf:{tiny_dirs['blip']}#itc", mode="itm")
    with pytest.raises(ConfigError, match="max_text_length"):
        load_model(f"hf:{tiny_dirs['clip']}", max_text_length=100)
    with pytest.raises(ConfigError, match="unknown option"):
        load_model(f"hf:{tiny_dirs['clip']}", batchsize=4)
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        load_model(f"hf:{tiny_dirs['clip']}", fp16=True, device="cpu")
    with pytest.raises(ConfigError, match="CUDA"):  # the conftest hides any GPU
        load_model(f"hf:{tiny_dirs['clip']}", device="cuda")
    with pytest.raises(ModelError, match="folder not found"):
        load_model("hf:./no/such/folder")


def test_bad_images_and_texts_are_clear_errors(tiny_dirs, images):
    adapter = load_model(f"hf:{tiny_dirs['clip']}")
    with pytest.raises(DataError, match="uint8"):
        adapter.encode_images(images.float() / 255)
    with pytest.raises(DataError, match=r"\[B, 3, H, W\]"):
        adapter.encode_images(images[:, :1])
    with pytest.raises(ModelError, match="single string"):
        adapter.encode_texts("a red circle")
    arr = images.permute(0, 2, 3, 1).numpy()
    torch.testing.assert_close(
        adapter.encode_images(np.ascontiguousarray(arr)), adapter.encode_images(images)
    )


def test_cli_flags_become_load_options():
    import argparse

    p = argparse.ArgumentParser()
    add_model_arguments(p)
    assert model_options(p.parse_args([])) == {"device": "cpu"}  # every command defaults to the CPU
    opts = model_options(
        p.parse_args(["--device", "cpu", "--allow-download", "--fp16", "--model-batch-size", "8"])
    )
    assert opts == {"device": "cpu", "allow_download": True, "fp16": True, "batch_size": 8}


# --- real files: natural-size images and the command line -------------------------------------------


def _karpathy_folder(root: Path, sizes: list[tuple[int, int]]) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    entries = []
    for i, (h, w) in enumerate(sizes):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / f"img{i}.png")
        entries.append(
            {
                "filename": f"img{i}.png",
                "split": "test",
                "sentences": [{"raw": TEXTS[i]}, {"raw": TEXTS[i] + " and a star"}],
            }
        )
    (root / "dataset.json").write_text(json.dumps({"images": entries}))
    return root / "dataset.json"


def test_photos_of_different_sizes_reach_the_model_at_their_own_size(tiny_dirs, tmp_path):
    from alignlab.data.pairs import load_pairs
    from alignlab.models.adapters import load_images_for
    from alignlab.retrieval import evaluate_embeddings, evaluate_scores

    pairs = load_pairs(_karpathy_folder(tmp_path, [(40, 50), (52, 36), (30, 30), (64, 45)]))
    clip = load_model(f"hf:{tiny_dirs['clip']}")
    imgs = load_images_for(clip, pairs, range(pairs.n_images))
    assert [im.size for im in imgs] == [(50, 40), (36, 52), (30, 30), (45, 64)]  # PIL, not squashed
    model, proc = _reference(tiny_dirs["clip"])
    with torch.no_grad():
        ref = model(
            **proc(text=pairs.captions, images=imgs, return_tensors="pt", padding=True)
        ).logits_per_image
    rep = evaluate_embeddings(clip.encode_images(imgs), clip.encode_texts(pairs.captions), pairs.relevance)
    want = evaluate_scores(ref, pairs.relevance)
    assert (
        rep.i2t_ranks.tolist() == want.i2t_ranks.tolist()
        and rep.t2i_ranks.tolist() == want.t2i_ranks.tolist()
    )
    tiny = load_model("tiny-dual", config={"width": 32, "embed_dim": 16, "image_size": 32})
    assert load_images_for(tiny, pairs.materialize(32), [0, 1]).shape == (2, 3, 32, 32)


def test_eval_retrieval_command_runs_an_hf_model_offline(tiny_dirs, tmp_path):
    from alignlab.cli import main

    data = _karpathy_folder(tmp_path, [(30, 30)] * 5)
    out = tmp_path / "res.json"
    rc = main(
        [
            "eval",
            "retrieval",
            "--model",
            f"hf:{tiny_dirs['clip']}",
            "--data",
            str(data),
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["model"] == f"hf:{tiny_dirs['clip']}" and "i2t_R@1" in res["metrics"]
    # A hub id that is not cached: the one-line error and exit status 2, no network.
    assert (
        main(["eval", "retrieval", "--model", "hf:someorg/missing-clip", "--data", str(data), "--quiet"]) == 2
    )


@pytest.mark.parametrize("kind", ["clip", "blip"])
def test_probe_build_and_eval_run_end_to_end_on_an_hf_model(kind, tiny_dirs, tmp_path):
    """SNARE probes through `hf:<dir>`: the harness's per-item scores are the adapter's own scores."""
    from PIL import Image

    from alignlab.cli import main
    from alignlab.models.factory import load_model

    items = tmp_path / "items"
    assert (
        main(
            [
                "probe",
                "build",
                "--source",
                "shapes",
                "--out",
                str(items),
                "--items-per-category",
                "2",
                "--tasks",
                "negation,attribute_ownership",
                "--quiet",
            ]
        )
        == 0
    )
    out = tmp_path / "eval"
    assert (
        main(
            [
                "probe",
                "eval",
                "--items",
                str(items),
                "--model",
                f"hf:{tiny_dirs[kind]}",
                "--out",
                str(out),
                "--baselines",
                "none",
                "--bootstrap",
                "100",
                "--no-plots",
                "--quiet",
            ]
        )
        == 0
    )
    res = json.loads((out / "results.json").read_text())
    assert 0.0 <= res["metrics"]["negation_acc_pct"] <= 100.0
    records = [json.loads(line) for line in (items / "items.jsonl").read_text().splitlines()]
    per_item = {r["id"]: r for r in map(json.loads, (out / "per_item.jsonl").read_text().splitlines())}
    assert set(per_item) == {r["id"] for r in records}
    model = load_model(f"hf:{tiny_dirs[kind]}")
    for rec in records[:3]:
        imgs = [Image.open(items / p).convert("RGB") for p in rec["images"]]
        direct = model.score(imgs, rec["options"]).double()
        assert torch.allclose(
            torch.tensor(per_item[rec["id"]]["scores"], dtype=torch.float64), direct, atol=1e-5
        )


# --- the training contract (models/base.py) ------------------------------------------------------------


def test_blip_itm_fusion_contract_equals_its_itm_logit_scores(tiny_dirs, images):
    """image_states/text_states/fuse_grid give the ITM logit l_yes - l_no of every pair, with gradients."""
    adapter = load_model(f"hf:{tiny_dirs['blip']}", mode="itm-logit")
    want = adapter.score(images, TEXTS)
    img = adapter.image_states(adapter.preprocess_images(images))
    txt = adapter.text_states(adapter.tokenize(TEXTS))
    assert len(img) == 5 and len(txt) == len(TEXTS) and img.pooled is not None
    torch.testing.assert_close(adapter.fuse_grid(img, txt).detach(), want, atol=1e-5, rtol=1e-5)
    adapter.pair_batch_size = 4  # chunks of 4 pairs: the same grid
    torch.testing.assert_close(adapter.fuse_grid(img, txt).detach(), want, atol=1e-5, rtol=1e-5)
    # Aligned rows (image 2 with text 3, image 0 with text 1) through select, and gradients reach both towers.
    pairs = adapter.fuse_pairs(img.select([2, 0]), txt.select([3, 1], trim=True))
    torch.testing.assert_close(pairs.detach(), torch.stack([want[2, 3], want[0, 1]]), atol=1e-5, rtol=1e-5)
    pairs.sum().backward()
    grads = [p.grad for p in adapter.image_encoder().parameters()] + [
        p.grad for p in adapter.model.itm_head.parameters()
    ]
    assert all(g is not None for g in grads) and any(float(g.abs().sum()) > 0 for g in grads)


def test_clip_dual_contract_pieces_equal_the_scorer(tiny_dirs, images):
    adapter = load_model(f"hf:{tiny_dirs['clip']}")
    pixels = adapter.preprocess_images(images)
    emb = adapter.project_images(adapter.image_features(pixels))
    torch.testing.assert_close(emb.detach(), adapter.encode_images(images), atol=1e-6, rtol=1e-6)
    txt = adapter.embed_texts(adapter.tokenize(TEXTS))
    torch.testing.assert_close(txt.detach(), adapter.encode_texts(TEXTS), atol=1e-6, rtol=1e-6)
    scale, bias = adapter.logit_params()
    assert (
        bias is None and scale.requires_grad and float(scale.detach()) == pytest.approx(adapter.score_scale)
    )
    # Freezing the towers leaves the projections and the scale trainable.
    adapter.set_encoders_trainable(False)
    frozen = {id(p) for p in adapter.encoder_parameters()}
    assert frozen and all(not p.requires_grad for p in adapter.encoder_parameters())
    rest = [p for p in adapter.model.parameters() if id(p) not in frozen]
    assert rest and all(p.requires_grad for p in rest)
    assert adapter.model.logit_scale.requires_grad and adapter.model.visual_projection.weight.requires_grad
    adapter.set_encoders_trainable(True)
    assert all(p.requires_grad for p in adapter.model.parameters())


def test_siglip_logit_params_carry_its_bias(tiny_dirs, images):
    adapter = load_model(f"hf:{tiny_dirs['siglip']}")
    scale, bias = adapter.logit_params()
    img = adapter.embed_images(adapter.preprocess_images(images))
    txt = adapter.embed_texts(adapter.tokenize(TEXTS))
    torch.testing.assert_close(
        (scale * img @ txt.T + bias).detach(), adapter.score(images, TEXTS), atol=1e-5, rtol=1e-5
    )
