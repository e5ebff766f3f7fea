"""VideoPainter branch, injection, dual pipeline, windows and ID resampling on tiny models (CPU)."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from diffusers import (
    AutoencoderKLCogVideoX,
    CogVideoXDPMScheduler,
    CogVideoXImageToVideoPipeline,
    CogVideoXTransformer3DModel,
)
from diffusers.models.attention_processor import CogVideoXAttnProcessor2_0
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import T5Config, T5EncoderModel, T5TokenizerFast

from lanepaint.videopainter import (
    BranchInjector,
    IDResampleAttnProcessor,
    VideoPainterBranch,
    VideoPainterPipeline,
    branch_index_for_block,
    plan_windows,
    token_mask_from_latent_mask,
)
from lanepaint.videopainter.windows import dilate_masks, latent_mask_from_masks

PROMPT = "road with single white solid lane markings"
H = W = 32  # 4x4 latents, 2x2 tokens per latent frame


# ---------------------------------------------------------------------------- tiny models
def tiny_tokenizer() -> T5TokenizerFast:
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [(c, -3.0) for c in "abcdefghijklmnopqrstuvwxyz"]
    pieces += [(f"▁{w}", -1.0) for w in ("road", "with", "lane", "markings", "white", "solid")]
    model = Tokenizer(models.Unigram(pieces, unk_id=2))
    model.pre_tokenizer = pre_tokenizers.Metaspace()
    model.decoder = decoders.Metaspace()
    return T5TokenizerFast(
        tokenizer_object=model,
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        extra_ids=0,
        model_max_length=16,
    )


def tiny_transformer(seed: int = 0) -> CogVideoXTransformer3DModel:
    torch.manual_seed(seed)
    return CogVideoXTransformer3DModel(
        num_attention_heads=2,
        attention_head_dim=16,
        in_channels=8,
        out_channels=4,
        time_embed_dim=8,
        text_embed_dim=32,
        num_layers=4,
        sample_width=4,
        sample_height=4,
        sample_frames=9,
        patch_size=2,
        max_text_seq_length=16,
        use_rotary_positional_embeddings=True,
        use_learned_positional_embeddings=True,
    ).eval()


def tiny_pipe(seed: int = 0) -> CogVideoXImageToVideoPipeline:
    transformer = tiny_transformer(seed)
    torch.manual_seed(seed + 1)
    vae = AutoencoderKLCogVideoX(
        down_block_types=("CogVideoXDownBlock3D",) * 4,
        up_block_types=("CogVideoXUpBlock3D",) * 4,
        block_out_channels=(8, 8, 8, 8),
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=2,
    ).eval()
    text_encoder = T5EncoderModel(
        T5Config(vocab_size=128, d_model=32, d_ff=64, d_kv=8, num_layers=2, num_heads=4)
    ).eval()
    scheduler = CogVideoXDPMScheduler(
        prediction_type="v_prediction",
        timestep_spacing="trailing",
        clip_sample=False,
        rescale_betas_zero_snr=True,
        snr_shift_scale=1.0,
    )
    return CogVideoXImageToVideoPipeline(
        tokenizer=tiny_tokenizer(),
        text_encoder=text_encoder,
        vae=vae,
        transformer=transformer,
        scheduler=scheduler,
    )


def randomize_branch_outputs(branch: VideoPainterBranch, seed: int = 3) -> None:
    """Trained-like branch: non-zero output layers."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for linear in branch.branch_blocks:
            linear.weight.copy_(torch.randn(linear.weight.shape, generator=gen) * 0.5)
            linear.bias.copy_(torch.randn(linear.bias.shape, generator=gen) * 0.5)
        branch.patch_embed.proj.weight[:, -1].normal_(generator=gen)


