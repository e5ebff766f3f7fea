"""Propagation modes on tiny models (CPU): ``reference`` holds the known region as the
released VideoPainter does (docs/videopainter.md cites the lines), ``lanepaint`` as our
earlier variant did; the edit stage selects them by name and keys its results by it."""

from __future__ import annotations

import inspect

import pytest
import torch
from test_videopainter import FAST, PROMPT, sample_video, tiny_pipe

from lanepaint.kit import settings_key
from lanepaint.stages.edit import EditConfig
from lanepaint.videopainter import PropagationMode, VideoPainterBranch, VideoPainterPipeline
from lanepaint.videopainter.modes import LANEPAINT, MODE_NAMES, REFERENCE
from lanepaint.videopainter.windows import dilate_masks, latent_mask_from_masks

MODES = ("reference", "lanepaint")


@pytest.fixture(scope="module")
def painter() -> VideoPainterPipeline:
    pipe = tiny_pipe()
    return VideoPainterPipeline(pipe, VideoPainterBranch.from_transformer(pipe.transformer))


class Spy:
    """Records, during one call, every window the pipeline prepares, every ground-truth /
    masked-video batch it encodes and the latents the denoiser sees at each step."""

    def __init__(self, painter: VideoPainterPipeline, monkeypatch):
        self.windows, self.encoded, self.inputs = [], [], []
        prepare, encode = painter.prepare_window, painter._encode_video

        def prepare_window(*args, **kwargs):
            self.windows.append(prepare(*args, **kwargs))
            return self.windows[-1]

        def encode_video(pixels, *args, **kwargs):
            if pixels.shape[0] == 2:  # ground truth | masked video (the image is alone)
                self.encoded.append(pixels.clone())
            return encode(pixels, *args, **kwargs)

        monkeypatch.setattr(painter, "prepare_window", prepare_window)
        monkeypatch.setattr(painter, "_encode_video", encode_video)
        transformer = painter.pipe.transformer
        channels = transformer.config.out_channels

        def probe(module, args, kwargs):
            self.inputs.append(kwargs["hidden_states"][:1, :, :channels].clone())

        handle = transformer.register_forward_pre_hook(probe, with_kwargs=True)
        self.close = handle.remove


def _run(painter, monkeypatch, frames: int, mode, **kwargs):
    video, masks, first = sample_video(frames, seed=3)
    spy = Spy(painter, monkeypatch)
    try:
        result = painter(video, masks, PROMPT, first, seed=4, mode=mode, **FAST, **kwargs)
    finally:
        spy.close()
        monkeypatch.undo()
    return result, spy, (video, masks, first)


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_known_latents_after_each_step_are_the_ground_truth_noised(painter, monkeypatch, mode):
    """reference: noised with the very noise the sampler started from (the official loop's
    ``add_noise(video_latents, noise, t)``); lanepaint: with a draw of their own."""
    result, spy, _ = _run(painter, monkeypatch, 9, mode)
    (win,) = spy.windows
    scheduler = painter.pipe.scheduler
    initial = spy.inputs[0]  # what step 0 denoises: the initial noise (init sigma 1)
    assert torch.equal(initial, win.latents) and scheduler.init_noise_sigma == 1.0
    assert torch.equal(win.gt_noise, initial) == (mode == "reference")
    known = ~win.generate.expand_as(win.gt_latents)
    assert known.any() and (~known).any()
    for i in range(1, FAST["num_inference_steps"]):  # step i sees what step i-1 left
        t = scheduler.timesteps[i : i + 1]
        with_initial = scheduler.add_noise(win.gt_latents, initial, t)
        with_own = scheduler.add_noise(win.gt_latents, win.gt_noise, t)
        assert torch.equal(spy.inputs[i][known], with_own[known])
        assert torch.equal(spy.inputs[i][known], with_initial[known]) == (mode == "reference")
    assert torch.equal(result.latents[known], win.gt_latents.float()[known])  # clean at the end
    assert result.mode == mode


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_known_video_is_blacked_out_in_the_mask_except_frame_0(painter, monkeypatch, mode):
    """reference: the ground truth is encoded from the frames with the undilated mask area
    black, frame 0 (the edited frame) whole; lanepaint: from the true frames. The branch's
    masked video (dilated mask at mid-gray 0) is the same in both."""
    result, spy, (video, masks, first) = _run(
        painter, monkeypatch, 17, mode, mask_dilation=5, overlap=1
    )
    assert result.window_starts == (0, 8) and len(spy.encoded) == 2
    frames = torch.as_tensor(video).clone()
    frames[0] = torch.as_tensor(first)
    true = frames.permute(3, 0, 1, 2).float() / 127.5 - 1.0  # [3, T, H, W]
    blank = torch.as_tensor(masks) > 0
    blank[0] = False
    assert blank[1:].any()
    blacked = true.masked_fill(blank, -1.0)  # uint8 black = -1 in the VAE's range
    repaint = dilate_masks(torch.as_tensor(masks), 5)
    repaint[0] = False
    for start, both in zip(result.window_starts, spy.encoded, strict=True):
        window = slice(start, start + 9)
        expected = blacked if mode == "reference" else true
        assert torch.equal(both[0], expected[:, window])
        assert torch.equal(both[1], true[:, window].masked_fill(repaint[window], 0.0))
    assert torch.equal(spy.encoded[0][0, :, 0], true[:, 0])  # frame 0 is never blacked


