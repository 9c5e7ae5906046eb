"""``load_policy``: a checkpoint directory -> an object implementing ``vla_common.policy.Policy``.

    from vla_policy import load_policy
    policy = load_policy("outputs/run/best")          # native VLA or textbook baseline, CPU, eager torch
    policy.reset()
    chunk = policy.infer({"observation.images.front": rgb_uint8_hwc, "observation.state": q, "task": "...",
                          "timestamp": t})          # -> ActionChunk, actions [H, D] in dataset units

Images go through ``vla_perception.preprocess`` with the model's inference spec (the same function training
used), the state is normalized with the checkpoint's statistics and the output un-normalized with them.
"""

from __future__ import annotations

import enum
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from vla_common.features import ENVIRONMENT_STATE_KEY, STATE_KEY
from vla_common.manifest import EmbodimentManifest
from vla_common.policy import ActionChunk, Observation
from vla_perception.preprocess import preprocess

from vla_policy.models.checkpoint import ENCODER_ONNX, HEAD_ONNX, Checkpoint, load_checkpoint
from vla_policy.models.config import ModelConfig
from vla_policy.models.encoders import InstructionEncoder
from vla_policy.node_core import InstructionGrounding, training_instructions


class Runtime(str, enum.Enum):
    TORCH = "torch"  # eager PyTorch
    ONNX = "onnx"  # onnxruntime on head.onnx (+ the baseline's encoder.onnx), written by vla_policy.export


class ActionDecoding(str, enum.Enum):
    REGRESSION = "regression"  # the L1 chunk head (default)
    BINS = "bins"  # argmax of the 256-bin head, decoded to bin centres (needs discrete_head)


class Referents(str, enum.Enum):
    """What the referent pathway's action MLP reads at inference."""

    ESTIMATE = "estimate"  # its own localization from the images (what a robot has)
    TRUTH = "truth"  # the observation's environment_state (the simulator's ground truth): a diagnostic oracle


class ObservationError(ValueError):
    """An observation lacks a key the model needs, or has the wrong shape."""


