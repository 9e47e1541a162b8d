"""3AM's data side: WordNet offline, word-sense disambiguation, caption ambiguity scores and selection."""
