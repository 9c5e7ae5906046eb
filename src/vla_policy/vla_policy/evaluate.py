"""``vla-eval``: offline action error and closed-loop success of one or more checkpoints, side by side.

    vla-eval outputs/run1/best outputs/base1/best --output outputs/eval1                  # offline, held-out episodes
    vla-eval outputs/run1/best outputs/base1/best --output outputs/eval1 --closed-loop --episodes 10

Offline: every frame of the episodes a checkpoint held out for validation (recorded in its config.json, or
``--dataset`` roots with ``--all-episodes``) goes through the policy's own inference path (``prepare`` ->
network), and the predicted chunk is compared with the recorded actions: mean |error| per joint and per
horizon step, in dataset units (only steps that exist in the episode count). ``start R2`` is the share of
the between-episode variance of the first chunk's motion (last chunk action minus the start state) that the
policy explains: every episode starts from one pose, so only the images and the instruction can say where to
go; near 0 means the policy does not see it, however small its mean error. ``--ablate`` also reruns every
episode with one input (the state, the instruction, or one camera) taken from another, randomly paired
episode at the same step: a policy that uses an input loses accuracy without it, one that ignores it does not.

Localization probe (native models, datasets with ``observation.environment_state``): a ridge read-out from the
policy's keypoints to the referents' positions, fitted on training episodes and scored on held-out ones (R^2,
cm): whether the policy sees what the instruction names, before any closed-loop run.

Closed loop: the embedded simulator's Gymnasium env (``vla_sim.make_env``), one task family at a time, on
the instruction templates seen in training (``split=train``) and on held-out paraphrases (``split=heldout``);
the policy drives through policy_node's own action executor (``vla_policy.rollout``), re-planning after
``--execute-steps`` actions. Success is the task's
own predicate. Results: ``results.md``, ``offline.csv``, ``closed_loop.csv`` and PNG plots in ``--output``.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from collections.abc import Sequence
from dataclasses import astuple, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm
from vla_collector.lerobot import EpisodeArrays, LeRobotV3Dataset
from vla_common.features import ENVIRONMENT_STATE_KEY, STATE_KEY, image_key
from vla_safety.limits import position_bounds

from vla_policy.data import action_chunks, chunk_valid, open_datasets
from vla_policy.executor import BlendMode, ExecutorConfig, Interpolation
from vla_policy.models.policy import NativePolicy, Referents, load_policy
from vla_policy.rollout import ChunkDriver, SafetyGate, refill_for_execute_steps

ENCODE_BATCH = 64


@dataclass(frozen=True)
class OfflineResult:
    label: str
    frames: int
    per_joint: np.ndarray  # [A] mean |error| over all valid (frame, step) pairs, dataset units
    per_step: np.ndarray  # [H] mean |error| over joints and frames at each horizon step
    joint_names: tuple[str, ...]
    start_r2: float = float("nan")  # first frame's chunk motion explained across episodes (nan: < 2 episodes)
    ablated: dict[str, float] = field(default_factory=dict)  # --ablate: mean |error| with one input swapped

    @property
    def mean(self) -> float:
        return float(self.per_joint.mean())


def explained_variance(truth: np.ndarray, pred: np.ndarray) -> float:
    """R^2 of ``pred`` for ``truth`` [N, D], pooled over dimensions; nan for fewer than 2 rows or no variance."""
    total = float(((truth - truth.mean(axis=0)) ** 2).sum())
    if len(truth) < 2 or total == 0.0:
        return float("nan")
    return 1.0 - float(((truth - pred) ** 2).sum()) / total


@dataclass(frozen=True)
class EpisodeOutcome:
    label: str
    family: str
    split: str
    instruction: str
    success: bool
    steps: int
    limited: float = float("nan")  # share of commands the safety monitor limited (nan: ran without it)
    grasped: bool = False  # the named block was in the gripper at some step
    # The closest the named block came to its goal in xy (nan: pick, whose goal is the block itself).
    goal_cm: float = float("nan")


def policy_label(path: str | Path, policy: NativePolicy) -> str:
    p = Path(path).resolve()
    oracle = ", ground-truth referents" if policy.referents is Referents.TRUTH else ""
    return f"{policy.config.kind.value} ({p.parent.name}/{p.name}{oracle})"


def input_names(policy: NativePolicy) -> list[str]:
    """The inputs ``--ablate`` swaps one at a time."""
    return ["state", "instruction", *(f"camera {c}" for c in policy.config.camera_names)]


def _swap_input(
    inputs: list[torch.Tensor], donor: list[torch.Tensor], name: str, policy: NativePolicy
) -> list[torch.Tensor]:
    """``inputs`` [images, text, state (, tokens, token_mask)] with input ``name`` taken from ``donor`` at the
    same step (clamped)."""
    images, text, state, *tokens = inputs
    at = torch.clamp(torch.arange(len(state)), max=len(donor[2]) - 1)
    if name == "state":
        state = donor[2][at]
    elif name == "instruction":
        text = donor[1][at]
        tokens = [t[at] for t in donor[3:]]
    else:
        cam = policy.config.camera_names.index(name.removeprefix("camera "))
        images = images.clone()  # the episode's own images serve the other swaps
        images[:, cam] = donor[0][at, cam]
    return [images, text, state, *tokens]


def _episode_inputs(
    policy: NativePolicy, ds: LeRobotV3Dataset, e: int, ep: EpisodeArrays
) -> list[torch.Tensor]:
    """Every frame of episode ``e`` (``ep``: its arrays) through ``policy.prepare``: [images, text, state],
    then the instruction's tokens and their mask for a model with a goal locator, or where a held-referent
    model's held pathway acts on the instruction, the referents it perceives at the first frame, repeated."""
    images = {cam: ds.frames(e, cam) for cam in policy.config.camera_names}
    inputs = [
        policy.prepare(
            {
                **{image_key(cam): images[cam][t] for cam in images},
                STATE_KEY: ep.state[t],
                "task": ep.tasks[t],
            }
        )
        for t in range(len(ep))
    ]
    stacked = [torch.cat([x[i] for x in inputs]) for i in range(3)]
    if policy.config.held_referents:
        held, acts = policy.perceive(stacked[0][:1], ep.tasks[0], stacked[2][:1])
        return [*stacked, held.expand(len(ep), -1)] if acts else stacked
    tokens = policy.instruction_tokens([ep.tasks[t] for t in range(len(ep))])
    return stacked + list(tokens or ())


