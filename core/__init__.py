"""prunegym.core: the shared kernel (cli, config, model zoo, data, pruning, stats, train/eval loops)."""

__version__ = "0.1.0"