class NativePolicy:
    """The native VLA or the textbook baseline behind the shared Policy interface (batch 1)."""

    def __init__(
        self,
        checkpoint: Checkpoint,
        runtime: Runtime = Runtime.TORCH,
        decoding: ActionDecoding = ActionDecoding.REGRESSION,
        checkpoint_dir: Path | None = None,
        referents: Referents = Referents.ESTIMATE,
    ) -> None:
        self.checkpoint = checkpoint
        self.network = checkpoint.network.eval()
        self.normalizer = checkpoint.normalizer
        self.runtime = Runtime(runtime)
        self.decoding = ActionDecoding(decoding)
        if self.decoding is ActionDecoding.BINS and not self.config.discrete_head:
            raise ValueError("decoding=bins needs a model trained with discrete_head")
        if self.runtime is Runtime.ONNX and self.decoding is ActionDecoding.BINS:
            raise ValueError("the ONNX head exports the regression output only; use runtime=torch for bins")
        self.referents = Referents(referents)
        if self.referents is Referents.TRUTH and not (
            self.config.referent_input and self.runtime is Runtime.TORCH
        ):
            raise ValueError(
                "referents=truth needs a model with the referent pathway (referent_input), runtime=torch"
            )
        self._spec = self.config.input_spec(training=False)
        self._text = InstructionEncoder(self.config)
        self._grounding: InstructionGrounding | None = None
        if self.config.instruction_nearest:
            texts = training_instructions(checkpoint.info)
            if texts is None:
                raise ValueError(
                    "instruction_nearest needs the checkpoint's info['instructions'] (vla-train)"
                )
            self._grounding = InstructionGrounding(texts, self._text.tokens)  # policy_node reports the same
        # A held-referent model's look at the instruction's first frame, kept until the next instruction or
        # reset(): (grounded instruction, referents [1, E] in metres, whether the held pathway acts).
        self._held: tuple[str, torch.Tensor, bool] | None = None
        self._sessions: tuple[Any, Any] | None = None
        if self.runtime is Runtime.ONNX:
            if checkpoint_dir is None:
                raise ValueError("runtime=onnx needs the checkpoint directory holding the exported graphs")
            self._sessions = _onnx_sessions(checkpoint_dir, self.network.caches_features)

    @property
    def config(self) -> ModelConfig:
        return self.network.config

    @property
    def manifest(self) -> EmbodimentManifest:
        return self.checkpoint.manifest

    @property
    def horizon(self) -> int:
        return self.config.horizon

    @property
    def dt(self) -> float:
        return 1.0 / self.manifest.fps

    def grounded_instruction(self, task: str) -> str:
        """The sentence the model acts on: ``task``, or with ``instruction_nearest`` the training one whose
        tokens align with it best (:class:`~vla_policy.node_core.InstructionGrounding`)."""
        return task if self._grounding is None else self._grounding(task)

    def reset(self) -> None:
        """A new episode: a held-referent model looks at the scene again at the next frame. Otherwise
        stateless; the instruction embeddings' cache stays valid across episodes."""
        self._held = None

    @property
    def held_referents(self) -> np.ndarray | None:
        """The referents a held-referent model holds for the current instruction (target xyz, goal xyz in
        metres), None before it looked or where its held pathway does not act on the instruction."""
        if self._held is None or not self._held[2]:
            return None
        return self._held[1][0].numpy().astype(np.float64)

    def perceive(self, images: torch.Tensor, task: str, state: torch.Tensor) -> tuple[torch.Tensor, bool]:
        """A held-referent model's look: (the referents [1, E] (metres) in ``images`` [1, n_cam, 3, H, W]
        under ``task``'s referent questions at the normalized ``state`` [1, S] (:meth:`prepare`'s tensors),
        whether its held pathway acts on ``task``)."""
        tokens, mask = self._text.token_batch([self.grounded_instruction(task)])
        device = self.network.action_low.device
        with torch.inference_mode():
            referents, held = self.network.perceive(
                images.to(device), tokens.to(device), mask.to(device), state.to(device)
            )
        return referents.cpu(), bool(held[0])

    def act_held(self, state: torch.Tensor, referents: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """The held pathway's normalized actions [B, H, A] for normalized ``state`` [B, S], held ``referents``
        [B, E] (metres) and the instruction embedding ``text`` [B, D] (:meth:`prepare`'s)."""
        device = self.network.action_low.device
        head = self.network.head
        with torch.inference_mode():
            text = head.project_instruction(text.to(device))
            return head.held_actor(state.to(device), referents.to(device), text).cpu()

    def _hold(
        self, observation: Observation, images: torch.Tensor, state: torch.Tensor
    ) -> tuple[torch.Tensor, bool]:
        """The instruction's look (:meth:`perceive`), taken at its first frame since the last reset (with
        ``Referents.TRUTH`` the referents are that frame's environment_state: a perfect first look)."""
        instruction = self.grounded_instruction(observation["task"])
        if self._held is None or self._held[0] != instruction:
            referents, acts = self.perceive(images, observation["task"], state)
            if self.referents is Referents.TRUTH:
                referents = _truth(observation)
            self._held = (instruction, referents, acts)
        return self._held[1], self._held[2]

    def prepare(self, observation: Observation) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Observation -> (images [1, n_cam, 3, H, W], text [1, text_dim], normalized state [1, S])."""
        images = []
        for cam in self.config.camera_names:
            key = f"observation.images.{cam}"
            if key not in observation:
                raise ObservationError(
                    f"observation lacks {key!r} (the model's cameras: {self.config.camera_names})"
                )
            frame = np.asarray(observation[key])
            images.append(preprocess(frame, self._spec))
        if STATE_KEY not in observation:
            raise ObservationError(f"observation lacks {STATE_KEY!r}")
        state = np.asarray(observation[STATE_KEY], dtype=np.float32).reshape(-1)
        if state.shape != (self.config.state_dim,):
            raise ObservationError(
                f"{STATE_KEY} has {state.size} values, the model expects {self.config.state_dim} "
                f"({list(self.manifest.joint_names)})"
            )
        if not np.all(np.isfinite(state)):
            raise ObservationError(f"{STATE_KEY} holds NaN or inf")
        task = observation.get("task")
        if not isinstance(task, str):
            raise ObservationError("observation lacks the instruction 'task' (a string)")
        image_tensor = torch.from_numpy(np.stack(images))[None]
        text = self._text([self.grounded_instruction(task)])
        norm_state = self.normalizer.normalize_state(torch.from_numpy(state))[None]
        return image_tensor, text, norm_state

    def instruction_tokens(self, tasks: list[str]) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(tokens [B, L, D], mask [B, L]) of the grounded instructions, which a goal locator reads; None for a
        model without one."""
        if self.network.locator is None:
            return None
        return self._text.token_batch([self.grounded_instruction(t) for t in tasks])

    def predict_normalized(
        self,
        images: torch.Tensor,
        text: torch.Tensor,
        state: torch.Tensor,
        environment_state: torch.Tensor | None = None,
        *,
        tokens: torch.Tensor | None = None,
        token_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Batched forward pass -> normalized actions [B, H, A]; ``environment_state`` (dataset units, [B, E]):
        read by the referent pathway instead of its estimate (``Referents.TRUTH``); ``tokens``, ``token_mask``:
        :meth:`instruction_tokens` (a model with a goal locator needs them)."""
        if self._sessions is not None:
            encoder, head = self._sessions
            pixels = images.numpy().astype(np.float32)
            features = pixels if encoder is None else encoder.run(None, {"images": pixels})[0]
            arrays = {"features": features, "images": features, "text": text.numpy(), "state": state.numpy()}
            if tokens is not None and token_mask is not None:
                arrays.update(tokens=tokens.numpy(), token_mask=token_mask.numpy())
            (actions,) = head.run(None, onnx_feed(head, **arrays))
            return torch.from_numpy(actions)
        device = self.network.action_low.device
        with torch.inference_mode():
            if environment_state is not None:
                environment_state = environment_state.to(device)
            if tokens is not None and token_mask is not None:
                tokens, token_mask = tokens.to(device), token_mask.to(device)
            outputs = self.network(
                images.to(device), text.to(device), state.to(device), environment_state,
                tokens=tokens, token_mask=token_mask,
            )  # fmt: skip
            if self.decoding is ActionDecoding.BINS:
                return self.network.decode_bins(outputs).cpu()
            return outputs["actions"].cpu()

    def infer(self, observation: Observation) -> ActionChunk:
        stamp = observation.get("timestamp")
        stamp = time.time() if stamp is None else float(stamp)
        images, text, state = self.prepare(observation)
        raw_state = np.asarray(observation[STATE_KEY], dtype=np.float64).reshape(-1)
        if self.config.held_referents:
            held, acts = self._hold(observation, images, state)
            if acts:  # the held pathway's actor, in PyTorch under either runtime (a small MLP)
                actions = self.to_actions(self.act_held(state, held, text)[0], raw_state)
                return ActionChunk(
                    actions=actions.numpy(), names=self.manifest.action_names, stamp=stamp, dt=self.dt
                )
        truth = None
        if self.referents is Referents.TRUTH:
            truth = _truth(observation)
        tokens, token_mask = self.instruction_tokens([observation["task"]]) or (None, None)
        normalized = self.predict_normalized(images, text, state, truth, tokens=tokens, token_mask=token_mask)
        actions = self.to_actions(normalized[0], raw_state)
        return ActionChunk(actions=actions.numpy(), names=self.manifest.action_names, stamp=stamp, dt=self.dt)

    def to_actions(self, normalized: torch.Tensor, state: np.ndarray) -> torch.Tensor:
        """Head outputs [..., H, A] -> actions in dataset units (float64); ``state`` [..., S] in dataset units.

        A relative-action model predicts motion from the state it was given, so the state is added back.
        """
        actions = self.normalizer.unnormalize_action(normalized.double())
        if self.config.relative_actions:
            actions = actions + torch.as_tensor(state, dtype=torch.float64)[..., None, :]
        return actions


def _truth(observation: Observation) -> torch.Tensor:
    """The observation's environment_state [1, E] (the simulator's referents), for ``Referents.TRUTH``."""
    if ENVIRONMENT_STATE_KEY not in observation:
        raise ObservationError(f"referents=truth: the observation lacks {ENVIRONMENT_STATE_KEY!r}")
    return torch.as_tensor(np.asarray(observation[ENVIRONMENT_STATE_KEY], dtype=np.float32)).reshape(1, -1)


def onnx_feed(session: Any, **arrays: np.ndarray) -> dict[str, np.ndarray]:
    """The inputs a session declares (the exporter drops unused ones, e.g. the baseline's state; the native
    head reads ``images``, the baseline's ``features``; a goal locator's ``tokens`` and ``token_mask``)."""
    missing = [i.name for i in session.get_inputs() if i.name not in arrays]
    if missing:
        raise ObservationError(f"the ONNX graph needs inputs {missing}")
    return {i.name: arrays[i.name] for i in session.get_inputs()}


def _onnx_sessions(directory: Path, caches_features: bool) -> tuple[Any, Any]:
    """(encoder or None, head): the native VLA is one graph from pixels; the baseline's trunk is its own."""
    import onnxruntime as ort

    paths = [directory / ENCODER_ONNX, directory / HEAD_ONNX] if caches_features else [directory / HEAD_ONNX]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{directory} lacks {missing}: run `python -m vla_policy.export {directory}` first"
        )
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    sessions = [ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"]) for p in paths]
    return (sessions[0], sessions[1]) if caches_features else (None, sessions[0])


def load_policy(
    checkpoint_dir: str | os.PathLike[str],
    device: str = "cpu",
    runtime: Runtime | str = Runtime.TORCH,
    decoding: ActionDecoding | str = ActionDecoding.REGRESSION,
    referents: Referents | str = Referents.ESTIMATE,
) -> NativePolicy:
    """Load a native VLA or textbook-baseline checkpoint as a ``Policy`` (``reset()``, ``infer(obs)``)."""
    root = Path(checkpoint_dir)
    if device != "cpu" and Runtime(runtime) is Runtime.ONNX:
        raise ValueError("runtime=onnx runs on the CPU")
    checkpoint = load_checkpoint(root, device="cpu")
    if device != "cpu":
        checkpoint.network.to(device)
    return NativePolicy(
        checkpoint,
        Runtime(runtime),
        ActionDecoding(decoding),
        checkpoint_dir=root,
        referents=Referents(referents),
    )