def _predict(policy: NativePolicy, inputs: list[torch.Tensor]) -> torch.Tensor:
    """:func:`_episode_inputs` for T frames -> normalized chunks [T, H, A], ENCODE_BATCH frames at a time."""
    images, text, state, *tokens = inputs
    if policy.config.held_referents and tokens:  # the held pathway acts on this episode's instruction
        return policy.act_held(state, tokens[0], text)
    names = ("tokens", "token_mask")
    return torch.cat(
        [
            policy.predict_normalized(
                *(x[start : start + ENCODE_BATCH] for x in (images, text, state)),
                **{n: x[start : start + ENCODE_BATCH] for n, x in zip(names, tokens, strict=False)},
            )
            for start in range(0, len(inputs[2]), ENCODE_BATCH)
        ]
    )


def offline_errors(
    policy: NativePolicy,
    dataset_roots: Sequence[str | Path],
    episodes: Sequence[tuple[int, int]] | None,
    label: str,
    progress: bool = True,
    *,
    ablate: bool = False,
) -> OfflineResult:
    """Mean |predicted - recorded| per joint and per horizon step on ``episodes`` (all when None).

    ``ablate``: also with each of :func:`input_names` taken from another episode (a seeded random cycle over
    ``episodes``, so none is its own donor). Only the network's input is swapped: a relative-action model
    still adds its own state back.
    """
    datasets, manifest = open_datasets(dataset_roots)
    problems = policy.manifest.mismatches(manifest)
    if problems:
        raise ValueError(f"{label} was not trained for these datasets: " + "; ".join(problems))
    refs = (
        episodes
        if episodes is not None
        else [(d, e.index) for d, ds in enumerate(datasets) for e in ds.episodes]
    )
    if not refs:
        raise ValueError("no episodes to evaluate")
    if ablate and policy.config.held_referents:
        raise ValueError("--ablate swaps the per-frame inputs; a held-referent model reads its first look")
    horizon, n_actions = policy.horizon, len(policy.manifest.action_names)
    abs_sum = np.zeros((horizon, n_actions))
    counts = np.zeros(horizon)
    frames = 0
    start_truth, start_pred = [], []
    ablated_sum = dict.fromkeys(input_names(policy) if ablate and len(refs) > 1 else [], 0.0)
    cycle = np.random.default_rng(0).permutation(len(refs))
    donor_of = {int(a): refs[int(b)] for a, b in zip(cycle, np.roll(cycle, -1), strict=True)}
    for i, (d, e) in enumerate(tqdm(refs, desc=f"offline {label}", unit="ep", disable=not progress)):
        ds = datasets[d]
        ep = ds.episode(e)
        stacked = _episode_inputs(policy, ds, e, ep)
        pred = policy.to_actions(_predict(policy, stacked), ep.state).numpy()  # [T, H, A]
        truth = action_chunks(ep.action.astype(np.float64), horizon)
        valid = chunk_valid(len(ep), horizon)  # [T, H]
        abs_sum += (np.abs(pred - truth) * valid[..., None]).sum(axis=0)
        if ablated_sum:
            donor_d, donor_e = donor_of[i]
            donor_ds = datasets[donor_d]
            donor = _episode_inputs(policy, donor_ds, donor_e, donor_ds.episode(donor_e))
            for name in ablated_sum:
                swapped = _predict(policy, _swap_input(stacked, donor, name, policy))
                error = np.abs(policy.to_actions(swapped, ep.state).numpy() - truth)
                ablated_sum[name] += float((error * valid[..., None]).sum())
        counts += valid.sum(axis=0)
        frames += len(ep)
        last = int(valid[0].sum()) - 1  # the first chunk's last step inside the episode
        start_truth.append(truth[0, last] - ep.state[0])
        start_pred.append(pred[0, last] - ep.state[0])
    per_step_joint = abs_sum / np.maximum(counts, 1)[:, None]
    per_joint = abs_sum.sum(axis=0) / max(counts.sum(), 1)
    start_r2 = explained_variance(np.array(start_truth), np.array(start_pred))
    ablated = {k: v / max(counts.sum() * n_actions, 1) for k, v in ablated_sum.items()}
    return OfflineResult(
        label, frames, per_joint, per_step_joint.mean(axis=1), policy.manifest.action_names, start_r2,
        ablated=ablated,
    )  # fmt: skip


