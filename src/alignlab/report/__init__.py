"""Reports: results JSON -> Markdown and PNG plots (:func:`alignlab.report.render.render`)."""
