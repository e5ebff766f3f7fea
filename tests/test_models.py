"""The model root, the smoke set, the loaders and ``lanepaint models build-smoke|check``."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before any hub-aware import: never download

import hashlib
import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lanepaint.cli import main as cli_main
from lanepaint.models.architectures import FULL, SMOKE, arch_config
from lanepaint.models.check import check_model
from lanepaint.models.loaders import (
    load_cogvideox_i2v,
    load_flux_fill,
    load_qwen_vl,
    load_sam2_video_predictor,
)
from lanepaint.models.registry import MODEL_SPECS
from lanepaint.models.root import (
    COGVIDEOX_I2V_DIR,
    FLUX_FILL_DIR,
    QWEN_VL_DIRS,
    SAM2_CHECKPOINT,
    SAM2_SIDECAR,
    SMOKE_LABEL,
    ModelError,
    ModelRoot,
)
from lanepaint.models.smoke import build_smoke, tiny_cogvideox_i2v, tiny_flux_fill, tiny_qwen_vl

QWEN_DIR = QWEN_VL_DIRS["7B"]


@pytest.fixture(scope="session")
def smoke_root(tmp_path_factory) -> Path:
    """The smoke model set, built once per test session."""
    return build_smoke(tmp_path_factory.mktemp("models") / "smoke", seed=0)


def derived_root(
    smoke: Path, dest: Path, copy: Sequence[str] = (), drop: Sequence[str] = ()
) -> Path:
    """A root linking to ``smoke``'s entries, minus ``drop``, with private copies of ``copy``."""
    dest.mkdir()
    for entry in smoke.iterdir():
        if entry.name in drop:
            continue
        if entry.name in copy:
            if entry.is_dir():
                shutil.copytree(entry, dest / entry.name)
            else:
                shutil.copy2(entry, dest / entry.name)
        else:
            (dest / entry.name).symlink_to(entry)
    return dest


def file_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


class _TouchOnUnpickle:
    """A pickle payload with a side effect: proves a file was never fully unpickled."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


# --------------------------------------------------------------------------- the smoke set


def test_smoke_root_has_the_real_layout(smoke_root: Path) -> None:
    root = ModelRoot.open(smoke_root)
    assert root.is_smoke and root.model_set_label() == SMOKE_LABEL
    assert root.metadata()["model_set"] == "smoke"
    for pipeline, components in {
        FLUX_FILL_DIR: ["transformer", "vae", "text_encoder", "text_encoder_2"],
        COGVIDEOX_I2V_DIR: ["transformer", "vae", "text_encoder"],
    }.items():
        assert (smoke_root / pipeline / "model_index.json").is_file()
        for component in components:
            folder = smoke_root / pipeline / component
            assert (folder / "config.json").is_file()
            assert list(folder.glob("*.safetensors")), folder
    # CLIP tokenizer as on the hub: vocab.json + merges.txt, no tokenizer.json
    clip_tok = smoke_root / FLUX_FILL_DIR / "tokenizer"
    assert {p.name for p in clip_tok.iterdir()} >= {"vocab.json", "merges.txt"}
    assert not (clip_tok / "tokenizer.json").exists()
    assert (smoke_root / QWEN_DIR / "model.safetensors").is_file()
    assert (smoke_root / QWEN_DIR / "chat_template.jinja").is_file()
    assert (smoke_root / SAM2_CHECKPOINT).is_file()
    assert json.loads((smoke_root / SAM2_SIDECAR).read_text())["hydra_overrides"]
    branch = smoke_root / "VideoPainter" / "checkpoints" / "branch"
    assert (branch / "config.json").is_file()
    assert (branch / "diffusion_pytorch_model.safetensors").is_file()


def test_smoke_root_has_the_umasks_modes(smoke_root: Path) -> None:
    """No 0600 leftovers of save_pretrained's temp files: other users read a model root."""
    umask = os.umask(0)
    os.umask(umask)
    for path in [smoke_root, *smoke_root.rglob("*")]:
        want = (0o777 if path.is_dir() else 0o666) & ~umask
        assert path.stat().st_mode & 0o777 == want, path