@dataclass(frozen=True)
class ProbeResult:
    """How well a linear read-out of the policy's keypoints locates each referent on held-out episodes."""

    label: str
    fit_frames: int
    test_frames: int
    r2: dict[str, float]  # referent ("target", "goal") -> R^2 of its position, pooled over x, y, z
    error_cm: dict[str, float]  # referent -> mean horizontal (xy) error, cm


PROBE_FIT_EPISODES = 200  # training episodes the read-out is fitted on (seeded choice when there are more)
PROBE_FRAME_STRIDE = 5  # frames 0, 5, 10, ... of every episode


def _keypoint_frames(
    policy: NativePolicy, datasets: Sequence[LeRobotV3Dataset], refs: Sequence[tuple[int, int]]
) -> tuple[np.ndarray, np.ndarray]:
    """(keypoints [N, F], environment_state [N, E]) on every PROBE_FRAME_STRIDE-th frame of ``refs``."""
    feats, truth = [], []
    head = policy.network.head
    for d, e in refs:
        ds = datasets[d]
        ep = ds.episode(e)
        if ep.environment_state is None:
            raise ValueError(f"{ds.root} episode {e} has no observation.environment_state")
        images, text = _episode_inputs(policy, ds, e, ep)[:2]
        frames = torch.arange(0, len(ep), PROBE_FRAME_STRIDE)
        with torch.inference_mode():
            feats.append(head.encode_keypoints(images[frames], text[frames]).double().numpy())
        truth.append(ep.environment_state[frames.numpy()].astype(np.float64))
    return np.concatenate(feats), np.concatenate(truth)


