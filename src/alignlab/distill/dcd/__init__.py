"""DCD: dynamic contrastive distillation for image–text retrieval (Rao et al., IEEE TMM 2023).

A cross-encoder teacher mines hard negatives for a fast student and its scores are distilled with
per-sample difficulty weights. Modules:

* :mod:`~alignlab.distill.dcd.data` — near-duplicate ShapesWorld sets and group-aware batches;
* :mod:`~alignlab.distill.dcd.miner` — candidate pools, teacher mining, cached teacher scores;
* :mod:`~alignlab.distill.dcd.loss` — the DCD loss (dynamic weights, released-code mode);
* :mod:`~alignlab.distill.dcd.baselines` — in-batch relation KD, feature MSE;
* :mod:`~alignlab.distill.dcd.students` — teacher loading, dual and shallow-cross students, compatibility;
* :mod:`~alignlab.distill.dcd.train` — teacher training, the DCD task for ``fit``, whole runs, named arms;
* :mod:`~alignlab.distill.dcd.bench` — full-ranking speed of teacher vs students;
* :mod:`~alignlab.distill.dcd.experiment` / :mod:`~alignlab.distill.dcd.demo` — the claim experiment, the demo
  stage.

See docs/dcd.md.
"""
