"""prunegym.core: the kernel every layer builds on (errors, io, configs, policy, model zoo, data, stats,
train/eval, checkpoints, ONNX export, the run folder, :mod:`.onnxrt`, :mod:`.pruning`). It imports nothing above it."""
