"""Which model sits on which GPU, and when it is offloaded or released.

The plan is a pure function of the GPU inventory (``[(device, free_bytes), ...]``) and the
phases of a component run, so it is testable without GPUs. A phase is a group of models
used together (the edit stage alternates FluxFill and the Qwen judge, then propagates with
CogVideoX); phases repeat per video, so a released model is moved back in later.

Rules, in order:
1. No GPU: everything on the CPU.
2. Everything fits at once: every model stays resident, models of one phase spread over
   GPUs (so the VLM lands on a second GPU when there is one).
3. Otherwise phase by phase. A splittable model too large for any one GPU goes to
   ``device="auto"`` (an even share of every GPU). While a phase does not fit, its largest
   model is offloaded one step: "model" (moved in per component while it runs, diffusers
   ``enable_model_cpu_offload``), then "sequential" (per layer). Offloaded models of a
   phase run in turn, so they need the largest of them, not the sum. Between phases a
   resident model is released (parked in CPU memory) unless every other phase fits beside
   it.
"""

from __future__ import annotations

import gc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from lanepaint.models.device import free_gpu_memory, visible_gpus  # noqa: F401

GiB = 1024**3
Offload = Literal["none", "model", "sequential"]


@dataclass(frozen=True)
class Footprint:
    """GPU memory of a model: bf16 weights, its largest component, working memory."""

    weights: int
    largest_component: int
    working: int
    splittable: bool = False  # transformers device_map can spread it over GPUs

    @property
    def total(self) -> int:
        return self.weights + self.working


def _gib(weights: float, largest: float, working: float, splittable: bool = False) -> Footprint:
    return Footprint(int(weights * GiB), int(largest * GiB), int(working * GiB), splittable)


# bf16 weights from the parameter counts in models.md; working memory is an estimate at the
# stage's working size (1024² fill; 49x480x720 with CFG, ID-resampling states and a sliced
# VAE decode; ~1k-token VLM prompts in batches; 150 frames of SAM2 state).
DEFAULT_FOOTPRINTS: dict[str, Footprint] = {
    # transformer 11.9 B + T5-XXL 4.76 B + CLIP-L 0.12 B + VAE 0.08 B
    "flux_fill": _gib(31.5, 22.2, 6.0),
    # transformer 5.57 B + T5-XXL 4.76 B + VAE 0.2 B + VideoPainter branch 0.3 B
    "cogvideox_i2v": _gib(20.7, 10.4, 16.0),
    "qwen_vl_7b": _gib(15.5, 15.5, 4.0, splittable=True),
    "qwen_vl_72b": _gib(137.0, 137.0, 8.0, splittable=True),
    "sam2": _gib(0.9, 0.9, 4.0),  # fp32 weights, bf16 autocast
}

EDIT_PHASES: tuple[tuple[str, ...], ...] = (("flux_fill", "qwen_vl_7b"), ("cogvideox_i2v",))


@dataclass(frozen=True)
class Placement:
    device: str  # "cuda:N", "cpu", or "auto" (split evenly over all GPUs)
    offload: Offload = "none"
    release_between_phases: bool = False


@dataclass(frozen=True)
class PlacementPlan:
    placements: dict[str, Placement]
    phases: tuple[tuple[str, ...], ...]
    notes: tuple[str, ...] = field(default=())

    def __getitem__(self, model: str) -> Placement:
        return self.placements[model]

    def describe(self) -> str:
        lines = [
            f"{name}: {p.device}, offload={p.offload}"
            + (", released between phases" if p.release_between_phases else "")
            for name, p in self.placements.items()
        ]
        return "\n".join(lines + list(self.notes))


def _on_gpu(fp: Footprint, offload: Offload) -> int:
    """GPU bytes a model needs while it runs."""
    if offload == "sequential":
        return fp.working
    if offload == "model":
        return fp.largest_component + fp.working
    return fp.total


