"""``lanepaint models import``: the smoke set laid out as Hugging Face downloads (a hub cache,
``--local-dir`` folders) becomes a model root of links that passes ``models check``."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before any hub-aware import: never download

import hashlib
import json
import shutil
import struct
from pathlib import Path

import pytest
import torch

from lanepaint.cli import main as cli_main
from lanepaint.models.root import (
    COGVIDEOX_I2V_DIR,
    FLUX_FILL_DIR,
    QWEN_VL_DIRS,
    SAM2_CHECKPOINT,
    SAM2_SIDECAR,
    SMOKE_MARKER,
    VIDEOPAINTER_BRANCH_DIR,
    VIDEOPAINTER_ID_LORA_FILE,
)
from lanepaint.models.smoke import build_smoke

ID_LORA_IN_REPO = "VideoPainterID/checkpoints/pytorch_lora_weights.safetensors"
T5_TOKENIZER = f"{COGVIDEOX_I2V_DIR}/tokenizer"
SLOTS = (
    "flux_fill",
    "cogvideox_i2v",
    "videopainter_branch",
    "videopainter_id_lora",
    "qwen_vl_7b",
    "sam2",
)


# --------------------------------------------------------------------------- fake downloads


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, wire: int, payload: bytes) -> bytes:
    key = _varint(number << 3 | wire)
    return key + (_varint(len(payload)) + payload if wire == 2 else payload)


def spiece_model(vocab: list[list]) -> bytes:
    """A SentencePiece Unigram ModelProto with ``vocab``'s pieces and scores, written by hand
    (the test needs exact pieces and scores, which sentencepiece's trainer does not give)."""
    kinds = {"<pad>": 3, "</s>": 3, "<unk>": 2}  # CONTROL, CONTROL, UNKNOWN; NORMAL is 1
    pieces = b"".join(
        _field(
            1,
            2,
            _field(1, 2, piece.encode())
            + _field(2, 5, struct.pack("<f", score))
            + _field(3, 0, _varint(kinds.get(piece, 1))),
        )
        for piece, score in vocab
    )
    ids = ((40, 2), (41, -1), (42, 1), (43, 0))  # unk, bos (none), eos, pad
    trainer = _field(3, 0, _varint(1)) + _field(4, 0, _varint(len(vocab)))
    trainer += b"".join(_field(number, 0, _varint(value)) for number, value in ids)
    normalizer = _field(1, 2, b"identity") + b"".join(_field(n, 0, _varint(1)) for n in (3, 4, 5))
    return pieces + _field(2, 2, trainer) + _field(3, 2, normalizer)


def write_id_lora(smoke: Path, folder: Path) -> Path:
    """A LoRA on the smoke backbone's attention, saved as the VideoPainterID checkpoint is."""
    from diffusers import CogVideoXImageToVideoPipeline
    from peft import LoraConfig, get_peft_model_state_dict

    from lanepaint.models.loaders import load_cogvideox_i2v

    transformer = load_cogvideox_i2v(smoke, dtype=torch.float32).transformer
    transformer.add_adapter(
        LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"])
    )
    CogVideoXImageToVideoPipeline.save_lora_weights(
        folder, transformer_lora_layers=get_peft_model_state_dict(transformer)
    )
    return folder / "pytorch_lora_weights.safetensors"


def _tree(folder: Path, prefix: str = "") -> dict[str, Path]:
    return {
        f"{prefix}{p.relative_to(folder).as_posix()}": p for p in folder.rglob("*") if p.is_file()
    }


@pytest.fixture(scope="module")
def repos(tmp_path_factory) -> dict[str, dict[str, Path]]:
    """The public repositories as the hub serves them, built from the smoke set:
    {repo id: {path in the repo: file with its bytes}}."""
    tmp = tmp_path_factory.mktemp("repos")
    smoke = build_smoke(tmp / "smoke", seed=0)
    extra = tmp / "extra"
    extra.mkdir()
    (extra / "LICENSE.md").write_text("licence text\n")
    (extra / "README.md").write_text("model card\n")
    (extra / ".gitattributes").write_text("*.safetensors filter=lfs\n")
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(4)}, extra / "flux1-fill-dev.safetensors")
    # The real CogVideoX tokenizer folder ships spiece.model, no tokenizer.json.
    tok = extra / "cog_tokenizer"
    tok.mkdir()
    vocab = json.loads((smoke / T5_TOKENIZER / "tokenizer.json").read_text())["model"]["vocab"]
    (tok / "spiece.model").write_bytes(spiece_model(vocab))
    shutil.copy2(smoke / T5_TOKENIZER / "tokenizer_config.json", tok)
    cog = {k: v for k, v in _tree(smoke / COGVIDEOX_I2V_DIR).items() if "tokenizer/" not in k}
    id_lora = write_id_lora(smoke, extra / "id")
    common = {n: extra / n for n in ("LICENSE.md", "README.md", ".gitattributes")}
    return {
        "black-forest-labs/FLUX.1-Fill-dev": {
            **_tree(smoke / FLUX_FILL_DIR),
            **common,
            "flux1-fill-dev.safetensors": extra / "flux1-fill-dev.safetensors",
        },
        "THUDM/CogVideoX-5b-I2V": {**cog, **_tree(tok, "tokenizer/"), **common},
        "TencentARC/VideoPainter": {
            **_tree(smoke / VIDEOPAINTER_BRANCH_DIR, "VideoPainter/checkpoints/branch/"),
            ID_LORA_IN_REPO: id_lora,
            "README.md": extra / "README.md",
        },
        "Qwen/Qwen2.5-VL-7B-Instruct": {**_tree(smoke / QWEN_VL_DIRS["7B"]), **common},
        "facebook/sam2.1-hiera-large": {
            SAM2_CHECKPOINT: smoke / SAM2_CHECKPOINT,
            SAM2_SIDECAR: smoke / SAM2_SIDECAR,
            "README.md": extra / "README.md",
        },
    }


