"""The policy node's pure decisions: config validation, embodiment check, hold reasons, state order, timing."""

import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from vla_common.manifest import ActionType, CameraSpec, EmbodimentManifest, ManifestError
from vla_policy.node_core import (
    DEFAULT_OOD_DISTANCE_THRESHOLD,
    ChangeReporter,
    ControlTiming,
    DiagnosticLevel,
    HoldReason,
    InstructionCheck,
    InstructionGrounding,
    InstructionOODDetector,
    OODStatus,
    PolicyNodeConfig,
    StateIndex,
    aligned_similarity,
    cameras_from_lists,
    check_embodiment,
    diagnostic_summary,
    hold_reason,
    nearest_instruction,
    resolve_ood_threshold,
    training_instructions,
)

JOINTS = (*(f"panda_joint{i}" for i in range(1, 8)), "panda_finger_joint1")
ROBOT = ("panda_finger_joint2", *reversed(JOINTS))
CONFIG = PolicyNodeConfig(backend="remote")


def manifest(action_type=ActionType.ABSOLUTE_JOINT_POSITION, cameras=("front",)):
    return EmbodimentManifest(
        robot_type="panda",
        joint_names=JOINTS,
        action_names=JOINTS,
        action_type=action_type,
        fps=10.0,
        cameras=tuple(CameraSpec(c, 96, 96) for c in cameras),
    )


def test_matching_embodiment_passes():
    check_embodiment(manifest(), ROBOT, JOINTS, ["front", "wrist"])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"joint_state_names": ROBOT[:-1]}, "panda_joint1"),
        ({"limited_joints": JOINTS[:-1]}, "no limits"),
        ({"cameras": ["wrist"]}, "front"),
        ({"joint_state_names": (*ROBOT, "panda_joint1")}, "duplicate"),
    ],
)
def test_mismatches_are_refused(kwargs, match):
    args = {"joint_state_names": ROBOT, "limited_joints": JOINTS, "cameras": ["front"], **kwargs}
    with pytest.raises(ManifestError, match=match):
        check_embodiment(manifest(), **args)


@pytest.mark.parametrize("action_type", [ActionType.JOINT_DELTA, ActionType.EE_DELTA])
def test_non_absolute_actions_are_refused(action_type):
    with pytest.raises(ManifestError, match=action_type.value):
        check_embodiment(manifest(action_type), ROBOT, JOINTS, ["front"])


def test_state_index_reorders_and_refuses_nan():
    index = StateIndex(JOINTS)
    positions = [float(i) for i in range(len(ROBOT))]
    state = index(ROBOT, positions)
    assert state.dtype == np.float32
    np.testing.assert_array_equal(state, [float(ROBOT.index(j)) for j in JOINTS])
    with pytest.raises(ValueError, match="NaN"):
        index(ROBOT, [math.nan] * len(ROBOT))
    with pytest.raises(ValueError, match="lacks"):
        index(ROBOT[:-1], positions[:-1])
    with pytest.raises(ValueError, match="positions"):
        index(ROBOT, positions[:-1])


def fresh(**kw):
    args = {
        "started": True,
        "enabled": True,
        "instruction": "pick up the cube",
        "state_age_s": 0.01,
        "image_ages_s": {"front": 0.05},
        "config": CONFIG,
    }
    return hold_reason(**{**args, **kw})


@pytest.mark.parametrize(
    ("kw", "reason"),
    [
        ({}, HoldReason.NONE),
        ({"started": False}, HoldReason.STARTING),
        ({"enabled": False}, HoldReason.DISABLED),
        ({"instruction": "  "}, HoldReason.NO_INSTRUCTION),
        ({"state_age_s": None}, HoldReason.NO_STATE),
        ({"state_age_s": 1.0}, HoldReason.STALE_STATE),
        ({"state_age_s": -1.0}, HoldReason.STALE_STATE),  # stamped in the future: clocks disagree
        ({"image_ages_s": {"front": None}}, HoldReason.NO_IMAGE),
        ({"image_ages_s": {"front": 0.05, "wrist": 0.9}}, HoldReason.STALE_IMAGE),
    ],
)
def test_hold_reasons(kw, reason):
    assert fresh(**kw) is reason


