"""The edit stage's model set: FluxFill (+ LoRA), the VLM judge and CogVideoX + the
VideoPainter branch, loaded once per run and placed by the placement plan.

A LoRA is identified by its content (SHA-256 of the adapter file), not by where it lies:
the same adapter copied elsewhere is the same model, a retrained one at the same path is
another.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lanepaint.io import storage
from lanepaint.models.root import VIDEOPAINTER_ID_LORA_FILE

log = logging.getLogger(__name__)

LORA_FILE = "pytorch_lora_weights.safetensors"


@dataclass(frozen=True)
class LoraAdapter:
    """A FluxFill LoRA as the stage uses it: where it was given, the local folder holding
    its adapter file, and that file's SHA-256 (its identity in the settings key)."""

    uri: str
    folder: Path
    sha256: str


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_lora(uri: str) -> LoraAdapter:
    """The LoRA of a train-lora output folder (local or gs://). A gs:// adapter is fetched
    into a folder named by its hash under the model cache, so a retrained adapter at the
    same URI is never served from an older copy."""
    from lanepaint.models.root import default_cache_root

    if not storage.is_gcs(uri):
        file = Path(uri) / LORA_FILE
        if not file.is_file():
            raise FileNotFoundError(f"no {LORA_FILE} in LoRA folder {uri}")
        return LoraAdapter(uri, Path(uri), _sha256(file))
    remote = storage.join(uri, LORA_FILE)
    if not storage.exists(remote):
        raise FileNotFoundError(f"no {LORA_FILE} in LoRA folder {uri}")
    cache = default_cache_root() / "loras"
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        local = Path(tmp) / LORA_FILE
        storage.download_file(remote, local)
        sha = _sha256(local)
        folder = cache / sha
        if not (folder / LORA_FILE).is_file():
            staged = Path(tmp) / "adapter"
            staged.mkdir()
            shutil.move(local, staged / LORA_FILE)
            try:
                staged.rename(folder)
            except OSError:  # another process placed the same adapter first
                pass
    return LoraAdapter(uri, folder, sha)


@dataclass
class Models:
    """Everything a run loads once."""

    root: Any
    flux: Any
    judge: Any | None
    painter: Any
    plan: Any
    metadata: dict
    vlm: str = "qwen_vl_7b"
    lora: LoraAdapter | None = None
    # Loaded by the stage run itself: nothing else will use phase one's models again, so
    # they are dropped rather than copied back to the CPU (~40 s for FluxFill + the VLM).
    owned: bool = False
    preset: str = "exact"  # the speed preset the models were loaded with

    def release_phase_one(self) -> None:
        """Free what the plan says must not stay beside CogVideoX (each model by its flag)."""
        from lanepaint.models.placement import release

        names = [("flux_fill", self.flux)]
        if self.judge is not None:
            names.append((self.vlm, self.judge.generator.model))
        doomed = [m for n, m in names if self.plan[n].release_between_phases]
        if doomed:
            release(*doomed, keep=not self.owned)


def load_models(model_root: str, config: Any, lora: str | LoraAdapter | None = None) -> Models:
    """FluxFill (+LoRA), the judge and CogVideoX+branch, placed by the plan.

    ``config`` is the edit stage's config (read: ``judge``, ``vlm_size``,
    ``judge_max_new_tokens``, ``judge_visual_tokens``, ``compile``, ``preset`` with
    ``first_frame_steps`` and ``steps``); ``lora`` a LoRA folder or an adapter from
    :func:`fetch_lora`."""
    import torch

    from lanepaint.models import placement
    from lanepaint.models.device import visible_gpus
    from lanepaint.models.root import as_model_root

    root = as_model_root(model_root)
    adapter = fetch_lora(lora) if isinstance(lora, str) and lora else lora or None
    vlm = f"qwen_vl_{config.vlm_size.lower()}"
    first = ("flux_fill", vlm) if config.judge else ("flux_fill",)
    plan = placement.plan_placement(visible_gpus(), (first, ("cogvideox_i2v",)))
    log.info("placement plan:\n%s", plan.describe())
    preset = getattr(config, "preset", "exact")
    flux = _load_flux(root, plan["flux_fill"], adapter, config.compile, preset, config)
    judge = _load_judge(root, plan[vlm], config) if config.judge else None
    painter = _load_painter(root, plan["cogvideox_i2v"], config.compile, preset, config)
    metadata = {
        **root.metadata(),
        "lora": adapter.uri if adapter else None,
        "lora_sha256": adapter.sha256 if adapter else None,
        "torch": torch.__version__,
    }
    return Models(root, flux, judge, painter, plan, metadata, vlm, adapter, preset=preset)


