"""Training: :func:`alignlab.train.loop.fit` (exact resume, dev-metric model selection) and contrastive
losses."""