@pytest.mark.parametrize(
    "kw",
    [
        {"backend": "native"},  # no checkpoint
        {"backend": "remote", "control_rate_hz": 0.5},
        {"backend": "remote", "heartbeat_rate_hz": 5.0},
        {"backend": "remote", "max_image_age_s": 0.0},
        {"backend": "remote", "cameras": ()},
        {"backend": "remote", "robot_profile": "", "urdf_path": ""},
        {"backend": "teleport"},
    ],
)
def test_bad_config_is_refused(kw):
    with pytest.raises(ValueError):
        PolicyNodeConfig(**kw)


def test_camera_lists_must_pair():
    assert cameras_from_lists(["front"], ["/cam"])[0].topic == "/cam"
    with pytest.raises(ValueError, match="camera"):
        cameras_from_lists(["front", "wrist"], ["/cam"])


def test_control_timing_rate_jitter_and_latency():
    timing = ControlTiming(0.02)
    now = 100.0
    for i in range(200):
        now += 0.02 + (0.004 if i % 50 == 0 else 0.0)
        chunk_stamp = 100.0 + 0.1 * (i // 10)  # a new chunk every 10 ticks
        timing.tick(now, published=True, chunk_stamp=chunk_stamp)
    assert timing.achieved_rate_hz == pytest.approx(1 / (0.02 + 3 * 0.004 / 199), rel=1e-9)
    assert timing.jitter_p99_s() == pytest.approx(0.004, abs=1e-9)
    assert len(timing.latencies) == 20  # one sample per chunk: its first command
    timing.tick(now + 0.02, published=False, chunk_stamp=None)
    assert timing.published == 200 and timing.ticks == 201


def test_yaml_declares_exactly_the_node_parameters():
    from vla_policy.policy_node import PARAMETERS

    data = yaml.safe_load((Path(__file__).parent.parent / "config" / "policy_node.yaml").read_text())
    params = data["policy_node"]["ros__parameters"]
    assert set(params) == set(PARAMETERS)
    for name, value in params.items():
        assert type(value) is type(PARAMETERS[name][0]), name


def test_change_reporter_rate_limits_but_never_ends_on_a_stale_value():
    log = ChangeReporter(1.0, HoldReason.STARTING)
    assert not log.update(HoldReason.STARTING, 0.0)  # no change
    assert log.update(HoldReason.NO_STATE, 0.1)
    assert not log.update(HoldReason.STALE_IMAGE, 0.5)  # too soon after the last report...
    assert not log.update(HoldReason.STALE_IMAGE, 1.0)
    assert log.update(HoldReason.STALE_IMAGE, 1.1)  # ...but reported once the interval has passed
    assert not log.update(HoldReason.STALE_IMAGE, 5.0)  # reported already
    assert log.update(HoldReason.NONE, 5.0)


# --- out-of-distribution instructions ---------------------------------------------------------------------


def test_nearest_instruction_is_one_minus_the_best_cosine_similarity():
    refs = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])  # not unit length: normalised inside
    assert nearest_instruction(np.array([3.0, 0.0, 0.0]), refs) == (pytest.approx(0.0), 0)
    assert nearest_instruction(np.array([0.0, 0.0, 1.0]), refs) == (pytest.approx(1.0), 0)
    assert nearest_instruction(np.array([-1.0, 0.0, 0.0]), refs[:1]) == (pytest.approx(2.0), 0)
    d, i = nearest_instruction(np.array([1.0, 1.0, 0.0]) + np.array([0.0, 0.1, 0.0]), refs)
    assert i == 1 and d == pytest.approx(1 - 1.1 / math.hypot(1.0, 1.1))
    assert nearest_instruction(np.zeros(3), refs) == (
        pytest.approx(1.0),
        0,
    )  # a zero vector resembles nothing


