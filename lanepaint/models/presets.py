"""Named speed presets: bit-exactness traded for throughput, through the libraries' own means.

=========== =====================================================================================
``exact``   bf16 as measured in docs/performance.md (the default).
``fp8``     torchao float8: dynamic activations and weights with rowwise scales on every Linear
            of the repeated transformer blocks (FluxFill; CogVideoX and the VideoPainter branch).
            Embeddings, norms and output projections stay bf16. Needs CUDA compute capability
            >= 8.9 (torchao refuses anything else, the CPU included).
``cache``   diffusers' TaylorSeer cache in its lite form (``use_lite_mode``): on the steps it
            predicts, the transformer blocks are skipped and the output projection is
            extrapolated (first-order Taylor) from the last computed steps. The schedule is
            fixed (:func:`cache_config`), so the time saved does not depend on the weights.
``fp8+cache`` both.
=========== =====================================================================================

Why TaylorSeer-lite among diffusers 0.42's caches (each tried on the smoke FluxFill and the
smoke dual pipeline, two windows with the branch and ID resampling; docs/performance.md):
FasterCache fails on both (the dual pipeline's CFG batch of 2 meets a halved batch; FluxFill:
IndexError). FirstBlockCache runs, but it skips blocks inside their forward, so the branch's
forward hooks still add their features on every skipped block, on top of the cached residual
that already holds them (read from the hook code). PyramidAttentionBroadcast runs given a
timestep callback (the dual pipeline has none) and saves attention only. MagCache needs
per-model calibrated ratios (diffusers ships Flux's, none for CogVideoX). TaylorSeer-lite runs
on both with the hooks and the regional compile, and its decisions depend on the step count
only, so the time it saves on random weights is the time it saves on real ones.

A preset changes the outputs, so it is an output setting of the edit stage (settings key,
records, summary); it is applied once when the models are loaded (:func:`apply`), and each
denoising run opens its own cache scope (:func:`cache_scope`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

PRESETS = ("exact", "fp8", "cache", "fp8+cache")
FP8_MIN_CAPABILITY = (8, 9)
# Where the repeated blocks live in the models lanepaint quantizes (FluxFill's transformer,
# CogVideoX's transformer, the VideoPainter branch): only their Linear layers go to FP8.
BLOCK_PREFIXES = ("transformer_blocks.", "single_transformer_blocks.")
# TaylorSeer-lite schedule, in denoising steps: the first WARMUP and the last COOLDOWN are
# always computed, and one in every INTERVAL between them (about 48 % of 50 steps).
WARMUP, INTERVAL, COOLDOWN = 8, 3, 3


@dataclass(frozen=True)
class Preset:
    """What a preset name turns on."""

    name: str
    fp8: bool
    cache: bool

    @property
    def exact(self) -> bool:
        return not (self.fp8 or self.cache)


def parse(name: str) -> Preset:
    """The preset called ``name`` (ValueError naming the known ones otherwise)."""
    if name not in PRESETS:
        raise ValueError(f"speed preset must be one of {', '.join(PRESETS)}, not {name!r}")
    return Preset(name, fp8="fp8" in name, cache="cache" in name)


def check_supported(name: str) -> None:
    """A one-line ValueError when this machine cannot run the preset (before any model
    loads): FP8 needs torchao and a CUDA GPU of compute capability >= 8.9."""
    preset = parse(name)
    if not preset.fp8:
        return
    import torch

    if not torch.cuda.is_available():
        raise ValueError(
            f"speed preset {name!r} needs a CUDA GPU of compute capability >= 8.9 (Hopper, "
            "Ada); this machine has none: use --preset exact or --preset cache"
        )
    _require_fp8_gpu(f"speed preset {name!r}", "use --preset exact or --preset cache")


def _require_fp8_gpu(what: str, instead: str) -> None:
    """One line naming ``what`` when the current CUDA GPU is below compute capability 8.9
    or torchao is missing (no-op without CUDA: the callers decide about the CPU)."""
    import torch

    if torch.cuda.is_available():
        capability = torch.cuda.get_device_capability()
        if capability < FP8_MIN_CAPABILITY:
            raise ValueError(
                f"{what} needs compute capability >= 8.9; {torch.cuda.get_device_name()} "
                f"has {capability[0]}.{capability[1]}: {instead}"
            )
    try:
        import torchao.float8  # noqa: F401
    except ImportError as exc:
        raise ValueError(f"{what} needs torchao (pip install torchao)") from exc


def _in_block(module: Any, fqn: str) -> bool:
    import torch

    return (
        isinstance(module, torch.nn.Linear)
        and fqn.startswith(BLOCK_PREFIXES)
        and "lora_" not in fqn  # a LoRA's adapters stay as trained; its base layer is quantized
    )


def quantize_fp8(model: Any) -> int:
    """torchao's float8 dynamic-activation/weight quantization (rowwise scales) of the
    Linear layers inside ``model``'s repeated blocks; returns how many were quantized."""
    from torchao.quantization import (
        Float8DynamicActivationFloat8WeightConfig,
        PerRow,
        quantize_,
    )

    count = sum(_in_block(m, n) for n, m in model.named_modules())
    config = Float8DynamicActivationFloat8WeightConfig(granularity=PerRow())
    quantize_(model, config, filter_fn=_in_block)
    return count