class _Gpu:
    """Memory bookkeeping of one GPU during one phase.

    Resident models add up; offloaded models are moved in only while they run, and the
    models of a phase run in turn, so they need the largest of them, not the sum.
    """

    def __init__(self, name: str, capacity: int):
        self.name = name
        self.capacity = capacity
        self.resident = 0
        self.shuttle = 0
        self.models = 0

    def room(self) -> int:
        return self.capacity - self.resident - self.shuttle

    def fits(self, need: int, offload: Offload) -> bool:
        if offload == "none":
            return self.resident + need + self.shuttle <= self.capacity
        return self.resident + max(self.shuttle, need) <= self.capacity

    def add(self, need: int, offload: Offload) -> None:
        if offload == "none":
            self.resident += need
        else:
            self.shuttle = max(self.shuttle, need)
        self.models += 1


def _pack_phase(
    phase: Sequence[str],
    gpus: list[_Gpu],
    fps: Mapping[str, Footprint],
    offloads: Mapping[str, Offload],
) -> dict[str, str] | None:
    """Largest first onto the GPU with the fewest models of this phase, then the most room."""
    where: dict[str, str] = {}
    for name in sorted(phase, key=lambda n: (-_on_gpu(fps[n], offloads[n]), n)):
        need = _on_gpu(fps[name], offloads[name])
        fits = [g for g in gpus if g.fits(need, offloads[name])]
        if not fits:
            return None
        gpu = min(fits, key=lambda g: (g.models, -g.room(), g.name))
        gpu.add(need, offloads[name])
        where[name] = gpu.name
    return where


def _fresh(capacity: Mapping[str, int]) -> list[_Gpu]:
    return [_Gpu(name, cap) for name, cap in capacity.items()]


def plan_placement(
    gpus: Sequence[tuple[str, int]],
    phases: Sequence[Sequence[str]] = EDIT_PHASES,
    footprints: Mapping[str, Footprint] | None = None,
    reserve: int = 2 * GiB,
) -> PlacementPlan:
    """Place the models of ``phases`` on ``gpus`` (device name, free bytes).

    ``reserve`` is kept free on every GPU for the CUDA context, allocator slack and
    decode buffers.
    """
    fps = {**DEFAULT_FOOTPRINTS, **(footprints or {})}
    phases = tuple(tuple(p) for p in phases)
    names = [n for phase in phases for n in phase]
    unknown = sorted(set(names) - set(fps))
    if unknown:
        raise ValueError(f"no footprint for {unknown}; pass footprints=")
    if not gpus:
        return PlacementPlan(
            {n: Placement("cpu") for n in names}, phases, ("no GPU: everything on the CPU",)
        )
    capacity = {device: max(free - reserve, 0) for device, free in gpus}

    # 1. everything resident at once (phases packed one after the other on shared GPUs)
    shared = _fresh(capacity)
    resident: dict[str, str] = {}
    for phase in phases:
        for gpu in shared:
            gpu.models = 0  # spread within a phase, not across phases
        where = _pack_phase(phase, shared, fps, dict.fromkeys(phase, "none"))
        if where is None:
            break
        resident.update(where)
    else:
        return PlacementPlan({n: Placement(resident[n]) for n in names}, phases)

    # 2. phase by phase, offloading the largest models until the phase fits
    placements: dict[str, Placement] = {}
    notes: list[str] = []
    for phase in phases:
        split = [
            n
            for n in phase
            if fps[n].splittable
            and len(capacity) > 1
            and fps[n].total > max(capacity.values())
            and fps[n].total // len(capacity) <= min(capacity.values())
        ]
        rest = [n for n in phase if n not in split]
        offloads: dict[str, Offload] = dict.fromkeys(rest, "none")
        while True:
            gpus_now = _fresh(capacity)
            for name in split:
                _spread(gpus_now, fps[name].total)
            where = _pack_phase(rest, gpus_now, fps, offloads)
            if where is not None:
                break
            level = next((lv for lv in ("none", "model") if lv in offloads.values()), None)
            if level is None:
                where = _fallback(rest, gpus_now, offloads, notes)
                break
            candidates = [n for n in rest if offloads[n] == level]
            worst = max(candidates, key=lambda n: (_on_gpu(fps[n], offloads[n]), n))
            offloads[worst] = "model" if level == "none" else "sequential"
        for name in split:
            placements[name] = Placement("auto")
            notes.append(f"{name}: split over {len(capacity)} GPUs")
        for name in rest:
            placements[name] = Placement(where[name], offloads[name])
            if offloads[name] != "none":
                notes.append(f"{name}: does not fit beside its phase, {offloads[name]} offload")
    return PlacementPlan(_releases(placements, phases, capacity, fps), phases, tuple(notes))


