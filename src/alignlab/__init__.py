"""alignlab: aligning vision and language models, and the data that trains them."""

__version__ = "0.1.0"