def check_fp8_training() -> None:
    """A one-line ValueError when FP8 training of the frozen base cannot run here: torchao
    missing, or a CUDA GPU below compute capability 8.9. Without CUDA it runs (torchao's
    float8 training falls back to torch's CPU ``_scaled_mm``): correct, for tests, not fast."""
    _require_fp8_gpu("--base-fp8", "train without --base-fp8")


def _fp8_trainable(module: Any, fqn: str) -> bool:
    # _scaled_mm needs both matrix sides to be multiples of 16
    return _in_block(module, fqn) and module.in_features % 16 == 0 and module.out_features % 16 == 0


def convert_fp8_training(model: Any) -> int:
    """torchao's float8 training (rowwise dynamic scales, the ``rowwise`` recipe) for the
    frozen Linear layers of ``model``'s repeated blocks, LoRA's base layers included; the
    adapters themselves stay in their own dtype. Returns how many layers were converted."""
    from torchao.float8 import Float8LinearConfig, convert_to_float8_training

    count = sum(_fp8_trainable(m, n) for n, m in model.named_modules())
    config = Float8LinearConfig.from_recipe_name("rowwise")
    convert_to_float8_training(model, module_filter_fn=_fp8_trainable, config=config)
    return count


def cache_config(steps: int):
    """diffusers' TaylorSeer-lite config for ``steps`` denoising steps: warm-up and
    cool-down computed (the last step must be: ID resampling keeps its block states)."""
    import torch
    from diffusers import TaylorSeerCacheConfig

    return TaylorSeerCacheConfig(
        cache_interval=INTERVAL,
        disable_cache_before_step=WARMUP,
        disable_cache_after_step=max(steps - COOLDOWN, WARMUP),
        max_order=1,
        taylor_factors_dtype=torch.float32,
        use_lite_mode=True,
    )


def computed_steps(steps: int) -> int:
    """How many of ``steps`` denoising steps the cache computes (the rest are predicted)."""
    cfg_after = max(steps - COOLDOWN, WARMUP)
    return sum(
        s < WARMUP or (s - WARMUP - 1) % INTERVAL == 0 or s >= cfg_after for s in range(steps)
    )


def apply(preset: Preset | str, models: list[Any], steps: int) -> dict:
    """Turn the preset on for ``models`` (each a diffusers transformer or the branch); the
    first one is the denoiser the cache goes on (the branch keeps running: its features are
    ignored on predicted steps, as the blocks they feed are skipped). Call after placement
    and before the regional compile. Returns what was done, for the run's details."""
    preset = parse(preset) if isinstance(preset, str) else preset
    done: dict[str, Any] = {"preset": preset.name}
    if preset.fp8:
        done["fp8_linears"] = sum(quantize_fp8(m) for m in models)
    if preset.cache:
        models[0].enable_cache(cache_config(steps))
        done["cache"] = f"TaylorSeer-lite, {computed_steps(steps)} of {steps} steps computed"
    return done


@contextlib.contextmanager
def cache_scope(model: Any, name: str) -> Iterator[None]:
    """One denoising trajectory of ``model`` (a FluxFill call, one propagation window):
    the cache's state starts fresh and its hooks know which call this is; a no-op for a
    model without a cache."""
    if not getattr(model, "is_cache_enabled", False):
        yield
        return
    model._reset_stateful_cache()  # diffusers' own reset, also done by its stock pipelines
    try:
        with model.cache_context(name):
            yield
    finally:
        model._reset_stateful_cache()