@pytest.mark.parametrize(
    ("query", "refs", "match"),
    [
        (np.ones(3), np.ones((2, 4)), "references"),
        (np.ones(3), np.ones((0, 3)), "references"),
        (np.array([1.0, math.nan, 0.0]), np.ones((2, 3)), "NaN"),
    ],
)
def test_nearest_instruction_refuses_bad_embeddings(query, refs, match):
    with pytest.raises(ValueError, match=match):
        nearest_instruction(query, refs)


def test_training_instructions_come_from_the_checkpoint_info():
    assert training_instructions({"seed": 0}) is None  # a checkpoint from before they were recorded
    assert training_instructions({"instructions": ["lift it", "", "grab it", "lift it"]}) == (
        "grab it",
        "lift it",
    )
    for bad in ("lift it", [1, 2], []):
        with pytest.raises(ValueError, match="instructions"):
            training_instructions({"instructions": bad})


def test_ood_threshold_parameter_then_checkpoint_then_default():
    info = {"ood_distance_threshold": 0.3}
    assert resolve_ood_threshold(0.2, info) == (0.2, "parameter ood_distance_threshold")
    assert resolve_ood_threshold(0.0, info)[0] == 0.0  # 0 is a threshold (only exact instructions pass)
    assert resolve_ood_threshold(-1.0, info) == (0.3, "checkpoint")
    assert resolve_ood_threshold(-1.0, {}) == (DEFAULT_OOD_DISTANCE_THRESHOLD, "default")
    for bad in (2.5, -0.1, "0.3", True):
        with pytest.raises(ValueError, match="ood_distance_threshold"):
            resolve_ood_threshold(-1.0, {"ood_distance_threshold": bad})


@pytest.mark.parametrize("value", [2.5, math.nan, math.inf])
def test_config_refuses_a_threshold_that_is_no_cosine_distance(value):
    with pytest.raises(ValueError, match="ood_distance_threshold"):
        PolicyNodeConfig(backend="remote", ood_distance_threshold=value)
    PolicyNodeConfig(backend="remote", ood_distance_threshold=2.0)  # never warns


# Fixed 3-d embeddings for FakeEncoder.
VECTORS = {
    "pick up the red block": (1.0, 0.0, 0.0),
    "push the red block left": (0.0, 1.0, 0.0),
    "lift the red cube": (0.96, 0.28, 0.0),  # cosine 0.96 with the first: distance 0.04
    "make me a coffee": (0.0, 0.0, 1.0),  # orthogonal to both: distance 1
}


class FakeEncoder:
    """VECTORS as embeddings; counts which texts were embedded."""

    def __init__(self):
        self.embedded = []

    def __call__(self, texts):
        self.embedded.extend(texts)
        return np.array([VECTORS[t] for t in texts])


def test_detector_flags_instructions_far_from_every_training_instruction():
    encoder = FakeEncoder()
    detector = InstructionOODDetector(("pick up the red block", "push the red block left"), encoder, 0.45)
    assert encoder.embedded == ["pick up the red block", "push the red block left"]

    same = detector.check("push the red block left")
    assert same.status is OODStatus.IN_DISTRIBUTION and same.distance == pytest.approx(0.0)
    near = detector.check("lift the red cube")
    assert near.status is OODStatus.IN_DISTRIBUTION and not near.ood
    assert near.distance == pytest.approx(0.04) and near.nearest == "pick up the red block"
    far = detector.check("make me a coffee")
    assert far.ood and far.distance == pytest.approx(1.0) and far.threshold == 0.45
    assert detector.check("") == InstructionCheck("", OODStatus.IDLE, threshold=0.45)

    n = len(encoder.embedded)
    assert detector.check("make me a coffee") is far  # cached: embedded once per instruction
    assert len(encoder.embedded) == n
    assert not InstructionOODDetector(["pick up the red block"], encoder, 2.0).check("make me a coffee").ood


def test_detector_refuses_bad_setups():
    with pytest.raises(ValueError, match="no training instructions"):
        InstructionOODDetector((), FakeEncoder(), 0.45)
    with pytest.raises(ValueError, match="threshold"):
        InstructionOODDetector(("pick up the red block",), FakeEncoder(), -0.1)
    with pytest.raises(ValueError, match="embeddings"):
        InstructionOODDetector(("pick up the red block",), lambda texts: np.ones((2, 3)), 0.45)