def localization_probe(
    policy: NativePolicy,
    dataset_roots: Sequence[str | Path],
    fit_refs: Sequence[tuple[int, int]],
    test_refs: Sequence[tuple[int, int]],
    label: str,
    *,
    ridge: float = 1e-3,
) -> ProbeResult:
    """Does the policy see its target? A ridge read-out from its keypoints to the referents' positions
    (``observation.environment_state``: target xyz, goal xyz in the robot frame), fitted on training episodes
    and scored on held-out ones: R^2 and mean xy error in cm per referent. Before any closed-loop run, this
    one number says whether the image pathway locates what the instruction names.
    """
    if policy.network.caches_features:
        raise ValueError("the localization probe reads the native VLA's keypoints")
    if not fit_refs or not test_refs:
        raise ValueError("the localization probe needs training episodes to fit and held-out ones to score")
    datasets, _ = open_datasets(dataset_roots)
    if not all(ds.has_environment_state for ds in datasets):
        raise ValueError("the localization probe needs datasets with observation.environment_state (sim)")
    names = datasets[0].environment_state_names
    if len(fit_refs) > PROBE_FIT_EPISODES:
        pick = np.random.default_rng(0).choice(len(fit_refs), PROBE_FIT_EPISODES, replace=False)
        fit_refs = [fit_refs[i] for i in sorted(pick)]
    x_fit, y_fit = _keypoint_frames(policy, datasets, fit_refs)
    x_test, y_test = _keypoint_frames(policy, datasets, test_refs)
    pred = ridge_readout(x_fit, y_fit, x_test, ridge=ridge)
    r2, error_cm = referent_scores(names, y_test, pred)
    return ProbeResult(label, len(x_fit), len(x_test), r2, error_cm)


def ridge_readout(
    x_fit: np.ndarray, y_fit: np.ndarray, x_test: np.ndarray, *, ridge: float = 1e-3
) -> np.ndarray:
    """Predictions for ``x_test`` [M, F] of a ridge regression (standardized features plus a bias, penalty
    ``ridge`` per fitted row) fitted to ``y_fit`` [N, E] from ``x_fit`` [N, F]."""
    mean, std = x_fit.mean(axis=0), x_fit.std(axis=0) + 1e-6
    a = np.hstack([(x_fit - mean) / std, np.ones((len(x_fit), 1))])
    penalty = ridge * len(a) * np.eye(a.shape[1])
    penalty[-1, -1] = 0.0  # the bias is not shrunk
    weights = np.linalg.solve(a.T @ a + penalty, a.T @ y_fit)
    return np.hstack([(x_test - mean) / std, np.ones((len(x_test), 1))]) @ weights


def referent_scores(
    names: Sequence[str], truth: np.ndarray, pred: np.ndarray
) -> tuple[dict[str, float], dict[str, float]]:
    """Per referent (the prefix of ``names``, e.g. ``target`` of ``target.x``): R^2 pooled over its columns,
    and the mean horizontal (``.x``, ``.y``) distance between ``truth`` and ``pred`` [N, E] in cm (metres in)."""
    r2, error_cm = {}, {}
    for referent in dict.fromkeys(n.split(".")[0] for n in names):
        cols = [i for i, n in enumerate(names) if n.split(".")[0] == referent]
        r2[referent] = explained_variance(truth[:, cols], pred[:, cols])
        xy = [i for i in cols if names[i].endswith((".x", ".y"))]
        error_cm[referent] = float(np.linalg.norm(truth[:, xy] - pred[:, xy], axis=1).mean() * 100)
    return r2, error_cm


def write_probe(results: Sequence[ProbeResult]) -> str:
    referents = list(dict.fromkeys(k for r in results for k in r.r2))
    header = ["policy", "fit frames", "test frames"]
    header += [f"{k} {m}" for k in referents for m in ("R2", "xy error cm")]
    rows = [
        [r.label, r.fit_frames, r.test_frames, *(v for k in referents for v in (r.r2[k], r.error_cm[k]))]
        for r in results
    ]
    return _markdown_table(header, rows)


