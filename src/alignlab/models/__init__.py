"""Models behind one scorer contract (:mod:`alignlab.models.base`): tiny built-in models and adapters for
real ones, built by :func:`alignlab.models.factory.load_model`."""
