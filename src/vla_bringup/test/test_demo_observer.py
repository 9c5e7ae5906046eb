"""vla-demo's observer node: a module-level class now; it still watches and calls the default graph's names."""

from __future__ import annotations

import pytest

rclpy = pytest.importorskip("rclpy")


def test_the_observer_uses_the_default_graphs_topics_and_services():
    from vla_bringup.demo_observer import DemoObserver

    rclpy.init()
    try:
        node = DemoObserver()
        try:
            assert node.get_name() == "vla_demo"
            assert {s.topic_name for s in node.subscriptions} == {
                "/clock",
                "/sim/success",
                "/joint_commands",
                "/policy/joint_commands",
                "/safety/state",
                "/policy/heartbeat",
                "/joint_states",
            }
            assert {c.srv_name for c in node.clients} == {
                "/sim_node/set_parameters",
                "/sim_node/reset",
                "/safety/reset",
                "/policy_node/enable",
                "/collector_node/start",
                "/collector_node/stop",
            }
        finally:
            node.destroy_node()
    finally:
        rclpy.try_shutdown()
