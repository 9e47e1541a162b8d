"""A synthetic multi-task instruction set for testing CommonIT without downloads.

Six tasks whose answers differ in form and length, each with three short instruction paraphrases
(Alpaca format: ``instruction`` + ``input`` -> ``output``, with the task name in ``task``). Words use the
letters ``a``–``h`` only, which keeps the tasks learnable by a tiny model in minutes on a CPU.

=========  ==========================  ==================================  ============
task       one of the instructions     input -> output                     answer chars
=========  ==========================  ==================================  ============
add        Add the numbers.            ``47 8`` -> ``55`` (operands < 100)  1-3
reverse    Reverse the word.           ``bhdh`` -> ``hdhb`` (3-5 letters)   3-5
sort       Sort the letters.           ``dbca`` -> ``abcd``                 3-5
count      Count the vowels.           ``badge`` -> ``2`` (a and e)         1
copy       Repeat the text.            ``ab hcd`` -> ``ab hcd`` (2-3 words) 5-11
date       Rewrite as DD/MM/YYYY.      ``2041-07-22`` -> ``22/07/2041``     10
=========  ==========================  ==================================  ============

Every example is a pure function of ``(seed, split, i)``, so the same call gives the same data
everywhere, and train/test splits never share a generator stream.

>>> ex = generate(6, seed=0, split="train")
>>> sorted({e["task"] for e in ex}) == sorted(TASKS)
True
>>> ex[0] == generate(1, seed=0, split="train")[0]
True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from alignlab.core.seed import derive_seed

TASKS = ("add", "reverse", "sort", "count", "copy", "date")

# Short paraphrases: they keep sequences short (training cost) and still say what the task is.
TEMPLATES: dict[str, tuple[str, ...]] = {
    "add": ("Add the numbers.", "Sum them up.", "What is the total?"),
    "reverse": ("Reverse the word.", "Write it backwards.", "Spell it in reverse."),
    "sort": ("Sort the letters.", "Alphabetize it.", "Order the letters a-z."),
    "count": ("Count the vowels.", "How many vowels?", "Number of vowels?"),
    "copy": ("Repeat the text.", "Copy it exactly.", "Echo the input."),
    "date": ("Rewrite as DD/MM/YYYY.", "Convert the date format.", "Give the date day-first."),
}

# A small alphabet keeps the tasks learnable by a tiny model in minutes on a CPU.
LETTERS = "abcdefgh"
_VOWELS = set("aeiou")


def _word(rng: np.random.Generator, lo: int, hi: int) -> str:
    return "".join(rng.choice(list(LETTERS), size=int(rng.integers(lo, hi + 1))))


def make_example(task: str, rng: np.random.Generator) -> dict[str, Any]:
    """One record of ``task`` drawn with ``rng``."""
    if task == "add":
        a, b = (int(rng.integers(0, 10 ** int(rng.integers(1, 3)))) for _ in range(2))
        inp, out = f"{a} {b}", str(a + b)
    elif task == "reverse":
        w = _word(rng, 3, 5)
        inp, out = w, w[::-1]
    elif task == "sort":
        w = _word(rng, 3, 5)
        inp, out = w, "".join(sorted(w))
    elif task == "count":
        w = _word(rng, 3, 6)
        inp, out = w, str(sum(c in _VOWELS for c in w))
    elif task == "copy":
        inp = " ".join(_word(rng, 2, 3) for _ in range(int(rng.integers(2, 4))))
        out = inp
    elif task == "date":
        y, m, d = int(rng.integers(1950, 2050)), int(rng.integers(1, 13)), int(rng.integers(1, 29))
        inp, out = f"{y:04d}-{m:02d}-{d:02d}", f"{d:02d}/{m:02d}/{y:04d}"
    else:
        raise ValueError(f"unknown task {task!r}")
    instruction = TEMPLATES[task][int(rng.integers(len(TEMPLATES[task])))]
    return {"instruction": instruction, "input": inp, "output": out, "task": task}


def generate(
    n: int,
    seed: int = 0,
    split: str = "train",
    tasks: Sequence[str] = TASKS,
    weights: Sequence[float] | None = None,
) -> list[dict[str, Any]]:
    """``n`` records; example ``i`` has task ``tasks[i % len(tasks)]`` unless ``weights`` are given.

    With ``weights`` (relative task frequencies) the task of example ``i`` is drawn from them, which
    makes groups of unequal size (as in real instruction mixtures).
    """
    for t in tasks:
        if t not in TEMPLATES:
            raise ValueError(f"unknown task {t!r}; tasks: {', '.join(TASKS)}")
    p = None
    if weights is not None:
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != (len(tasks),) or (w < 0).any() or w.sum() <= 0:
            raise ValueError("weights must be one non-negative number per task")
        p = w / w.sum()
    out = []
    for i in range(n):
        rng = np.random.default_rng(derive_seed("commonit-tasks", seed, split, i))
        task = tasks[i % len(tasks)] if p is None else tasks[int(rng.choice(len(tasks), p=p))]
        out.append(make_example(task, rng))
    return out