def sample_video(frames: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    video = rng.integers(0, 256, (frames, H, W, 3), dtype=np.uint8)
    masks = np.zeros((frames, H, W), dtype=np.uint8)
    masks[:, 20:, 4:13] = 1  # a road patch in the lower left, crossing token borders
    first = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    return video, masks, first


FAST = dict(num_inference_steps=3, guidance_scale=6.0, window=9)


@pytest.fixture(scope="module")
def painter() -> VideoPainterPipeline:
    pipe = tiny_pipe()
    branch = VideoPainterBranch.from_transformer(pipe.transformer, num_layers=2)
    return VideoPainterPipeline(pipe, branch)


# ---------------------------------------------------------------------------- branch
def test_branch_from_transformer_holds_exactly_the_specified_copies():
    transformer = tiny_transformer()
    branch = VideoPainterBranch.from_transformer(transformer, num_layers=2)

    assert len(branch.transformer_blocks) == 2 and len(branch.branch_blocks) == 2
    conv, src = branch.patch_embed.proj.weight, transformer.patch_embed.proj.weight
    assert conv.shape == (32, 9, 2, 2) and src.shape == (32, 8, 2, 2)
    assert torch.equal(conv[:, :4], src[:, :4])  # noisy latents <- backbone noisy slice
    assert torch.equal(conv[:, 4:8], src[:, :4])  # masked video <- backbone noisy slice too
    assert not torch.equal(conv[:, 4:8], src[:, 4:8])  # (not the image-latent slice)
    assert torch.count_nonzero(conv[:, 8]) == 0  # mask channel
    assert torch.equal(branch.patch_embed.proj.bias, transformer.patch_embed.proj.bias)
    for name in ("text_proj.weight", "text_proj.bias", "pos_embedding"):
        ours = branch.patch_embed.state_dict()[name]
        assert torch.equal(ours, transformer.patch_embed.state_dict()[name].to(ours.dtype))
    for name, value in transformer.time_embedding.state_dict().items():
        assert torch.equal(branch.time_embedding.state_dict()[name], value)
    for i in range(2):
        theirs = transformer.transformer_blocks[i].state_dict()
        ours = branch.transformer_blocks[i].state_dict()
        assert ours.keys() == theirs.keys()
        assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    for linear in branch.branch_blocks:
        assert linear.weight.shape == (32, 32)
        assert torch.count_nonzero(linear.weight) == 0 and torch.count_nonzero(linear.bias) == 0
    prefixes = {k.split(".")[0] for k in branch.state_dict()}
    assert prefixes == {"patch_embed", "time_embedding", "transformer_blocks", "branch_blocks"}
    # a copy, not a view: changing the branch leaves the backbone alone
    with torch.no_grad():
        branch.transformer_blocks[0].attn1.to_q.weight.add_(1.0)
    assert not torch.equal(
        branch.transformer_blocks[0].attn1.to_q.weight,
        transformer.transformer_blocks[0].attn1.to_q.weight,
    )


def test_branch_forward_gives_scaled_per_block_video_tokens():
    transformer = tiny_transformer()
    branch = VideoPainterBranch.from_transformer(transformer).eval()
    x = torch.randn(2, 3, 9, 4, 4)
    text = torch.randn(2, 16, 32)
    t = torch.tensor([999, 999])
    outs = branch(x, text, t)
    assert [tuple(o.shape) for o in outs] == [(2, 12, 32)] * 2  # 3 frames x 2x2 tokens
    assert all(torch.count_nonzero(o) == 0 for o in outs)  # zero output layers
    randomize_branch_outputs(branch)
    one = branch(x, text, t, conditioning_scale=1.0)
    half = branch(x, text, t, conditioning_scale=0.5)
    assert all(torch.allclose(h * 2, o, atol=1e-6) for h, o in zip(half, one, strict=True))
    assert torch.count_nonzero(one[1]) > 0
    with pytest.raises(ValueError, match="channels"):
        branch(torch.randn(2, 3, 8, 4, 4), text, t)


def test_branch_save_load_roundtrip(tmp_path):
    branch = VideoPainterBranch.from_transformer(tiny_transformer())
    randomize_branch_outputs(branch)
    branch.save_pretrained(tmp_path / "branch")
    loaded = VideoPainterBranch.from_pretrained(tmp_path / "branch")
    assert loaded.config.num_layers == 2 and loaded.config.in_channels == 8
    ours, theirs = branch.state_dict(), loaded.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_branch_loads_the_released_checkpoint_layout(tmp_path):
    """The released folder: a transformer-style config and four unused heads in the weights."""
    branch = VideoPainterBranch.from_transformer(tiny_transformer())
    randomize_branch_outputs(branch)
    folder = tmp_path / "VideoPainter" / "checkpoints" / "branch"
    branch.save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(
        _class_name="CogvideoXBranchModel", wo_text=False, id_pool_resample_learnable=False
    )
    (folder / "config.json").write_text(json.dumps(config))
    weights = load_file(folder / "diffusion_pytorch_model.safetensors")
    weights.update(
        {
            "norm_final.weight": torch.ones(32),
            "norm_out.linear.weight": torch.zeros(64, 8),
            "proj_out.weight": torch.zeros(16, 32),
            "branch_x_embedder.weight": torch.zeros(32, 8),
        }
    )
    save_file(weights, folder / "diffusion_pytorch_model.safetensors")

    loaded = VideoPainterBranch.from_pretrained(folder)
    for name, value in branch.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name


# ---------------------------------------------------------------------------- injection
def test_blocks_map_to_branch_outputs_in_equal_runs():
    assert [branch_index_for_block(i, 42, 2) for i in (0, 20, 21, 41)] == [0, 0, 1, 1]
    assert [branch_index_for_block(i, 4, 2) for i in range(4)] == [0, 0, 1, 1]
    assert [branch_index_for_block(i, 5, 2) for i in range(5)] == [0, 0, 0, 1, 1]


def test_token_mask_follows_patch_embedding_order():
    latent_mask = torch.zeros(1, 2, 1, 4, 4)
    latent_mask[0, 0, 0, 3, 0] = 1  # frame 0, one pixel of the bottom-left patch
    latent_mask[0, 1, 0, 0, 2:] = 1  # frame 1, top-right patch
    tokens = token_mask_from_latent_mask(latent_mask, patch_size=2)
    assert tokens.shape == (1, 8)
    assert tokens[0].tolist() == [False, False, True, False, False, True, False, False]


def _block_probes(block: torch.nn.Module, store: dict[str, torch.Tensor], key: str):
    def hook(module, args, kwargs, output):
        store[key] = output[0].clone()

    return block.register_forward_hook(hook, with_kwargs=True)


@pytest.mark.parametrize("mask_add", [True, False])
def test_mask_add_changes_only_background_tokens(mask_add):
    transformer = tiny_transformer()
    blocks = transformer.transformer_blocks
    x = torch.randn(2, 3, 8, 4, 4)
    text = torch.randn(2, 16, 32)
    t = torch.tensor([500, 500])
    samples = [torch.randn(2, 12, 32), torch.randn(2, 12, 32)]
    masked = torch.zeros(1, 12, dtype=torch.bool)
    masked[0, [1, 4, 5, 11]] = True

    seen: dict[str, torch.Tensor] = {}
    handles = [_block_probes(blocks[i], seen, f"raw{i}") for i in (0, 3)]
    with BranchInjector(blocks, 2, mask_add=mask_add) as injector:
        handles += [_block_probes(blocks[i], seen, f"out{i}") for i in (0, 3)]
        injector.samples, injector.masked_tokens = samples, masked
        transformer(hidden_states=x, encoder_hidden_states=text, timestep=t)
    for handle in handles:
        handle.remove()

    for block_index, sample in ((0, samples[0]), (3, samples[1])):
        delta = seen[f"out{block_index}"] - seen[f"raw{block_index}"]
        background = ~masked[0] if mask_add else torch.ones(12, dtype=torch.bool)
        assert torch.allclose(delta[:, background], sample[:, background], atol=1e-5)
        if mask_add:
            assert torch.count_nonzero(delta[:, masked[0]]) == 0  # exactly untouched
    assert all(not b._forward_hooks for b in blocks)  # hooks gone after the context


# ---------------------------------------------------------------------------- pipeline
@pytest.mark.slow
def test_zero_branch_dual_pipeline_equals_backbone_alone(painter):
    video, masks, first = sample_video(9)
    dual = painter(video, masks, PROMPT, first, seed=7, **FAST)
    alone = painter(video, masks, PROMPT, first, seed=7, use_branch=False, **FAST)
    assert torch.equal(dual.latents, alone.latents)
    assert np.array_equal(dual.frames, alone.frames)

    trained = VideoPainterPipeline(painter.pipe, copy.deepcopy(painter.branch))
    randomize_branch_outputs(trained.branch)
    changed = trained(video, masks, PROMPT, first, seed=7, **FAST)
    assert not torch.equal(changed.latents, alone.latents)
    assert set(dual.timings) == {"encode", "denoise", "decode", "total"}
    assert all(v >= 0 for v in dual.timings.values())


def test_paste_back_keeps_unmasked_pixels_exact(painter):
    video, masks, first = sample_video(9, seed=1)
    trained = VideoPainterPipeline(painter.pipe, copy.deepcopy(painter.branch))
    randomize_branch_outputs(trained.branch)
    result = trained(video, masks, PROMPT, first, seed=3, mask_dilation=5, **FAST)

    expected_region = dilate_masks(torch.as_tensor(masks), 5).numpy()
    expected_region[0] = False  # the edited first frame is kept whole
    assert np.array_equal(result.masks, expected_region)
    assert expected_region[1:].sum() > masks[1:].sum()  # dilation grew the region
    keep = ~result.masks
    assert np.array_equal(result.frames[keep], _with_first(video, first)[keep])
    assert np.array_equal(result.frames[0], first)
    assert not np.array_equal(result.frames[result.masks], video[result.masks])  # repainted

    no_paste = trained(
        video, masks, PROMPT, first, seed=3, mask_dilation=5, paste_back=False, **FAST
    )
    assert not np.array_equal(no_paste.frames[keep], _with_first(video, first)[keep])


def _with_first(video: np.ndarray, first: np.ndarray) -> np.ndarray:
    out = video.copy()
    out[0] = first
    return out


@pytest.mark.slow
def test_nothing_to_repaint_yields_the_ground_truth_latents(painter):
    """With an empty mask every latent is replaced: the denoiser cannot change the result."""
    video, _, first = sample_video(9, seed=2)
    empty = np.zeros(video.shape[:3], dtype=np.uint8)
    before = painter(video, empty, PROMPT, first, seed=5, **FAST)
    other = VideoPainterPipeline(tiny_pipe(seed=11), painter.branch)
    other.pipe.vae.load_state_dict(painter.pipe.vae.state_dict())
    after = other(video, empty, PROMPT, first, seed=5, **FAST)
    assert torch.equal(before.latents, after.latents)
    replaced_off = painter(video, empty, PROMPT, first, seed=5, replace_known=False, **FAST)
    assert not torch.equal(replaced_off.latents, before.latents)


@pytest.mark.parametrize(
    "frames,overlap,windows",
    [
        (5, 1, (0,)),
        (9, 1, (0,)),
        (10, 1, (0, 8)),
        (20, 1, (0, 8, 16)),
        (13, 5, (0, 4)),
        (14, 5, (0, 4, 8)),
    ],
)
def test_window_plan(frames, overlap, windows):
    plan = plan_windows(frames, window=9, overlap=overlap)
    assert plan.starts == windows
    assert plan.padded_frames >= frames and (plan.padded_frames - 1) % 4 == 0
    assert plan.latent_frames == plan.latent_start(len(windows) - 1) + plan.latent_window


@pytest.mark.parametrize("window,overlap", [(9, 0), (9, 9), (9, 3), (10, 2)])
def test_window_plan_rejects_misaligned_windows(window, overlap):
    with pytest.raises(ValueError):
        plan_windows(20, window=window, overlap=overlap)


@pytest.mark.parametrize("frames", [5, 20])
def test_any_length_clip_gives_the_input_frame_count(painter, frames):
    video, masks, first = sample_video(frames, seed=4)
    result = painter(video, masks, PROMPT, first, seed=1, overlap=1, **FAST)
    assert result.frames.shape == (frames, H, W, 3)
    assert result.masks.shape == (frames, H, W)
    assert result.window_starts == ((0,) if frames == 5 else (0, 8, 16))
    keep = ~result.masks
    assert np.array_equal(result.frames[keep], _with_first(video, first)[keep])


def test_latent_mask_is_nearest_downsampled():
    masks = torch.zeros(9, 32, 32)
    masks[3, :8, :8] = 1  # frame 3 is latent 1's nearest frame (floor(1 * 9 / 3))
    latent = latent_mask_from_masks(masks, latent_frames=3, scale=8)
    assert latent.shape == (1, 3, 1, 4, 4)
    assert latent[0, :, 0].sum(dim=(1, 2)).tolist() == [0, 1, 0]


# ---------------------------------------------------------------------------- ID resampling
def _attention_inputs():
    transformer = tiny_transformer()
    attn = transformer.transformer_blocks[1].attn1
    video = torch.randn(2, 12, 32)
    text = torch.randn(2, 16, 32)
    return attn, video, text


def test_id_processor_matches_stock_attention():
    attn, video, text = _attention_inputs()
    stock = CogVideoXAttnProcessor2_0()(attn, video, text)
    ours = IDResampleAttnProcessor()(attn, video, text)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(stock, ours, strict=True))

    # Appending a duplicate of every key/value leaves softmax attention unchanged: proves the
    # extra entries go through the same projections, norms and concatenation axis.
    joint = torch.cat([text, video], dim=1)
    key = attn.norm_k(attn.to_k(joint).view(2, -1, 2, 16).transpose(1, 2))
    value = attn.to_v(joint).view(2, -1, 2, 16).transpose(1, 2)
    processor = IDResampleAttnProcessor()
    processor.extra_kv = (key, value)
    duplicated = processor(attn, video, text)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(stock, duplicated, strict=True))
    processor.extra_kv = (key, value * 3)
    assert not torch.allclose(processor(attn, video, text)[0], stock[0], atol=1e-4)


