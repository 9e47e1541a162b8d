"""Knowledge distillation: DCD for image–text retrieval (:mod:`alignlab.distill.dcd`) and PESF-KD
(:mod:`alignlab.distill.pesf`), with the classic baselines in :mod:`alignlab.distill.kd`."""
