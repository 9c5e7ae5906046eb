"""The native VLA and the textbook baseline.

- Native: per camera a small conv encoder trained end to end (GroupNorm, FiLM by the instruction inside the
  conv stack, random-shift augmentation) read out as spatial-softmax keypoints on a fine grid; an MLP over
  keypoints, state and instruction predicts a chunk of H actions (ACT/OFT-style L1), optionally with a
  256-bin head. The design follows what localizes at small scale (robomimic, Diffusion Policy).
- Textbook baseline (the seed chapters' VLAModel): a frozen ImageNet trunk's pooled features and the pooled
  instruction, MLP fusion, one action, MSE.

Both split into ``encode_images`` (the frozen trunk for the baseline, whose output training caches; the
identity for the native model) and ``head(features, text, state)``. Actions are normalized; the policy
wrapper owns units.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vla_policy.models.config import ModelConfig, PolicyKind
from vla_policy.models.encoders import ImageTrunk
from vla_policy.models.tokenizer import ActionTokenizer


class FiLM(nn.Module):
    """Feature-wise linear modulation by the instruction; starts as the identity (RT-1's initialisation)."""

    def __init__(self, text_dim: int, channels: int) -> None:
        super().__init__()
        self.to_scale_shift = nn.Linear(text_dim, 2 * channels)
        nn.init.zeros_(self.to_scale_shift.weight)
        nn.init.zeros_(self.to_scale_shift.bias)

    def forward(self, x: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        scale, shift = self.to_scale_shift(text).chunk(2, dim=-1)
        return x * (1.0 + scale[:, :, None, None]) + shift[:, :, None, None]


class SpatialSoftmax(nn.Module):
    """[B, K, h, w] maps -> [B, K, 2] expected (x, y) in [-1, 1] of each map's softmax (Levine et al. 2016).

    The readout keeps coordinates: a keypoint moves by a fraction of a pixel when the thing it tracks does,
    which a pooled or flattened feature vector does not guarantee. The temperature is learned.
    """

    def __init__(self, height: int, width: int) -> None:
        super().__init__()
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, height), torch.linspace(-1, 1, width), indexing="ij")
        self.register_buffer("grid", torch.stack([xs.flatten(), ys.flatten()], dim=-1))  # [h*w, 2]
        self.log_temperature = nn.Parameter(torch.zeros(()))

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        with torch.autocast(maps.device.type, enabled=False):  # coordinates in fp32 under mixed precision
            weights = (maps.float().flatten(2) / self.log_temperature.exp()).softmax(dim=-1)  # [B, K, h*w]
            return weights @ self.grid


def random_shift(images: torch.Tensor, pad: int) -> torch.Tensor:
    """Shift each image [B, C, H, W] by up to ``pad`` pixels (edge-replicated), DrQ-style augmentation."""
    if pad <= 0:
        return images
    return shift_images(images, pad, torch.randint(0, 2 * pad + 1, (images.shape[0], 2)))


def shift_images(images: torch.Tensor, pad: int, offsets: torch.Tensor) -> torch.Tensor:
    """Each image [B, C, H, W] cropped at ``offsets`` [B, 2] (y, x in 0..2*pad) from its edge-replicated
    padding: a shift by offsets - pad pixels."""
    if pad <= 0:
        return images
    _, _, h, w = images.shape
    padded = F.pad(images, (pad, pad, pad, pad), mode="replicate")
    return torch.stack([padded[i, :, y : y + h, x : x + w] for i, (y, x) in enumerate(offsets.tolist())])