@pytest.mark.slow
def test_id_resampling_carries_the_painted_region_into_the_next_window(painter):
    video, masks, first = sample_video(17, seed=6)
    trained = VideoPainterPipeline(painter.pipe, copy.deepcopy(painter.branch))
    randomize_branch_outputs(trained.branch)
    kwargs = dict(seed=2, overlap=1, **FAST)
    with_id = trained(video, masks, PROMPT, first, prev_clip_weight=1.0, **kwargs)
    without = trained(video, masks, PROMPT, first, prev_clip_weight=0.0, **kwargs)
    output_src = trained(video, masks, PROMPT, first, id_source="output", **kwargs)

    assert with_id.window_starts == (0, 8)
    # 3 latent frames: latent 0 is kept (known); latents 1-2 sample one masked latent pixel each
    # (nearest downsampling reads pixel (24, 8) of the mask), so one of 4 tokens per frame
    assert with_id.id_tokens == [2] and without.id_tokens == []
    # Window 0 (latents 0-2) is computed before any resampling; latent 2 is shared with
    # window 1, which (reference mode: only video frame 0 is known) generates it again.
    first_window = slice(0, 2)
    assert torch.equal(with_id.latents[:, first_window], without.latents[:, first_window])
    assert not torch.equal(with_id.latents[:, 3:], without.latents[:, 3:])
    assert not torch.equal(output_src.latents[:, 3:], with_id.latents[:, 3:])
    for block in trained.pipe.transformer.transformer_blocks:  # everything restored
        assert isinstance(block.attn1.get_processor(), CogVideoXAttnProcessor2_0)
        assert not block._forward_hooks and not block._forward_pre_hooks


