"""How the known (unmasked) region is held during propagation: the released VideoPainter's
way (``reference``, the default) or lanepaint's earlier variant (``lanepaint``).

The released branch and ID LoRA were trained and evaluated with the reference choices, so
that is the default; docs/videopainter.md cites the official code line by line. Three
choices differ between the modes; :class:`PropagationMode` holds them one by one, so the
pipeline (and the tests) can take any combination, while the edit stage offers the two named
modes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the stage's Config imports the names; torch is not needed for them
    import torch


@dataclass(frozen=True)
class PropagationMode:
    """The three known-region choices (True = as the released VideoPainter)."""

    name: str
    # Replacement noise: the known latents are noised with the window's initial noise (the
    # noise the sampler started from); False = a separate draw per window.
    initial_noise: bool
    # Known video: the ground-truth latents are encoded from the frames with the (undilated)
    # mask area blacked out, frame 0 excepted; False = from the true frames.
    blacked_known: bool
    # keep_first_frame keeps only frame 0 of the video known; False = latent 0 of every
    # window (later windows: the previous window's latent at the overlap start).
    first_frame_only: bool


REFERENCE = PropagationMode("reference", True, True, True)
LANEPAINT = PropagationMode("lanepaint", False, False, False)
MODES: dict[str, PropagationMode] = {m.name: m for m in (REFERENCE, LANEPAINT)}
MODE_NAMES: tuple[str, ...] = tuple(MODES)
DEFAULT_MODE = REFERENCE.name


def resolve_mode(mode: str | PropagationMode) -> PropagationMode:
    """A mode by name (or itself); ValueError naming the choices for an unknown name."""
    if isinstance(mode, PropagationMode):
        return mode
    if mode not in MODES:
        raise ValueError(f"propagation mode must be one of {MODE_NAMES}, not {mode!r}")
    return MODES[mode]


def blacked_region(masks: torch.Tensor) -> torch.Tensor:
    """Where the known video is black: ``masks`` (``[T, H, W]``, nonzero = repaint, undilated)
    with frame 0 cleared. The released inference blacks these pixels out of the video whose
    latents are the known ground truth; frame 0 there is the edited frame, kept whole."""
    blank = masks > 0
    blank[0] = False
    return blank


def black_out(frames: torch.Tensor, blank: torch.Tensor) -> torch.Tensor:
    """uint8 ``frames`` ``[T, H, W, 3]`` with the pixels of ``blank`` ``[T, H, W]`` set to 0."""
    return frames.masked_fill(blank[..., None], 0)
