"""LoRA adapters on the Flux transformer, saved in the format stock diffusers loads.

The weights go through ``FluxFillPipeline.save_lora_weights`` with the peft config as
adapter metadata, so ``FluxFillPipeline.load_lora_weights(dir)`` restores the same scaling
even when alpha differs from the rank (without the metadata diffusers assumes alpha = r).
"""

from __future__ import annotations

import torch
from diffusers import FluxFillPipeline
from diffusers.training_utils import cast_training_params
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict

from lanepaint.training.config import TrainConfig

WEIGHT_NAME = "pytorch_lora_weights.safetensors"
ADAPTER = "default"


def add_lora(transformer, config: TrainConfig) -> list[torch.nn.Parameter]:
    """Freeze the transformer, add the adapter, keep its parameters in fp32; return them."""
    transformer.requires_grad_(False)
    lora_config = LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        init_lora_weights="gaussian",
        target_modules=list(config.target_modules),
    )
    try:
        transformer.add_adapter(lora_config, adapter_name=ADAPTER)
    except ValueError as exc:
        raise ValueError(
            f"LoRA target modules {list(config.target_modules)} do not match the Flux "
            f"transformer: {exc}"
        ) from exc
    cast_training_params(transformer, dtype=torch.float32)
    params = [p for p in transformer.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"no trainable LoRA parameters for targets {config.target_modules}")
    return params


def lora_state(transformer) -> tuple[dict[str, torch.Tensor], dict]:
    """(peft state dict without adapter names, adapter metadata) of an unwrapped model."""
    state = get_peft_model_state_dict(transformer, adapter_name=ADAPTER)
    metadata = transformer.peft_config[ADAPTER].to_dict()
    return state, metadata


def save_lora(directory, transformer) -> None:
    """``pytorch_lora_weights.safetensors`` with ``transformer.``-prefixed keys + metadata."""
    state, metadata = lora_state(transformer)
    FluxFillPipeline.save_lora_weights(
        directory,
        transformer_lora_layers={k: v.detach().cpu() for k, v in state.items()},
        transformer_lora_adapter_metadata=metadata,
    )


def load_lora_into(transformer, directory) -> None:
    """Set the adapter weights of ``transformer`` from a folder written by :func:`save_lora`."""
    state = FluxFillPipeline.lora_state_dict(str(directory))
    prefix = "transformer."
    state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    if not state:
        raise ValueError(f"no transformer LoRA weights in {directory}")
    result = set_peft_model_state_dict(transformer, state, adapter_name=ADAPTER)
    unexpected = getattr(result, "unexpected_keys", None) or []
    if unexpected:
        raise ValueError(f"LoRA weights in {directory} do not fit the adapter: {unexpected[:5]}")
    missing = [k for k in (getattr(result, "missing_keys", None) or []) if "lora_" in k]
    if missing:
        raise ValueError(f"LoRA weights in {directory} lack adapter tensors: {missing[:5]}")
