"""How to fit and query the models of :mod:`ppl_models`: drivers, objectives,
kernels, estimators. Nothing here knows a concrete model."""