def test_detector_with_the_tiny_models_hashed_text_encoder():
    """The wiring policy_node uses: the model's own InstructionEncoder (hashed bag of words in tiny models)."""
    from vla_policy.models.config import ModelConfig, TextEncoderKind
    from vla_policy.models.encoders import InstructionEncoder

    config = ModelConfig(
        kind="native_vla", camera_names=("front",), state_dim=8, action_dim=8,
        text_encoder=TextEncoderKind.HASHED_BOW, text_dim=32,
    )  # fmt: skip
    encoder = InstructionEncoder(config)
    trained = ("push the red block left", "push the blue block right")
    detector = InstructionOODDetector(trained, lambda texts: encoder(list(texts)).numpy(), 0.45)
    assert detector.check("push the blue block right").distance == pytest.approx(0.0, abs=1e-6)
    assert not detector.check("push the red block right").ood  # one word from a training instruction
    coffee = detector.check("make me a coffee")
    assert coffee.ood and coffee.distance > 0.6


def test_instruction_check_diagnostic_values_and_log_line():
    ood = InstructionCheck("dance", OODStatus.OUT_OF_DISTRIBUTION, 0.8123, 0.45, "pick up the red block")
    assert ood.diagnostic_values() == {
        "instruction_ood": "true",
        "instruction_check": "out of distribution",
        "instruction_distance": "0.812",
        "ood_threshold": "0.450",
        "nearest_training_instruction": "pick up the red block",
        "model_instruction": "dance",
    }
    assert "'dance' is out of distribution" in ood.log_line() and "0.812" in ood.log_line()
    assert "commanding anyway, expect the model to do something other than asked" in ood.log_line()
    ok = InstructionCheck("lift it", OODStatus.IN_DISTRIBUTION, 0.1, 0.45, "lift the red block")
    assert ok.diagnostic_values()["instruction_ood"] == "false"
    assert ok.diagnostic_values()["instruction_distance"] == "0.100"
    unchecked = InstructionCheck("lift it", OODStatus.UNCHECKED, reason="the remote backend")
    values = unchecked.diagnostic_values()
    assert (
        values["instruction_ood"] == "unknown"
        and values["instruction_check"] == "unchecked: the remote backend"
    )
    assert values["instruction_distance"] == "nan" and values["ood_threshold"] == "nan"
    pending = InstructionCheck("lift it", OODStatus.PENDING).diagnostic_values()
    assert pending["instruction_ood"] == "unknown" and pending["model_instruction"] == "unknown"


def test_detector_of_a_model_acting_on_a_grounded_training_instruction_says_so():
    """With instruction_nearest the model is given the training sentence its grounding maps to: the verdicts
    name it as the model's instruction, in or out of distribution, and the log says the robot is commanded
    as that sentence."""
    encoder = FakeEncoder()
    trained = ("pick up the red block", "push the red block left")
    grounded = {"lift the red cube": "pick up the red block", "make me a coffee": "push the red block left"}
    detector = InstructionOODDetector(trained, encoder, 0.45, grounding=grounded.__getitem__)
    assert encoder.embedded == list(trained)  # one at a time, in order
    near = detector.check("lift the red cube")
    assert near.diagnostic_values()["model_instruction"] == "pick up the red block"
    assert near.log_line().endswith("; the model acts on the training instruction 'pick up the red block'")
    far = detector.check("make me a coffee")
    assert far.ood and far.diagnostic_values()["model_instruction"] == "push the red block left"
    assert "commanding anyway, as 'push the red block left'" in far.log_line()
    plain = InstructionOODDetector(trained, encoder, 0.45).check("lift the red cube")
    assert plain.diagnostic_values()["model_instruction"] == "lift the red cube"
    assert "acts on" not in plain.log_line()


