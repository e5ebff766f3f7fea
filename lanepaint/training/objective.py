"""The FluxFill rectified-flow objective, built from the stock pipeline's own helpers.

x0 are VAE latents (shift/scale as in the pipeline), sigma comes from the scheduler's
training sigmas (no dynamic shift), x_t = (1 - sigma) x0 + sigma noise, and the
transformer predicts noise - x0. The Fill condition is concatenated exactly as
``FluxFillPipeline.__call__`` does at inference: ``prepare_mask_latents`` packs the
masked-image latents and the full-resolution mask (reshaped factor x factor -> channels),
with the VAE factor read from the VAE config (8 for the real VAE).
"""

from __future__ import annotations

import types
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from diffusers import FlowMatchEulerDiscreteScheduler, FluxFillPipeline
from diffusers.training_utils import compute_density_for_timestep_sampling

_pack = FluxFillPipeline._pack_latents
_image_ids = FluxFillPipeline._prepare_latent_image_ids


@dataclass(frozen=True)
class FillGeometry:
    """What packing needs from the VAE config (kept after the VAE itself is released)."""

    vae_scale_factor: int
    latent_channels: int
    shift_factor: float
    scaling_factor: float

    @classmethod
    def from_vae_config(cls, config) -> FillGeometry:
        return cls(
            vae_scale_factor=2 ** (len(config.block_out_channels) - 1),
            latent_channels=int(config.latent_channels),
            shift_factor=float(config.shift_factor or 0.0),
            scaling_factor=float(config.scaling_factor),
        )

    def _pipeline_view(self):
        """The attributes ``FluxFillPipeline.prepare_mask_latents`` reads from ``self``."""
        config = types.SimpleNamespace(
            shift_factor=self.shift_factor, scaling_factor=self.scaling_factor
        )
        return types.SimpleNamespace(
            vae=types.SimpleNamespace(config=config),
            vae_scale_factor=self.vae_scale_factor,
            _pack_latents=_pack,
        )

    def condition(self, masked_latents_raw: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Packed (masked-image latents, mask) as the pipeline concatenates them.

        ``masked_latents_raw`` are VAE samples before shift/scale (the pipeline applies them
        inside ``prepare_mask_latents``); ``mask`` is (B,1,H,W) at full resolution.
        """
        b, _, height, width = mask.shape
        mask_packed, masked = FluxFillPipeline.prepare_mask_latents(
            self._pipeline_view(),
            mask,
            masked_latents_raw,
            b,
            self.latent_channels,
            1,
            height,
            width,
            masked_latents_raw.dtype,
            masked_latents_raw.device,
            None,
        )
        return torch.cat((masked, mask_packed), dim=-1)

    def scale(self, raw: torch.Tensor) -> torch.Tensor:
        """VAE sample -> model latents, as the pipeline's ``_encode_vae_image``."""
        return (raw - self.shift_factor) * self.scaling_factor


class FlowSchedule:
    """Training sigmas/timesteps of the model's FlowMatchEulerDiscreteScheduler config."""

    def __init__(self, scheduler_config):
        scheduler = FlowMatchEulerDiscreteScheduler.from_config(scheduler_config)
        self.sigmas = scheduler.sigmas.float().clone()
        self.timesteps = scheduler.timesteps.float().clone()
        self.num_train_timesteps = int(scheduler.config.num_train_timesteps)

    def sample(
        self,
        batch: int,
        generator: torch.Generator,
        weighting_scheme: str = "none",
        logit_mean: float = 0.0,
        logit_std: float = 1.0,
        mode_scale: float = 1.29,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(sigmas, timesteps), each (B,), on the generator's device."""
        u = compute_density_for_timestep_sampling(
            weighting_scheme=weighting_scheme,
            batch_size=batch,
            logit_mean=logit_mean,
            logit_std=logit_std,
            mode_scale=mode_scale,
            device=generator.device,
            generator=generator,
        )
        idx = (u * self.num_train_timesteps).long().clamp(0, len(self.sigmas) - 1).cpu()
        device = generator.device
        return self.sigmas[idx].to(device), self.timesteps[idx].to(device)


@dataclass
class FillBatch:
    """One same-size group of cached rows, on the training device."""

    latent_mean: torch.Tensor  # (B,C,h,w) VAE posterior of the image
    latent_std: torch.Tensor
    masked_mean: torch.Tensor  # (B,C,h,w) VAE posterior of image * (1 - mask)
    masked_std: torch.Tensor
    mask: torch.Tensor  # (B,1,H,W) float {0,1}
    prompt_embeds: torch.Tensor  # (B,L,D) T5
    pooled: torch.Tensor  # (B,D) CLIP pooled

    @property
    def size(self) -> int:
        return self.latent_mean.shape[0]


def collate(latents: list[dict], texts: list[dict], device, dtype=torch.float32) -> FillBatch:
    """Stack cache entries of one image size into a batch on ``device``."""

    def stack(items, key):
        t = torch.stack([i[key] for i in items])
        if t.device.type == "cpu" and torch.device(device).type == "cuda":
            t = t.pin_memory()
        return t.to(device, dtype, non_blocking=True)

    return FillBatch(
        latent_mean=stack(latents, "latent_mean"),
        latent_std=stack(latents, "latent_std"),
        masked_mean=stack(latents, "masked_mean"),
        masked_std=stack(latents, "masked_std"),
        mask=stack(latents, "mask")[:, None],
        prompt_embeds=stack(texts, "prompt_embeds"),
        pooled=stack(texts, "pooled"),
    )


@dataclass
class StepInputs:
    """Everything one transformer call and its loss need (kept for the bench's reference)."""

    x0: torch.Tensor  # (B,C,h,w) scaled latents
    noise: torch.Tensor  # (B,C,h,w)
    sigmas: torch.Tensor  # (B,)
    timesteps: torch.Tensor  # (B,) in [0, 1000]
    condition: torch.Tensor  # (B,N,C*4 + f*f*4) packed masked latents + mask
    prompt_embeds: torch.Tensor
    pooled: torch.Tensor


def sample_inputs(
    batch: FillBatch,
    geometry: FillGeometry,
    schedule: FlowSchedule,
    generators: Sequence[torch.Generator],
    weighting_scheme: str = "none",
    logit_mean: float = 0.0,
    logit_std: float = 1.0,
    mode_scale: float = 1.29,
) -> StepInputs:
    """Draw VAE samples, noise and sigma of each row from that row's own generator.

    One generator per row (seeded by the row's position in the sample stream) makes the
    draws independent of how rows are grouped into processes and micro-batches: two
    processes with batch 1 see exactly what one process with batch 2 sees.
    """
    if len(generators) != batch.size:
        raise ValueError(f"{len(generators)} generators for a batch of {batch.size}")

    def randn(like: torch.Tensor, i: int) -> torch.Tensor:
        return torch.randn(
            like.shape[1:], generator=generators[i], device=like.device, dtype=torch.float32
        ).to(like.dtype)

    eps_x0, eps_masked, noise, sigmas, timesteps = [], [], [], [], []
    for i, gen in enumerate(generators):
        eps_x0.append(randn(batch.latent_std, i))
        eps_masked.append(randn(batch.masked_std, i))
        noise.append(randn(batch.latent_std, i))
        sigma, timestep = schedule.sample(
            1, gen, weighting_scheme, logit_mean, logit_std, mode_scale
        )
        sigmas.append(sigma)
        timesteps.append(timestep)
    x0 = geometry.scale(batch.latent_mean + batch.latent_std * torch.stack(eps_x0))
    masked_raw = batch.masked_mean + batch.masked_std * torch.stack(eps_masked)
    return StepInputs(
        x0=x0,
        noise=torch.stack(noise),
        sigmas=torch.cat(sigmas).to(x0.device, x0.dtype),
        timesteps=torch.cat(timesteps).to(x0.device, x0.dtype),
        condition=geometry.condition(masked_raw, batch.mask),
        prompt_embeds=batch.prompt_embeds,
        pooled=batch.pooled,
    )


def flow_matching_loss(
    transformer, inputs: StepInputs, guidance_scale: float | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, prediction): MSE of the packed prediction against noise - x0, fp32 reduction.

    ``guidance_scale`` is None for a transformer without a guidance embedding; the model
    may be wrapped (DDP), so nothing is read from its config here.
    """
    x0, noise = inputs.x0, inputs.noise
    b, c, h, w = x0.shape
    sigma = inputs.sigmas.view(b, 1, 1, 1)
    noisy = _pack((1.0 - sigma) * x0 + sigma * noise, b, c, h, w)
    target = _pack(noise - x0, b, c, h, w)
    guidance = None
    if guidance_scale is not None:
        guidance = torch.full((b,), guidance_scale, device=x0.device, dtype=torch.float32)
    pred = transformer(
        hidden_states=torch.cat((noisy, inputs.condition), dim=2),
        timestep=inputs.timesteps / 1000,
        guidance=guidance,
        pooled_projections=inputs.pooled,
        encoder_hidden_states=inputs.prompt_embeds,
        txt_ids=torch.zeros(inputs.prompt_embeds.shape[1], 3, device=x0.device, dtype=x0.dtype),
        img_ids=_image_ids(b, h // 2, w // 2, x0.device, x0.dtype),
        return_dict=False,
    )[0]
    loss = ((pred.float() - target.float()) ** 2).reshape(b, -1).mean(dim=1).mean()
    return loss, pred