def _spread(gpus: list[_Gpu], need: int) -> None:
    """A split model takes an even share of every GPU (transformers' balanced device map)."""
    for gpu in gpus:
        gpu.resident += need // len(gpus)


def _fallback(
    names: Sequence[str], gpus: list[_Gpu], offloads: dict[str, Offload], notes: list[str]
) -> dict[str, str]:
    """Nothing fits even fully offloaded: sequential offload on the roomiest GPU."""
    gpu = max(gpus, key=lambda g: (g.room(), g.name))
    for name in names:
        offloads[name] = "sequential"
    notes.append(f"{', '.join(names)}: working memory may not fit on {gpu.name}")
    return dict.fromkeys(names, gpu.name)


def _releases(
    placements: dict[str, Placement],
    phases: tuple[tuple[str, ...], ...],
    capacity: dict[str, int],
    fps: Mapping[str, Footprint],
) -> dict[str, Placement]:
    """Keep a resident model between phases only if every phase still fits beside it.

    Offloaded models sit in CPU memory between uses anyway; split ("auto") models span
    every GPU and are released. Larger models are kept first: moving them costs the most.
    """
    out = dict(placements)
    for name, p in placements.items():
        if p.device == "auto":
            out[name] = Placement("auto", p.offload, release_between_phases=True)

    def phase_need(device: str, phase: tuple[str, ...], kept: list[str]) -> int:
        gpu = _Gpu(device, capacity[device])
        for name in phase:
            p = placements[name]
            if p.device == device:
                gpu.add(_on_gpu(fps[name], p.offload), p.offload)
            elif p.device == "auto":
                gpu.resident += fps[name].total // len(capacity)
        return gpu.resident + gpu.shuttle + sum(fps[k].weights for k in kept if k not in phase)

    for device in capacity:
        candidates = [
            n for n, p in placements.items() if p.device == device and p.offload == "none"
        ]
        kept: list[str] = []
        for name in sorted(candidates, key=lambda n: (-fps[n].weights, n)):
            if all(phase_need(device, ph, [*kept, name]) <= capacity[device] for ph in phases):
                kept.append(name)
        for name in candidates:
            if name not in kept:
                out[name] = Placement(device, "none", release_between_phases=True)
    return out


def apply_placement(model: Any, placement: Placement) -> Any:
    """Put a loaded pipeline or model where the plan says (in place; returns it).

    "model" offload of a single module (the VLM) moves it to the GPU at its first forward
    and keeps it there until :func:`release` parks it again; "sequential" streams layers.
    A split ("auto") model is placed at load time instead: ``load_qwen_vl(device="auto")``.
    """
    if placement.device == "auto":
        raise ValueError("a split ('auto') model is placed at load time: load with device='auto'")
    if placement.device == "cpu" or placement.offload == "none":
        return model.to(placement.device)
    if hasattr(model, "enable_model_cpu_offload"):  # a diffusers pipeline
        if placement.offload == "model":
            model.enable_model_cpu_offload(device=placement.device)
        else:
            model.enable_sequential_cpu_offload(device=placement.device)
        return model
    import torch
    from accelerate import cpu_offload, cpu_offload_with_hook

    device = torch.device(placement.device)
    if placement.offload == "model":
        return cpu_offload_with_hook(model, device)[0]
    return cpu_offload(model, execution_device=device)


def release(*models: Any, keep: bool = True) -> None:
    """Take models off the GPU and return the cached memory to the driver.

    ``keep=True`` moves them to the CPU (usable again; copying ~40 GB of FluxFill and the
    VLM back costs ~40 s). ``keep=False`` drops their weights instead (moved to the meta
    device, near-instant): for a run that will not use them again.
    """

    for model in models:
        if not hasattr(model, "to"):
            continue
        if keep:
            model.to("cpu")
        else:
            _drop_weights(model)
    gc.collect()
    free_gpu_memory()


def _drop_weights(model: Any) -> None:
    """Every torch module of ``model`` (a module or a diffusers pipeline) to the meta device."""
    import torch

    if isinstance(model, torch.nn.Module):
        modules = [model]
    else:
        parts = getattr(model, "components", {}).values()
        modules = [m for m in parts if isinstance(m, torch.nn.Module)]
    for module in modules:
        module.to("meta")
