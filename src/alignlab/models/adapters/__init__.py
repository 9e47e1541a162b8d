"""Real models behind the scorer contract: ``load_model("hf:...")`` and ``load_model("open_clip:...")``.

Importing this package is cheap: it registers the two model sources in
:data:`alignlab.models.factory.SOURCES` and imports transformers / open_clip only when a model is loaded.

=================================================== ====================== ================================
spec                                                what                   ``score_semantics``
=================================================== ====================== ================================
``hf:<hub id or folder>`` (a CLIPModel)             dual encoder           ``cosine`` (× exp(logit_scale))
``hf:<hub id or folder>`` (a SiglipModel)           dual encoder           ``logit`` (scale·cos + bias)
``hf:<...blip-itm...>`` / ``#itm``                  BLIP ITM cross encoder ``itm_probability``
``hf:<...blip-itm...>#itm-logit``                   BLIP ITM cross encoder ``logit`` (log-odds of match)
``hf:<...blip-itm...>#itc``                         BLIP ITC dual encoder  ``cosine``
``open_clip:<arch>@<tag or weights file>``          dual encoder           ``cosine`` (``logit`` w/ bias)
``open_clip:hf-hub:<repo>``                         dual encoder           as above
=================================================== ====================== ================================

Keyword options (``load_model(spec, **options)``): ``device`` (``cpu|cuda|mps|auto``),
``allow_download`` (default: the ``ALIGNLAB_ALLOW_DOWNLOAD`` environment variable; off), ``fp16`` (CUDA
only), ``batch_size``; for ``hf:`` also ``mode``, ``pair_batch_size``, ``max_text_length``, ``cache_dir``,
``revision``. A CLI adds the matching flags with :func:`add_model_arguments` and turns them into
options with :func:`model_options`.

>>> import argparse
>>> p = argparse.ArgumentParser()
>>> add_model_arguments(p)
>>> model_options(p.parse_args(["--device", "cpu", "--allow-download"]))
{'device': 'cpu', 'allow_download': True}
"""

from __future__ import annotations

import argparse
from typing import Any

from alignlab.core.cliargs import add_device
from alignlab.models.adapters.common import (
    ALLOW_DOWNLOAD_ENV,
    download_allowed,
    no_downloads,
    to_pil_list,
)
from alignlab.models.adapters.hf import (
    HFAdapter,
    HFBlipITC,
    HFBlipITM,
    HFClip,
    HFDualEncoder,
    HFSiglip,
    load_hf,
)
from alignlab.models.adapters.openclip import OpenClipDual, load_open_clip
from alignlab.models.base import load_images_for, resolve_device
from alignlab.models.factory import SOURCES

if "hf" not in SOURCES:
    SOURCES.register("hf", load_hf)
if "open_clip" not in SOURCES:
    SOURCES.register("open_clip", load_open_clip)


def add_model_arguments(
    parser: argparse.ArgumentParser,
    *,
    fp16: bool = True,
    batch_size: bool = True,
    device_default: str = "cpu",
) -> None:
    """Add ``--device``, ``--allow-download`` (and ``--fp16``, ``--model-batch-size``) for commands that load
    models. The device defaults to the CPU like every other command (``auto`` = cuda, then mps, then cpu)."""
    add_device(parser, default=device_default, note="where the model runs")
    parser.add_argument(
        "--allow-download",
        action="store_true",
        help=f"let hf:/open_clip: models download from the hub when not cached "
        f"(same as {ALLOW_DOWNLOAD_ENV}=1); off by default",
    )
    if fp16:
        parser.add_argument("--fp16", action="store_true", help="half precision on CUDA (real models only)")
    if batch_size:
        parser.add_argument(
            "--model-batch-size",
            type=int,
            default=None,
            metavar="N",
            help="images or texts per forward pass of a real model (default 64)",
        )


def model_options(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword options for :func:`~alignlab.models.factory.load_model` from :func:`add_model_arguments` flags.

    Only options that were set are returned, so the result also suits the tiny models.
    """
    opts: dict[str, Any] = {"device": getattr(args, "device", "cpu") or "cpu"}
    if getattr(args, "allow_download", False):
        opts["allow_download"] = True
    if getattr(args, "fp16", False):
        opts["fp16"] = True
    if getattr(args, "model_batch_size", None):
        opts["batch_size"] = int(args.model_batch_size)
    return opts


__all__ = [
    "ALLOW_DOWNLOAD_ENV",
    "HFAdapter",
    "HFBlipITC",
    "HFBlipITM",
    "HFClip",
    "HFDualEncoder",
    "HFSiglip",
    "OpenClipDual",
    "add_model_arguments",
    "download_allowed",
    "load_images_for",
    "load_hf",
    "load_open_clip",
    "model_options",
    "no_downloads",
    "resolve_device",
    "to_pil_list",
]