def test_real_root_is_labelled_real(tmp_path: Path) -> None:
    root = ModelRoot.open(tmp_path)
    assert not root.is_smoke
    assert root.model_set_label() == f"real weights at {tmp_path}"
    assert root.metadata()["model_set"] == "real"


def test_random_weight_root_is_never_labelled_real(tmp_path: Path) -> None:
    """bench.train_run's full-size random root: stage outputs say so, not "real"."""
    from lanepaint.models.root import RANDOM_MARKER

    (tmp_path / RANDOM_MARKER).write_text("{}")
    root = ModelRoot.open(tmp_path)
    assert root.metadata()["model_set"] == "random"
    assert root.model_set_label().startswith(f"random full-size weights at {tmp_path}")


def test_flux_fill_inpaints_32px(smoke_root: Path) -> None:
    pipe = load_flux_fill(smoke_root, dtype=torch.float32)
    assert pipe.vae_scale_factor == 8 and pipe.tokenizer.model_max_length == 77
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
    mask = np.zeros((32, 32), np.uint8)
    mask[16:] = 255
    out = pipe(
        prompt="road with single white solid lane markings",
        image=image,
        mask_image=Image.fromarray(mask),
        height=32,
        width=32,
        num_inference_steps=2,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).images
    assert out.shape == (1, 32, 32, 3) and np.isfinite(out).all()


def test_cogvideox_i2v_makes_frames(smoke_root: Path) -> None:
    pipe = load_cogvideox_i2v(smoke_root, dtype=torch.float32)
    image = Image.fromarray(np.random.default_rng(1).integers(0, 255, (32, 48, 3), np.uint8))
    frames = pipe(
        image=image,
        prompt="road with double yellow solid lane markings",
        num_frames=9,
        num_inference_steps=2,
        guidance_scale=6.0,
        use_dynamic_cfg=True,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).frames
    assert frames.shape == (1, 9, 32, 48, 3) and np.isfinite(frames).all()


