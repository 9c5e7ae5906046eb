"""Run by the LeRobot venv's Python (test support, not a test): save a small randomly initialised LeRobot policy
(ACT, or Diffusion Policy with ``--policy diffusion``) with LeRobot's own ``save_pretrained``, its
pre/post-processors beside it, as ``lerobot-train`` leaves them.

    python lerobot_make_act.py OUT --cameras front,wrist --size 96 --state 8 --action 8 \\
        --action-mean 0,-0.3,... [--action-std 0.005] [--nan] [--extra-input observation.environment_state:ENV:6]
        [--policy diffusion [--n-obs-steps 1]]

The statistics centre the actions on ``--action-mean`` with ``--action-std`` (a random model's outputs are
O(1) normalized: the un-normalized commands then stay near that pose; Diffusion normalizes actions to
[min, max] = mean -/+ 10 std, its outputs clipped to that range). ``--nan`` makes the post-processor's action
std NaN, so every action comes out NaN, as from a diverged model.
"""

import argparse
import math

import torch
from lerobot.configs.types import FeatureType, PolicyFeature
from lerobot.policies.act.configuration_act import ACTConfig
from lerobot.policies.act.modeling_act import ACTPolicy
from lerobot.policies.diffusion.configuration_diffusion import DiffusionConfig
from lerobot.policies.diffusion.modeling_diffusion import DiffusionPolicy
from lerobot.policies.factory import make_pre_post_processors


def spread(mean: torch.Tensor, std: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"mean": mean, "std": std, "min": mean - 10 * std, "max": mean + 10 * std}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--cameras", default="front,wrist")
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--state", type=int, default=8)
    parser.add_argument("--action", type=int, default=8)
    parser.add_argument("--action-mean", default="")
    parser.add_argument("--action-std", type=float, default=0.005)
    parser.add_argument("--nan", action="store_true")
    parser.add_argument("--extra-input", action="append", default=[], help="key:TYPE:width")
    parser.add_argument("--policy", choices=["act", "diffusion"], default="act")
    parser.add_argument("--n-obs-steps", type=int, default=1, help="diffusion: observations it reads")
    args = parser.parse_args()

    cameras = [f"observation.images.{c}" for c in args.cameras.split(",") if c]
    inputs = {key: PolicyFeature(FeatureType.VISUAL, (3, args.size, args.size)) for key in cameras}
    inputs["observation.state"] = PolicyFeature(FeatureType.STATE, (args.state,))
    for extra in args.extra_input:
        key, kind, width = extra.split(":")
        inputs[key] = PolicyFeature(FeatureType(kind), (int(width),))
    outputs = {"action": PolicyFeature(FeatureType.ACTION, (args.action,))}
    torch.manual_seed(0)
    if args.policy == "diffusion":
        config = DiffusionConfig(
            input_features=inputs,
            output_features=outputs,
            n_obs_steps=args.n_obs_steps,
            horizon=16,
            n_action_steps=8,
            drop_n_last_frames=16 - 8 - args.n_obs_steps + 1,
            pretrained_backbone_weights=None,  # nothing downloads: a random ResNet-18
            use_group_norm=True,
            spatial_softmax_num_keypoints=8,
            down_dims=(32, 64),
            kernel_size=3,
            diffusion_step_embed_dim=32,
            num_inference_steps=4,
            device="cpu",
        )
        policy = DiffusionPolicy(config)
    else:
        config = ACTConfig(
            input_features=inputs,
            output_features=outputs,
            pretrained_backbone_weights=None,  # nothing downloads: a random ResNet-18
            chunk_size=20,
            n_action_steps=10,
            dim_model=64,
            dim_feedforward=128,
            n_heads=2,
            n_encoder_layers=1,
            n_decoder_layers=1,
            latent_dim=8,
            n_vae_encoder_layers=1,
            device="cpu",
        )
        policy = ACTPolicy(config)
    mean = [float(v) for v in args.action_mean.split(",")] if args.action_mean else [0.0] * args.action
    std = torch.full((args.action,), math.nan if args.nan else args.action_std)
    stats = {  # mean/std for ACT, min/max for Diffusion's state and action (MIN_MAX normalization)
        "observation.state": spread(torch.tensor(mean[: args.state]), torch.full((args.state,), 0.1)),
        "action": spread(torch.tensor(mean[: args.action]), std),
        **{k: spread(torch.full((3, 1, 1), 0.5), torch.full((3, 1, 1), 0.25)) for k in cameras},
    }
    for extra in args.extra_input:
        key, _, width = extra.split(":")
        stats[key] = spread(torch.zeros(int(width)), torch.ones(int(width)))
    preprocessor, postprocessor = make_pre_post_processors(config, dataset_stats=stats)
    policy.save_pretrained(args.out)
    preprocessor.save_pretrained(args.out)
    postprocessor.save_pretrained(args.out)


if __name__ == "__main__":
    main()