@pytest.mark.parametrize("mode", MODES)
def test_keep_first_frame_keeps_video_frame_0_or_every_window_start(painter, monkeypatch, mode):
    """reference: only frame 0 of the video is known (later windows generate their latent
    0, conditioned on the previous window's latent); lanepaint: latent 0 of every window."""
    result, spy, (_, masks, _) = _run(painter, monkeypatch, 17, mode, overlap=1)
    first, later = spy.windows
    assert not first.generate[:, 0].any()  # frame 0 (the edited frame): known in both
    start = result.window_starts[1]
    nearest = latent_mask_from_masks(torch.as_tensor(masks[start : start + 9]) > 0, 3, 8)
    assert nearest[:, 0].any()
    image = later.image_latents[:1, :1]  # the previous window's latent at the overlap start
    if mode == "reference":
        assert torch.equal(later.generate[:, 0], nearest[:, 0].bool())
        assert not torch.equal(later.gt_latents[:, :1], image)
    else:
        assert not later.generate[:, 0].any()
        assert torch.equal(later.gt_latents[:, :1], image)
    assert torch.equal(later.generate[:, 1:], nearest[:, 1:].bool())


def test_modes_by_name_and_the_default():
    """reference is the default everywhere; the named modes are the two fixed combinations;
    any combination may be given to the pipeline; an unknown name is refused."""
    assert MODE_NAMES == MODES
    assert inspect.signature(VideoPainterPipeline.__call__).parameters["mode"].default == (
        "reference"
    )
    assert EditConfig().propagation == "reference"
    assert (REFERENCE.initial_noise, REFERENCE.blacked_known, REFERENCE.first_frame_only) == (
        True,
        True,
        True,
    )
    assert not (LANEPAINT.initial_noise or LANEPAINT.blacked_known or LANEPAINT.first_frame_only)
    with pytest.raises(ValueError, match="propagation"):
        EditConfig(propagation="official")


def test_a_mixed_mode_changes_only_its_own_choice(painter, monkeypatch):
    """The three choices are independent: reference with a fresh replacement noise differs
    from reference only there."""
    mixed = PropagationMode("mixed", False, True, True)
    result, spy, _ = _run(painter, monkeypatch, 9, mixed)
    (win,) = spy.windows
    assert result.mode == "mixed" and not torch.equal(win.gt_noise, win.latents)
    reference, ref_spy, _ = _run(painter, monkeypatch, 9, "reference")
    assert torch.equal(ref_spy.windows[0].gt_latents, win.gt_latents)
    assert torch.equal(ref_spy.windows[0].latents, win.latents)
    assert not torch.equal(reference.latents, result.latents)


def test_unknown_mode_is_refused_before_any_work(painter):
    video, masks, first = sample_video(9)
    with pytest.raises(ValueError, match="one of"):
        painter(video, masks, PROMPT, first, mode="official", **FAST)


def test_the_mode_is_part_of_the_settings_key():
    reference, lanepaint = EditConfig(), EditConfig(propagation="lanepaint")
    assert settings_key(reference) != settings_key(lanepaint)
    assert settings_key(reference) == settings_key(EditConfig(propagation="reference"))


def test_cli_and_component_take_the_mode(capsys):
    from components.edit import edit_shard
    from lanepaint.cli import main

    with pytest.raises(SystemExit):
        main(["edit", "--help"])
    assert "--propagation {reference,lanepaint}" in capsys.readouterr().out
    assert edit_shard.component_spec.inputs["propagation"].default == "reference"