class KeypointEncoder(nn.Module):
    """One camera, trained end to end: conv stack (GroupNorm, FiLM by the instruction on the last conv),
    then 1x1 conv to ``keypoints`` maps and a spatial softmax. [B, 3, H, W] pixels 0..255 -> [B, K * 2].

    Only the first conv has a stride, so the readout grid is H/2 x W/2 (48x48 at 96 px).
    """

    def __init__(self, config: ModelConfig, film_dim: int = 0, keypoints: int = 0) -> None:
        """``film_dim``, ``keypoints``: the conditioning's width and the maps' count (0: the instruction
        embedding's ``text_dim`` and ``config.keypoints``)."""
        super().__init__()
        c = config.encoder_channels
        self.conv1 = nn.Conv2d(3, c, 5, stride=2, padding=2)
        self.norm1 = nn.GroupNorm(_groups(c), c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)
        self.norm2 = nn.GroupNorm(_groups(c), c)
        self.conv3 = nn.Conv2d(c, 2 * c, 3, padding=1)
        self.norm3 = nn.GroupNorm(_groups(2 * c), 2 * c)
        self.film = FiLM(film_dim or config.text_dim, 2 * c)
        self.to_keypoints = nn.Conv2d(2 * c, keypoints or config.keypoints, 1)
        h, w = (config.image_height + 1) // 2, (config.image_width + 1) // 2
        self.readout = SpatialSoftmax(h, w)

    def forward(self, images: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        x = (images.float() - 127.5) / 64.0
        x = F.relu(self.norm1(self.conv1(x)))
        x = F.relu(self.norm2(self.conv2(x)))
        x = F.relu(self.film(self.norm3(self.conv3(x)), text))
        return self.readout(self.to_keypoints(x)).flatten(1)


def _groups(channels: int) -> int:
    return 8 if channels % 8 == 0 else 1


class TokenQueries(nn.Module):
    """Learned queries attending over a sentence's contextual token embeddings [B, L, D] (``mask`` [B, L]: 1
    for a token, 0 for padding) -> [B, queries * D]. The pooled sentence embedding cannot say which of two
    named blocks is the base ("put red on blue" and its swap are 0.995 apart in cosine); queries over the
    tokens can (``bench/stack_base_cnn.py``)."""

    def __init__(self, dim: int, queries: int) -> None:
        super().__init__()
        self.queries = nn.Parameter(torch.randn(queries, dim) * 0.1)
        self.key = nn.Linear(dim, dim)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        scores = torch.einsum("qd,bnd->bqn", self.queries, self.key(tokens))
        scores = scores + (mask[:, None, :].to(scores.dtype) - 1.0) * 1e9  # padding gets no weight
        return torch.einsum("bqn,bnd->bqd", scores.softmax(dim=-1), tokens).flatten(1)


class ReferentQuestions(nn.Module):
    """Instruction tokens [B, L, D] -> the questions [B, 2, D] (unit vectors) under which the encoders and the
    localization head find the instruction's target (the first) and its goal (the second), read in place of
    the instruction embedding, and two logits [B, 2]: whether the goal is the second answer's target half (a
    named block, whose position a pick question's target half gives) rather than its goal half, and whether
    the held pathway acts on the instruction (``held_referents``). ``vla-train-held`` fits them to training
    sentences under which the localization head already finds each referent: "pick up the {block} block"
    for the target, the instruction itself for the goal, for stack "pick up the {base} block" read at its
    target half. Under stack's own sentence the head misplaces the block by 6.8 cm; under the pick questions
    it finds the block to 0.78 cm and the base to 0.84 cm (``bench/first_frame_referents.py``)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.queries = TokenQueries(dim, 2)
        self.out = nn.Linear(dim, dim)
        self.flags = nn.Linear(2 * dim, 2)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(questions [B, 2, D], logits [B, 2]: goal from the target half, held pathway)."""
        pooled = self.queries(tokens, mask)
        questions = F.normalize(self.out(pooled.view(len(tokens), 2, -1)), dim=-1)
        return questions, self.flags(pooled)


class HeldActor(nn.Module):
    """The held pathway's policy: the normalized state and the held referents' xy (target, goal; metres), and
    with ``held_instruction`` the instruction embedding -> a chunk of H normalized actions. Its inputs are
    standardized with its own training statistics (buffers set by ``vla-train-held``; the referents' heights
    are left out: at the first frame they are the table's, a constant, and a constant's spread is no scale).
    GELU MLP of ``mlp_layers`` + 1 hidden layers, the recipe of ``bench/referent_oracle.py --held``, which
    stacks 18/20 given the true first-frame referents."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        n_in = config.state_dim + 4 + (config.text_dim if config.held_instruction else 0)
        self.register_buffer("input_mean", torch.zeros(n_in))
        self.register_buffer("input_std", torch.ones(n_in))
        width, layers = config.hidden_dim, []
        for i in range(config.mlp_layers + 1):
            layers += [nn.Linear(n_in if i == 0 else width, width), nn.GELU()]
        self.mlp = nn.Sequential(*layers, nn.Linear(width, config.horizon * config.action_dim))

    def inputs(self, state: torch.Tensor, referents: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """[B, n_in]: the normalized state, the referents' xy (``referents`` [B, 6], metres) and, with
        ``held_instruction``, the (projected) instruction embedding ``text``."""
        parts = [state, referents[:, [0, 1, 3, 4]].to(state.dtype)]
        if self.config.held_instruction:
            parts.append(text.to(state.dtype))
        return torch.cat(parts, dim=-1)

    def set_input_stats(self, inputs: torch.Tensor) -> None:
        self.input_mean.copy_(inputs.mean(0))
        self.input_std.copy_(inputs.std(0).clamp(min=1e-3))

    def forward(self, state: torch.Tensor, referents: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        x = (self.inputs(state, referents, text) - self.input_mean) / self.input_std
        return self.mlp(x).view(len(x), self.config.horizon, self.config.action_dim)


class GoalLocator(nn.Module):
    """Where the instruction's goal is (the goal half of observation.environment_state, metres), from one
    camera and the instruction's tokens: a :class:`KeypointEncoder` FiLM'd by :class:`TokenQueries`, then an
    MLP. Trained apart from the policy on the simulator's ground truth (``vla-train-locator``); the referent
    pathway then reads its estimate of the goal instead of the localization head's."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        film_dim = config.locator_queries * config.text_dim
        self.queries = TokenQueries(config.text_dim, config.locator_queries)
        self.encoder = KeypointEncoder(config, film_dim=film_dim, keypoints=config.locator_keypoints)
        self.mlp = nn.Sequential(
            nn.Linear(2 * config.locator_keypoints + film_dim, 256), nn.ReLU(), nn.Linear(256, 3)
        )
        # The goal's statistics in metres (set by vla-train-locator): the MLP predicts it normalized.
        self.register_buffer("goal_mean", torch.zeros(3))
        self.register_buffer("goal_std", torch.ones(3))

    def normalized(self, images: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] pixels 0..255, tokens [B, L, D], mask [B, L] -> the goal [B, 3], normalized."""
        t = self.queries(tokens, mask)
        return self.mlp(torch.cat([self.encoder(images, t), t], dim=-1))

    def forward(self, images: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The goal [B, 3] in metres."""
        return self.normalized(images, tokens, mask) * self.goal_std + self.goal_mean


def _referent_head(config: ModelConfig, n_keypoints: int) -> nn.Module:
    """The referent pathway's localization head: keypoints, state and instruction -> environment_state."""
    return nn.Sequential(
        nn.Linear(n_keypoints + config.state_dim + config.text_dim, config.hidden_dim),
        nn.ReLU(),
        nn.Linear(config.hidden_dim, config.localization_dim),
    )


class NativeVLA(nn.Module):
    """Per-camera keypoint encoders + an MLP over keypoints, state and instruction -> a chunk of H actions.

    Images [B, n_cam, 3, H, W] (uint8 values, any dtype), text [B, text_dim], state [B, S] normalized.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.encoders = nn.ModuleList([KeypointEncoder(config) for _ in config.camera_names])
        width = config.hidden_dim
        n_keypoints = len(config.camera_names) * config.keypoints * 2
        n_in = n_keypoints + config.state_dim + config.text_dim
        if config.referent_input:
            n_in += config.localization_dim  # last, so that a checkpoint without them can be widened
        layers: list[nn.Module] = []
        for i in range(config.mlp_layers):
            layers += [nn.Linear(n_in if i == 0 else width, width), nn.ReLU()]
            if config.dropout > 0:
                layers.append(nn.Dropout(config.dropout))
        self.mlp = nn.Sequential(*layers)
        self.regression = nn.Linear(width, config.horizon * config.action_dim)
        self.localize: nn.Module | None = None
        if config.referent_input:
            # Where a held block is depends on the arm's pose, and which block is meant on the instruction.
            self.localize = _referent_head(config, n_keypoints)
        elif config.localization_dim:
            self.localize = nn.Linear(n_keypoints, config.localization_dim)
        self.bins = (
            nn.Linear(width, config.horizon * config.action_dim * config.n_bins)
            if config.discrete_head
            else None
        )
        if config.instruction_subspace:  # the identity until training sets the training instructions' span
            self.register_buffer("instruction_projection", torch.eye(config.text_dim))
        self.locator = GoalLocator(config) if config.locator_camera else None
        # The held pathway (held_referents): questions asked at an instruction's first frame, an actor on
        # the held answers; the instructions it serves are the questions' to say.
        self.questions = ReferentQuestions(config.text_dim) if config.held_referents else None
        self.held_actor = HeldActor(config) if config.held_referents else None
        # held_look: the look's own encoders and localization head (copies, fine-tuned on first frames).
        self.look_encoders = (
            nn.ModuleList([KeypointEncoder(config) for _ in config.camera_names])
            if config.held_look
            else None
        )
        self.look_localize = _referent_head(config, n_keypoints) if config.held_look else None
        if config.referent_input:  # 1 where the MLP reads a referent coordinate (referent_slots), else 0
            mask = torch.ones(config.localization_dim)
            if config.referent_slots == "goal":
                mask[: config.localization_dim // 2] = 0.0
            self.register_buffer("referent_mask", mask, persistent=False)

    def set_instruction_span(self, embeddings: torch.Tensor) -> int:
        """Project onto the span of these [N, text_dim] embeddings from now on; returns the span's rank."""
        _, singular, basis = torch.linalg.svd(embeddings.float(), full_matrices=False)
        rank = int((singular > singular[0] * 1e-4).sum())
        self.instruction_projection.copy_(basis[:rank].T @ basis[:rank])
        return rank

    def project_instruction(self, text: torch.Tensor) -> torch.Tensor:
        """The instruction embedding as the encoders and the MLP read it (onto the training span, if set)."""
        if not self.config.instruction_subspace:
            return text
        with torch.autocast(text.device.type, enabled=False):  # fp32: training sentences pass unchanged
            return F.normalize(text.float() @ self.instruction_projection, dim=-1)

    @torch.no_grad()
    def encode_keypoints(
        self, images: torch.Tensor, text: torch.Tensor, offsets: torch.Tensor | None = None
    ) -> torch.Tensor:
        """What frozen encoders give for [B, n_cam, 3, H, W] pixels and raw instruction embeddings: the clean
        view, or each camera's image shifted as in training by ``offsets`` [B, n_cam, 2] (see
        :func:`shift_images`). The cache of a frozen-encoder run (:mod:`vla_policy.keypoint_cache`)."""
        return self.keypoints(images, self.project_instruction(text), offsets=offsets)

    def keypoints(
        self,
        images: torch.Tensor,
        text: torch.Tensor,
        shift: bool | None = None,
        offsets: torch.Tensor | None = None,
        encoders: nn.ModuleList | None = None,
    ) -> torch.Tensor:
        """[B, n_cam * K * 2]: every camera's keypoint coordinates (what the localization probe reads);
        shifted by ``offsets`` when given, else randomly when ``shift`` is true (None: in training only).
        ``encoders``: other encoders of the same design (the held look's), else the model's."""
        shift = self.training if shift is None else shift
        per_camera = []
        for cam, encoder in enumerate(self.encoders if encoders is None else encoders):
            x = images[:, cam]
            if offsets is not None:
                x = shift_images(x.float(), self.config.shift_pixels, offsets[:, cam])
            elif shift:
                x = random_shift(x.float(), self.config.shift_pixels)
            per_camera.append(encoder(x, text))
        return torch.cat(per_camera, dim=-1)

    def perceive(
        self, images: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor, state: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The localization head's answers [B, 2, E] (normalized) to the instruction's two referent questions,
        the weight [B] of the second answer's target half in the goal, and the probability [B] that the held
        pathway acts (:class:`ReferentQuestions`; :meth:`VLANetwork.perceive` composes the referents)."""
        if self.questions is None:
            raise ValueError("this model has no referent questions (held_referents is false)")
        asked, logits = self.questions(tokens, mask)
        answers = torch.stack([self.look(images, asked[:, k], state, shift=False) for k in range(2)], dim=1)
        flags = logits.sigmoid()
        return answers, flags[:, 0], flags[:, 1]

    def look(
        self, images: torch.Tensor, question: torch.Tensor, state: torch.Tensor, shift: bool | None = None
    ) -> torch.Tensor:
        """The localization answer [B, E] (normalized) to a question embedding [B, text_dim] (unprojected):
        through the held look's own encoders and head where the model has them (``held_look``), else the
        MLP's. ``shift``: as :meth:`keypoints`."""
        text = self.project_instruction(question)
        keypoints = self.keypoints(images, text, shift=shift, encoders=self.look_encoders)  # None: the MLP's
        localize = self.localize if self.look_localize is None else self.look_localize
        return localize(torch.cat([keypoints, state, text], dim=-1))

    def forward(
        self,
        images: torch.Tensor | None,
        text: torch.Tensor,
        state: torch.Tensor,
        referents: torch.Tensor | None = None,
        *,
        keypoints: torch.Tensor | None = None,
        goal: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """``referents``: the normalized ground-truth environment_state [B, E], which the referent pathway
        reads in place of its estimate: in training with ``referent_noise`` added and, for
        ``referent_estimate_fraction`` of the samples, the estimate after all; at inference exactly (an oracle
        that says what the estimate's error costs, ``vla-eval --referents truth``). Ignored without the pathway.
        ``keypoints`` [B, n_cam * K * 2]: already encoded (training with frozen encoders caches them;
        :meth:`encode_keypoints`); ``images`` is then unused. ``goal`` [B, E/2]: the goal locator's estimate
        (normalized), which the referent pathway reads in place of the localization head's goal half."""
        b = state.shape[0]
        if self.config.state_dropout >= 1.0:
            state = torch.zeros_like(state)  # never trained with a state: the mean pose, always
        elif self.training and self.config.state_dropout > 0.0:
            keep = torch.rand(b, 1, device=state.device) >= self.config.state_dropout
            state = state * keep  # normalized 0 is the mean pose
        text = self.project_instruction(text)
        if self.training and self.config.instruction_noise > 0.0:
            noise = F.normalize(torch.randn_like(text), dim=-1) * self.config.instruction_noise
            text = F.normalize(text + noise, dim=-1)
        if keypoints is None:
            keypoints = self.keypoints(images, text)
        features = [keypoints, state, text]
        result = {}
        if self.config.referent_input:
            estimate = self.localize(torch.cat(features, dim=-1))
            result["environment_state"] = estimate
            if referents is None:
                read = estimate if goal is None else torch.cat([estimate[:, : goal.shape[1]], goal], dim=-1)
                features.append(read * self.referent_mask)
            elif self.training:
                noise = torch.randn_like(referents) * self.config.referent_noise
                given = referents.to(estimate.dtype) + noise
                own = torch.rand(b, 1, device=given.device) < self.config.referent_estimate_fraction
                features.append(torch.where(own, estimate.detach(), given) * self.referent_mask)
            else:  # the ground truth given at inference: the oracle run
                features.append(referents.to(estimate.dtype) * self.referent_mask)
        elif self.localize is not None:  # normalized environment_state, read straight off the keypoints
            result["environment_state"] = self.localize(keypoints)
        hidden = self.mlp(torch.cat(features, dim=-1))
        h, a = self.config.horizon, self.config.action_dim
        result["actions"] = self.regression(hidden).view(b, h, a)
        if self.bins is not None:
            result["logits"] = self.bins(hidden).view(b, h, a, self.config.n_bins)
        return result


class TextbookHead(nn.Module):
    """The seed chapters' VLAModel: mean-pooled image features ++ pooled instruction -> MLP -> one action."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.fusion = nn.Sequential(
            nn.Linear(config.image_channels + config.text_dim, config.fusion_dim),
            nn.ReLU(),
            nn.Linear(config.fusion_dim, config.fusion_dim // 2),
        )
        self.action_decoder = nn.Sequential(
            nn.Linear(config.fusion_dim // 2, config.hidden_dim),
            nn.ReLU(),
            nn.Linear(config.hidden_dim, config.action_dim),
        )

    def forward(
        self, features: torch.Tensor, text: torch.Tensor, state: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        del state  # the textbook model sees no proprioception
        pooled = features.mean(dim=(-1, -2)).mean(dim=1)  # spatial mean, then mean over cameras
        fused = self.fusion(torch.cat([pooled, text], dim=-1))
        return {"actions": self.action_decoder(fused)[:, None]}


class VLANetwork(nn.Module):
    """Either kind behind one interface; ``action_low``/``action_high`` bound the 256-bin tokenizer.

    The native VLA learns its image encoders end to end (it is fed pixels); the textbook baseline reads a
    frozen pretrained trunk, whose features training caches (``caches_features``).
    """

    def __init__(self, config: ModelConfig, load_pretrained: bool = True) -> None:
        super().__init__()
        self.config = config
        self.trunk: ImageTrunk | None = None
        self.head: nn.Module
        if config.kind is PolicyKind.NATIVE_VLA:
            self.head = NativeVLA(config)
        else:
            self.trunk = ImageTrunk(config, load_pretrained=load_pretrained)
            self.head = TextbookHead(config)
        self.register_buffer("action_low", torch.full((config.action_dim,), -3.0))
        self.register_buffer("action_high", torch.full((config.action_dim,), 3.0))
        if config.localization_dim:  # statistics of observation.environment_state, set by training
            self.register_buffer("environment_mean", torch.zeros(config.localization_dim))
            self.register_buffer("environment_std", torch.ones(config.localization_dim))

    def set_environment_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.environment_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.environment_std.copy_(torch.as_tensor(std, dtype=torch.float32).clamp(min=1e-3))

    def normalize_environment(self, environment_state: torch.Tensor) -> torch.Tensor:
        return (environment_state - self.environment_mean) / self.environment_std

    @property
    def caches_features(self) -> bool:
        return self.trunk is not None

    def set_action_bounds(self, low: torch.Tensor, high: torch.Tensor) -> None:
        self.action_low.copy_(torch.as_tensor(low, dtype=torch.float32))
        self.action_high.copy_(torch.as_tensor(high, dtype=torch.float32))

    @property
    def tokenizer(self) -> ActionTokenizer:
        return ActionTokenizer(self.action_low, self.action_high, self.config.n_bins)

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """[B, n_cam, 3, H, W] -> what the head reads: the frozen trunk's [B, n_cam, C, h, w], or the pixels."""
        if self.trunk is None:
            return images
        b, n_cam = images.shape[:2]
        return self.trunk(images.flatten(0, 1)).unflatten(0, (b, n_cam))

    def forward(
        self,
        images: torch.Tensor,
        text: torch.Tensor,
        state: torch.Tensor,
        environment_state: torch.Tensor | None = None,
        *,
        tokens: torch.Tensor | None = None,
        token_mask: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """``environment_state`` (dataset units): the ground truth the referent pathway reads in training.
        ``tokens`` [B, L, D] and ``token_mask`` [B, L]: the instruction's token embeddings
        (``InstructionEncoder.token_batch``), which a model with a goal locator needs at inference."""
        return self.head_forward(
            self.encode_images(images), text, state, environment_state, tokens=tokens, token_mask=token_mask
        )

    @property
    def locator(self) -> GoalLocator | None:
        return getattr(self.head, "locator", None)

    def locate_goal(
        self, images: torch.Tensor, tokens: torch.Tensor, token_mask: torch.Tensor
    ) -> torch.Tensor:
        """The goal locator's estimate [B, E/2] for [B, n_cam, 3, H, W] pixels, normalized as the referent
        pathway reads environment_state."""
        cam = self.config.camera_names.index(self.config.locator_camera)
        goal = self.locator(images[:, cam], tokens, token_mask)
        half = self.config.localization_dim // 2
        return (goal - self.environment_mean[half:]) / self.environment_std[half:]

    def perceive(
        self, images: torch.Tensor, tokens: torch.Tensor, token_mask: torch.Tensor, state: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A held-referent model's look, from pixels [B, n_cam, 3, H, W], the instruction's tokens and the
        normalized state: (the referents to hold [B, E] in dataset units (metres), whether the held pathway
        acts [B] bool). The target is the first answer's target half; the goal the second answer's goal half,
        or where the goal is a named block its target half (mixed by the questions' weight, in metres: the
        halves are normalized apart)."""
        answers, weight, held = self.head.perceive(self.encode_images(images), tokens, token_mask, state)
        metres = answers * self.environment_std + self.environment_mean
        half = self.config.localization_dim // 2
        w = weight[:, None]
        goal = w * metres[:, 1, :half] + (1 - w) * metres[:, 1, half:]
        return torch.cat([metres[:, 0, :half], goal], dim=-1), held > 0.5

    def head_forward(
        self,
        features: torch.Tensor,
        text: torch.Tensor,
        state: torch.Tensor,
        environment_state: torch.Tensor | None = None,
        keypoints_given: bool = False,
        *,
        tokens: torch.Tensor | None = None,
        token_mask: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """The head on encoded images (:meth:`encode_images`), as training calls it on cached features;
        ``keypoints_given``: ``features`` are the native VLA's cached keypoints (frozen encoders)."""
        referents = None
        if self.config.referent_input and environment_state is not None:
            referents = self.normalize_environment(environment_state)
        if keypoints_given:
            return self.head(None, text, state, referents, keypoints=features)
        if referents is not None:
            return self.head(features, text, state, referents)
        if self.locator is not None:
            if tokens is None or token_mask is None:
                raise ValueError("this model's goal locator needs the instruction's tokens and token_mask")
            return self.head(features, text, state, goal=self.locate_goal(features, tokens, token_mask))
        return self.head(features, text, state)

    def loss(
        self,
        outputs: dict[str, torch.Tensor],
        target: torch.Tensor,
        valid: torch.Tensor | None = None,
        environment_state: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Target [B, H, D] normalized; ``valid`` [B, H] masks steps past an episode's end (all valid if None).

        Native: L1 (+ weighted cross-entropy on bins, + the weighted localization L1 on the normalized
        ``environment_state`` [B, E] when the model has that head); baseline: MSE (its single step exists).
        """
        pred = outputs["actions"]
        if self.config.kind is PolicyKind.TEXTBOOK_BASELINE:
            loss = F.mse_loss(pred, target)
            return loss, {"mse": float(loss.detach())}
        weight = torch.ones(target.shape[:2], device=target.device) if valid is None else valid.float()
        count = weight.sum().clamp(min=1.0)
        l1 = ((pred - target).abs().mean(dim=-1) * weight).sum() / count
        parts = {"l1": float(l1.detach())}
        loss = l1
        if "logits" in outputs:
            tokens = self.tokenizer.encode(target)
            ce_each = F.cross_entropy(outputs["logits"].flatten(0, 2), tokens.flatten(), reduction="none")
            ce = (ce_each.view(target.shape).mean(dim=-1) * weight).sum() / count
            parts["bin_ce"] = float(ce.detach())
            loss = loss + self.config.discrete_loss_weight * ce
        if environment_state is not None and "environment_state" in outputs:
            located = (
                (outputs["environment_state"] - self.normalize_environment(environment_state)).abs().mean()
            )
            parts["localization"] = float(located.detach())
            loss = loss + self.config.localization_weight * located
        return loss, parts

    def decode_bins(self, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        if "logits" not in outputs:
            raise ValueError("this model has no discrete head (config.discrete_head is false)")
        return self.tokenizer.decode(outputs["logits"].argmax(dim=-1))
