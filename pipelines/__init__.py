"""KFP pipeline definitions; `python -m pipelines.compile` writes ``compiled/*.yaml``."""