def test_qwen_vl_generates_from_an_image(smoke_root: Path) -> None:
    model, processor = load_qwen_vl(smoke_root, "7B", dtype=torch.float32)
    messages = [
        {
            "role": "user",
            "content": [{"type": "image"}, {"type": "text", "text": "Describe the lanes."}],
        }
    ]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Describe the lanes."
        "<|im_end|>\n<|im_start|>assistant\n"
    )
    image = Image.fromarray(np.random.default_rng(2).integers(0, 255, (56, 84, 3), np.uint8))
    inputs = processor(text=[text], images=[image], return_tensors="pt")
    image_tokens = int((inputs.input_ids == model.config.image_token_id).sum())
    assert image_tokens == int(inputs.image_grid_thw.prod()) // 4  # one token per 28x28
    out = model.generate(**inputs, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert out.shape == (1, inputs.input_ids.shape[1] + 4)
    assert isinstance(processor.batch_decode(out[:, inputs.input_ids.shape[1] :])[0], str)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:cannot import name '_C' from 'sam2'")  # no CUDA extension
def test_sam2_video_predictor_propagates(smoke_root: Path, tmp_path: Path) -> None:
    predictor = load_sam2_video_predictor(smoke_root)
    assert predictor.image_size == 256  # the sidecar picked hiera-tiny at 256 px
    rng = np.random.default_rng(3)
    for i in range(3):
        frame = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
        Image.fromarray(frame).save(tmp_path / f"{i:05d}.jpg")
    with torch.inference_mode():
        state = predictor.init_state(str(tmp_path))
        predictor.add_new_points_or_box(
            state,
            frame_idx=0,
            obj_id=1,
            points=np.array([[32, 40], [20, 44]], np.float32),
            labels=np.array([1, 1], np.int32),
        )
        masks = {i: m for i, _, m in predictor.propagate_in_video(state)}
    assert sorted(masks) == [0, 1, 2]
    assert all(m.shape == (1, 1, 48, 64) for m in masks.values())


@pytest.mark.slow
def test_build_smoke_is_deterministic(smoke_root: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    assert cli_main(["models", "build-smoke", str(again), "--seed", "0"]) == 0
    assert file_hashes(again) == file_hashes(smoke_root)


def test_seed_changes_weights() -> None:
    a = tiny_flux_fill(seed=0).transformer.state_dict()
    b = tiny_flux_fill(seed=1).transformer.state_dict()
    assert not all(torch.equal(a[k], b[k]) for k in a)


def test_smoke_configs_are_the_full_ones_with_overrides() -> None:
    """Each architecture is written once: the smoke set only overrides values the full one has."""
    for name, overrides in SMOKE.items():
        assert set(overrides) <= set(FULL[name]), name
        smoke = arch_config(name, smoke=True)
        assert set(smoke) == set(FULL[name])
        kept = {k: v for k, v in FULL[name].items() if k not in overrides}
        assert kept.items() <= smoke.items(), name
    rope = arch_config("qwen_vl_text", smoke=True)["rope_parameters"]
    assert rope == {"rope_type": "default", "mrope_section": [2, 1, 1], "rope_theta": 1e6}
    arch_config("qwen_vl_text")["rope_parameters"]["mrope_section"].append(0)
    assert FULL["qwen_vl_text"]["rope_parameters"]["mrope_section"] == [16, 24, 24]


def test_smoke_tokenizers_fit_their_models() -> None:
    flux, cog = tiny_flux_fill(), tiny_cogvideox_i2v()
    qwen, processor = tiny_qwen_vl()
    pairs = [
        (flux.tokenizer, flux.text_encoder),
        (flux.tokenizer_2, flux.text_encoder_2),
        (cog.tokenizer, cog.text_encoder),
        (processor.tokenizer, qwen.model.language_model),
    ]
    for tokenizer, encoder in pairs:
        assert len(tokenizer) <= encoder.get_input_embeddings().num_embeddings
    assert flux.tokenizer_2("a lane — with ünïcode").input_ids[-1] == flux.tokenizer_2.eos_token_id


def test_build_smoke_refuses_to_overwrite_a_real_root(tmp_path: Path) -> None:
    (tmp_path / "weights.txt").write_text("precious")
    assert cli_main(["models", "build-smoke", str(tmp_path)]) == 2
    with pytest.raises(ModelError, match="non-smoke"):
        build_smoke(tmp_path, overwrite=True)
    assert (tmp_path / "weights.txt").read_text() == "precious"


# --------------------------------------------------------------------------- check


def test_check_reports_all_present_and_loadable(smoke_root: Path, capsys) -> None:
    assert cli_main(["models", "check", str(smoke_root), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    status = {m["name"]: m["status"] for m in report["models"]}
    assert status == {
        "flux_fill": "loaded",
        "cogvideox_i2v": "loaded",
        "videopainter_branch": "loaded",
        "videopainter_id_lora": "absent",
        "qwen_vl_7b": "loaded",
        "qwen_vl_72b": "absent",
        "sam2": "loaded",
    }
    assert report["ok"] and report["model_set"] == "smoke"
    assert all(m["size_bytes"] > 0 for m in report["models"] if m["present"])


def test_check_fails_on_a_missing_required_model(smoke_root: Path, tmp_path: Path, capsys):
    root = derived_root(smoke_root, tmp_path / "root", drop=[QWEN_DIR])
    assert cli_main(["models", "check", str(root), "--files-only"]) == 1
    out = capsys.readouterr().out
    assert "qwen_vl_7b: not found" in out and "problems:" in out


def test_check_requires_the_branch_and_checks_one_stage(
    smoke_root: Path, tmp_path: Path, capsys
) -> None:
    """edit always loads the VideoPainter branch, so a root without it fails the check
    (issue 26); ``--stage`` checks only what one stage reads, so a root that lacks the
    branch still passes for segment, and an unknown stage is one line, exit 2."""
    from lanepaint.models.root import VIDEOPAINTER_BRANCH_DIR

    root = derived_root(smoke_root, tmp_path / "root", drop=[VIDEOPAINTER_BRANCH_DIR.split("/")[0]])
    assert cli_main(["models", "check", str(root), "--files-only"]) == 1
    assert "videopainter_branch: not found" in capsys.readouterr().out
    assert cli_main(["models", "check", str(root), "--files-only", "--stage", "edit"]) == 1
    out = capsys.readouterr().out
    assert "videopainter_branch: not found" in out and "sam2" not in out
    assert cli_main(["models", "check", str(root), "--json", "--stage", "segment"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [m["name"] for m in report["models"]] == ["sam2"] and report["ok"]
    assert cli_main(["models", "check", str(root), "--stage", "paint"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--stage: 'paint' is not one of" in err


def test_check_fails_on_broken_files(smoke_root: Path, tmp_path: Path, capsys) -> None:
    root = derived_root(smoke_root, tmp_path / "root", copy=[COGVIDEOX_I2V_DIR])
    (root / COGVIDEOX_I2V_DIR / "vae" / "config.json").write_text("{not json")
    assert cli_main(["models", "check", str(root), "--json", "--files-only"]) == 1
    report = json.loads(capsys.readouterr().out)
    broken = {m["name"]: m for m in report["models"]}["cogvideox_i2v"]
    assert broken["status"] == "broken"
    assert str(root / COGVIDEOX_I2V_DIR / "vae" / "config.json") in broken["error"]


def test_check_reports_a_model_that_fails_to_load(smoke_root: Path, tmp_path: Path) -> None:
    root = derived_root(smoke_root, tmp_path / "root", copy=[FLUX_FILL_DIR])
    path = root / FLUX_FILL_DIR / "transformer" / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "num_single_layers": 3}))
    model_root = ModelRoot.open(root)
    assert check_model(model_root, MODEL_SPECS["flux_fill"], load=False).status == "files ok"
    result = check_model(model_root, MODEL_SPECS["flux_fill"])
    assert result.status == "broken" and not result.ok
    assert "weights missing" in result.error and str(path.parent) in result.error


def test_check_accepts_extra_single_file_weights(smoke_root: Path, tmp_path: Path) -> None:
    """The real FLUX repo keeps flux1-fill-dev.safetensors beside the diffusers folders."""
    from safetensors.torch import save_file

    root = derived_root(smoke_root, tmp_path / "root", copy=[FLUX_FILL_DIR])
    save_file({"w": torch.zeros(3)}, root / FLUX_FILL_DIR / "flux1-fill-dev.safetensors")
    assert check_model(ModelRoot.open(root), MODEL_SPECS["flux_fill"]).status == "loaded"


def test_check_of_a_missing_root_exits_2(tmp_path: Path) -> None:
    assert cli_main(["models", "check", str(tmp_path / "nowhere")]) == 2


# --------------------------------------------------------------------------- bad input


def test_missing_model_folder_names_model_and_path(smoke_root: Path, tmp_path: Path) -> None:
    root = derived_root(smoke_root, tmp_path / "root", drop=[FLUX_FILL_DIR])
    with pytest.raises(ModelError, match="model folder not found") as info:
        load_flux_fill(root)
    assert info.value.model == "flux_fill" and info.value.path == root / FLUX_FILL_DIR


def test_missing_sam2_checkpoint(smoke_root: Path, tmp_path: Path) -> None:
    root = derived_root(smoke_root, tmp_path / "root", drop=[SAM2_CHECKPOINT])
    with pytest.raises(ModelError, match="model file not found") as info:
        load_sam2_video_predictor(root)
    assert info.value.path == root / SAM2_CHECKPOINT


def test_corrupt_config_json(smoke_root: Path, tmp_path: Path) -> None:
    root = derived_root(smoke_root, tmp_path / "root", copy=[FLUX_FILL_DIR])
    config = root / FLUX_FILL_DIR / "transformer" / "config.json"
    config.write_text(config.read_text()[:40])
    with pytest.raises(ModelError, match="invalid JSON") as info:
        load_flux_fill(root, dtype=torch.float32)
    assert info.value.model == "flux_fill" and info.value.path == config


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        ("num_layers", 2, "weights missing"),  # a library would silently init the extra layer
        ("joint_attention_dim", 48, "failed to load"),  # shapes disagree with the weights
    ],
)
def test_config_that_disagrees_with_weights(
    smoke_root: Path, tmp_path: Path, key: str, value: int, reason: str
) -> None:
    root = derived_root(smoke_root, tmp_path / "root", copy=[FLUX_FILL_DIR])
    path = root / FLUX_FILL_DIR / "transformer" / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), key: value}))
    with pytest.raises(ModelError, match=reason) as info:
        load_flux_fill(root, dtype=torch.float32)
    assert info.value.path == path.parent


