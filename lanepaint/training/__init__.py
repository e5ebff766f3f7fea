"""FluxFill LoRA training: config, data cache, objective, checkpoints, loss plot, trainer.

The stage ``lanepaint.stages.train_lora`` is the entry point; these modules are split so
that the benchmark (``bench/train.py``) and the tests can use the same objective and step
code as the trainer without starting a training run.
"""
