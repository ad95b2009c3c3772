"""prunegym.search: the Optuna study over the same per-group decisions as the agent (the baseline it must beat),
its samplers, storages, records, trial selection and plots; and ``compare`` across agent and Optuna runs."""