def hub_cache(cache: Path, repos: dict[str, dict[str, Path]]) -> Path:
    """The hub cache layout: blobs/<sha256>, snapshots/<commit>/<path> -> ../../blobs/<sha256>
    (relative symlinks), refs/main = <commit>; plus an older snapshot refs/main moved off."""
    for repo, files in repos.items():
        folder = cache / f"models--{repo.replace('/', '--')}"
        commit = hashlib.sha1(repo.encode()).hexdigest()
        for rel, src in files.items():
            blob = folder / "blobs" / hashlib.sha256(src.read_bytes()).hexdigest()
            blob.parent.mkdir(parents=True, exist_ok=True)
            if not blob.exists():
                os.link(src, blob)
            link = folder / "snapshots" / commit / rel
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(os.path.relpath(blob, link.parent))
        stale = folder / "snapshots" / ("0" * 40)
        stale.mkdir()
        (stale / "STALE.txt").write_text("an older revision\n")
        (folder / "refs").mkdir()
        (folder / "refs" / "main").write_text(commit)
    return cache


def local_dirs(parent: Path, repos: dict[str, dict[str, Path]]) -> Path:
    """``hf download REPO --local-dir PARENT/<name>``: plain files plus hub bookkeeping."""
    for repo, files in repos.items():
        folder = parent / repo.split("/")[1]
        for rel, src in files.items():
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, folder / rel)
        meta = folder / ".cache" / "huggingface" / "download" / "README.md.metadata"
        meta.parent.mkdir(parents=True)
        meta.write_text("commit\netag\n")
    return parent