# ---------------------------------------------------------------------------- loading
@pytest.mark.slow
def test_from_pretrained_with_id_lora(tmp_path):
    from peft import LoraConfig, get_peft_model_state_dict

    pipe = tiny_pipe()
    pipe.save_pretrained(tmp_path / "cogvideox")
    branch = VideoPainterBranch.from_transformer(pipe.transformer)
    randomize_branch_outputs(branch)
    branch.save_pretrained(tmp_path / "branch")

    lora_transformer = tiny_transformer()
    lora_transformer.add_adapter(
        LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"])
    )
    with torch.no_grad():
        for name, param in lora_transformer.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.5)
    lora_dir = tmp_path / "VideoPainterID" / "checkpoints"
    CogVideoXImageToVideoPipeline.save_lora_weights(
        lora_dir, transformer_lora_layers=get_peft_model_state_dict(lora_transformer)
    )
    lora_file = lora_dir / "pytorch_lora_weights.safetensors"
    assert lora_file.is_file()

    video, masks, first = sample_video(9, seed=8)
    plain = VideoPainterPipeline.from_pretrained(
        tmp_path / "cogvideox", tmp_path / "branch", dtype=torch.float32
    )
    with_lora = VideoPainterPipeline.from_pretrained(
        tmp_path / "cogvideox", tmp_path / "branch", lora_file, dtype=torch.float32
    )
    assert plain.pipe.scheduler.config.timestep_spacing == "trailing"
    assert "videopainter_id" in with_lora.pipe.transformer.peft_config
    a = plain(video, masks, PROMPT, first, seed=1, **FAST)
    b = with_lora(video, masks, PROMPT, first, seed=1, **FAST)
    assert a.frames.shape == (9, H, W, 3)
    assert not torch.equal(a.latents, b.latents)


def test_rejects_bad_inputs(painter):
    video, masks, first = sample_video(9)
    with pytest.raises(ValueError, match="masks"):
        painter(video, masks[:, :16], PROMPT, first, **FAST)
    with pytest.raises(ValueError, match="uint8"):
        painter(video.astype(np.float32), masks, PROMPT, first, **FAST)
    with pytest.raises(ValueError, match="32x32"):
        painter(np.zeros((9, 48, 48, 3), np.uint8), np.zeros((9, 48, 48)), PROMPT, **FAST)