def closed_loop(
    policy: NativePolicy,
    label: str,
    *,
    families: Sequence[str],
    splits: Sequence[str],
    episodes: int,
    seed: int,
    execute_steps: int,
    executor: ExecutorConfig | None = None,
    progress: bool = True,
    max_steps: int = 0,
    control_hz: float = 0.0,
    safety_profile: str = "",
    latency_s: float = 0.0,
) -> list[EpisodeOutcome]:
    """Run ``episodes`` episodes per (family, split) in the embedded simulator; seeds are shared by all policies.

    The policy drives through :class:`~vla_policy.rollout.ChunkDriver` (the node's executor and re-planning
    rule), re-planning after ``execute_steps`` actions. ``control_hz`` (0: the policy's own rate) is how often
    the executor is ticked and the simulator takes a command, as ``policy_node``'s ``control_rate_hz`` (the
    cameras then render at the policy's rate, the newest frame held in between); with
    ``safety_profile`` (a robot profile, e.g. ``panda``) every command passes ``safety_node``'s monitor first;
    ``latency_s`` delays each chunk after its observation, as the model's latency does on the robot.
    """
    import vla_sim

    cams = policy.manifest.cameras
    size = (cams[0].height, cams[0].width) if cams else (128, 128)
    refill = refill_for_execute_steps(execute_steps, policy.horizon, policy.dt)
    names = policy.manifest.action_names
    gate = SafetyGate(names, safety_profile) if safety_profile else None
    # With a robot profile, targets are clipped into its position limits before the monitor, as policy_node does.
    bounds = position_bounds(gate.limits, names) if gate else None
    driver = ChunkDriver(
        policy, names, refill_below_s=refill, executor=executor, latency_s=latency_s, bounds=bounds
    )
    outcomes = []
    total = len(families) * len(splits) * episodes
    bar = tqdm(total=total, desc=f"closed loop {label}", unit="ep", disable=not progress)
    for family in families:
        for split in splits:
            env = vla_sim.make_env(
                family, seed=seed, cameras=policy.config.camera_names, image_size=size,
                control_hz=control_hz or policy.manifest.fps, split=split,
                camera_hz=policy.manifest.fps if control_hz else 0.0,
            )  # fmt: skip
            try:
                for i in range(episodes):
                    obs, info = env.reset(seed=seed + i)
                    driver.reset()
                    if gate is not None:
                        gate.reset()
                    done, steps, success, grasped = False, 0, False, False
                    goal_m = math.inf
                    while not done:
                        action = driver.act({**obs, "task": info["task"]}, info["sim_time"])
                        if gate is not None:
                            action = gate.filter(action, obs[STATE_KEY], info["sim_time"])
                        obs, _, terminated, truncated, info = env.step(action.astype(np.float32))
                        steps += 1
                        success = success or bool(info["success"])
                        grasped = grasped or bool(info["target_held"])
                        referents = obs[ENVIRONMENT_STATE_KEY]  # target xyz, goal xyz
                        goal_m = min(goal_m, float(np.linalg.norm(referents[:2] - referents[3:5])))
                        done = terminated or truncated or (max_steps > 0 and steps >= max_steps)
                    limited = gate.limited_fraction if gate is not None else math.nan
                    goal_cm = 100 * goal_m if family != "pick" else math.nan
                    outcomes.append(
                        EpisodeOutcome(
                            label, family, split, info["task"], success, steps, limited, grasped, goal_cm
                        )
                    )
                    bar.update(1)
                    bar.set_postfix(family=family, split=split, success=f"{_rate(outcomes, label):.0%}")
            finally:
                env.close()
    bar.close()
    return outcomes


def _rate(outcomes: Sequence[EpisodeOutcome], label: str) -> float:
    mine = [o.success for o in outcomes if o.label == label]
    return sum(mine) / max(len(mine), 1)


# --- reports -----------------------------------------------------------------------------------------


def _markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def fmt(v: object) -> str:
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_offline(results: Sequence[OfflineResult], output: Path) -> str:
    names = results[0].joint_names
    max_h = max(len(r.per_step) for r in results)
    header = [
        "policy",
        "frames",
        "mean_l1",
        "start_r2",
        *(f"l1_{n}" for n in names),
        *(f"l1_step{k}" for k in range(max_h)),
    ]
    rows = [
        [r.label, r.frames, r.mean, r.start_r2, *map(float, r.per_joint),
         *(float(r.per_step[k]) if k < len(r.per_step) else "" for k in range(max_h))]
        for r in results
    ]  # fmt: skip
    with (output / "offline.csv").open("w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4))
    width = 0.8 / len(results)
    for i, r in enumerate(results):
        ax1.bar(np.arange(len(names)) + i * width, r.per_joint, width, label=r.label)
        ax2.plot(np.arange(len(r.per_step)), r.per_step, marker="o", label=r.label)
    ax1.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names, rotation=45, ha="right")
    ax1.set_ylabel("mean |error| (dataset units)")
    ax1.set_title("per joint")
    ax2.set_xlabel("horizon step")
    ax2.set_title("per horizon step")
    for ax in (ax1, ax2):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(output / "offline.png", dpi=100)
    plt.close(fig)
    short = [[r.label, r.frames, r.mean, r.start_r2, *map(float, r.per_joint)] for r in results]
    table = _markdown_table(["policy", "frames", "mean L1", "start R2", *names], short)
    swaps = [[r.label, name, r.mean, l1, l1 / r.mean] for r in results for name, l1 in r.ablated.items()]
    if not swaps:
        return table
    header = ["policy", "input from another episode", "L1", "L1 swapped", "ratio"]
    with (output / "offline_ablation.csv").open("w", newline="") as f:
        csv.writer(f).writerows([header, *swaps])
    return table + "\n\nWhich inputs the policy uses (`--ablate`):\n\n" + _markdown_table(header, swaps)


