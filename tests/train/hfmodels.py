"""Tiny random Hugging Face models for training tests: a CLIP (dual encoder) and a BLIP ITM (cross encoder).

Each is built from its config (hidden size 32, 2 layers, patch 8 on 32-pixel images), with a word-level
fast tokenizer over the words it is given, and written with ``save_pretrained`` together with its
processor, so that ``load_model("hf:<folder>")`` loads it exactly as it would load a downloaded model.
At :data:`SIZE` pixels the image processors do not resize ShapesWorld images rendered at that size.

Callers skip when transformers is missing (``pytest.importorskip("transformers")``) before importing this.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

SIZE = 32
SPECIALS = ("[PAD]", "[UNK]", "[BOS]", "[EOS]")  # ids 0..3, in this order (the configs below name them)


def word_tokenizer(words: Iterable[str], max_length: int = 32) -> Any:
    """A lower-casing word-level tokenizer that splits on whitespace and punctuation, ``[BOS] … [EOS]``."""
    import transformers
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    vocab = {w: i for i, w in enumerate([*SPECIALS, *sorted(set(words) | {","} - set(SPECIALS))])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = processors.TemplateProcessing(
        single="[BOS] $A [EOS]", special_tokens=[("[BOS]", vocab["[BOS]"]), ("[EOS]", vocab["[EOS]"])]
    )
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="[BOS]",
        eos_token="[EOS]",
        pad_token="[PAD]",
        unk_token="[UNK]",
        model_max_length=max_length,
    )


def _processor_class(name: str) -> Any:
    import transformers

    # The Pillow-only variant where this transformers version has one (no torchvision needed).
    return getattr(transformers, f"{name}Pil", None) or getattr(transformers, name)


def _tower_configs(vocab_size: int) -> tuple[dict[str, Any], dict[str, Any]]:
    vision = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": SIZE,
        "patch_size": 8,
    }
    text = {
        "vocab_size": vocab_size,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "max_position_embeddings": 32,
        "pad_token_id": 0,
        "bos_token_id": 2,
        "eos_token_id": 3,
    }
    return vision, text


def build_clip(folder: Path, words: Iterable[str], seed: int | None = 0) -> Path:
    """A random ``CLIPModel`` with its processor, saved in ``folder`` (load it as ``hf:<folder>``).

    ``seed`` seeds torch first (None: the weights continue the current random stream)."""
    import transformers

    if seed is not None:
        torch.manual_seed(seed)
    tokenizer = word_tokenizer(words)
    vision, text = _tower_configs(len(tokenizer))
    config = transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)
    transformers.CLIPModel(config).save_pretrained(folder)
    images = _processor_class("CLIPImageProcessor")(
        size={"shortest_edge": SIZE}, crop_size={"height": SIZE, "width": SIZE}
    )
    transformers.CLIPProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(folder)
    return folder


def build_blip_itm(folder: Path, words: Iterable[str], seed: int | None = 0) -> Path:
    """A random ``BlipForImageTextRetrieval`` (its ITM head) with its processor, saved in ``folder``
    (``seed`` as in :func:`build_clip`)."""
    import transformers

    if seed is not None:
        torch.manual_seed(seed)
    tokenizer = word_tokenizer(words)
    vision, text = _tower_configs(len(tokenizer))
    # An initialisation wider than the default 0.02 keeps the random match scores apart from each other.
    config = transformers.BlipConfig(
        text_config={**text, "sep_token_id": 3, "encoder_hidden_size": 32, "initializer_range": 0.2},
        vision_config={**vision, "initializer_range": 0.2},
        image_text_hidden_size=16,
        initializer_range=0.2,
    )
    transformers.BlipForImageTextRetrieval(config).save_pretrained(folder)
    images = _processor_class("BlipImageProcessor")(size={"height": SIZE, "width": SIZE})
    transformers.BlipProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(folder)
    return folder
