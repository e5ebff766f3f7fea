"""The dual pipeline: stock CogVideoX-5B-I2V + the VideoPainter context branch.

The stock ``CogVideoXImageToVideoPipeline`` supplies every component (T5, VAE, transformer,
``CogVideoXDPMScheduler``) and the helpers it already has (``encode_prompt``, rotary embeddings,
``decode_latents``); this module only owns the denoising loop, because VideoPainter needs four
things inside it that the stock loop has no place for:

* the branch runs on ``noisy | masked-video latents | latent mask`` each step and its features are
  added to the backbone's blocks by hooks (:class:`~.injection.BranchInjector`);
* after each scheduler step the known (unmasked) latents are replaced by the ground-truth video
  latents noised to the next timestep (clean after the last step);
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from diffusers import CogVideoXDPMScheduler, CogVideoXImageToVideoPipeline
from diffusers.utils.torch_utils import randn_tensor

from lanepaint.videopainter.branch import VideoPainterBranch
from lanepaint.videopainter.id_resample import IDResampler
from lanepaint.videopainter.injection import BranchInjector, token_mask_from_latent_mask
from lanepaint.videopainter.windows import (
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
        """Regional ``torch.compile``: each repeated block (backbone and branch) compiled alone.

        Identical blocks share one compiled graph, so compile time stays that of one block;
        hooks installed later run inside the compiled call.
        """
        blocks = list(self.pipe.transformer.transformer_blocks)
        if self.branch is not None:
            blocks += list(self.branch.transformer_blocks)
        for block in blocks:
            block.compile(**compile_kwargs)

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
            keep_first_frame: treat each window's first frame as known (window 0: frame 0;
                later windows: the previous window's latent at the overlap start).
            replace_known: replace unmasked latents by noised ground truth after every step.
            paste_back: copy input pixels outside the mask into the output.
            id_resample, prev_clip_weight, id_source: target-region ID resampling between
                windows (weight 0 disables it); see :class:`IDResampler`.
            generator, seed: randomness (a CPU generator is made from ``seed`` if given).
            callback: called as ``callback(window_index, step_index)`` after every step.
        """
        pipe, transformer = self.pipe, self.pipe.transformer
        config = transformer.config
        device, dtype = self.device, transformer.dtype
        t_start = self._sync(device)
        timings = {"encode": 0.0, "denoise": 0.0, "decode": 0.0}

        frames_u8 = _to_uint8_frames(video, "video")
        num_frames, height, width, _ = frames_u8.shape
        mask_tensor = torch.as_tensor(np.asarray(masks))
        if tuple(mask_tensor.shape) != (num_frames, height, width):
            raise ValueError(
                f"masks {tuple(mask_tensor.shape)} do not match video {tuple(frames_u8.shape)}"
            )
        scale = pipe.vae_scale_factor_spatial
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
        if generator is None and seed is not None:
            generator = torch.Generator("cpu").manual_seed(seed)

        plan = plan_windows(
            num_frames, window or config.sample_frames, overlap, pipe.vae_scale_factor_temporal
        )
        repaint = dilate_masks(mask_tensor.to(device), mask_dilation).cpu()
        if keep_first_frame:
            repaint[0] = False
        video_padded = pad_frames(frames_u8, plan.padded_frames)
        repaint_padded = pad_frames(repaint, plan.padded_frames)
        latent_window = plan.latent_window

        use_cfg = guidance_scale > 1.0
        prompt_embeds, negative_embeds = pipe.encode_prompt(
            prompt=prompt,
            negative_prompt=negative_prompt,
            do_classifier_free_guidance=use_cfg,
            num_videos_per_prompt=1,
            max_sequence_length=config.max_text_seq_length,
            device=device,
            dtype=dtype,
        )
        if use_cfg:
            prompt_embeds = torch.cat([negative_embeds, prompt_embeds], dim=0)
        rotary = (
            pipe._prepare_rotary_positional_embeddings(height, width, latent_window, device)
            if config.use_rotary_positional_embeddings
            else None
        )
        ofs = prompt_embeds.new_full((1,), 2.0) if config.get("ofs_embed_dim") is not None else None

        scheduler = pipe.scheduler
        scheduler.set_timesteps(num_inference_steps, device=device)
        # add_noise moves this table to the device on first use; doing it up front keeps the
        # step's scalar math on one device, so a first call gives the same result as later ones.
        scheduler.alphas_cumprod = scheduler.alphas_cumprod.to(device)
        timesteps = scheduler.timesteps
        steps = timesteps.tolist()  # one host copy; the loop below indexes Python ints
        guidance = [
            _dynamic_guidance(guidance_scale, t, num_inference_steps)
            if use_dynamic_cfg
            else guidance_scale
            for t in steps
        ]
        timings["encode"] += self._sync(device) - t_start

        branch_on = use_branch and self.branch is not None
        num_windows = len(plan.starts)
        blocks = transformer.transformer_blocks
        injector = (
            BranchInjector(blocks, len(self.branch.transformer_blocks), mask_add)
            if branch_on
            else None
        )
        resampler = (
            IDResampler(blocks, prev_clip_weight, id_source)
            if id_resample and prev_clip_weight > 0 and num_windows > 1
            else None
        )
        channels = config.out_channels
        latent_h, latent_w = height // scale, width // scale
        total = torch.zeros(
            (1, plan.latent_frames, channels, latent_h, latent_w),
            device=device,
            dtype=torch.float32,
        )
        counts = torch.zeros(plan.latent_frames, device=device, dtype=torch.float32)
        id_tokens: list[int] = []
        previous: torch.Tensor | None = None

        with ExitStack() as stack:
            if injector is not None:
                stack.enter_context(injector)
            if resampler is not None:
                stack.enter_context(resampler)
            for k, start in enumerate(plan.starts):
                t0 = self._sync(device)
                frames = video_padded[start : start + plan.window].to(device)
                known_px = ~repaint_padded[start : start + plan.window].to(device)
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
                    if keep_first_frame:
                        gt_latents[:, :1] = image_latent
                        masked_latents[:, :1] = image_latent
                        latent_mask[:, :1] = 0
                shape = (1, latent_window, channels, latent_h, latent_w)
                latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
                latents = latents * scheduler.init_noise_sigma
                gt_noise = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
                image_latents = torch.cat(
                    [image_latent, image_latent.new_zeros((1, latent_window - 1, *shape[2:]))],
                    dim=1,
                )
                branch_cond = torch.cat([masked_latents, latent_mask], dim=2)
                if use_cfg:
                    image_latents = torch.cat([image_latents] * 2)
                    branch_cond = torch.cat([branch_cond] * 2)
                generate = latent_mask.bool()
                masked_tokens = token_mask_from_latent_mask(latent_mask, patch)
                if injector is not None:
                    injector.masked_tokens = masked_tokens
                capture_index = None
                if resampler is not None and k + 1 < num_windows:
                    capture_index = masked_tokens[0].nonzero().squeeze(1)
                    id_tokens.append(int(capture_index.numel()))
                t1 = self._sync(device)
                timings["encode"] += t1 - t0

                old_pred = None
                last = len(steps) - 1
                for i, t in enumerate(timesteps):
                    model_in = torch.cat([latents] * 2) if use_cfg else latents
                    model_in = scheduler.scale_model_input(model_in, t)
                    t_batch = t.expand(model_in.shape[0])
                    if injector is not None:
                        injector.samples = self.branch(
                            torch.cat([model_in, branch_cond], dim=2),
                            prompt_embeds,
                            t_batch,
                            image_rotary_emb=rotary,
                            conditioning_scale=conditioning_scale,
                        )
                    capturing = capture_index is not None and i == last
                    with resampler.capture(capture_index) if capturing else nullcontext():
                        noise_pred = transformer(
                            hidden_states=torch.cat([model_in, image_latents], dim=2),
                            encoder_hidden_states=prompt_embeds,
                            timestep=t_batch,
                            ofs=ofs,
                            image_rotary_emb=rotary,
                            return_dict=False,
                        )[0].float()
                    if use_cfg:
                        uncond, cond = noise_pred.chunk(2)
                        noise_pred = uncond + guidance[i] * (cond - uncond)
                    latents, old_pred = scheduler.step(
                        noise_pred,
                        old_pred,
                        steps[i],
                        steps[i - 1] if i > 0 else None,
                        latents,
                        generator=generator,
                        return_dict=False,
                    )
                    latents = latents.to(dtype)
                    if replace_known:
                        known = (
                            scheduler.add_noise(gt_latents, gt_noise, timesteps[i + 1 : i + 2])
                            if i < last
                            else gt_latents
                        )
                        latents = torch.where(generate, latents, known)
                    if callback is not None:
                        callback(k, i)
                if injector is not None:
                    injector.samples = None
                if resampler is not None:
                    resampler.next_window()
                g0 = plan.latent_start(k)
                total[:, g0 : g0 + latent_window] += latents.float()
                counts[g0 : g0 + latent_window] += 1
                previous = latents
                timings["denoise"] += self._sync(device) - t1

        t2 = self._sync(device)
        averaged = total / counts.view(1, -1, 1, 1, 1)
        decoded = pipe.decode_latents(averaged.to(pipe.vae.dtype))  # [1, 3, T', H, W]
        generated = ((decoded[0].float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
        generated = generated.permute(1, 2, 3, 0)[:num_frames]
        repaint = repaint_padded[:num_frames]
        if paste_back:
            original = frames_u8.to(device)
            generated = torch.where(repaint.to(device)[..., None], generated, original)
        out_frames = generated.cpu().numpy()
        timings["decode"] = self._sync(device) - t2
        timings["total"] = time.perf_counter() - t_start
        return PropagationResult(
            frames=out_frames,
            masks=repaint.numpy(),
            latents=averaged.cpu(),
            window_starts=plan.starts,
            timings=timings,
            id_tokens=id_tokens,
        )
