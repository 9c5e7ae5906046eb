"""collector_node's topic parameters are relative names, expanded in the node's namespace: the default graph
records exactly the absolute names it always did, and ``-r __ns:=/arm2`` records the second arm's topics."""

import pytest

rclpy = pytest.importorskip("rclpy")

from vla_collector.collector_node import PARAMETERS, expand_topic_parameters  # noqa: E402

DEFAULTS = {name: default for name, (default, _) in PARAMETERS.items()}


@pytest.mark.parametrize(
    ("namespace", "prefix"),
    [("", ""), ("/arm2", "/arm2")],
)
def test_topic_parameters_are_expanded_in_the_nodes_namespace(namespace, prefix):
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        args = ["--ros-args", "-r", f"__ns:={namespace}"] if namespace else None
        node = rclpy.create_node("collector_node", context=context, cli_args=args)
        try:
            p = expand_topic_parameters({**DEFAULTS, "instruction_topic": ""}, node.resolve_topic_name)
        finally:
            node.destroy_node()
    finally:
        rclpy.shutdown(context=context)
    assert p["state_topic"] == f"{prefix}/joint_states"
    assert p["action_topic"] == f"{prefix}/joint_commands"
    assert p["camera_topics"] == [f"{prefix}/camera/image_raw"]
    assert p["object_poses_topic"] == f"{prefix}/sim/object_poses"
    assert p["scene_topic"] == f"{prefix}/sim/scene"
    assert p["instruction_topic"] == ""  # empty: not recorded, stays empty
