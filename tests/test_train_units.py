"""Pieces of train-lora: geometry, the Fill condition vs the stock pipeline, the objective,
the data order and per-row randomness, checkpoint bookkeeping, the bench script."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lanepaint.training import checkpoint as ckpt
from lanepaint.training import data, objective


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def pipe():
    from lanepaint.models.smoke import tiny_flux_fill

    return tiny_flux_fill(0)


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


# --------------------------------------------------------------------------- geometry


@pytest.mark.parametrize(
    ("size", "resolution", "expected"),
    [
        ((1920, 1080), 1024, (1360, 768)),
        ((1024, 1024), 1024, (1024, 1024)),
        ((30, 20), 16, (16, 16)),
    ],
)
def test_target_size_keeps_aspect_and_multiples_of_16(size, resolution, expected):
    w, h = data.target_size(*size, resolution)
    assert (w, h) == expected and w % 16 == 0 and h % 16 == 0


def test_image_and_mask_stay_aligned_through_resize_and_crop():
    # a 1080p-like frame whose right half is white; the mask marks the same half
    h, w = 90, 160
    image = np.zeros((h, w, 3), np.uint8)
    image[:, w // 2 :] = 255
    mask = np.zeros((h, w), np.uint8)
    mask[:, w // 2 :] = 255
    img, msk = data.load_pair(_png(image), _png(mask), resolution=64)
    assert img.shape[1:] == msk.shape[1:] and img.shape[1] % 16 == 0 and img.shape[2] % 16 == 0
    assert set(msk.unique().tolist()) <= {0.0, 1.0}
    bright = img.mean(0) > 0
    assert (bright == (msk[0] > 0.5)).float().mean() > 0.98
    with pytest.raises(ValueError, match="size mismatch"):
        data.load_pair(_png(image), _png(mask[:, :-1]), resolution=64)


# --------------------------------------------------------------------------- objective


def test_fill_condition_is_built_as_the_pipeline_builds_it_at_inference(pipe):
    rng = np.random.default_rng(0)
    h, w = 48, 64
    image = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    mask = np.zeros((h, w), np.uint8)
    mask[20:, 10:50] = 255
    # resolution chosen so that the size is kept (no resampling on either side)
    img, msk = data.load_pair(_png(image), _png(mask), resolution=56)
    init = pipe.image_processor.preprocess(Image.fromarray(image), height=h, width=w)
    mask_ref = pipe.mask_processor.preprocess(Image.fromarray(mask), height=h, width=w)
    torch.testing.assert_close(img[None], init, atol=1e-5, rtol=0)
    torch.testing.assert_close(msk[None], mask_ref)

    latents = data.encode_images(pipe.vae, img[None], msk[None])
    with torch.no_grad():
        ref_dist = pipe.vae.encode(init * (1 - mask_ref)).latent_dist
    torch.testing.assert_close(latents["masked_mean"], ref_dist.mean)

    geometry = objective.FillGeometry.from_vae_config(pipe.vae.config)
    assert geometry.vae_scale_factor == pipe.vae_scale_factor == 8
    cond = geometry.condition(latents["masked_mean"], msk[None])
    c = pipe.vae.config.latent_channels
    ref_mask, ref_masked = pipe.prepare_mask_latents(
        mask_ref, ref_dist.mean, 1, c, 1, h, w, torch.float32, "cpu", None
    )
    torch.testing.assert_close(cond, torch.cat((ref_masked, ref_mask), dim=-1))
    # noisy latents (4c) + condition = the transformer's input channels
    assert cond.shape[-1] + 4 * c == pipe.transformer.config.in_channels


class _Recorder(torch.nn.Module):
    """Stands in for the transformer: records its inputs, predicts a constant."""

    def __init__(self, out_channels: int):
        super().__init__()
        self.out_channels = out_channels
        self.seen: dict = {}

    def forward(self, hidden_states, **kwargs):
        self.seen = {"hidden_states": hidden_states, **kwargs}
        b, n, _ = hidden_states.shape
        return (torch.full((b, n, self.out_channels), 0.5),)


def test_rectified_flow_objective():
    from diffusers import FluxFillPipeline

    b, c, h, w = 2, 4, 6, 8
    gen = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(b, c, h, w, generator=gen), torch.randn(b, c, h, w, generator=gen)
    cond = torch.randn(b, (h // 2) * (w // 2), 5, generator=gen)
    inputs = objective.StepInputs(
        x0=x0,
        noise=noise,
        sigmas=torch.tensor([0.25, 0.9]),
        timesteps=torch.tensor([250.0, 900.0]),
        condition=cond,
        prompt_embeds=torch.randn(b, 7, 3),
        pooled=torch.randn(b, 3),
    )
    model = _Recorder(4 * c)
    loss, _ = objective.flow_matching_loss(model, inputs, guidance_scale=3.5)
    pack = FluxFillPipeline._pack_latents
    sigma = inputs.sigmas.view(b, 1, 1, 1)
    expected_noisy = pack((1 - sigma) * x0 + sigma * noise, b, c, h, w)
    seen = model.seen
    torch.testing.assert_close(seen["hidden_states"], torch.cat((expected_noisy, cond), dim=2))
    torch.testing.assert_close(seen["timestep"], torch.tensor([0.25, 0.9]))
    torch.testing.assert_close(seen["guidance"], torch.tensor([3.5, 3.5]))
    assert seen["txt_ids"].shape == (7, 3) and not seen["txt_ids"].any()
    assert seen["img_ids"].shape == ((h // 2) * (w // 2), 3)
    target = pack(noise - x0, b, c, h, w)
    torch.testing.assert_close(loss, ((0.5 - target) ** 2).mean())
    objective.flow_matching_loss(model, inputs, guidance_scale=None)
    assert model.seen["guidance"] is None


def test_schedule_sigmas_are_unshifted_training_sigmas(pipe):
    schedule = objective.FlowSchedule(pipe.scheduler.config)
    # dynamic shifting is on in the config: training uses t/1000 without any shift
    torch.testing.assert_close(schedule.sigmas, schedule.timesteps / 1000)
    sig, ts = schedule.sample(4096, torch.Generator().manual_seed(0), "logit_normal")
    assert 0 < float(sig.min()) and float(sig.max()) <= 1 and abs(float(sig.mean()) - 0.5) < 0.05
    torch.testing.assert_close(ts, sig * 1000)
    sig_mode, _ = schedule.sample(4096, torch.Generator().manual_seed(0), "mode", mode_scale=1.29)
    assert float(sig_mode.mean()) != pytest.approx(float(sig.mean()), abs=1e-3)


def test_each_row_draws_from_its_own_generator(pipe):
    geometry = objective.FillGeometry.from_vae_config(pipe.vae.config)
    schedule = objective.FlowSchedule(pipe.scheduler.config)
    gen = torch.Generator().manual_seed(1)
    rows = []
    for _ in range(2):
        rows.append(
            (
                {
                    "latent_mean": torch.randn(2, 4, 6, generator=gen),
                    "latent_std": torch.rand(2, 4, 6, generator=gen),
                    "masked_mean": torch.randn(2, 4, 6, generator=gen),
                    "masked_std": torch.rand(2, 4, 6, generator=gen),
                    "mask": (torch.rand(32, 48, generator=gen) > 0.5).to(torch.uint8),
                },
                {"prompt_embeds": torch.randn(5, 32, generator=gen), "pooled": torch.randn(32)},
            )
        )

    def gens(*seeds):
        return [torch.Generator().manual_seed(s) for s in seeds]

    both = objective.sample_inputs(
        objective.collate([r[0] for r in rows], [r[1] for r in rows], "cpu"),
        geometry,
        schedule,
        gens(10, 11),
    )
    for i, seed in enumerate((10, 11)):
        one = objective.sample_inputs(
            objective.collate([rows[i][0]], [rows[i][1]], "cpu"), geometry, schedule, gens(seed)
        )
        for field in ("x0", "noise", "sigmas", "timesteps", "condition"):
            torch.testing.assert_close(getattr(both, field)[i], getattr(one, field)[0])
    with pytest.raises(ValueError, match="generators"):
        objective.sample_inputs(
            objective.collate([rows[0][0]], [rows[0][1]], "cpu"), geometry, schedule, gens(1, 2)
        )


# --------------------------------------------------------------------------- data order


def test_sample_order_is_a_seeded_permutation_per_epoch():
    order = data.SampleOrder(7, seed=42)
    epoch0 = [order[g] for g in range(7)]
    epoch1 = [order[g] for g in range(7, 14)]
    assert sorted(epoch0) == sorted(epoch1) == list(range(7)) and epoch0 != epoch1
    assert [data.SampleOrder(7, seed=42)[g] for g in range(14)] == epoch0 + epoch1
    assert [data.SampleOrder(7, seed=1)[g] for g in range(7)] != epoch0
    with pytest.raises(ValueError):
        data.SampleOrder(0, seed=1)


def test_two_processes_read_what_one_process_with_twice_the_batch_reads():
    one = data.micro_batch_positions(10, micro=0, process=0, processes=1, batch_size=4)
    two = [
        data.micro_batch_positions(10, micro=m, process=p, processes=2, batch_size=1)
        for m in range(2)
        for p in range(2)
    ]
    assert sorted(sum(two, [])) == one == [10, 11, 12, 13]


def test_train_data_accepts_csv_or_dir(tmp_path):
    assert data.split_train_data("gs://bkt/x/t.csv") == ("gs://bkt/x", "gs://bkt/x/t.csv")
    assert data.split_train_data("gs://bkt/x") == ("gs://bkt/x", "gs://bkt/x/train.csv")
    csv = tmp_path / "d" / "rows.csv"
    assert data.split_train_data(str(csv)) == (str(tmp_path / "d"), str(csv))


# --------------------------------------------------------------------------- checkpoints


def test_publish_prune_and_verify_local(tmp_path):
    out = str(tmp_path / "out")
    for step in (1, 2, 3):
        staging = tmp_path / f"s{step}"
        staging.mkdir()
        (staging / "a.bin").write_bytes(b"x" * step)
        ckpt.publish(staging, f"{out}/checkpoints/{ckpt.checkpoint_name(step)}", {"step": step})
        assert not staging.exists()
    Path(out, "checkpoints", ckpt.checkpoint_name(2), ckpt.MANIFEST).unlink()  # half deleted
    Path(out, "checkpoints", ckpt.checkpoint_name(9)).mkdir()  # upload died before manifest
    info, manifest = ckpt.latest_complete(out)
    assert info.step == 3 and manifest["files"] == {"a.bin": 3}
    ckpt.verify(Path(info.uri), manifest)
    Path(info.uri, "a.bin").write_bytes(b"y")
    with pytest.raises(ckpt.CheckpointError, match="a.bin"):
        ckpt.verify(Path(info.uri), manifest)
    assert ckpt.prune(out, keep=1) == [1, 2]  # step 9 might still be in flight
    assert ckpt.prune(out, keep=1, all_incomplete=True) == [9]
    assert [(i.step, i.complete) for i in ckpt.list_checkpoints(out)] == [(3, True)]


def test_loss_csv_and_png():
    from lanepaint.training.plot import loss_csv, loss_png

    history = [{"step": i, "loss": 1.0 / i, "lr": 1e-4, "grad_norm": 0.5} for i in range(1, 6)]
    evals = [{"step": 0, "eval_loss": 1.2}, {"step": 5, "eval_loss": 0.4}]
    text = loss_csv(history, evals, "smoke")
    lines = text.splitlines()
    assert lines[0] == "step,loss,eval_loss,lr,grad_norm,samples_seen,step_s,model_set"
    assert lines[1] == "0,,1.2,,,,,smoke" and lines[-1].startswith("5,0.2,0.4,")
    png = Image.open(io.BytesIO(loss_png(history, evals, "title \u2014 smoke", "smoke")))
    assert png.size == (900, 500)
    assert png.text == {"Title": "title \u2014 smoke", "model_set": "smoke"}
    arr = np.asarray(png.convert("RGB"))
    assert ((arr == (230, 120, 20)).all(-1)).any()  # the evaluation dots are drawn
    assert ((arr == (31, 90, 200)).all(-1)).any()  # the smoothed curve


# --------------------------------------------------------------------------- bench


def test_bench_smoke_runs_every_variant_and_writes_json(tmp_path, capsys):
    from bench.train import main

    assert main(["--size", "smoke", "--out-dir", str(tmp_path), "--steps", "1"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-6].split() == ["variant", "step_s", "peak_gib", "ref/ours", "note"]
    assert [line.split()[0] for line in out[-5:]] == [
        "reference",
        "ours",
        "ours+gc",
        "ours-uncached",
        "ours-uncached+gc",
    ]
    record = json.loads((tmp_path / "train_step.smoke.json").read_text())
    for key in (
        "stage",
        "card",
        "commit",
        "date",
        "ours_s",
        "reference_s",
        "ratio",
        "peak_gib",
        "floor_s",
        "rel_err",
    ):
        assert key in record
    assert record["stage"] == "train_step" and record["card"] == "cpu"
    assert record["rel_err"] <= 1e-2
    assert all(v["error"] is None and v["step_s"] > 0 for v in record["extra"]["variants"])


def test_bench_fp8_variant_drifts_a_little_and_is_undone(tmp_path):
    """+fp8 converts the frozen block Linears for its own variant only: the variant after it
    runs on the plain layers again (its error is the exact path's, not fp8's)."""
    from bench.train import run

    record, rows = run("smoke", tmp_path, steps=1, warmup=0, variants=("ours+fp8", "ours+gc"))
    by = {r["variant"]: r for r in rows}
    assert [r["variant"] for r in rows] == ["reference", "ours", "ours+fp8", "ours+gc"]
    assert by["ours+fp8"]["error"] is None and by["ours+fp8"]["fp8_linears"] == 20
    assert 1e-4 < by["ours+fp8"]["rel_err"]["grad"] < 0.2
    assert by["ours+gc"]["rel_err"]["grad"] < 1e-4
    assert record["extra"]["ours_variant"] in by
    assert "fp8" not in record["extra"]["ours_variant"]  # the record is bf16's; fp8 a row


def test_attention_choice_is_fresh_per_use_and_never_cudnn_by_default():
    from lanepaint.training.config import ATTENTION_BACKENDS
    from lanepaint.training.trainer import attention_context

    cuda = torch.device("cuda")
    for backend in ATTENTION_BACKENDS:
        for _ in range(2):  # the trainer enters a new context for every micro-batch
            with attention_context(backend, cuda):
                enabled = {
                    "flash": torch.backends.cuda.flash_sdp_enabled(),
                    "efficient": torch.backends.cuda.mem_efficient_sdp_enabled(),
                    "math": torch.backends.cuda.math_sdp_enabled(),
                    "cudnn": torch.backends.cuda.cudnn_sdp_enabled(),
                }
            if backend == "auto":
                assert enabled == {"flash": True, "efficient": True, "math": True, "cudnn": False}
            else:
                assert [k for k, v in enabled.items() if v] == [backend]


def test_speed_options_are_validated_and_left_out_of_the_settings_key():
    from lanepaint.kit import output_settings, settings_key
    from lanepaint.training.config import TrainConfig

    with pytest.raises(ValueError, match="needs --compile"):
        TrainConfig(attention_backend="cudnn")
    with pytest.raises(ValueError, match="activation memory budget"):
        TrainConfig(compile=True, activation_memory_budget=0.0)
    with pytest.raises(ValueError, match="with --compile only"):
        TrainConfig(activation_memory_budget=0.5)
    fast = TrainConfig(
        attention_backend="cudnn",
        compile=True,
        activation_memory_budget=0.5,
        gradient_checkpointing=True,
        checkpointing_steps=10,
        checkpoints_total_limit=1,
        stop_after_steps=5,
        log_every=1,
        eval_rows=0,
        workers=1,
        work_dir="/w",
    )
    assert output_settings(fast) == output_settings(TrainConfig())  # same weights, resumable
    assert settings_key(fast, x=1) == settings_key(TrainConfig(), x=1)
    assert settings_key(TrainConfig(rank=8), x=1) != settings_key(TrainConfig(), x=1)
    with pytest.raises(ValueError, match="stop-after-steps"):
        TrainConfig(stop_after_steps=-1)


@pytest.mark.parametrize("name", ["cosine", "linear", "constant_with_warmup"])
def test_lr_schedule_resumes_from_json_or_by_replay(tmp_path, name):
    """A checkpoint holds the schedule as JSON (never a pickle); older checkpoints without it
    replay the schedule to their step. Either way the LR goes on as if never stopped."""
    from diffusers.optimization import get_scheduler

    def fresh():
        opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
        return opt, get_scheduler(name, optimizer=opt, num_warmup_steps=3, num_training_steps=20)

    opt, sched = fresh()
    for _ in range(5):
        opt.step()
        sched.step()
    ckpt.save_scheduler_state(sched, tmp_path)
    for restore_from in (tmp_path, tmp_path / "old-checkpoint"):
        opt2, sched2 = fresh()
        opt2.load_state_dict(opt.state_dict())  # accelerate restores the optimizer first
        ckpt.load_scheduler_state(sched2, restore_from, step=5)
        assert sched2.state_dict() == sched.state_dict()
        assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
