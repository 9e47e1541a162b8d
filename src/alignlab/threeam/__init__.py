"""3AM end to end: ambiguity-aware data selection (:mod:`alignlab.ambiguity`) feeding multimodal
translation (:mod:`alignlab.mmt`).

The two method areas do not import each other; this package sits above both and holds what needs
them together: the headline-claim experiment (``alignlab experiment 3am``) and the demo stage.
"""
