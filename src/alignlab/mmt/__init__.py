"""Multimodal machine translation (English -> Chinese): model, training, congruent vs incongruent
evaluation."""
