"""SNARE probes of image–text models: semantic structure, negation logic, attribute ownership, relationship
composition — with exact labels, blind baselines and the grounded gap.

Build once, evaluate many times:

* :mod:`alignlab.probe.items` — the frozen JSONL item format and its content hash;
* :mod:`alignlab.probe.build_shapes` — all four tasks from ShapesWorld scene graphs, every option labelled
  by the truth evaluator, with Winoground-style counterfactual image pairs;
* :mod:`alignlab.probe.aro` — items from ARO's Visual Genome relation/attribution files;
* :mod:`alignlab.probe.perturb` — token-level word-order perturbations of any caption file;
* :mod:`alignlab.probe.evaluate` — scoring through the scorer contract, ties counted wrong, bootstrap
  CIs, which distractor won, blind baselines through the same harness and the grounded gap;
* :mod:`alignlab.probe.baselines` — the blind heuristics and the sanity models (random, bag-of-words
  oracle, scene-graph oracle);
* :mod:`alignlab.probe.negatives` — compositional hard negatives (NegCLIP-style) for training.

>>> from alignlab.probe import ShapesProbeConfig, build_shapes_items
>>> items, images, stats = build_shapes_items(ShapesProbeConfig(items_per_category=1, tasks=["negation"]))
>>> [it.category for it in items]
['affirmative_true', 'negated_true']
"""

from alignlab.probe.build_shapes import ShapesProbeConfig, build_shapes_items, build_shapes_probe
from alignlab.probe.evaluate import evaluate_scorer, format_report, plot_run, run_probe
from alignlab.probe.items import TASKS, ProbeItem, ProbeSet, load_probe, write_probe

__all__ = [
    "TASKS",
    "ProbeItem",
    "ProbeSet",
    "ShapesProbeConfig",
    "build_shapes_items",
    "build_shapes_probe",
    "evaluate_scorer",
    "format_report",
    "load_probe",
    "plot_run",
    "run_probe",
    "write_probe",
]
