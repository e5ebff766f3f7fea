"""Stage train-lora on the tiny FluxFill (CPU): learning, outputs, exact resume, bad input."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from lp_testdata import COMBOS
from PIL import Image
from safetensors.torch import load_file

from lanepaint.cli import main as cli
from lanepaint.data.fluxfill import DatasetFormatError, DatasetWriter
from lanepaint.io import storage
from lanepaint.kit import add_arguments, from_args, to_argv
from lanepaint.models.root import FLUX_FILL_DIR, SMOKE_LABEL, SMOKE_MARKER
from lanepaint.training import checkpoint as ckpt
from lanepaint.training import objective
from lanepaint.training.config import TrainConfig
from lanepaint.training.trainer import NonFiniteLossError, train

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = "pytorch_lora_weights.safetensors"


def build_flux_root(root: Path) -> Path:
    """A model root with only the smoke FLUX.1-Fill-dev (the other models are not needed)."""
    from lanepaint.models.smoke import tiny_flux_fill, write_clip_vocab_files

    tiny_flux_fill(0).save_pretrained(root / FLUX_FILL_DIR)
    write_clip_vocab_files(root / FLUX_FILL_DIR / "tokenizer")
    (root / SMOKE_MARKER).write_text(json.dumps({"smoke": True, "label": SMOKE_LABEL}))
    return root


def make_train_dataset(
    root: str, n: int = 6, sizes: tuple[tuple[int, int], ...] = ((48, 64),), seed: int = 0
) -> str:
    """Rows cycling through image sizes and lane captions; every other row has a prompt_2."""
    rng = np.random.default_rng(seed)
    with DatasetWriter(root) as writer:
        for i in range(n):
            h, w = sizes[i % len(sizes)]
            yy, xx = np.mgrid[0:h, 0:w]
            base = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) * 127 // (w + h)], -1)
            image = (base + rng.integers(0, 40, (h, w, 3))).clip(0, 255).astype(np.uint8)
            mask = np.zeros((h, w), np.uint8)
            mask[h // 2 :] = 1
            caption = COMBOS[i % len(COMBOS)].caption
            writer.add(f"frame_{i:03d}", image, mask, caption, f"lane scene {i}" if i % 2 else "")
    return root


def small_config(tmp_path: Path, **overrides) -> TrainConfig:
    values = dict(
        rank=4,
        alpha=8.0,
        max_train_steps=8,
        learning_rate=3e-3,
        warmup_steps=2,
        resolution=48,
        mixed_precision="no",
        max_sequence_length=16,
        checkpointing_steps=4,
        checkpoints_total_limit=2,
        eval_rows=2,
        log_every=100,
        workers=2,
        work_dir=str(tmp_path / "work"),
    )
    values.update(overrides)
    return TrainConfig(**values)


def _summary(out: str) -> dict:
    return json.loads(storage.read_text(storage.join(out, "summary.json")))


def _status(result) -> str:
    return result.summary["details"]["status"]


def _lora(out: str) -> dict[str, torch.Tensor]:
    return load_file(os.path.join(out, "lora", WEIGHTS))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors on a shared 2-core machine: one intra-op thread is much faster."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def flux_root(tmp_path_factory) -> str:
    return str(build_flux_root(tmp_path_factory.mktemp("models")))


@pytest.fixture(scope="module")
def trained(flux_root, tmp_path_factory):
    """One 40-step run shared by the output and stock-loading tests."""
    tmp = tmp_path_factory.mktemp("trained")
    data = make_train_dataset(str(tmp / "data"), n=6)
    config = small_config(
        tmp, rank=8, alpha=16.0, max_train_steps=40, checkpointing_steps=10, eval_rows=3
    )
    result = train(data, flux_root, str(tmp / "out"), config)
    return data, str(tmp / "out"), config, result


# --------------------------------------------------------------------------- learning


def test_eval_loss_falls_and_outputs_are_labelled(trained):
    _, out, config, result = trained
    s, d = result.summary, result.summary["details"]
    assert _status(result) == "complete" and d["steps_done"] == 40
    assert d["eval_loss_end"] < 0.95 * d["eval_loss_start"], d["eval_losses"]
    assert (s["inputs"], s["done"], s["failed"]) == (6, 6, 0)
    assert (d["used_rows"], d["unique_prompts"]) == (6, 6)
    assert s["model_set"] == "smoke" and "smoke" in s["model_set_label"]
    # checkpoints: every 10 steps, only the newest 2 kept, each complete
    infos = ckpt.list_checkpoints(out)
    assert [i.step for i in infos] == [30, 40] and all(i.complete for i in infos)
    info = json.loads(Path(out, "lora", "lanepaint_lora.json").read_text())
    assert (info["model_set"], info["rank"], info["alpha"], info["steps"]) == ("smoke", 8, 16.0, 40)
    lines = Path(out, "loss.csv").read_text().splitlines()
    assert lines[0].startswith("step,loss,eval_loss") and len(lines) == 1 + 41  # step 0 = eval
    assert all(line.endswith(",smoke") for line in lines[1:])
    png = Image.open(io.BytesIO(Path(out, "loss.png").read_bytes()))
    assert png.format == "PNG" and png.text["model_set"] == "smoke"
    assert "smoke" in Path(out, "summary.md").read_text()


def test_rerun_of_finished_training_is_a_no_op(trained, flux_root):
    data, out, config, result = trained
    again = train(data, flux_root, out, config)
    assert again.skipped and again.summary["details"] == result.summary["details"]
    assert again.summary["settings_key"] == result.summary["settings_key"]
    assert again.summary["skipped_done"] == result.summary["done"] == 6
    # a speed or bookkeeping switch does not make a finished run stale
    assert train(data, flux_root, out, replace(config, log_every=1, eval_rows=0)).skipped
    with pytest.raises(ckpt.ResumeMismatchError, match="learning_rate"):
        train(data, flux_root, out, small_config(Path(out), learning_rate=1e-3))


def test_saved_lora_loads_into_stock_pipeline_and_changes_output(trained, flux_root):
    from diffusers import FluxFillPipeline

    data, out, _, _ = trained
    pipe = FluxFillPipeline.from_pretrained(os.path.join(flux_root, FLUX_FILL_DIR))
    image = Image.open(os.path.join(data, "images", "frame_000.png"))
    mask = Image.open(os.path.join(data, "masks", "frame_000.png"))

    def run() -> np.ndarray:
        return pipe(
            prompt=COMBOS[0].caption,
            image=image,
            mask_image=mask,
            height=48,
            width=64,
            num_inference_steps=2,
            max_sequence_length=16,
            generator=torch.Generator().manual_seed(0),
            output_type="np",
        ).images[0]

    before = run()
    pipe.load_lora_weights(os.path.join(out, "lora"))
    after = run()
    assert np.abs(after - before).max() > 1e-3
    # alpha 16 / rank 8: the adapter metadata must survive, else diffusers assumes alpha = r
    layer = pipe.transformer.transformer_blocks[0].attn.to_q
    assert list(layer.scaling.values()) == [2.0]
    assert layer.r[next(iter(layer.r))] == 8


# --------------------------------------------------------------------------- resume


def test_stop_and_resume_equals_uninterrupted_run(flux_root, tmp_path):
    data = make_train_dataset(str(tmp_path / "data"), n=5, sizes=((48, 64), (64, 48)))
    # dropout draws from the global RNG and mixed sizes split micro-batches: both must resume
    config = small_config(
        tmp_path,
        max_train_steps=6,
        batch_size=2,
        grad_accum=2,
        dropout=0.1,
        checkpointing_steps=2,
        checkpoints_total_limit=2,
    )
    full = train(data, flux_root, str(tmp_path / "a"), config)
    assert _status(full) == "complete"

    out = str(tmp_path / "b")
    first = train(data, flux_root, out, replace(config, stop_after_steps=3))
    assert _status(first) == "stopped" and first.summary["details"]["steps_done"] == 3
    assert [i.step for i in ckpt.list_checkpoints(out)] == [2, 3]
    assert not Path(out, "lora").exists()
    # the LR schedule is saved as JSON, not through accelerate's pickled custom state
    newest = Path(out, "checkpoints", "checkpoint-000003")
    assert json.loads((newest / ckpt.LR_SCHEDULER).read_text())["last_epoch"] == 3
    assert not list(newest.glob("custom_checkpoint_*"))

    with pytest.raises(ckpt.ResumeMismatchError, match=r"rank: 4 -> 8"):
        train(data, flux_root, out, replace(config, rank=8))

    resumed = train(data, flux_root, out, config)
    assert _status(resumed) == "complete"
    assert resumed.summary["details"]["resumed_from_step"] == 3
    a, b = _lora(str(tmp_path / "a")), _lora(out)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=1e-6, msg=key)
    assert a[next(iter(a))].dtype == torch.float32  # LoRA parameters are kept in fp32

    def losses(out_dir: str) -> list[tuple[str, str]]:
        rows = [line.split(",") for line in Path(out_dir, "loss.csv").read_text().splitlines()]
        return [(r[0], r[1]) for r in rows]  # step, loss (a stop adds an evaluation)

    assert losses(out) == losses(str(tmp_path / "a"))
    assert resumed.summary["details"]["samples_seen"] == 6 * 2 * 2


def test_fp8_base_trains_resumes_and_stays_near_the_exact_lora(flux_root, tmp_path):
    """--base-fp8: torchao float8 training under the adapters (CPU _scaled_mm here). It is a
    different result (own settings key), close to the exact one, and resumes exactly."""
    data = make_train_dataset(str(tmp_path / "data"), n=4)
    exact_config = small_config(tmp_path, max_train_steps=4, checkpointing_steps=2)
    config = replace(exact_config, base_fp8=True)
    exact = train(data, flux_root, str(tmp_path / "exact"), exact_config)
    full = train(data, flux_root, str(tmp_path / "a"), config)
    assert full.summary["details"]["base_fp8_linears"] == 20  # every block Linear of the smoke
    assert full.summary["settings_key"] != exact.summary["settings_key"]
    out = str(tmp_path / "b")
    assert _status(train(data, flux_root, out, replace(config, stop_after_steps=2))) == "stopped"
    with pytest.raises(ckpt.ResumeMismatchError, match=r"base_fp8: True -> False"):
        train(data, flux_root, out, exact_config)
    assert train(data, flux_root, out, config).summary["details"]["resumed_from_step"] == 2
    a, b, e = _lora(str(tmp_path / "a")), _lora(out), _lora(str(tmp_path / "exact"))
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=1e-6, msg=key)
    drift = [float((a[k] - e[k]).norm() / e[k].norm()) for k in e if "lora_B" in k]
    assert 0 < max(drift) < 0.25, drift  # fp8 rounding moves the adapter, not by much


def test_fp8_base_on_an_older_gpu_is_a_user_error(tmp_path, monkeypatch, caplog):
    from lanepaint.cli import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (8, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA A100")
    args = ["--train-data", str(tmp_path), "--model-root", str(tmp_path / "m")]
    code = main(["train-lora", *args, "--output-dir", str(tmp_path / "o"), "--base-fp8"])
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert code == 2 and len(errors) == 1 and "\n" not in errors[0], errors
    assert errors[0].startswith("--base-fp8 needs compute capability >= 8.9; NVIDIA A100 has 8.0")
    assert not (tmp_path / "o").exists()


def test_fp8_base_with_the_cudnn_backend_is_refused_before_anything_loads(tmp_path, caplog):
    """The combination crashed on an H100 (illegal memory access, docs/training.md)."""
    from lanepaint.cli import main

    args = ["--train-data", str(tmp_path), "--model-root", str(tmp_path / "m"), "--compile"]
    out = tmp_path / "o"
    code = main(["train-lora", *args, "--output-dir", str(out), "--base-fp8",
                 "--attention-backend", "cudnn"])  # fmt: skip
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert code == 2 and len(errors) == 1 and "\n" not in errors[0], errors
    assert "--base-fp8 with attention backend cudnn" in errors[0]
    assert "--attention-backend auto" in errors[0]
    assert not out.exists()


def test_damaged_newest_checkpoint_falls_back_to_previous(flux_root, tmp_path):
    data = make_train_dataset(str(tmp_path / "data"), n=4)
    out = str(tmp_path / "out")
    config = small_config(tmp_path, max_train_steps=6, checkpointing_steps=2)
    train(data, flux_root, out, replace(config, stop_after_steps=4))
    newest = Path(out, "checkpoints", "checkpoint-000004", WEIGHTS)
    newest.write_bytes(newest.read_bytes()[:100])  # truncated: sizes no longer match
    resumed = train(data, flux_root, out, config)
    assert resumed.summary["details"]["resumed_from_step"] == 2
    assert _status(resumed) == "complete"


# --------------------------------------------------------------------------- bad input


def test_rows_whose_files_lead_outside_the_dataset_are_rejected(flux_root, tmp_path):
    """A symlinked file and a symlinked folder pointing outside the root (valid images
    there): the text check of the CSV path cannot see them, resolving does."""
    root = Path(make_train_dataset(str(tmp_path / "data"), n=4))
    secret = tmp_path / "secret"
    secret.mkdir()
    image = root / "images" / "frame_000.png"
    (secret / "a.png").write_bytes(image.read_bytes())
    image.unlink()
    image.symlink_to(secret / "a.png")
    (secret / "m.png").write_bytes((root / "masks" / "frame_001.png").read_bytes())
    (root / "linked").symlink_to(secret)
    csv = root / "train.csv"
    csv.write_text(csv.read_text().replace("masks/frame_001.png", "linked/m.png"))
    config = small_config(tmp_path, max_train_steps=1, checkpointing_steps=10)
    s = train(str(root), flux_root, str(tmp_path / "out"), config).summary
    assert s["details"]["used_rows"] == 2 and s["failures_by_reason"] == {"unsafe path": 2}


def test_unreadable_rows_are_recorded_and_skipped(flux_root, tmp_path):
    root = Path(make_train_dataset(str(tmp_path / "data"), n=6))
    (root / "images" / "frame_000.png").write_bytes(b"not a png")
    (root / "masks" / "frame_001.png").unlink()
    Image.new("L", (10, 10), 255).save(root / "masks" / "frame_002.png")
    csv = (root / "train.csv").read_text()
    csv += f"../outside.png,masks/frame_003.png,{COMBOS[0].caption},\n"
    (root / "train.csv").write_text(csv)
    config = small_config(tmp_path, max_train_steps=2, checkpointing_steps=10)
    result = train(str(root), flux_root, str(tmp_path / "out"), config)
    s = result.summary
    assert (s["inputs"], s["details"]["used_rows"], s["failed"]) == (7, 3, 4)
    assert s["failures_by_reason"] == {
        "undecodable image": 1,
        "missing mask file": 1,
        "size mismatch": 1,
        "unsafe path": 1,
    }
    records = [
        json.loads(x) for x in Path(tmp_path, "out", "failures.jsonl").read_text().splitlines()
    ]
    assert len(records) == 4 and all(r["reason"] and r["item"] for r in records)

    for name in ("frame_003", "frame_004", "frame_005"):
        (root / "images" / f"{name}.png").unlink()
    with pytest.raises(DatasetFormatError, match="no usable rows"):
        train(str(root), flux_root, str(tmp_path / "out2"), config)
    failed = _summary(str(tmp_path / "out2"))
    assert failed["details"]["status"] == "failed" and failed["failed"] == 7


def test_nan_loss_stops_with_clear_error_and_keeps_checkpoint(flux_root, tmp_path, monkeypatch):
    data = make_train_dataset(str(tmp_path / "data"), n=4)
    real = objective.flow_matching_loss
    calls = {"n": 0}

    def poisoned(model, inputs, guidance):
        loss, pred = real(model, inputs, guidance)
        if torch.is_grad_enabled():
            calls["n"] += 1
            if calls["n"] >= 3:
                loss = loss * float("nan")
        return loss, pred

    monkeypatch.setattr(objective, "flow_matching_loss", poisoned)
    out = str(tmp_path / "out")
    config = small_config(tmp_path, max_train_steps=6, checkpointing_steps=2)
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at step 3.*checkpoint"):
        train(data, flux_root, out, config)
    latest = ckpt.latest_complete(out)
    assert latest is not None and latest[0].step == 2
    d = _summary(out)["details"]
    assert d["status"] == "failed" and "nan" in d["error"] and d["steps_done"] == 2
    assert not Path(out, "lora").exists()


def test_failed_checkpoints_never_become_latest(flux_root, tmp_path, monkeypatch):
    from accelerate import Accelerator

    data = make_train_dataset(str(tmp_path / "data"), n=4)
    real_save, real_publish = Accelerator.save_state, ckpt.publish

    def save_state(self, output_dir=None, **kw):
        if output_dir.endswith("checkpoint-000002"):
            raise OSError(28, "No space left on device")
        return real_save(self, output_dir, **kw)

    def publish(staging, dest, manifest):
        if dest.endswith("checkpoint-000004"):  # half uploaded, then the upload fails
            Path(dest).mkdir(parents=True)
            (Path(dest) / WEIGHTS).write_bytes(b"partial")
            raise OSError(28, "No space left on device")
        return real_publish(staging, dest, manifest)

    monkeypatch.setattr(Accelerator, "save_state", save_state)
    monkeypatch.setattr(ckpt, "publish", publish)
    out = str(tmp_path / "out")
    config = small_config(tmp_path, max_train_steps=6, checkpointing_steps=2)
    train(data, flux_root, out, replace(config, stop_after_steps=4))
    assert ckpt.latest_complete(out) is None  # both attempts failed; nothing to resume from
    assert [i.complete for i in ckpt.list_checkpoints(out)] == [False]
    failures = _summary(out)["details"]["checkpoint_failures"]
    assert [f["step"] for f in failures] == [2, 4]
    assert all("No space left" in f["reason"] for f in failures)

    monkeypatch.undo()
    result = train(data, flux_root, out, config)  # starts over: no complete checkpoint
    assert result.summary["details"]["resumed_from_step"] is None
    assert _status(result) == "complete"
    assert [i.step for i in ckpt.list_checkpoints(out)] == [4, 6]  # partial 4 replaced


# --------------------------------------------------------------------------- CLI


def test_cli_help_and_config_round_trip(capsys):
    with pytest.raises(SystemExit):
        cli(["train-lora", "--help"])
    text = capsys.readouterr().out
    for opt in [
        "--train-data",
        "--model-root",
        "--output-dir",
        "--num-processes",
        "--rank",
        "--alpha",
        "--target-modules",
        "--gradient-checkpointing",
        "--attention-backend",
        "--checkpointing-steps",
        "--weighting-scheme",
    ]:
        assert opt in text
    config = TrainConfig(
        rank=16,
        alpha=8.5,
        target_modules=("to_q", "to_v"),
        dropout=0.05,
        gradient_checkpointing=True,
        stop_after_steps=7,
        work_dir="/w",
        compile=True,
        attention_backend="cudnn",
        activation_memory_budget=0.5,
    )
    parser = __import__("argparse").ArgumentParser()
    add_arguments(parser, TrainConfig)
    assert from_args(TrainConfig, parser.parse_args(to_argv(config))) == config
    assert from_args(TrainConfig, parser.parse_args(to_argv(TrainConfig()))) == TrainConfig()
    assert from_args(TrainConfig, parser.parse_args([])) == TrainConfig()
    with pytest.raises(ValueError, match="weighting scheme"):
        TrainConfig(weighting_scheme="cosmap")


def test_cli_trains_and_refuses_other_settings(flux_root, tmp_path, capsys):
    data = make_train_dataset(str(tmp_path / "data"), n=3)
    args = [
        "train-lora",
        "--train-data",
        os.path.join(data, "train.csv"),
        "--model-root",
        flux_root,
        "--output-dir",
        str(tmp_path / "out"),
        *to_argv(small_config(tmp_path, max_train_steps=2)),
    ]
    assert cli(args) == 0
    assert "complete:" in capsys.readouterr().out
    assert cli(args) == 0
    assert "skipped:" in capsys.readouterr().out
    assert cli([*args, "--rank", "2"]) == 2
    assert cli([*args, "--stop-after-steps", "-1"]) == 2


# --------------------------------------------------------------------------- gs://


@pytest.mark.gcs
def test_gcs_data_and_checkpoints_resume(flux_root, gcs_bucket, tmp_path):
    local = make_train_dataset(str(tmp_path / "data"), n=4)
    data = f"gs://{gcs_bucket}/datasets/d"
    storage.upload_dir(local, data)
    out = f"gs://{gcs_bucket}/runs/r1"
    config = small_config(tmp_path, max_train_steps=4, checkpointing_steps=2)
    first = train(data, flux_root, out, replace(config, stop_after_steps=2))
    assert _status(first) == "stopped"
    # an upload that died before its manifest is not a checkpoint
    storage.write_text(f"{out}/checkpoints/checkpoint-000009/{WEIGHTS}", "partial")
    assert ckpt.latest_complete(out)[0].step == 2
    with pytest.raises(ckpt.ResumeMismatchError):
        train(data, flux_root, out, replace(config, seed=1))
    result = train(data, flux_root, out, config)
    assert _status(result) == "complete"
    assert result.summary["details"]["resumed_from_step"] == 2
    assert storage.exists(f"{out}/lora/{WEIGHTS}") and storage.exists(f"{out}/loss.png")
    # the partial step-9 folder was removed when the run resumed
    assert [i.step for i in ckpt.list_checkpoints(out)] == [2, 4]


# --------------------------------------------------------------------------- two processes


def _two_processes(data: str, flux_root: str, out: str, config: TrainConfig) -> str:
    """``lanepaint train-lora --num-processes 2`` (torchrun + gloo on the CPU); its stdout."""
    io_flags = ["--train-data", data, "--model-root", flux_root, "--output-dir", out]
    cmd = [sys.executable, "-m", "lanepaint.cli", "train-lora", "--num-processes", "2"]
    cmd += [*io_flags, *to_argv(config)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout


@pytest.mark.slow
def test_two_processes_match_one_process_with_the_same_global_batch(flux_root, tmp_path):
    """torchrun + gloo on CPU: DDP averages the gradients of both ranks, so 2 processes x
    batch 1 end with the LoRA of 1 process x batch 2 (rows and noise follow the stream).
    A two-process run stopped after its first checkpoint and resumed ends where the
    uninterrupted one did, with the same loss curve."""
    data = make_train_dataset(str(tmp_path / "data"), n=4)
    one = small_config(tmp_path, max_train_steps=3, batch_size=2, checkpointing_steps=2)
    single = train(data, flux_root, str(tmp_path / "one"), one)
    two = small_config(tmp_path, max_train_steps=3, batch_size=1, checkpointing_steps=2)
    out = str(tmp_path / "two")
    assert "complete:" in _two_processes(data, flux_root, out, two)
    d = _summary(out)["details"]
    assert d["identity"]["num_processes"] == 2 and d["samples_seen"] == 6
    assert Path(out, "checkpoints", "checkpoint-000002", "random_states_1.pkl").is_file()
    a, b = _lora(str(tmp_path / "one")), _lora(out)
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-5, msg=key)
    assert d["last_loss"] == pytest.approx(single.summary["details"]["last_loss"], rel=1e-4)

    again = str(tmp_path / "two_resumed")
    stopped = _two_processes(data, flux_root, again, replace(two, stop_after_steps=2))
    assert "stopped:" in stopped and not Path(again, "lora").exists()
    assert "complete:" in _two_processes(data, flux_root, again, two)
    resumed = _summary(again)["details"]
    assert resumed["resumed_from_step"] == 2 and resumed["samples_seen"] == 6
    b = _lora(again)
    for key in a:
        torch.testing.assert_close(b[key], _lora(out)[key], rtol=1e-5, atol=1e-6, msg=key)

    def losses(out_dir: str) -> list[tuple[str, str]]:
        rows = [line.split(",") for line in Path(out_dir, "loss.csv").read_text().splitlines()]
        return [(r[0], r[1]) for r in rows]  # step, loss (a stop adds an evaluation)

    assert losses(again) == losses(out)
