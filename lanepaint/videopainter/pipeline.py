"""The dual pipeline: stock CogVideoX-5B-I2V + the VideoPainter context branch.

The stock ``CogVideoXImageToVideoPipeline`` supplies every component (T5, VAE, transformer,
``CogVideoXDPMScheduler``) and the helpers it already has (``encode_prompt``, rotary embeddings,
``decode_latents``); this module only owns the denoising loop, because VideoPainter needs four
things inside it that the stock loop has no place for:

* the branch runs on ``noisy | masked-video latents | latent mask`` each step and its features are
  added to the backbone's blocks by hooks (:class:`~.injection.BranchInjector`);
* after each scheduler step the known (unmasked) latents are replaced by the ground-truth video
  latents noised to the next timestep (clean after the last step), as the propagation mode
  says (:mod:`lanepaint.videopainter.modes`: the released VideoPainter's way by default);
* long videos run in overlapping windows whose latents are averaged on one global latent grid,
  window k+1 conditioned on window k's latent at the overlap start;
* target-region ID resampling between windows (:mod:`lanepaint.videopainter.id_resample`).

After decoding, pixels outside the (dilated) mask are pasted back from the input, so the
background is bit-exact.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from diffusers import CogVideoXDPMScheduler, CogVideoXImageToVideoPipeline
from diffusers.utils.torch_utils import randn_tensor

from lanepaint.models.presets import cache_scope
from lanepaint.videopainter.branch import VideoPainterBranch
from lanepaint.videopainter.id_resample import IDResampler
from lanepaint.videopainter.injection import BranchInjector, token_mask_from_latent_mask
from lanepaint.videopainter.modes import (
    DEFAULT_MODE,
    PropagationMode,
    black_out,
    blacked_region,
    resolve_mode,
)
from lanepaint.videopainter.windows import (
    WindowPlan,
    dilate_masks,
    latent_mask_from_masks,
    pad_frames,
    plan_windows,
)

ID_LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"


@dataclass
class PropagationResult:
    """Output of one :class:`VideoPainterPipeline` call."""

    frames: np.ndarray  # [T, H, W, 3] uint8, same T as the input
    masks: np.ndarray  # [T, H, W] bool: repainted pixels (dilated; frame 0 cleared if kept)
    latents: torch.Tensor  # [1, G, C, h, w] float32 on CPU: averaged global latents
    window_starts: tuple[int, ...]  # first frame of each window
    timings: dict[str, float] = field(default_factory=dict)  # seconds: encode/denoise/decode/total
    id_tokens: list[int] = field(default_factory=list)  # tokens kept per window for ID resampling
    mode: str = DEFAULT_MODE  # the propagation mode's name (lanepaint.videopainter.modes)


@dataclass(frozen=True)
class _Options:
    """The keyword options of one :meth:`VideoPainterPipeline.__call__` (documented there)
    that its steps read."""

    negative_prompt: str
    num_inference_steps: int
    guidance_scale: float
    use_dynamic_cfg: bool
    conditioning_scale: float
    use_branch: bool
    mask_add: bool
    mask_dilation: int
    window: int | None
    overlap: int
    keep_first_frame: bool
    replace_known: bool
    paste_back: bool
    id_resample: bool
    prev_clip_weight: float
    id_source: str
    mode: PropagationMode
    callback: Callable[[int, int], None] | None

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", resolve_mode(self.mode))

    @classmethod
    def of(cls, arguments: dict[str, Any]) -> _Options:
        return cls(**{f.name: arguments[f.name] for f in fields(cls)})


@dataclass
class _Run:
    """What one call prepares once and every window reads."""

    plan: WindowPlan
    frames: torch.Tensor  # [T, H, W, 3] uint8, frame 0 replaced by the edited one
    video: torch.Tensor  # the frames padded to the plan
    repaint: torch.Tensor  # [T', H, W] bool (dilated; frame 0 cleared if kept), padded
    prompt_embeds: torch.Tensor  # [negative; positive] with CFG
    rotary: tuple[torch.Tensor, torch.Tensor] | None
    ofs: torch.Tensor | None
    timesteps: torch.Tensor
    steps: list[int]  # the timesteps as Python ints
    guidance: list[float]  # per step
    use_cfg: bool
    mode: PropagationMode
    blank: torch.Tensor | None  # [T', H, W] bool: black in the known video (None: none), padded
    injector: BranchInjector | None = None
    resampler: IDResampler | None = None
    timings: dict[str, float] = field(
        default_factory=lambda: {"encode": 0.0, "denoise": 0.0, "decode": 0.0}
    )


@dataclass
class _Window:
    """One window's initial noise and conditioning."""

    latents: torch.Tensor  # initial noise [1, F, C, h, w]
    gt_latents: torch.Tensor  # ground-truth video latents
    gt_noise: torch.Tensor  # noise that takes the ground truth to each timestep
    image_latents: torch.Tensor  # image conditioning (CFG-doubled)
    branch_cond: torch.Tensor  # masked-video latents | latent mask (CFG-doubled)
    generate: torch.Tensor  # latent mask as bool: True = sampled, False = known
    masked_tokens: torch.Tensor  # [1, N] bool token mask for the branch injection


