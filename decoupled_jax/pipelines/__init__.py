"""End-to-end jobs behind the binaries in `experiments/`: each module exposes
`train_and_evaluate(config, workdir, ...)` (Flax-examples style)."""