def test_truncated_safetensors(smoke_root: Path, tmp_path: Path) -> None:
    root = derived_root(smoke_root, tmp_path / "root", copy=[QWEN_DIR])
    weights = root / QWEN_DIR / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="truncated safetensors") as info:
        load_qwen_vl(root)
    assert info.value.model == "qwen_vl_7b" and info.value.path == weights


def test_pickled_weights_are_refused_not_unpickled(smoke_root: Path, tmp_path: Path) -> None:
    root = derived_root(smoke_root, tmp_path / "root", copy=[COGVIDEOX_I2V_DIR])
    folder = root / COGVIDEOX_I2V_DIR / "transformer"
    (folder / "diffusion_pytorch_model.safetensors").unlink()
    marker = tmp_path / "unpickled"
    torch.save({"weight": _TouchOnUnpickle(marker)}, folder / "diffusion_pytorch_model.bin")
    with pytest.raises(ModelError, match="pickled checkpoint") as info:
        load_cogvideox_i2v(root)
    assert info.value.path == folder / "diffusion_pytorch_model.bin"
    assert not marker.exists()


def test_sentencepiece_only_tokenizer_is_explained(
    smoke_root: Path, tmp_path: Path, monkeypatch
) -> None:
    """The real CogVideoX tokenizer folder ships spiece.model only, no tokenizer.json; where
    sentencepiece is missing (it is pinned, but images may trim it) the error says why."""
    from lanepaint.models import loaders

    monkeypatch.setattr(loaders, "has_sentencepiece", lambda: False)
    root = derived_root(smoke_root, tmp_path / "root", copy=[COGVIDEOX_I2V_DIR])
    folder = root / COGVIDEOX_I2V_DIR / "tokenizer"
    (folder / "tokenizer.json").unlink()
    (folder / "spiece.model").write_bytes(b"\x0a\x00")
    with pytest.raises(ModelError, match="tokenizer_2/tokenizer.json") as info:
        load_cogvideox_i2v(root)
    assert info.value.model == "cogvideox_i2v" and info.value.path == folder