def _dynamic_guidance(guidance_scale: float, timestep: int, num_steps: int) -> float:
    """The stock CogVideoX dynamic-CFG schedule (same formula as diffusers' I2V pipeline)."""
    ramp = (num_steps - timestep) / num_steps
    return 1 + guidance_scale * ((1 - math.cos(math.pi * ramp**5.0)) / 2)


def _to_uint8_frames(array: np.ndarray | torch.Tensor, name: str) -> torch.Tensor:
    tensor = torch.as_tensor(np.asarray(array))
    if tensor.dtype != torch.uint8 or tensor.ndim != 4 or tensor.shape[-1] != 3:
        raise ValueError(
            f"{name} must be uint8 [T, H, W, 3], got {tuple(tensor.shape)} {tensor.dtype}"
        )
    return tensor


class VideoPainterPipeline:
    """CogVideoX I2V + VideoPainter branch, any length, with ID resampling.

    ``branch`` None (or ``use_branch=False`` per call) runs the same loop on the backbone alone.
    """

    def __init__(
        self, pipe: CogVideoXImageToVideoPipeline, branch: VideoPainterBranch | None = None
    ):
        config = pipe.transformer.config
        if config.get("patch_size_t") is not None:
            raise ValueError("CogVideoX 1.5 transformers (patch_size_t) are not supported")
        self.pipe = pipe
        self.branch = branch

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(
        cls,
        model_path: str | Path,
        branch_path: str | Path | None = None,
        id_lora_path: str | Path | None = None,
        dtype: torch.dtype = torch.bfloat16,
        id_lora_scale: float = 1.0,
    ) -> VideoPainterPipeline:
        """Load a CogVideoX I2V folder, the branch folder and optionally the ID LoRA.

        The scheduler is switched to ``CogVideoXDPMScheduler`` with trailing spacing, as
        VideoPainter samples with it.
        """
        pipe = CogVideoXImageToVideoPipeline.from_pretrained(str(model_path), dtype=dtype)
        pipe.scheduler = CogVideoXDPMScheduler.from_config(
            pipe.scheduler.config, timestep_spacing="trailing"
        )
        branch = None
        if branch_path is not None:
            branch = VideoPainterBranch.from_pretrained(str(branch_path), dtype=dtype)
        painter = cls(pipe, branch)
        if id_lora_path is not None:
            painter.load_id_lora(id_lora_path, scale=id_lora_scale)
        return painter

    def load_id_lora(
        self, path: str | Path, adapter_name: str = "videopainter_id", scale: float = 1.0
    ) -> None:
        """Load the ID-resampling LoRA (file or folder) into the backbone with the stock loader.

        Loaded as the reference loads it; where the file holds no alpha, diffusers uses
        alpha = rank. ``scale`` is the adapter weight on top (see docs/videopainter.md).
        """
        path = Path(path)
        folder, weight_name = (
            (path.parent, path.name) if path.is_file() else (path, ID_LORA_WEIGHT_NAME)
        )
        self.pipe.load_lora_weights(str(folder), weight_name=weight_name, adapter_name=adapter_name)
        self.pipe.set_adapters([adapter_name], [scale])

    def to(self, device: torch.device | str) -> VideoPainterPipeline:
        self.pipe.to(device)
        if self.branch is not None:
            self.branch.to(device)
        return self

    def compile_blocks(self, **compile_kwargs: object) -> None:
        """Regional ``torch.compile`` of the backbone's and the branch's repeated blocks
        (:func:`lanepaint.models.kernels.compile_regions`): identical blocks share one
        compiled graph, so compile time stays that of one block; hooks installed later run
        inside the compiled call.
        """
        from lanepaint.models.kernels import compile_regions

        models = [self.pipe.transformer] + ([self.branch] if self.branch is not None else [])
        compile_regions(*models, **compile_kwargs)

    # ------------------------------------------------------------------ helpers
    @property
    def device(self) -> torch.device:
        return self.pipe._execution_device

    def _encode_video(
        self, pixels: torch.Tensor, generator: torch.Generator | None, image: bool = False
    ) -> torch.Tensor:
        """VAE latents ``[B, F, C, h, w]`` (scaled) of pixels ``[B, 3, F, H, W]`` in [-1, 1]."""
        vae = self.pipe.vae
        latents = vae.encode(pixels.to(vae.dtype)).latent_dist.sample(generator)
        factor = vae.config.scaling_factor
        # The image latent follows the stock prepare_latents convention.
        if image and vae.config.get("invert_scale_latents", False):
            latents = latents / factor
        else:
            latents = latents * factor
        return latents.permute(0, 2, 1, 3, 4).to(self.pipe.transformer.dtype)

    @staticmethod
    def _sync(device: torch.device) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter()

    # ------------------------------------------------------------------ call
    @torch.no_grad()
    def __call__(
        self,
        video: np.ndarray | torch.Tensor,
        masks: np.ndarray | torch.Tensor,
        prompt: str,
        first_frame: np.ndarray | torch.Tensor | None = None,
        *,
        negative_prompt: str = "",
        num_inference_steps: int = 50,
        guidance_scale: float = 6.0,
        use_dynamic_cfg: bool = True,
        conditioning_scale: float = 1.0,
        use_branch: bool = True,
        mask_add: bool = True,
        mask_dilation: int = 0,
        window: int | None = None,
        overlap: int = 5,
        keep_first_frame: bool = True,
        replace_known: bool = True,
        paste_back: bool = True,
        id_resample: bool = True,
        prev_clip_weight: float = 1.0,
        id_source: Literal["input", "output"] = "input",
        mode: str | PropagationMode = DEFAULT_MODE,
        generator: torch.Generator | None = None,
        seed: int | None = None,
        callback: Callable[[int, int], None] | None = None,
    ) -> PropagationResult:
        """Repaint the masked region of ``video`` so it follows ``first_frame``.

        Args:
            video: ``[T, H, W, 3]`` uint8 RGB; H, W multiples of 16 (480x720 for the real
                model, whose positional embedding is learned at that size).
            masks: ``[T, H, W]``, nonzero = repaint.
            prompt: text for the backbone and branch (the edited video's caption).
            first_frame: the edited frame 0 ``[H, W, 3]`` uint8; it replaces the video's frame 0
                and conditions the first window. None keeps the original frame 0.
            num_inference_steps, guidance_scale, use_dynamic_cfg: sampling as the stock
                pipeline (CFG runs as one batch of 2).
            conditioning_scale: strength of the branch features.
            use_branch: False runs the backbone alone through the same loop.
            mask_add: add branch features only on background tokens.
            mask_dilation: square dilation of the masks in pixels (0 = none).
            window, overlap: frames per window (default: the transformer's ``sample_frames``)
                and frames shared by consecutive windows; ``window - overlap`` must be a
                multiple of 4.
            keep_first_frame: treat frame 0 (the edited frame) as known; in a mode without
                ``first_frame_only`` also each later window's latent 0 (the previous
                window's latent at the overlap start).
            replace_known: replace unmasked latents by noised ground truth after every step.
            mode: how the known region is held: ``"reference"`` (the released VideoPainter),
                ``"lanepaint"`` (our earlier variant) or a :class:`PropagationMode`.
            paste_back: copy input pixels outside the mask into the output.
            id_resample, prev_clip_weight, id_source: target-region ID resampling between
                windows (weight 0 disables it); see :class:`IDResampler`.
            generator, seed: randomness (a CPU generator is made from ``seed`` if given).
            callback: called as ``callback(window_index, step_index)`` after every step.
        """
        opts = _Options.of(locals())
        t_start = self._sync(self.device)
        frames, mask_tensor = self.check_inputs(video, masks, first_frame)
        if generator is None and seed is not None:
            generator = torch.Generator("cpu").manual_seed(seed)
        run = self.prepare(frames, mask_tensor, prompt, opts)
        run.timings["encode"] += self._sync(self.device) - t_start
        total, counts, id_tokens = self.denoise(run, opts, generator)
        out_frames, repaint, averaged = self.decode(run, total, counts, opts.paste_back)
        run.timings["total"] = time.perf_counter() - t_start
        return PropagationResult(
            frames=out_frames,
            masks=repaint,
            latents=averaged,
            window_starts=run.plan.starts,
            timings=run.timings,
            id_tokens=id_tokens,
            mode=opts.mode.name,
        )

    def check_inputs(
        self,
        video: np.ndarray | torch.Tensor,
        masks: np.ndarray | torch.Tensor,
        first_frame: np.ndarray | torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The video as uint8 ``[T, H, W, 3]`` with frame 0 replaced by ``first_frame``, and
        the masks; ValueError for anything the transformer cannot run."""
        config = self.pipe.transformer.config
        frames_u8 = _to_uint8_frames(video, "video")
        num_frames, height, width, _ = frames_u8.shape
        mask_tensor = torch.as_tensor(np.asarray(masks))
        if tuple(mask_tensor.shape) != (num_frames, height, width):
            raise ValueError(
                f"masks {tuple(mask_tensor.shape)} do not match video {tuple(frames_u8.shape)}"
            )
        scale = self.pipe.vae_scale_factor_spatial
        patch = config.patch_size
        if height % (scale * patch) or width % (scale * patch):
            raise ValueError(f"height and width must be multiples of {scale * patch}")
        if config.use_learned_positional_embeddings and (
            height // scale != config.sample_height or width // scale != config.sample_width
        ):
            raise ValueError(
                f"this transformer only runs at {config.sample_height * scale}x"
                f"{config.sample_width * scale} (learned positional embedding)"
            )
        if first_frame is not None:
            edited = _to_uint8_frames(np.asarray(first_frame)[None], "first_frame")
            if tuple(edited.shape[1:]) != (height, width, 3):
                raise ValueError("first_frame size differs from the video")
            frames_u8 = frames_u8.clone()
            frames_u8[0] = edited[0]
        return frames_u8, mask_tensor

    def prepare(
        self, frames: torch.Tensor, masks: torch.Tensor, prompt: str, opts: _Options
    ) -> _Run:
        """What every window shares: the window plan, the (dilated) repaint masks, the prompt
        and rotary embeddings, and the sampling schedule."""
        pipe, config = self.pipe, self.pipe.transformer.config
        device, dtype = self.device, self.pipe.transformer.dtype
        num_frames, height, width, _ = frames.shape
        plan = plan_windows(
            num_frames,
            opts.window or config.sample_frames,
            opts.overlap,
            pipe.vae_scale_factor_temporal,
        )
        repaint = dilate_masks(masks.to(device), opts.mask_dilation).cpu()
        if opts.keep_first_frame:
            repaint[0] = False
        use_cfg = opts.guidance_scale > 1.0
        prompt_embeds, negative_embeds = pipe.encode_prompt(
            prompt=prompt,
            negative_prompt=opts.negative_prompt,
            do_classifier_free_guidance=use_cfg,
            num_videos_per_prompt=1,
            max_sequence_length=config.max_text_seq_length,
            device=device,
            dtype=dtype,
        )
        if use_cfg:
            prompt_embeds = torch.cat([negative_embeds, prompt_embeds], dim=0)
        rotary = (
            pipe._prepare_rotary_positional_embeddings(height, width, plan.latent_window, device)
            if config.use_rotary_positional_embeddings
            else None
        )
        ofs = prompt_embeds.new_full((1,), 2.0) if config.get("ofs_embed_dim") is not None else None
        scheduler = pipe.scheduler
        scheduler.set_timesteps(opts.num_inference_steps, device=device)
        # add_noise moves this table to the device on first use; doing it up front keeps the
        # step's scalar math on one device, so a first call gives the same result as later ones.
        scheduler.alphas_cumprod = scheduler.alphas_cumprod.to(device)
        steps = scheduler.timesteps.tolist()  # one host copy; the loop indexes Python ints
        guidance = [
            _dynamic_guidance(opts.guidance_scale, t, opts.num_inference_steps)
            if opts.use_dynamic_cfg
            else opts.guidance_scale
            for t in steps
        ]
        blank = blacked_region(masks) if opts.mode.blacked_known else None
        return _Run(
            plan=plan,
            frames=frames,
            video=pad_frames(frames, plan.padded_frames),
            repaint=pad_frames(repaint, plan.padded_frames),
            prompt_embeds=prompt_embeds,
            rotary=rotary,
            ofs=ofs,
            timesteps=scheduler.timesteps,
            steps=steps,
            guidance=guidance,
            use_cfg=use_cfg,
            mode=opts.mode,
            blank=None if blank is None else pad_frames(blank, plan.padded_frames),
        )

    def denoise(
        self, run: _Run, opts: _Options, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """Every window in turn, with the branch-injection and ID-resampling hooks installed.

        Returns the windows' latents summed on the global latent grid, how many windows
        cover each latent frame, and the tokens kept per window for ID resampling."""
        device, config = self.device, self.pipe.transformer.config
        num_windows = len(run.plan.starts)
        blocks = self.pipe.transformer.transformer_blocks
        if opts.use_branch and self.branch is not None:
            run.injector = BranchInjector(
                blocks, len(self.branch.transformer_blocks), opts.mask_add
            )
        if opts.id_resample and opts.prev_clip_weight > 0 and num_windows > 1:
            run.resampler = IDResampler(blocks, opts.prev_clip_weight, opts.id_source)
        scale = self.pipe.vae_scale_factor_spatial
        latent_h, latent_w = run.frames.shape[1] // scale, run.frames.shape[2] // scale
        grid = (1, run.plan.latent_frames, config.out_channels, latent_h, latent_w)
        total = torch.zeros(grid, device=device, dtype=torch.float32)
        counts = torch.zeros(run.plan.latent_frames, device=device, dtype=torch.float32)
        id_tokens: list[int] = []
        previous: torch.Tensor | None = None
        with ExitStack() as stack:
            for hook in (run.injector, run.resampler):
                if hook is not None:
                    stack.enter_context(hook)
            for k in range(num_windows):
                t0 = self._sync(device)
                win = self.prepare_window(run, k, previous, generator, opts.keep_first_frame)
                if run.injector is not None:
                    run.injector.masked_tokens = win.masked_tokens
                capture = None
                if run.resampler is not None and k + 1 < num_windows:
                    capture = win.masked_tokens[0].nonzero().squeeze(1)
                    id_tokens.append(int(capture.numel()))
                t1 = self._sync(device)
                run.timings["encode"] += t1 - t0
                # Each window is its own trajectory for a speed preset's step cache.
                with cache_scope(self.pipe.transformer, "cond_uncond"):
                    latents = self.denoise_window(run, win, opts, generator, capture, k)
                if run.injector is not None:
                    run.injector.samples = None
                if run.resampler is not None:
                    run.resampler.next_window()
                g0 = run.plan.latent_start(k)
                total[:, g0 : g0 + run.plan.latent_window] += latents.float()
                counts[g0 : g0 + run.plan.latent_window] += 1
                previous = latents
                run.timings["denoise"] += self._sync(device) - t1
        return total, counts, id_tokens

    def prepare_window(
        self,
        run: _Run,
        k: int,
        previous: torch.Tensor | None,
        generator: torch.Generator | None,
        keep_first_frame: bool,
    ) -> _Window:
        """Window ``k``'s conditioning and initial noise: ground-truth and masked-video
        latents (one VAE batch), the latent mask, and the image latent (window 0: the edited
        frame encoded alone; later windows: the previous window's latent at the overlap
        start, also taken as known when ``keep_first_frame`` and the mode keeps not only
        frame 0). The known latents are noised with the initial noise or a draw of their own,
        as the mode says."""
        device, dtype = self.device, self.pipe.transformer.dtype
        plan, start, latent_window = run.plan, run.plan.starts[k], run.plan.latent_window
        scale = self.pipe.vae_scale_factor_spatial
        frames = run.video[start : start + plan.window].to(device)
        known_px = ~run.repaint[start : start + plan.window].to(device)
        if run.blank is not None:  # the known video, as the released inference encodes it
            frames = black_out(frames, run.blank[start : start + plan.window].to(device))
        pixels = frames.permute(3, 0, 1, 2)[None].to(dtype) / 127.5 - 1.0
        # Ground truth and masked video in one VAE batch.
        both = torch.cat([pixels, pixels * known_px.to(dtype)])
        gt_latents, masked_latents = self._encode_video(both, generator).chunk(2)
        latent_mask = latent_mask_from_masks(~known_px, latent_window, scale).to(dtype)
        if previous is None:
            image_latent = self._encode_video(pixels[:, :, :1], generator, image=True)
        else:
            j0 = plan.latent_stride
            image_latent = previous[:, j0 : j0 + 1]
            if keep_first_frame and not run.mode.first_frame_only:
                gt_latents[:, :1] = image_latent
                masked_latents[:, :1] = image_latent
                latent_mask[:, :1] = 0
        channels = self.pipe.transformer.config.out_channels
        shape = (1, latent_window, channels, frames.shape[1] // scale, frames.shape[2] // scale)
        noise = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        gt_noise = (
            noise
            if run.mode.initial_noise
            else randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        )
        image_latents = torch.cat(
            [image_latent, image_latent.new_zeros((1, latent_window - 1, *shape[2:]))], dim=1
        )
        branch_cond = torch.cat([masked_latents, latent_mask], dim=2)
        if run.use_cfg:
            image_latents = torch.cat([image_latents] * 2)
            branch_cond = torch.cat([branch_cond] * 2)
        return _Window(
            latents=noise * self.pipe.scheduler.init_noise_sigma,
            gt_latents=gt_latents,
            gt_noise=gt_noise,
            image_latents=image_latents,
            branch_cond=branch_cond,
            generate=latent_mask.bool(),
            masked_tokens=token_mask_from_latent_mask(
                latent_mask, self.pipe.transformer.config.patch_size
            ),
        )

    def denoise_window(
        self,
        run: _Run,
        win: _Window,
        opts: _Options,
        generator: torch.Generator | None,
        capture: torch.Tensor | None,
        k: int,
    ) -> torch.Tensor:
        """The sampling loop of one window: branch features into the backbone's blocks, CFG,
        the scheduler step, then the known latents replaced by the ground truth noised to
        the next timestep (clean after the last step). ``capture``: the tokens whose keys
        and values ID resampling keeps from the last step."""
        transformer, scheduler = self.pipe.transformer, self.pipe.scheduler
        dtype = transformer.dtype
        latents, old_pred = win.latents, None
        last = len(run.steps) - 1
        for i, t in enumerate(run.timesteps):
            model_in = torch.cat([latents] * 2) if run.use_cfg else latents
            model_in = scheduler.scale_model_input(model_in, t)
            t_batch = t.expand(model_in.shape[0])
            if run.injector is not None:
                run.injector.samples = self.branch(
                    torch.cat([model_in, win.branch_cond], dim=2),
                    run.prompt_embeds,
                    t_batch,
                    image_rotary_emb=run.rotary,
                    conditioning_scale=opts.conditioning_scale,
                )
            capturing = capture is not None and i == last
            with run.resampler.capture(capture) if capturing else nullcontext():
                noise_pred = transformer(
                    hidden_states=torch.cat([model_in, win.image_latents], dim=2),
                    encoder_hidden_states=run.prompt_embeds,
                    timestep=t_batch,
                    ofs=run.ofs,
                    image_rotary_emb=run.rotary,
                    return_dict=False,
                )[0].float()
            if run.use_cfg:
                uncond, cond = noise_pred.chunk(2)
                noise_pred = uncond + run.guidance[i] * (cond - uncond)
            latents, old_pred = scheduler.step(
                noise_pred,
                old_pred,
                run.steps[i],
                run.steps[i - 1] if i > 0 else None,
                latents,
                generator=generator,
                return_dict=False,
            )
            latents = latents.to(dtype)
            if opts.replace_known:
                known = (
                    scheduler.add_noise(win.gt_latents, win.gt_noise, run.timesteps[i + 1 : i + 2])
                    if i < last
                    else win.gt_latents
                )
                latents = torch.where(win.generate, latents, known)
            if opts.callback is not None:
                opts.callback(k, i)
        return latents

    def decode(
        self, run: _Run, total: torch.Tensor, counts: torch.Tensor, paste_back: bool
    ) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
        """The windows' latents averaged and decoded; outside the repaint mask the input
        pixels are pasted back, so the background is bit-exact. Returns the frames, the
        repaint masks and the averaged latents (CPU)."""
        pipe, device = self.pipe, self.device
        t2 = self._sync(device)
        averaged = total / counts.view(1, -1, 1, 1, 1)
        decoded = pipe.decode_latents(averaged.to(pipe.vae.dtype))  # [1, 3, T', H, W]
        generated = ((decoded[0].float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
        num_frames = run.frames.shape[0]
        generated = generated.permute(1, 2, 3, 0)[:num_frames]
        repaint = run.repaint[:num_frames]
        if paste_back:
            original = run.frames.to(device)
            generated = torch.where(repaint.to(device)[..., None], generated, original)
        out_frames = generated.cpu().numpy()
        run.timings["decode"] = self._sync(device) - t2
        return out_frames, repaint.numpy(), averaged.cpu()