def summarize_closed_loop(outcomes: Sequence[EpisodeOutcome]) -> list[dict[str, object]]:
    groups: dict[tuple[str, str, str], list[EpisodeOutcome]] = {}
    for o in outcomes:
        groups.setdefault((o.label, o.family, o.split), []).append(o)
    return [
        {
            "policy": label,
            "family": family,
            "split": split,
            "episodes": len(items),
            "successes": sum(o.success for o in items),
            "success_rate": sum(o.success for o in items) / len(items),
            "mean_steps": float(np.mean([o.steps for o in items])),
            "safety_limited": float(np.mean([o.limited for o in items])),
            "grasped": sum(o.grasped for o in items),
            "goal_cm": float(np.median([o.goal_cm for o in items])),
        }
        for (label, family, split), items in groups.items()
    ]


def write_closed_loop(outcomes: Sequence[EpisodeOutcome], output: Path) -> str:
    summary = summarize_closed_loop(outcomes)
    columns = ["policy", "family", "split", "episodes", "successes", "success_rate", "mean_steps", "grasped"]
    if not all(math.isnan(float(s["goal_cm"])) for s in summary):
        columns.append("goal_cm")
    if not all(math.isnan(float(s["safety_limited"])) for s in summary):
        columns.append("safety_limited")
    with (output / "closed_loop.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(summary)
    with (output / "closed_loop_episodes.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        # One row per episode: EpisodeOutcome's fields in order (label is the policy, limited the monitor's share).
        writer.writerow(
            [
                "policy",
                "family",
                "split",
                "instruction",
                "success",
                "steps",
                "safety_limited",
                "grasped",
                "goal_cm",
            ]
        )
        writer.writerows(astuple(o) for o in outcomes)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted({(s["family"], s["split"]) for s in summary})
    labels = sorted({str(s["policy"]) for s in summary})
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(groups)), 4))
    width = 0.8 / len(labels)
    for i, label in enumerate(labels):
        rates = {(s["family"], s["split"]): s["success_rate"] for s in summary if s["policy"] == label}
        ax.bar(np.arange(len(groups)) + i * width, [rates.get(g, 0.0) for g in groups], width, label=label)
    ax.set_xticks(np.arange(len(groups)) + 0.4 - width / 2, [f"{f}\n{s}" for f, s in groups])
    ax.set_ylim(0, 1)
    ax.set_ylabel("success rate")
    ax.legend(fontsize=7)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(output / "closed_loop.png", dpi=100)
    plt.close(fig)
    return _markdown_table(columns, [[s[c] for c in columns] for s in summary])


# --- CLI ---------------------------------------------------------------------------------------------