def test_sentencepiece_only_tokenizer_loads(smoke_root: Path, tmp_path: Path) -> None:
    """A CogVideoX tokenizer folder as the real download has it (spiece.model, no
    tokenizer.json) loads and tokenizes exactly as sentencepiece itself does (issue 26:
    sentencepiece 0.2.3's model proto needed protobuf >= 7; 0.2.1 is pinned)."""
    import sentencepiece as spm

    root = derived_root(smoke_root, tmp_path / "root", copy=[COGVIDEOX_I2V_DIR])
    folder = root / COGVIDEOX_I2V_DIR / "tokenizer"
    (folder / "tokenizer.json").unlink()
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("single white solid lane\ndouble yellow dashed line\n" * 50)
    spm.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(folder / "spiece"),
        vocab_size=20,
        model_type="unigram",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        minloglevel=2,
    )
    text = "double white dashed lane"
    expected = spm.SentencePieceProcessor(model_file=str(folder / "spiece.model")).encode(text)
    tokenizer = load_cogvideox_i2v(root).tokenizer
    assert not (folder / "tokenizer.json").exists()
    assert tokenizer(text).input_ids == [*expected, tokenizer.eos_token_id]
    assert tokenizer.eos_token_id == 1 and tokenizer.pad_token_id == 0