def unit_rows(*rows):
    x = np.array(rows, dtype=np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_aligned_similarity_is_an_ordered_soft_match_of_tokens():
    a, b, c, d = np.eye(4)
    assert aligned_similarity(unit_rows(a, b, c), unit_rows(a, b, c)) == pytest.approx(1.0)
    # Order counts: the reversed sentence aligns one token, not three.
    assert aligned_similarity(unit_rows(a, b, c), unit_rows(c, b, a)) == pytest.approx(1 / 3)
    # A word only one side has costs its share: recall 1, precision 3/4.
    assert aligned_similarity(unit_rows(a, b, c), unit_rows(a, d, b, c)) == pytest.approx(2 * 0.75 / 1.75)
    # Partial similarities add; negative ones count nothing.
    half = unit_rows(a + b)[0]
    assert aligned_similarity(unit_rows(a), unit_rows(half)) == pytest.approx(np.sqrt(0.5))
    assert aligned_similarity(unit_rows(a), unit_rows(-a)) == 0.0
    assert aligned_similarity(np.zeros((0, 4)), unit_rows(a)) == 0.0
    with pytest.raises(ValueError, match=r"\[n, d\]"):
        aligned_similarity(unit_rows(a), np.ones((2, 3)))


def test_grounding_maps_paraphrases_by_their_words_in_order_and_training_sentences_to_themselves():
    words = {
        w: v
        for w, v in zip(
            ["put", "red", "on", "blue", "the", "cube", "block", "please"], np.eye(8), strict=True
        )
    }
    calls = []

    def tokens(text):
        calls.append(text)
        return unit_rows(*(words[w] for w in text.split()))

    trained = ("put the red block on the blue block", "put the blue block on the red block")
    grounding = InstructionGrounding(trained, tokens)
    assert grounding("please put the red cube on the blue cube") == trained[0]
    assert grounding("please put the blue cube on the red cube") == trained[1]  # the order of the colours
    assert grounding(trained[1]) == trained[1]
    n = len(calls)
    assert grounding("please put the red cube on the blue cube") == trained[0] and len(calls) == n  # cached
    with pytest.raises(ValueError, match="no training instructions"):
        InstructionGrounding((), tokens)


OOD = InstructionCheck("dance", OODStatus.OUT_OF_DISTRIBUTION, 0.81, 0.45, "pick up the red block")
IN = InstructionCheck("lift it", OODStatus.IN_DISTRIBUTION, 0.1, 0.45, "lift the red block")
OOD_TEXT = "instruction is out of distribution (distance 0.81 > 0.45 to 'pick up the red block')"


@pytest.mark.parametrize(
    ("hold", "refusing", "check", "level", "message"),
    [
        (HoldReason.NONE, False, IN, DiagnosticLevel.OK, "commanding"),
        (HoldReason.NONE, False, InstructionCheck("x", OODStatus.PENDING), DiagnosticLevel.OK, "commanding"),
        (HoldReason.NONE, False, OOD, DiagnosticLevel.WARN, f"commanding, but the {OOD_TEXT}"),
        (
            HoldReason.NONE, True, OOD, DiagnosticLevel.WARN,
            f"commanding, but the safety monitor drops the commands: ESTOP; {OOD_TEXT}",
        ),
        (HoldReason.NONE, True, IN, DiagnosticLevel.WARN, "commanding, but the safety monitor drops the commands: ESTOP"),
        (HoldReason.DISABLED, False, IN, DiagnosticLevel.OK, "holding: disabled via ~/enable"),
        (HoldReason.DISABLED, False, OOD, DiagnosticLevel.WARN, f"holding: disabled via ~/enable; {OOD_TEXT}"),
        (HoldReason.NO_INSTRUCTION, False, InstructionCheck("", OODStatus.IDLE), DiagnosticLevel.OK,
         "holding: no instruction (empty /task_instruction)"),
        (HoldReason.STALE_IMAGE, False, OOD, DiagnosticLevel.WARN, f"holding: camera frames are stale; {OOD_TEXT}"),
    ],
)  # fmt: skip
def test_diagnostic_summary_warns_while_the_instruction_is_out_of_distribution(
    hold, refusing, check, level, message
):
    assert diagnostic_summary(hold, refusing, "ESTOP", check) == (level, message)
