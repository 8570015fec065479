"""What the binaries in `experiments/` run: `run.run(config, workdir)` trains one stage
(`pretrain`, `finetune`: each a `make_stage(config)`), `paper.train_and_evaluate` chains them
into the paper's experiment."""