def _load_flux(root, where, adapter: LoraAdapter | None, compile: bool, preset: str, config):
    from lanepaint.edit.first_frame import compile_flux
    from lanepaint.models import loaders, placement, presets
    from lanepaint.models.device import dtype_for

    flux = loaders.load_flux_fill(root, dtype_for(where.device), "cpu")
    if adapter is not None:
        flux.load_lora_weights(str(adapter.folder), adapter_name="lanepaint")
    placement.apply_placement(flux, where)
    steps = getattr(config, "first_frame_steps", 50)
    log.info("FluxFill speed preset: %s", presets.apply(preset, [flux.transformer], steps))
    if compile and str(where.device).startswith("cuda"):
        if where.offload == "none":
            # FP8 quantizes the separate q/k/v projections: nothing left to fuse.
            compile_flux(flux, fuse_qkv=not presets.parse(preset).fp8)
        else:  # offload hooks move weights per call: nothing to fuse or compile in place
            log.info("FluxFill is offloaded (%s): not compiled", where.offload)
    return flux


def _load_judge(root, where, config):
    from lanepaint.models import loaders, placement
    from lanepaint.models.device import dtype_for
    from lanepaint.vlm.judge import Judge
    from lanepaint.vlm.qwen import VLMGenerator

    offloaded = where.offload != "none"
    model, processor = loaders.load_qwen_vl(
        root, config.vlm_size, dtype_for(where.device), "cpu" if offloaded else where.device
    )
    if offloaded:
        placement.apply_placement(model, where)
    return Judge(
        VLMGenerator(model, processor, static_cache=True),
        config.judge_max_new_tokens,
        config.judge_visual_tokens,
    )


def _load_painter(root, where, compile: bool, preset: str, config):
    from diffusers import CogVideoXDPMScheduler

    from lanepaint.models import loaders, presets
    from lanepaint.models.device import dtype_for
    from lanepaint.videopainter.pipeline import VideoPainterPipeline

    dtype = dtype_for(where.device)
    pipe = loaders.load_cogvideox_i2v(root, dtype, "cpu")
    pipe.scheduler = CogVideoXDPMScheduler.from_config(
        pipe.scheduler.config, timestep_spacing="trailing"
    )
    branch = loaders.load_videopainter_branch(root, dtype, "cpu")
    painter = VideoPainterPipeline(pipe, branch)
    if (root / VIDEOPAINTER_ID_LORA_FILE).is_file():
        painter.load_id_lora(root / VIDEOPAINTER_ID_LORA_FILE)
    painter.to(where.device if where.offload == "none" else "cpu")
    applied = presets.apply(preset, [pipe.transformer, branch], getattr(config, "steps", 50))
    log.info("CogVideoX speed preset: %s", applied)
    if compile and str(where.device).startswith("cuda"):
        painter.compile_blocks()
    return painter


def model_size(painter) -> tuple[int, int]:
    """(H, W) the video model works at (480x720 for CogVideoX-5B-I2V)."""
    cfg = painter.pipe.transformer.config
    factor = painter.pipe.vae_scale_factor_spatial
    return cfg.sample_height * factor, cfg.sample_width * factor