def files_of(root: Path) -> dict[str, Path]:
    return {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*")) if not p.is_dir()}


def report_status(out: str) -> dict[str, str]:
    """{model: status} from the check table the import prints."""
    rows = [line.split() for line in out.splitlines()]
    return {row[0]: row[-2] for row in rows if row and row[0] in (*SLOTS, "qwen_vl_72b")}


# --------------------------------------------------------------------------- tests


def test_import_from_the_hub_cache_links_everything_and_loads(repos, tmp_path, capsys) -> None:
    from lanepaint.models.loaders import load_cogvideox_i2v, load_videopainter_branch
    from lanepaint.videopainter.pipeline import VideoPainterPipeline

    cache = hub_cache(tmp_path / "hub", repos)
    root = tmp_path / "root"
    assert cli_main(["models", "import", str(root), "--hf-cache", str(cache)]) == 0
    out = capsys.readouterr().out
    assert "all required models present and loadable" in out
    status = report_status(out)
    assert {k: status[k] for k in SLOTS} == dict.fromkeys(SLOTS, "loaded")
    assert status["qwen_vl_72b"] == "absent"

    # Nothing copied: every file is a symlink into the cache's current snapshot.
    files = files_of(root)
    assert files and all(p.is_symlink() for p in files.values())
    blobs = {p.resolve() for p in cache.rglob("blobs/*")}
    assert all(p.resolve() in blobs for p in files.values())
    assert all("0" * 40 not in os.readlink(p) for p in files.values())
    # Only what the loaders read: no single-file Flux weights, no hub bookkeeping.
    assert f"{FLUX_FILL_DIR}/LICENSE.md" in files
    assert f"{FLUX_FILL_DIR}/flux1-fill-dev.safetensors" not in files
    assert not any(".gitattributes" in k or "STALE" in k for k in files)
    assert {SAM2_CHECKPOINT, SAM2_SIDECAR, VIDEOPAINTER_ID_LORA_FILE} <= set(files)
    assert not (root / SMOKE_MARKER).exists()
    # The T5 tokenizer.json beside spiece.model is Flux's tokenizer_2 file, linked.
    added = files[f"{T5_TOKENIZER}/tokenizer.json"].resolve()
    assert added == files[f"{FLUX_FILL_DIR}/tokenizer_2/tokenizer.json"].resolve()
    assert f"added {T5_TOKENIZER}/tokenizer.json" in out

    # The edit stage's backbone, branch and ID LoRA load from the imported root.
    pipe = load_cogvideox_i2v(root, dtype=torch.float32)
    assert pipe.tokenizer.model_max_length == 226
    painter = VideoPainterPipeline(pipe, load_videopainter_branch(root, dtype=torch.float32))
    painter.load_id_lora(root / VIDEOPAINTER_ID_LORA_FILE)
    assert "videopainter_id" in painter.pipe.transformer.peft_config

    # A second import keeps what is there; --overwrite relinks it.
    args = ["models", "import", str(root), "--hf-cache", str(cache), "--only", "sam2"]
    assert cli_main([*args, "--files-only"]) == 0
    assert f"{SAM2_CHECKPOINT}: kept" in capsys.readouterr().out
    assert cli_main([*args, "--files-only", "--overwrite"]) == 0
    out = capsys.readouterr().out
    assert f"{SAM2_CHECKPOINT}: 1 file linked" in out and "flux_fill" not in report_status(out)


def test_import_from_local_dirs_by_hardlinks(repos, tmp_path, monkeypatch, capsys) -> None:
    from lanepaint.models.loaders import load_cogvideox_i2v

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    downloads = local_dirs(tmp_path / "downloads", repos)
    root = tmp_path / "root"
    args = ["models", "import", str(root), "--local-dir", str(downloads), "--hardlink"]
    assert cli_main([*args, "--files-only"]) == 0
    out = capsys.readouterr().out
    assert "all required models present; files valid" in out
    files = files_of(root)
    assert not any(p.is_symlink() for p in files.values())
    assert not any(".cache" in k for k in files)
    sources = {(s.st_dev, s.st_ino) for s in (p.stat() for p in downloads.rglob("*"))}
    assert all((p.stat().st_dev, p.stat().st_ino) in sources for p in files.values())
    tokenizer = load_cogvideox_i2v(root, dtype=torch.float32).tokenizer
    reference = json.loads((downloads / "FLUX.1-Fill-dev/tokenizer_2/tokenizer.json").read_text())
    assert tokenizer.get_vocab() == {p: i for i, (p, _) in enumerate(reference["model"]["vocab"])}


def test_missing_downloads_are_one_line_and_exit_2(repos, tmp_path, capsys) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    root = tmp_path / "root"
    assert cli_main(["models", "import", str(root), "--hf-cache", str(empty)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("error: not downloaded:")
    assert "hf download black-forest-labs/FLUX.1-Fill-dev --exclude" in err
    assert "hf download facebook/sam2.1-hiera-large sam2.1_hiera_large.pt" in err
    assert '--include "VideoPainter/checkpoints/branch/*"' in err
    assert "Qwen2.5-VL-72B" not in err  # optional unless named
    assert not root.exists()

    cache = hub_cache(tmp_path / "hub", repos)
    args = ["models", "import", str(root), "--hf-cache", str(cache), "--files-only"]
    assert cli_main([*args, "--only", "qwen_vl_72b"]) == 2
    assert "hf download Qwen/Qwen2.5-VL-72B-Instruct" in capsys.readouterr().err
    assert cli_main([*args, "--only", "qwen_vl_7b,nope"]) == 2
    assert "unknown model nope" in capsys.readouterr().err
    # A subset is checked alone: sam2 only passes without the other models.
    assert cli_main([*args, "--only", "sam2"]) == 0
    assert set(report_status(capsys.readouterr().out)) == {"sam2"}
    (root / SMOKE_MARKER).write_text("{}")
    assert cli_main(args) == 2
    assert "is a smoke set" in capsys.readouterr().err


class _TouchOnUnpickle:
    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def test_sam2_checkpoint_must_load_weights_only(repos, tmp_path, capsys) -> None:
    marker = tmp_path / "unpickled"
    torch.save({"model": _TouchOnUnpickle(marker)}, tmp_path / "evil.pt")
    sam2 = {**repos["facebook/sam2.1-hiera-large"], SAM2_CHECKPOINT: tmp_path / "evil.pt"}
    cache = hub_cache(tmp_path / "hub", {"facebook/sam2.1-hiera-large": sam2})
    root = tmp_path / "root"
    args = ["models", "import", str(root), "--hf-cache", str(cache), "--only", "sam2"]
    assert cli_main(args) == 2
    assert "weights-only" in capsys.readouterr().err
    assert not marker.exists() and not (root / SAM2_CHECKPOINT).exists()


def test_a_tokenizer_json_of_another_vocabulary_is_not_borrowed(repos, tmp_path, capsys) -> None:
    cog = dict(repos["THUDM/CogVideoX-5b-I2V"])
    vocab = json.loads(
        repos["black-forest-labs/FLUX.1-Fill-dev"]["tokenizer_2/tokenizer.json"].read_text()
    )["model"]["vocab"]
    vocab[10][1] -= 1.0  # one score differs: another SentencePiece model
    (tmp_path / "spiece.model").write_bytes(spiece_model(vocab))
    cog["tokenizer/spiece.model"] = tmp_path / "spiece.model"
    cache = hub_cache(
        tmp_path / "hub",
        {
            "black-forest-labs/FLUX.1-Fill-dev": repos["black-forest-labs/FLUX.1-Fill-dev"],
            "THUDM/CogVideoX-5b-I2V": cog,
        },
    )
    root = tmp_path / "root"
    only = ["--only", "flux_fill,cogvideox_i2v", "--files-only"]
    assert cli_main(["models", "import", str(root), "--hf-cache", str(cache), *only]) == 2
    err = capsys.readouterr().err
    assert "spiece.model" in err and f"{T5_TOKENIZER}" in err and not root.exists()


def test_the_id_lora_slot_is_where_the_hub_repo_keeps_it() -> None:
    assert VIDEOPAINTER_ID_LORA_FILE == ID_LORA_IN_REPO


def test_check_validates_the_id_lora_slot(repos, tmp_path) -> None:
    from safetensors.torch import save_file

    from lanepaint.models.check import check_model
    from lanepaint.models.registry import MODEL_SPECS
    from lanepaint.models.root import ModelRoot

    spec = MODEL_SPECS["videopainter_id_lora"]
    slot = tmp_path / VIDEOPAINTER_ID_LORA_FILE
    slot.parent.mkdir(parents=True)
    shutil.copy2(repos["TencentARC/VideoPainter"][ID_LORA_IN_REPO], slot)
    root = ModelRoot.open(tmp_path)
    assert check_model(root, spec).status == "loaded"
    data = slot.read_bytes()
    slot.write_bytes(data[: len(data) - 10])
    result = check_model(root, spec, load=False)
    assert result.status == "broken" and "truncated safetensors" in result.error
    save_file({"transformer.proj.weight": torch.zeros(2)}, slot)
    result = check_model(root, spec)
    assert result.status == "broken" and "no LoRA weights" in result.error
