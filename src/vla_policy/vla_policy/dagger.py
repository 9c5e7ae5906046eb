"""``vla-dagger``: expert demonstrations and DAgger rounds in the embedded simulator, written as LeRobot v3.

    vla-dagger expert outputs/d0 --families pick push --episodes 200            # round 0: the scripted expert
    vla-train outputs/d0 --output outputs/r0
    vla-dagger collect outputs/r0/best outputs/d1 --families pick push --episodes 50   # the policy drives,
    vla-train outputs/d0 outputs/d1 --output outputs/r1                        # the expert labels every state

``expert`` is the fast offline twin of recording through topics (``vla-demo --record``): the same task
definitions, expert and dataset writer, without real time. ``collect`` is one DAgger round (Ross et al. 2011):
the policy (or, with probability ``--beta`` per step, the expert) drives, and every visited state is stored
with the expert's action for it, so the next training round sees how to recover from the policy's own
mistakes. Each round prints and saves the driving policy's success per family, i.e. success after that round.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm
from vla_collector.lerobot import DatasetSpec, LeRobotV3Writer, VideoCodecConfig
from vla_common.features import ENVIRONMENT_STATE_KEY, STATE_KEY, image_key
from vla_common.manifest import CameraSpec

LOG = logging.getLogger("vla_dagger")

# Small images need chroma at full resolution and little compression, or block colours blur into each other.
DEFAULT_VIDEO = VideoCodecConfig(codec="libx264", pix_fmt="yuv444p", crf=18)


@dataclass
class RoundStats:
    family: str
    episodes: int = 0
    successes: int = 0
    frames: int = 0

    @property
    def success_rate(self) -> float:
        return self.successes / max(self.episodes, 1)


def dataset_spec(
    cameras: Sequence[str], image_size: tuple[int, int], fps: int, environment_state: bool = True
) -> DatasetSpec:
    """The dataset the rollouts write; ``environment_state``: with the simulator's privileged
    ``observation.environment_state`` (``vla_sim.tasks.REFERENT_NAMES``: the named block and its goal)."""
    from vla_common.robots import PANDA_COMMAND_JOINTS
    from vla_sim.tasks import REFERENT_NAMES

    return DatasetSpec(
        fps=fps,
        robot_type="panda",
        state_names=PANDA_COMMAND_JOINTS,
        action_names=PANDA_COMMAND_JOINTS,
        cameras=tuple(CameraSpec(c, *image_size) for c in cameras),
        video=DEFAULT_VIDEO,
        environment_state_names=REFERENT_NAMES if environment_state else (),
    )


def _has_environment_state(root: Path) -> bool:
    """A new dataset records the environment state; an existing one keeps its features (older datasets
    lack it, and episodes with and without it cannot share a dataset)."""
    info = root / "meta" / "info.json"
    return not info.is_file() or ENVIRONMENT_STATE_KEY in json.loads(info.read_text()).get("features", {})


def rollout_dataset(
    output: Path,
    *,
    families: Sequence[str],
    episodes: int,
    seed: int,
    cameras: Sequence[str],
    image_size: tuple[int, int],
    fps: int,
    policy_dir: str = "",
    beta: float = 0.0,
    execute_steps: int = 5,
    split: str = "train",
    progress: bool = True,
    max_steps: int = 0,
    settle_steps: int = 0,
    release_height: float | None = None,
) -> list[RoundStats]:
    """Roll out ``episodes`` per family and append them to the dataset at ``output`` (created if new).

    Without ``policy_dir`` the expert drives (demonstrations). With it, the policy drives through
    policy_node's action executor (:class:`~vla_policy.rollout.ChunkDriver`, re-planning after
    ``execute_steps`` actions), except on steps where ``rng < beta`` hands control to the
    expert. Either way the stored action is the expert's label for the visited state. A policy brings its
    own cameras and image size (its manifest's); ``cameras`` and ``image_size`` are then ignored.
    ``max_steps`` (0: the task's time limit) ends an episode early. A DAgger round wants it: a policy that is
    stuck fills the rest of a 15 s episode with the expert's re-grasp labels, which then outweigh the
    approach and grasp states that the round is meant to correct (measured: 84 % of an uncapped pick round).
    ``settle_steps``: the episode goes on this many steps after its first success, the expert still labelling.
    Place and stack succeed the instant the fingers open, so an episode cut there shows the release in one
    frame of ~60; the steps after it (open, rise) are what teaches a policy to let go.
    ``release_height``: the expert's (m above where the block would rest; None: its default, 4 mm).
    """
    from vla_sim.experts import ExpertConfig, make_expert

    import vla_sim

    driver = None
    if policy_dir:
        from vla_policy.models.policy import load_policy
        from vla_policy.rollout import ChunkDriver, refill_for_execute_steps

        policy = load_policy(policy_dir)
        cams = policy.manifest.cameras
        if not cams or len({(c.height, c.width) for c in cams}) != 1:
            raise ValueError(f"{policy_dir}: the simulator renders one image size; the policy wants {cams}")
        cameras, image_size = tuple(policy.config.camera_names), (cams[0].height, cams[0].width)
        if abs(policy.manifest.fps - fps) > 1e-9:
            raise ValueError(
                f"{policy_dir} was trained at {policy.manifest.fps} Hz; run the simulator at that rate (--fps)"
            )
        # The policy drives as policy_node does: through its action executor, re-planning as it does.
        refill = refill_for_execute_steps(execute_steps, policy.horizon, policy.dt)
        driver = ChunkDriver(policy, policy.manifest.action_names, refill_below_s=refill)
    # Checked before the dataset is created: a bad setting leaves nothing behind.
    expert_config = (
        None if release_height is None else ExpertConfig(control_hz=fps, release_height=release_height)
    )
    spec = dataset_spec(cameras, image_size, fps, environment_state=_has_environment_state(output))
    writer = LeRobotV3Writer.open_or_create(output, spec)
    rng = np.random.default_rng(seed)
    stats = []
    bar = tqdm(total=len(families) * episodes, unit="ep", desc=str(output.name), disable=not progress)
    for f_index, family in enumerate(families):
        env = vla_sim.make_env(
            family, cameras=tuple(cameras), image_size=image_size, control_hz=fps, split=split,
            terminate_on_success=False,  # the loop below ends the episode, settle_steps after the success
        )  # fmt: skip
        expert = make_expert(env, expert_config)
        s = RoundStats(family)
        stats.append(s)
        try:
            for i in range(episodes):
                obs, info = env.reset(seed=seed + 100_000 * f_index + i)
                if driver is not None:
                    driver.reset()
                states, actions, images = [], [], {c: [] for c in cameras}
                environment_states = []
                success, done, settled = False, False, 0
                while not done:
                    label = expert.act_env()
                    states.append(obs[STATE_KEY].copy())
                    environment_states.append(obs[ENVIRONMENT_STATE_KEY].copy())
                    actions.append(label)
                    for c in cameras:
                        images[c].append(obs[image_key(c)])
                    if driver is None or rng.random() < beta:
                        action = label
                        if driver is not None:
                            driver.queue.clear()  # the policy re-plans from the state the expert left
                    else:
                        action = driver.act({**obs, "task": info["task"]}, info["sim_time"])
                    obs, _, _, truncated, info = env.step(np.asarray(action, np.float32))
                    settled += int(success)  # steps taken after the first success
                    success = success or bool(info["success"])
                    done = (
                        truncated
                        or (success and settled >= settle_steps)
                        or (max_steps > 0 and len(states) >= max_steps)
                    )
                writer.write_episode(
                    np.array(states),
                    np.array(actions),
                    images,
                    info["task"],
                    np.array(environment_states) if spec.environment_state_names else None,
                )
                s.episodes += 1
                s.successes += int(success)
                s.frames += len(states)
                bar.update(1)
                bar.set_postfix(family=family, success=f"{s.success_rate:.0%}")
        except KeyboardInterrupt:
            # Ctrl-C ends the round early: the episodes written so far stay, and so does their record.
            LOG.warning(
                "interrupted during %s: keeping the %d episodes written",
                family,
                sum(x.episodes for x in stats),
            )
            break
        finally:
            expert.close()
            env.close()
    bar.close()
    return [x for x in stats if x.episodes]


def report(stats: Sequence[RoundStats], driver: str) -> str:
    lines = [
        f"driver: {driver}",
        "| family | episodes | successes | success | frames |",
        "|---|---|---|---|---|",
    ]
    for s in stats:
        lines.append(f"| {s.family} | {s.episodes} | {s.successes} | {s.success_rate:.0%} | {s.frames} |")
    total = sum(s.episodes for s in stats)
    wins = sum(s.successes for s in stats)
    lines.append(f"| all | {total} | {wins} | {wins / max(total, 1):.0%} | {sum(s.frames for s in stats)} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    p = argparse.ArgumentParser(prog="vla-dagger", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    expert = sub.add_parser("expert", help="scripted-expert demonstrations")
    expert.add_argument("output", help="dataset root (created, or appended to)")
    expert.add_argument("--cameras", nargs="+", default=["front", "wrist"])
    expert.add_argument("--image-size", type=int, default=128, help="square images, pixels")
    collect = sub.add_parser("collect", help="one DAgger round: the policy drives, the expert labels")
    collect.add_argument("policy", help="checkpoint directory that drives")
    collect.add_argument("output", help="dataset root for this round (created, or appended to)")
    collect.add_argument("--beta", type=float, default=0.0, help="per-step probability the expert drives")
    collect.add_argument("--execute-steps", type=int, default=5, help="actions executed from each chunk")
    collect.add_argument(
        "--max-steps",
        type=int,
        default=0,
        help="end each episode after this many steps (0: the task's limit)",
    )
    for sp in (expert, collect):
        sp.add_argument(
            "--settle-steps",
            type=int,
            default=0,
            help="steps recorded after an episode's first success (the release and retreat of place/stack)",
        )
        sp.add_argument(
            "--release-height",
            type=float,
            default=None,
            help="m above the block's resting place at which the expert opens (place/stack; default 0.004)",
        )
        sp.add_argument("--families", nargs="+", default=["pick", "push", "place", "stack"])
        sp.add_argument("--episodes", type=int, default=100, help="episodes per family")
        sp.add_argument("--seed", type=int, default=0, help="scene seeds: seed + 100000*family_index + k")
        sp.add_argument("--fps", type=int, default=10)
        sp.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.episodes <= 0:
        p.error("--episodes must be positive")
    if getattr(args, "max_steps", 0) < 0:
        p.error("--max-steps must be >= 0")
    if args.settle_steps < 0:
        p.error("--settle-steps must be >= 0")
    if args.command == "collect" and not 0.0 <= args.beta <= 1.0:
        p.error("--beta must be within [0, 1]")
    output = Path(args.output)
    policy_dir = args.policy if args.command == "collect" else ""
    try:
        stats = rollout_dataset(
            output,
            families=args.families,
            episodes=args.episodes,
            seed=args.seed,
            cameras=getattr(args, "cameras", ()),
            image_size=(getattr(args, "image_size", 0),) * 2,
            fps=args.fps,
            policy_dir=policy_dir,
            beta=getattr(args, "beta", 0.0),
            execute_steps=getattr(args, "execute_steps", 5),
            progress=not args.no_progress,
            max_steps=getattr(args, "max_steps", 0),
            settle_steps=args.settle_steps,
            release_height=args.release_height,
        )
    except (ValueError, OSError) as e:
        print(f"vla-dagger: {e}", file=sys.stderr)
        return 2
    text = report(stats, policy_dir or "scripted expert")
    print(text)
    rounds = output / "dagger_rounds.jsonl"  # one line per call: success of the driver, per family
    with rounds.open("a") as f:
        record = {"driver": policy_dir or "expert", "seed": args.seed, "stats": [asdict(s) for s in stats]}
        f.write(json.dumps(record) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
