"""prunegym.deploy: a policy becomes a deployable model (replay: finetune, transform, ONNX, INT8, verify, bench,
bundle), and the torch-free bundle runtime (:mod:`.runtime`) that runs it with ONNX Runtime alone."""