def _probe_applies(policy: NativePolicy, roots: Sequence[str | Path]) -> bool:
    """The probe runs for native models on datasets that recorded the simulator's referents."""
    if policy.network.caches_features:
        return False
    return all(LeRobotV3Dataset(root).has_environment_state for root in roots)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="vla-eval", description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoints", nargs="+", help="checkpoint directories (native VLA and/or baseline)")
    p.add_argument("--output", required=True, help="where results.md, CSVs and plots go")
    p.add_argument(
        "--dataset", action="append", default=[], help="dataset roots (default: the checkpoint's own)"
    )
    p.add_argument(
        "--all-episodes", action="store_true", help="every episode of --dataset, not only held-out ones"
    )
    p.add_argument("--no-offline", action="store_true")
    p.add_argument(
        "--ablate", action="store_true", help="offline: also swap each input with another episode's"
    )
    p.add_argument("--closed-loop", action="store_true", help="run the embedded simulator")
    p.add_argument("--families", nargs="+", default=["pick", "stack", "push", "place", "stack_two"])
    p.add_argument("--splits", nargs="+", default=["train", "heldout"], choices=["train", "heldout"])
    p.add_argument("--episodes", type=int, default=5, help="closed-loop episodes per family and split")
    p.add_argument(
        "--execute-steps", type=int, default=5, help="actions played from each chunk before re-planning"
    )
    p.add_argument(
        "--blend", default=BlendMode.CROSSFADE.value, choices=[m.value for m in BlendMode],
        help="how overlapping chunks blend (policy_node's executor; its default)",
    )  # fmt: skip
    p.add_argument(
        "--interpolation", default=ExecutorConfig().interpolation.value, choices=[m.value for m in Interpolation],
        help="between a chunk's actions (policy_node's executor; its default)",
    )  # fmt: skip
    p.add_argument(
        "--control-hz", type=float, default=0.0,
        help="executor ticks and simulator commands per second (0: the policy's rate); policy_node runs 50, "
        "the simulator takes divisors of its 240 Hz physics: 48 is the nearest",
    )  # fmt: skip
    p.add_argument(
        "--latency-s", type=float, default=0.0,
        help="chunks reach the executor this long after their observation (sim seconds; the model's latency)",
    )  # fmt: skip
    p.add_argument(
        "--safety", default="", metavar="PROFILE",
        help="pass every command through safety_node's monitor with this robot profile (e.g. panda)",
    )  # fmt: skip
    p.add_argument(
        "--max-steps", type=int, default=0, help="cap closed-loop episodes (smoke runs; 0: task limit)"
    )
    p.add_argument("--seed", type=int, default=1000)
    p.add_argument("--runtime", default="torch", choices=["torch", "onnx"])
    p.add_argument(
        "--referents", default=Referents.ESTIMATE.value, choices=[r.value for r in Referents],
        help="closed loop: what the referent pathway reads, its own estimate or the simulator's ground truth (a "
        "diagnostic: what the estimate's error costs)",
    )  # fmt: skip
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    output = Path(a.output)
    output.mkdir(parents=True, exist_ok=True)
    offline, outcomes, probes = [], [], []
    for path in a.checkpoints:
        policy = load_policy(path, runtime=a.runtime, referents=a.referents)
        label = policy_label(path, policy)
        if not a.no_offline:
            info = policy.checkpoint.info
            roots = a.dataset or info.get("datasets", [])
            missing = [r for r in roots if not (Path(r) / "meta" / "info.json").is_file()]
            if missing and not a.dataset:
                print(f"{label}: its training datasets {missing} are not here: no offline scores "
                      "(pass --dataset ... --all-episodes, or --no-offline)", file=sys.stderr)  # fmt: skip
                roots = []
            if a.all_episodes or a.dataset:
                episodes = (
                    None if a.all_episodes else [tuple(r) for r in info.get("val_episodes", [])] or None
                )
            else:
                episodes = [tuple(r) for r in info.get("val_episodes", [])]
            if roots and (episodes is None or episodes):
                offline.append(
                    offline_errors(
                        policy, roots, episodes, label, progress=not a.no_progress, ablate=a.ablate
                    )
                )
                fit = [tuple(r) for r in info.get("train_episodes", [])]
                held_out = [tuple(r) for r in info.get("val_episodes", [])]
                if fit and held_out and not a.dataset and _probe_applies(policy, roots):
                    probes.append(localization_probe(policy, roots, fit, held_out, label))
            elif not missing:
                print(
                    f"{label}: no held-out episodes recorded; pass --dataset ... --all-episodes",
                    file=sys.stderr,
                )
        if a.closed_loop:
            outcomes += closed_loop(
                policy, label, families=a.families, splits=a.splits, episodes=a.episodes, seed=a.seed,
                execute_steps=a.execute_steps,
                executor=ExecutorConfig(blend=BlendMode(a.blend), interpolation=Interpolation(a.interpolation)),
                progress=not a.no_progress, max_steps=a.max_steps, control_hz=a.control_hz, safety_profile=a.safety,
                latency_s=a.latency_s,
            )  # fmt: skip
    sections = ["# vla-eval results", ""]
    if offline:
        sections += [
            "## Offline action error (held-out episodes, dataset units)",
            "",
            write_offline(offline, output),
            "",
        ]
        sections += ["![offline](offline.png)", ""]
    if probes:
        sections += [
            "## Localization probe (a linear read-out of the keypoints; held-out episodes)",
            "",
            write_probe(probes),
            "",
        ]
    if outcomes:
        sections += [
            "## Closed-loop success (embedded simulator)",
            "",
            write_closed_loop(outcomes, output),
            "",
        ]
        sections += ["![closed loop](closed_loop.png)", ""]
    report = "\n".join(sections)
    (output / "results.md").write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