def test_sam2_checkpoint_is_loaded_weights_only(smoke_root: Path, tmp_path: Path) -> None:
    root = derived_root(smoke_root, tmp_path / "root", drop=[SAM2_CHECKPOINT])
    marker = tmp_path / "unpickled"
    torch.save({"model": _TouchOnUnpickle(marker)}, root / SAM2_CHECKPOINT)
    with pytest.raises(ModelError, match="weights-only") as info:
        load_sam2_video_predictor(root)
    assert info.value.path == root / SAM2_CHECKPOINT and not marker.exists()
    torch.load(root / SAM2_CHECKPOINT, weights_only=False)  # the payload is live
    assert marker.exists()


def test_truncated_sam2_checkpoint(smoke_root: Path, tmp_path: Path) -> None:
    root = derived_root(smoke_root, tmp_path / "root", drop=[SAM2_CHECKPOINT])
    data = (smoke_root / SAM2_CHECKPOINT).read_bytes()
    (root / SAM2_CHECKPOINT).write_bytes(data[: len(data) // 3])
    with pytest.raises(ModelError, match="sam2") as info:
        load_sam2_video_predictor(root)
    assert info.value.path == root / SAM2_CHECKPOINT


def test_sam2_sidecar_cannot_inject_hydra_targets(smoke_root: Path, tmp_path: Path) -> None:
    root = derived_root(smoke_root, tmp_path / "root", drop=[SAM2_SIDECAR])
    sidecar = {
        "config": "configs/sam2.1/sam2.1_hiera_t.yaml",
        "hydra_overrides": ["++model._target_=builtins.print"],
    }
    (root / SAM2_SIDECAR).write_text(json.dumps(sidecar))
    with pytest.raises(ModelError, match="not allowed") as info:
        load_sam2_video_predictor(root)
    assert info.value.path == root / SAM2_SIDECAR


def test_unknown_qwen_size(smoke_root: Path) -> None:
    with pytest.raises(ValueError, match="72B"):
        load_qwen_vl(smoke_root, size="3B")


def test_absent_optional_qwen_72b_names_its_folder(smoke_root: Path) -> None:
    with pytest.raises(ModelError, match="model folder not found") as info:
        load_qwen_vl(smoke_root, size="72B")
    assert info.value.model == "qwen_vl_72b"
    assert info.value.path == smoke_root / QWEN_VL_DIRS["72B"]


# --------------------------------------------------------------------------- gs:// roots


@pytest.mark.gcs
def test_gcs_root_is_fetched_once_and_loads(smoke_root: Path, gcs_bucket: str, tmp_path: Path):
    from lanepaint.io import storage

    local = derived_root(smoke_root, tmp_path / "upload", copy=[QWEN_DIR, "SMOKE.json"])
    for name in os.listdir(local):
        if name not in (QWEN_DIR, "SMOKE.json"):
            (local / name).unlink()
    uri = f"gs://{gcs_bucket}/models/smoke"
    storage.upload_dir(local, uri)
    cache = tmp_path / "cache"
    root = ModelRoot.open(uri, cache_root=cache)
    assert root.path.is_relative_to(cache) and root.is_smoke and root.uri == uri
    model, _ = load_qwen_vl(root, dtype=torch.float32)
    assert model.config.vision_config.spatial_merge_size == 2
    storage.delete_prefix(uri)  # a second open must reuse the cache, not download again
    assert ModelRoot.open(uri, cache_root=cache).path == root.path


def test_full_size_and_smoke_qwen_stop_generating_alike() -> None:
    """Both Qwen2.5-VL builders carry the released generation config (stop at <|im_end|>
    or <|endoftext|>, pad with <|endoftext|>); the full-size one is built on the meta
    device, so no 7B weights are allocated."""
    from lanepaint.models.fullsize import build_qwen_vl

    full, processor = build_qwen_vl(device="meta")
    small, _ = tiny_qwen_vl()
    tokens = processor.tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    for model in (full, small):
        assert model.generation_config.eos_token_id == tokens
        assert model.generation_config.pad_token_id == tokens[1]
