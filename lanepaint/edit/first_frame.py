"""First frame: FluxFill paints the road mask, the VLM judge checks it, retried on FAIL.

Each attempt uses the current caption and its own seed; on FAIL the judge's revised caption
(when it gives one) becomes the next prompt. At most ``max_attempts``; every attempt is kept
and the best one is used: a PASS first, then the attempt whose lane markings (read by the
weights-free analyzer inside the mask) match the instruction best, then the earliest.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, fields

import numpy as np
from PIL import Image

from lanepaint.data import masks as mask_ops
from lanepaint.data.vocab import LaneAttributes, parse_caption
from lanepaint.edit.instructions import Instruction
from lanepaint.kit.settings import check_finite, setting
from lanepaint.models.presets import cache_scope
from lanepaint.vlm.parse import Verdict

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FirstFrameConfig:
    """FluxFill and judge-loop settings (mirrored as ``first_frame_*`` settings of the edit
    stage, which take default and help from here)."""

    size: int = setting(
        1024,
        help="FluxFill paints a crop around the mask at about size x size pixels (sides "
        "multiples of 16), blended back at the frame's own resolution",
    )
    steps: int = setting(50, help="FluxFill denoising steps for the first frame")
    guidance: float = setting(30.0, help="FluxFill guidance scale")
    dilation: int = setting(
        16,
        help="growth of the road mask FluxFill repaints, in pixels (the edit stage gives it "
        "at 480 rows and scales it with the frame height)",
    )
    feather: int = setting(
        8, help="width of the feathered rim that blends the painted frame back, likewise"
    )
    max_attempts: int = setting(
        5, help="FluxFill attempts per first frame; the judge's FAIL triggers the next"
    )
    lora_scale: float = setting(1.0, help="weight of the FluxFill LoRA (0 = as if none)")
    seed: int = setting(42, help="seed of attempt 0; attempt k uses seed + k")
    judge_retries: int = setting(2, help="retries of a judge call whose answer cannot be read")
    backoff_s: float = setting(
        1.0, help="first back-off before a judge retry, doubled per retry", output=False
    )

    def __post_init__(self) -> None:
        check_finite(self)  # nan/inf, however the Config is built
        for name in ("size", "steps", "max_attempts"):
            if getattr(self, name) < 1:
                raise ValueError(f"first-frame {name} must be >= 1")
        for name in ("dilation", "feather", "judge_retries"):
            if getattr(self, name) < 0:
                raise ValueError(f"first-frame {name} must be >= 0")


def mirrored_setting(name: str):
    """A stage setting mirroring ``FirstFrameConfig.<name>``: default, help and meaning are
    declared there once."""
    f = next(f for f in fields(FirstFrameConfig) if f.name == name)
    return setting(f.default, help=f.metadata["help"], output=f.metadata["output"])


@dataclass
class Attempt:
    index: int
    caption: str
    prompt_2: str
    seed: int
    image: np.ndarray = field(repr=False)
    verdict: Verdict | None = None
    analyzer_caption: str | None = None
    analyzer_matches: int = 0
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return bool(self.verdict and self.verdict.passed)

    def score(self) -> tuple:
        return (self.passed, self.analyzer_matches, -self.index)

    def as_dict(self) -> dict:
        return {
            "attempt": self.index,
            "caption": self.caption,
            "prompt_2": self.prompt_2,
            "seed": self.seed,
            "verdict": self.verdict.as_dict() if self.verdict else None,
            "analyzer_caption": self.analyzer_caption,
            "analyzer_matches": self.analyzer_matches,
            "seconds": round(self.seconds, 3),
        }


@dataclass
class FirstFrameResult:
    attempts: list[Attempt]

    @property
    def best(self) -> Attempt:
        return max(self.attempts, key=Attempt.score)

    @property
    def first_pass(self) -> bool:
        return self.attempts[0].passed

    def as_dict(self) -> dict:
        return {
            "attempts": [a.as_dict() for a in self.attempts],
            "best_attempt": self.best.index,
            "passed": self.best.passed,
            "first_attempt_passed": self.first_pass,
        }


def prepare_mask(mask: np.ndarray, config: FirstFrameConfig) -> tuple[np.ndarray, np.ndarray]:
    """(binary dilated mask for the painter, feathered float mask for blending back)."""
    grown = mask_ops.dilate(mask, config.dilation)
    return grown, mask_ops.feather(grown, config.feather)


_FUSED_PARTS = (
    ("to_qkv", ("to_q", "to_k", "to_v")),
    ("to_added_qkv", ("add_q_proj", "add_k_proj", "add_v_proj")),
)


def _share_fused_weights(transformer) -> None:
    """Point the separate q/k/v projections at slices of the fused ones.

    diffusers keeps the unfused projections beside the fused copy (~4 GiB for Flux); as
    views into the fused weights they cost nothing and ``unfuse_projections`` still works.
    """
    for module in transformer.modules():
        if not getattr(module, "fused_projections", False):
            continue
        for fused_name, part_names in _FUSED_PARTS:
            fused = getattr(module, fused_name, None)
            parts = [getattr(module, n, None) for n in part_names]
            if fused is None or any(p is None for p in parts):
                continue
            offset = 0
            for part in parts:
                rows = part.weight.shape[0]
                part.weight.data = fused.weight.data[offset : offset + rows]
                if part.bias is not None and fused.bias is not None:
                    part.bias.data = fused.bias.data[offset : offset + rows]
                offset += rows


def compile_flux(pipe, fuse_qkv: bool = True) -> None:
    """Speed up FluxFill in place, for a pipeline whose weights sit on one device (call it
    after placement, and not with CPU offload: offload hooks hold the weights elsewhere).

    Fused QKV projections (skipped when a LoRA is loaded, as the adapters sit on the
    separate projections; the separate ones become views of the fused weights, so no
    memory is added) and regional ``torch.compile`` of the transformer blocks
    (:func:`lanepaint.models.kernels.compile_regions`; ~15 s once per process).
    """
    from lanepaint.models.kernels import compile_regions

    transformer = pipe.transformer
    has_lora = bool(getattr(pipe, "get_active_adapters", None) and pipe.get_active_adapters())
    if fuse_qkv and not has_lora:
        transformer.fuse_qkv_projections()
        _share_fused_weights(transformer)
    compile_regions(transformer)


class FirstFramePainter:
    """FluxFill (stock pipeline, optional LoRA already loaded) + optional judge."""

    def __init__(self, pipe, judge=None, config: FirstFrameConfig | None = None, sleep=time.sleep):
        self.pipe = pipe
        self.judge = judge
        self.config = config or FirstFrameConfig()
        self._sleep = sleep

    def paint(
        self, frame: np.ndarray, mask: np.ndarray, caption: str, prompt_2: str, seed: int
    ) -> np.ndarray:
        """One FluxFill inpaint of the crop around the mask (at about ``size``² pixels,
        :func:`~lanepaint.edit.geometry.paint_box`), blended back into the frame at the
        frame's own resolution; outside the feathered mask the frame is untouched."""
        import torch

        from lanepaint.edit.geometry import paint_box

        cfg = self.config
        grown, soft = prepare_mask(mask, cfg)
        box = paint_box(soft > 0, cfg.size)
        (h, w), mask_u8 = box.work, np.where(grown > 0, 255, 0).astype(np.uint8)
        generator = torch.Generator(device="cpu").manual_seed(seed)
        kwargs = {}
        if getattr(self.pipe, "get_active_adapters", None) and self.pipe.get_active_adapters():
            kwargs["joint_attention_kwargs"] = {"scale": cfg.lora_scale}
        out = self.pipe(
            prompt=caption,
            prompt_2=prompt_2 or None,
            image=Image.fromarray(box.cut(frame)),
            mask_image=Image.fromarray(box.cut(mask_u8)),
            height=h,
            width=w,
            num_inference_steps=cfg.steps,
            guidance_scale=cfg.guidance,
            generator=generator,
            output_type="np",
            **kwargs,
        ).images[0]
        painted = (np.clip(out, 0, 1) * 255).round().astype(np.uint8)
        return box.blend(frame, painted, soft)

    def _judge(self, frame, mask, result, caption) -> Verdict | None:
        if self.judge is None:
            return None
        verdict = None
        for retry in range(self.config.judge_retries + 1):
            verdict = self.judge.judge(frame, mask, result, caption)
            if verdict.parsed or retry == self.config.judge_retries:
                break
            # An unreadable answer may be transient (OOM, a truncated reply): back off.
            self._sleep(self.config.backoff_s * 2**retry)
        return verdict

    def run(
        self, frame: np.ndarray, mask: np.ndarray, instruction: Instruction, on_attempt=None
    ) -> FirstFrameResult:
        from lanepaint.lanes.analyze import analyze_image

        caption, prompt_2 = instruction.caption, instruction.prompt_2
        attempts: list[Attempt] = []
        for index in range(self.config.max_attempts):
            start = time.perf_counter()
            seed = self.config.seed + index
            with cache_scope(self.pipe.transformer, "cond"):  # a speed preset's step cache
                image = self.paint(frame, mask, caption, prompt_2, seed)
            verdict = self._judge(frame, mask, image, instruction.caption)
            analysis = analyze_image(image, mask)
            matches = _matches(parse_caption(analysis.caption), instruction.attributes)
            attempt = Attempt(
                index,
                caption,
                prompt_2,
                seed,
                image,
                verdict,
                analysis.caption,
                matches,
                time.perf_counter() - start,
            )
            attempts.append(attempt)
            if on_attempt:
                on_attempt(attempt)
            log.info(
                "attempt %d: %s (%s)",
                index,
                "PASS" if attempt.passed else "FAIL" if verdict else "no judge",
                "; ".join(verdict.reasons) if verdict else "",
            )
            if self.judge is None or attempt.passed:
                break
            if verdict and verdict.revised_caption:
                prompt_2 = verdict.revised_caption
        return FirstFrameResult(attempts)


def _matches(found: LaneAttributes, wanted: LaneAttributes) -> int:
    return sum(getattr(found, a) == getattr(wanted, a) for a in ("count", "color", "pattern"))
