"""The embodiment manifest: validation, round trip, tamper detection and the deployment checks."""

import json

import pytest
from vla_common.manifest import ActionType, CameraSpec, EmbodimentManifest, ManifestError

PANDA = (*(f"panda_joint{i}" for i in range(1, 8)), "panda_finger_joint1")


def make(**overrides):
    fields = dict(
        robot_type="panda",
        joint_names=PANDA,
        action_names=PANDA,
        action_type=ActionType.ABSOLUTE_JOINT_POSITION,
        fps=10.0,
        cameras=(CameraSpec("front", 96, 96),),
        joint_units=("rad",) * 7 + ("m",),
        normalization={"action": {"mean": [0.0] * 8, "std": [1.0] * 8}},
    )
    fields.update(overrides)
    return EmbodimentManifest(**fields)


def test_round_trip_through_a_dataset_root(tmp_path):
    m = make()
    m.save(tmp_path / "meta" / "embodiment.json")
    loaded = EmbodimentManifest.load(tmp_path)
    assert loaded == m
    assert loaded.normalization_hash == m.normalization_hash != ""
    assert not list((tmp_path / "meta").glob(".*tmp")), "atomic save left its temp file behind"


def test_edited_statistics_are_detected(tmp_path):
    path = make().save(tmp_path / "embodiment.json")
    data = json.loads(path.read_text())
    data["normalization"]["action"]["std"][0] = 2.0
    path.write_text(json.dumps(data))
    with pytest.raises(ManifestError, match="hash"):
        EmbodimentManifest.load(tmp_path)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"joint_names": ("a", "a")}, "duplicates"),
        ({"action_names": ()}, "empty"),
        ({"fps": float("nan")}, "fps"),
        ({"fps": 0.0}, "fps"),
        ({"joint_units": ("rad",)}, "joint_units"),
        ({"robot_type": ""}, "robot_type"),
        ({"cameras": (CameraSpec("front", 1, 1), CameraSpec("front", 2, 2))}, "unique"),
    ],
)
def test_malformed_manifests_are_refused(overrides, message):
    with pytest.raises(ManifestError, match=message):
        make(**overrides)


def test_bad_camera_and_unknown_fields_are_refused():
    with pytest.raises(ManifestError):
        CameraSpec("front.left", 10, 10)
    with pytest.raises(ManifestError, match="unknown"):
        EmbodimentManifest.from_dict({**make().to_dict(), "unnorm_key": "bridge"})
    with pytest.raises(ManifestError, match="robot_type"):
        EmbodimentManifest.from_dict({k: v for k, v in make().to_dict().items() if k != "robot_type"})


def test_deployment_checks_name_what_is_missing():
    m = make()
    m.check_joint_state([*PANDA, "panda_finger_joint2"])
    with pytest.raises(ManifestError, match="panda_joint7"):
        m.check_joint_state(PANDA[:6])
    m.check_joints_limited(PANDA)
    with pytest.raises(ManifestError, match="panda_finger_joint1"):
        m.check_joints_limited(PANDA[:7])
    with pytest.raises(ManifestError, match="cannot be sent"):
        make(action_type=ActionType.EE_DELTA).check_joints_limited(PANDA)
    m.check_cameras(["front", "wrist"])
    with pytest.raises(ManifestError, match="front"):
        m.check_cameras(["wrist"])


def test_mismatches_between_model_and_dataset():
    assert make().mismatches(make()) == []
    problems = make().mismatches(make(joint_names=tuple(reversed(PANDA)), fps=20.0, cameras=()))
    assert any("joint order" in p for p in problems)
    assert any("fps" in p for p in problems)
    assert any("cameras" in p for p in problems)
