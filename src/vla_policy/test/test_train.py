"""vla-train end to end on a tiny generated dataset (tiny encoders; seconds, no network)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from test_data import write_environment_dataset
from vla_collector.lerobot import LeRobotV3Dataset
from vla_common.policy import ActionChunk
from vla_policy.data import DataError
from vla_policy.models.checkpoint import load_checkpoint
from vla_policy.testing.synthetic import SYNTHETIC_TASKS, write_synthetic_dataset
from vla_policy.train import TINY_MODEL, TrainConfig, cosine_lr, main, parse_args, train, use_bf16

from vla_policy import load_policy


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory):
    return write_synthetic_dataset(tmp_path_factory.mktemp("ds") / "syn", episodes=6, frames=12)


def tiny_cfg(dataset_root, output, **changes) -> TrainConfig:
    values = dict(
        datasets=(str(dataset_root),), output=str(output), epochs=6, batch_size=16, lr=3e-3, warmup_steps=2,
        val_fraction=0.34, augmented_copies=1, seed=0, device="cpu", progress=False, num_threads=1,
        model_overrides=dict(TINY_MODEL, horizon=4),
    )  # fmt: skip
    values.update(changes)
    return TrainConfig(**values)


@pytest.mark.parametrize("policy", ["native_vla", "textbook_baseline"])
def test_training_lowers_the_loss_and_writes_a_loadable_checkpoint(dataset_root, tmp_path, policy):
    baseline = policy == "textbook_baseline"
    overrides = dict(TINY_MODEL, horizon=1 if baseline else 4)
    # The baseline mean-pools frozen features (cheap steps, MSE falls slowly); the native VLA learns its
    # encoders from scratch, so it needs more steps than a head on cached features.
    epochs = 30 if baseline else 16
    result = train(tiny_cfg(dataset_root, tmp_path, kind=policy, epochs=epochs, model_overrides=overrides))
    losses = [row["train_loss"] for row in result.history]
    # The baseline mean-pools random tiny-CNN features and ignores the state: it learns, but slowly.
    assert losses[-1] < (0.9 if baseline else 0.7) * losses[0], losses
    assert result.history[-1]["val_loss"] < result.history[0]["val_loss"]
    for name in ("metrics.csv", "loss_curve.png", "summary.json"):
        assert (tmp_path / name).stat().st_size > 0
    with (tmp_path / "metrics.csv").open() as f:
        assert len(list(csv.DictReader(f))) == epochs
    assert json.loads((tmp_path / "summary.json").read_text())["train_samples_per_s"] > 0
    policy_obj = load_policy(result.best)
    from vla_collector.lerobot import LeRobotV3Dataset

    ds = LeRobotV3Dataset(dataset_root)
    obs = {f"observation.images.{c}": ds.frames(0, c)[3] for c in ds.camera_names}
    obs.update({"observation.state": ds.episode(0).state[3], "task": SYNTHETIC_TASKS[0], "timestamp": 1.0})
    chunk = policy_obj.infer(obs)
    assert isinstance(chunk, ActionChunk)
    assert chunk.actions.shape == ((1 if policy == "textbook_baseline" else 4), 8)
    # In dataset units: close to the demonstrated next state, far closer than the spread of the data.
    error = np.abs(chunk.actions[0] - ds.episode(0).action[3]).mean()
    assert error < (0.3 if baseline else 0.1), error
    info = json.loads((result.best / "config.json").read_text())["info"]
    assert info["val_episodes"] and not set(map(tuple, info["val_episodes"])) & set(
        map(tuple, info["train_episodes"])
    )


def test_relative_action_model_trains_and_acts_in_dataset_units(dataset_root, tmp_path):
    overrides = dict(TINY_MODEL, horizon=4, relative_actions=True, state_dropout=0.3)
    result = train(tiny_cfg(dataset_root, tmp_path, epochs=8, model_overrides=overrides))
    losses = [row["train_loss"] for row in result.history]
    assert losses[-1] < 0.7 * losses[0], losses
    from vla_collector.lerobot import LeRobotV3Dataset

    ds, policy = LeRobotV3Dataset(dataset_root), load_policy(result.best)
    assert policy.config.relative_actions and policy.config.state_dropout == 0.3
    ep = ds.episode(0)
    obs = {f"observation.images.{c}": ds.frames(0, c)[3] for c in ds.camera_names}
    obs.update({"observation.state": ep.state[3], "task": SYNTHETIC_TASKS[0], "timestamp": 1.0})
    # Absolute joint targets come out (the state is added back), close to the demonstrated ones.
    error = np.abs(policy.infer(obs).actions[:2] - ep.action[3:5]).mean()
    assert error < 0.1, error


def test_training_is_deterministic_with_a_seed(dataset_root, tmp_path):
    a = train(tiny_cfg(dataset_root, tmp_path / "a", epochs=2))
    b = train(tiny_cfg(dataset_root, tmp_path / "b", epochs=2))
    wa, wb = load_file(str(a.last / "model.safetensors")), load_file(str(b.last / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_resume_continues_exactly_where_it_stopped(dataset_root, tmp_path):
    straight = train(tiny_cfg(dataset_root, tmp_path / "straight", epochs=4))
    train(tiny_cfg(dataset_root, tmp_path / "split", epochs=4, max_steps=straight.steps // 2))
    resumed = train(tiny_cfg(dataset_root, tmp_path / "split", epochs=4, resume=True))
    assert resumed.steps == straight.steps
    wa = load_file(str(straight.last / "model.safetensors"))
    wb = load_file(str(resumed.last / "model.safetensors"))
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], atol=1e-6, rtol=1e-5)


def test_init_from_keeps_the_checkpoints_weights_and_normalization(dataset_root, tmp_path):
    first = train(tiny_cfg(dataset_root, tmp_path / "first", epochs=2))
    # A DAgger round: other data (other statistics), fine-tuned from the previous round's checkpoint.
    more = write_synthetic_dataset(tmp_path / "more", episodes=4, frames=9, seed=7)
    tuned = train(tiny_cfg(more, tmp_path / "tuned", epochs=1, lr=1e-12, warmup_steps=0,
                           init_from=str(first.last)))  # fmt: skip
    wa = load_file(str(first.last / "model.safetensors"))
    wb = load_file(str(tuned.last / "model.safetensors"))
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], atol=1e-6, rtol=1e-5)
    assert load_policy(tuned.last).normalizer.to_dict() == load_policy(first.last).normalizer.to_dict()
    # The instructions the checkpoint was trained on stay the model's own (nearest-instruction, OOD flag),
    # in its list and in its instruction span, when the fine-tuning data lacks some of them.
    reworded = ("push the red block left", "move the blue block to the right")
    other = write_synthetic_dataset(tmp_path / "reworded", episodes=4, frames=9, seed=3, tasks=reworded)
    kept = load_checkpoint(
        train(tiny_cfg(other, tmp_path / "kept", epochs=1, init_from=str(first.last))).last
    )
    assert kept.info["instructions"] == sorted({*SYNTHETIC_TASKS, *reworded})
    projection = kept.network.head.instruction_projection
    assert round(float(torch.trace(projection))) == 3  # the rank: all three sentences
    from_scratch = train(tiny_cfg(more, tmp_path / "scratch", epochs=1, lr=1e-12, warmup_steps=0))
    assert load_policy(from_scratch.last).normalizer.to_dict() != load_policy(first.last).normalizer.to_dict()
    # Training-only settings may change in a fine-tuning run; the network they shape stays the same.
    noisy = train(tiny_cfg(more, tmp_path / "noisy", epochs=1, init_from=str(first.last),
                           model_overrides=dict(TINY_MODEL, horizon=4, instruction_noise=0.2, state_dropout=0.1)))  # fmt: skip
    assert load_policy(noisy.last).config.instruction_noise == 0.2
    # The instruction subspace (on by default) may be switched on in a fine-tuning run of a checkpoint
    # trained without it: its span is that run's instructions.
    plain = train(tiny_cfg(dataset_root, tmp_path / "plain", epochs=1,
                           model_overrides=dict(TINY_MODEL, horizon=4, instruction_subspace=False)))  # fmt: skip
    assert not load_checkpoint(plain.last).config.instruction_subspace
    spanned = train(tiny_cfg(more, tmp_path / "spanned", epochs=1, init_from=str(plain.last)))
    tuned_span = load_checkpoint(spanned.last)
    projection = tuned_span.network.head.instruction_projection
    assert round(float(torch.trace(projection))) == len(tuned_span.info["instructions"])  # trace = rank
    with pytest.raises(ValueError, match="init-from"):
        train(tiny_cfg(more, tmp_path / "other", epochs=1, init_from=str(first.last),
                       model_overrides=dict(TINY_MODEL, horizon=3)))  # fmt: skip


@pytest.fixture
def initial_parameters(monkeypatch) -> dict[str, torch.Tensor]:
    """Filled with the parameters of the network vla-train builds, as built (before any step)."""
    import vla_policy.train as train_module
    from vla_policy.models import VLANetwork

    initial: dict[str, torch.Tensor] = {}

    class Recorded(VLANetwork):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            initial.update({k: v.detach().clone() for k, v in self.named_parameters()})

    monkeypatch.setattr(train_module, "VLANetwork", Recorded)
    return initial


def test_native_encoders_train_end_to_end_from_cached_uint8_pixels(
    dataset_root, tmp_path, monkeypatch, initial_parameters
):
    import vla_policy.train as train_module

    built = []
    original = train_module.build_samples

    def spy(*args, **kwargs):
        built.append((kwargs["encode"], kwargs["augmented_copies"], original(*args, **kwargs)))
        return built[-1][2]

    monkeypatch.setattr(train_module, "build_samples", spy)
    result = train(tiny_cfg(dataset_root, tmp_path, epochs=1, augmented_copies=2))
    # Pixels are cached once per frame as uint8 (no trunk, no cached augmented copies: it shifts them itself).
    assert built and all(encode is None and copies == 0 for encode, copies, _ in built)
    train_set = built[0][2]
    assert train_set.features.dtype == torch.uint8 and train_set.features.shape[1:] == (1, 2, 3, 32, 32)
    trained, initial = load_file(str(result.last / "model.safetensors")), initial_parameters
    encoder_keys = [k for k in initial if k.startswith("head.encoders.")]
    assert {k.split(".")[2] for k in encoder_keys} == {"0", "1"}  # one encoder per camera
    assert not any(k.startswith("trunk.") for k in trained)
    # Every parameter of both cameras' encoders (convs, norms, FiLM, keypoint maps, temperature) moved.
    unchanged = [k for k in encoder_keys if torch.equal(trained[k], initial[k])]
    assert unchanged == []


def test_baseline_trunk_stays_put_while_its_head_trains(dataset_root, tmp_path, initial_parameters):
    result = train(tiny_cfg(dataset_root, tmp_path, kind="textbook_baseline", epochs=1,
                            model_overrides=dict(TINY_MODEL, horizon=1)))  # fmt: skip
    trained, initial = load_file(str(result.last / "model.safetensors")), initial_parameters
    trunk_keys = [k for k in initial if k.startswith("trunk.")]
    head_keys = [k for k in initial if k.startswith("head.")]
    assert trunk_keys and head_keys
    assert all(torch.equal(trained[k], initial[k]) for k in trunk_keys)
    assert all(not torch.equal(trained[k], initial[k]) for k in head_keys)


def test_cosine_schedule_warms_up_then_decays():
    cfg = TrainConfig(datasets=("x",), output="y", lr=1e-3, warmup_steps=10, min_lr_ratio=0.1)
    lrs = [cosine_lr(s, 100, cfg) for s in range(100)]
    assert lrs[0] < lrs[9] and max(lrs) <= 1e-3
    assert lrs[-1] < 0.15e-3 and lrs[-1] >= 0.1e-3 * 0.99


def test_cli_parses_model_overrides_and_runs(dataset_root, tmp_path):
    cfg = parse_args([str(dataset_root), "--output", str(tmp_path), "--tiny", "--model", "keypoints=8",
                      "--model", "mlp_layers=3", "--model", "image_encoder=tiny_cnn", "--horizon", "3",
                      "--discrete-head"])  # fmt: skip
    assert cfg.model_overrides["keypoints"] == 8 and cfg.model_overrides["mlp_layers"] == 3
    assert cfg.model_overrides["horizon"] == 3
    assert cfg.model_overrides["image_encoder"] == "tiny_cnn" and cfg.model_overrides["discrete_head"]
    rc = main([str(dataset_root), "--output", str(tmp_path / "cli"), "--tiny", "--epochs", "1", "--no-progress",
               "--discrete-head", "--device", "cpu"])  # fmt: skip
    assert rc == 0 and (tmp_path / "cli" / "best" / "model.safetensors").is_file()
    with pytest.raises(ValueError):
        TrainConfig(datasets=(), output="x")
    # The native encoders always train and the baseline trunk is always frozen: no fine-tuning switch.
    with pytest.raises(SystemExit):
        parse_args([str(dataset_root), "--output", str(tmp_path), "--finetune-encoder"])
    # A field of the removed transformer design, given as an override, is refused by ModelConfig.
    with pytest.raises((TypeError, ValueError)):
        train(tiny_cfg(dataset_root, tmp_path / "old", model_overrides=dict(TINY_MODEL, d_model=64)))


@pytest.mark.heavy
def test_torchrun_ddp_with_two_processes_needs_no_code_change(dataset_root, tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29615",
           "-m", "vla_policy.train", str(dataset_root), "--output", str(tmp_path), "--tiny", "--epochs", "2",
           "--batch-size", "8", "--no-progress", "--device", "cpu"]  # fmt: skip
    subprocess.run(cmd, check=True, env=env, capture_output=True, timeout=240)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] > 0
    assert load_policy(tmp_path / "best").horizon == 10


def test_training_and_validation_mask_padded_chunk_steps(dataset_root, tmp_path, monkeypatch):
    from vla_policy.models import VLANetwork

    seen = []
    original = VLANetwork.loss

    def spy(self, outputs, target, valid=None, *args, **kwargs):
        seen.append(valid)
        return original(self, outputs, target, valid, *args, **kwargs)

    monkeypatch.setattr(VLANetwork, "loss", spy)
    train(tiny_cfg(dataset_root, tmp_path, epochs=1))
    assert seen and all(v is not None for v in seen)
    assert any(not bool(v.all()) for v in seen)  # 12-frame episodes, horizon 4: the last steps are padding


# --- localization loss -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def environment_root(tmp_path_factory):
    return write_environment_dataset(tmp_path_factory.mktemp("env") / "env", episodes=4, frames=10)


def test_localization_weight_trains_the_head_on_the_datas_environment_state(
    environment_root, tmp_path, initial_parameters
):
    from vla_collector.lerobot import LeRobotV3Dataset
    from vla_policy.models import load_checkpoint

    rc = main([str(environment_root), "--output", str(tmp_path), "--tiny", "--horizon", "4", "--epochs", "1",
               "--batch-size", "8", "--val-fraction", "0.25", "--no-progress", "--device", "cpu",
               "--model", "localization_weight=0.5"])  # fmt: skip
    assert rc == 0
    ckpt = load_checkpoint(tmp_path / "last")
    # The head's width comes from the data (6 referent coordinates); the weight is the one given.
    assert ckpt.config.localization_dim == 6 and ckpt.config.localization_weight == 0.5
    # The normalization of the targets is the training episodes' statistics, stored with the weights.
    ds = LeRobotV3Dataset(environment_root)
    train_eps = [e for _, e in ckpt.info["train_episodes"]]
    assert len(train_eps) == 3
    frames = torch.from_numpy(np.concatenate([ds.episode(e).environment_state for e in train_eps]))
    torch.testing.assert_close(ckpt.network.environment_mean, frames.mean(dim=0))
    torch.testing.assert_close(ckpt.network.environment_std, frames.std(dim=0).clamp(min=1e-3))
    saved = load_file(str(tmp_path / "last" / "model.safetensors"))
    assert {"environment_mean", "environment_std"} <= set(saved)
    # The localization head is read by that loss only: it moved, so the loss trained it.
    for name in ("head.localize.weight", "head.localize.bias"):
        assert not torch.equal(saved[name], initial_parameters[name]), name


def test_localization_loss_refuses_data_without_environment_state(dataset_root, tmp_path):
    overrides = dict(TINY_MODEL, horizon=4, localization_weight=1.0)
    with pytest.raises(DataError, match=r"observation\.environment_state") as raised:
        train(tiny_cfg(dataset_root, tmp_path, model_overrides=overrides))
    assert str(dataset_root) in str(raised.value)
    assert not (tmp_path / "last").exists()  # refused before any training


def test_freeze_encoders_trains_the_heads_on_cached_keypoints_and_keeps_the_encoders(
    environment_root, tmp_path
):
    referent = dict(TINY_MODEL, horizon=4, localization_weight=1.0, referent_input=True)
    first = train(tiny_cfg(environment_root, tmp_path / "first", epochs=1, model_overrides=referent))
    goal_only = dict(referent, referent_slots="goal", instruction_nearest=True)  # both switched on over it
    frozen = train(tiny_cfg(environment_root, tmp_path / "frozen", epochs=12, init_from=str(first.last),
                            freeze_encoders=True, augmented_copies=2, model_overrides=goal_only))  # fmt: skip
    losses = [row["train_loss"] for row in frozen.history]
    assert losses[-1] < 0.8 * losses[0], losses
    start = load_file(str(first.last / "model.safetensors"))
    end = load_file(str(frozen.last / "model.safetensors"))
    encoders = [k for k in start if k.startswith("head.encoders.")]
    assert encoders and all(torch.equal(start[k], end[k]) for k in encoders)
    for name in ("head.mlp.0.weight", "head.regression.weight", "head.localize.0.weight"):
        assert not torch.equal(start[name], end[name]), name
    config = load_checkpoint(frozen.last).config
    assert config.referent_slots == "goal" and config.instruction_nearest
    assert parse_args(
        [str(environment_root), "--output", "o", "--init-from", "c", "--freeze-encoders"]
    ).freeze_encoders
    with pytest.raises(ValueError, match="init-from"):
        tiny_cfg(environment_root, tmp_path / "x", freeze_encoders=True)
    with pytest.raises(ValueError, match="native"):
        tiny_cfg(
            environment_root, tmp_path / "x", freeze_encoders=True, init_from="c", kind="textbook_baseline"
        )


def test_freeze_encoders_may_reshape_the_heads_and_keeps_the_encoders(environment_root, tmp_path):
    referent = dict(TINY_MODEL, horizon=4, localization_weight=1.0, referent_input=True)
    first = train(tiny_cfg(environment_root, tmp_path / "first", epochs=1, model_overrides=referent))
    width = load_checkpoint(first.last).config.hidden_dim
    wider = dict(referent, hidden_dim=2 * width, mlp_layers=3)
    frozen = train(tiny_cfg(environment_root, tmp_path / "wide", epochs=8, init_from=str(first.last),
                            freeze_encoders=True, model_overrides=wider))  # fmt: skip
    losses = [row["train_loss"] for row in frozen.history]
    assert losses[-1] < losses[0], losses
    start = load_file(str(first.last / "model.safetensors"))
    end = load_file(str(frozen.last / "model.safetensors"))
    encoders = [k for k in start if k.startswith("head.encoders.")]
    assert encoders and all(torch.equal(start[k], end[k]) for k in encoders)
    assert end["head.mlp.4.weight"].shape == (2 * width, 2 * width)
    config = load_checkpoint(frozen.last).config
    assert (config.hidden_dim, config.mlp_layers) == (2 * width, 3)
    with pytest.raises(ValueError, match="model config differs"):  # training the encoders: same shape only
        train(tiny_cfg(environment_root, tmp_path / "x", epochs=1, init_from=str(first.last),
                       model_overrides=wider))  # fmt: skip


def test_keypoint_cache_gives_the_same_fit_as_encoding_and_survives_a_corrupt_file(
    environment_root, tmp_path, caplog, monkeypatch
):
    referent = dict(TINY_MODEL, horizon=4, localization_weight=1.0, referent_input=True)
    first = train(tiny_cfg(environment_root, tmp_path / "first", epochs=1, model_overrides=referent))
    cache = tmp_path / "cache"
    decode_rates = {}

    def fit(name: str, keypoint_cache: str) -> dict[str, torch.Tensor]:
        result = train(tiny_cfg(environment_root, tmp_path / name, epochs=2, init_from=str(first.last),
                                freeze_encoders=True, augmented_copies=1, model_overrides=referent,
                                keypoint_cache=keypoint_cache))  # fmt: skip
        decode_rates[name] = result.encode_frames_per_s
        return load_file(str(result.last / "model.safetensors"))

    uncached = fit("uncached", "")
    assert not cache.exists()
    with caplog.at_level("INFO", logger="vla_train"):
        filled = fit("filled", str(cache))
    assert "0 of" in caplog.text
    files = sorted(cache.glob("*.safetensors"))
    assert len(files) == 1  # one dataset: its training and validation episodes, every view of each
    caplog.clear()
    with caplog.at_level("INFO", logger="vla_train"), monkeypatch.context() as patch:
        # Every keypoint is cached: no frame is decoded.
        patch.setattr(LeRobotV3Dataset, "frames", lambda *_: pytest.fail("decoded a cached episode's frames"))
        read = fit("read", str(cache))
    assert "3 of 3 episodes" in caplog.text and "1 of 1 episodes" in caplog.text
    # The frames of cached episodes are skipped, and not counted as decoded.
    assert decode_rates["filled"] > 0 and decode_rates["read"] == 0
    for weights in (filled, read):
        assert weights.keys() == uncached.keys()
        for key in uncached:
            torch.testing.assert_close(weights[key], uncached[key], msg=key)
    files[0].write_bytes(b"not a safetensors file")
    caplog.clear()
    with caplog.at_level("INFO", logger="vla_train"):
        again = fit("again", str(cache))
    assert "unreadable" in caplog.text
    for key in uncached:
        torch.testing.assert_close(again[key], uncached[key], msg=key)
    args = [str(environment_root), "--output", "o", "--init-from", "c", "--freeze-encoders"]
    assert parse_args(args).keypoint_cache.endswith("keypoints")
    assert parse_args([*args, "--keypoint-cache", "none"]).keypoint_cache == ""


def test_init_from_adds_the_referent_pathway_and_the_widened_network_starts_as_the_checkpoint_acts(
    environment_root, tmp_path
):
    first = train(tiny_cfg(environment_root, tmp_path / "first", epochs=1))
    referent = dict(TINY_MODEL, horizon=4, localization_weight=1.0, referent_input=True)
    widened = train(tiny_cfg(environment_root, tmp_path / "widened", epochs=1, lr=1e-12, warmup_steps=0,
                             init_from=str(first.last), model_overrides=referent))  # fmt: skip
    start, grown = load_checkpoint(first.last), load_checkpoint(widened.last)
    assert grown.config.referent_input and grown.config.localization_dim == 6
    # The environment statistics are this run's (the checkpoint had none), not the defaults.
    assert not torch.equal(grown.network.environment_std, torch.ones(6))
    # The first MLP layer kept its columns and reads the new referent inputs with zero weights, so the
    # widened network's actions are the checkpoint's whatever the estimate says.
    old_w, new_w = start.network.head.mlp[0].weight, grown.network.head.mlp[0].weight
    torch.testing.assert_close(new_w[:, : old_w.shape[1]], old_w, atol=1e-6, rtol=1e-5)
    assert float(new_w[:, old_w.shape[1] :].detach().abs().max()) < 1e-6
    torch.manual_seed(0)
    images = torch.randint(0, 256, (2, 2, 3, 32, 32)).float()
    text, state = torch.randn(2, start.config.text_dim), torch.randn(2, 8)
    with torch.no_grad():
        torch.testing.assert_close(
            grown.network(images, text, state)["actions"], start.network(images, text, state)["actions"],
            atol=1e-5, rtol=1e-4,
        )  # fmt: skip
    # Removing a head, or another localization width, is still refused.
    with pytest.raises(ValueError, match="init-from"):
        train(tiny_cfg(environment_root, tmp_path / "narrower", epochs=1, init_from=str(widened.last)))


# --- precision ---------------------------------------------------------------------------------------


def test_explicit_precision_wins_over_the_hardware():
    for device in (torch.device("cpu"), torch.device("cuda")):
        assert use_bf16("bf16", device) is True
        assert use_bf16("fp32", device) is False
    assert use_bf16("auto", torch.device("cuda")) is True


@pytest.mark.parametrize(("amx", "avx512_bf16"), [(False, False), (True, False), (False, True), (True, True)])
def test_auto_precision_on_cpu_follows_native_bf16_support(monkeypatch, amx, avx512_bf16):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    assert use_bf16("auto", torch.device("cpu")) is (amx or avx512_bf16)


def test_auto_precision_on_this_cpu():
    native = torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()
    assert use_bf16("auto", torch.device("cpu")) is bool(native)


def test_precision_option_is_parsed_checked_and_reported(environment_root, tmp_path):
    assert parse_args([str(environment_root), "--output", str(tmp_path)]).precision == "auto"
    assert (
        parse_args([str(environment_root), "--output", str(tmp_path), "--precision", "fp32"]).precision
        == "fp32"
    )
    with pytest.raises(SystemExit):
        parse_args([str(environment_root), "--output", str(tmp_path), "--precision", "fp16"])
    with pytest.raises(ValueError, match="precision"):
        TrainConfig(datasets=("x",), output="y", precision="fp16")
    # bf16 autocast trains (the localization head included) and the summary says which precision ran.
    for precision, bf16 in (("bf16", True), ("fp32", False)):
        overrides = dict(TINY_MODEL, horizon=4, localization_weight=1.0)
        result = train(tiny_cfg(environment_root, tmp_path / precision, epochs=1, precision=precision,
                                val_fraction=0.25, model_overrides=overrides))  # fmt: skip
        assert all(np.isfinite(row["train_loss"]) for row in result.history)
        assert json.loads((tmp_path / precision / "summary.json").read_text())["bf16"] is bf16
