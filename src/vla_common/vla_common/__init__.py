"""vla_common: the bottom package. Shared contracts, each defined once; imports none of our other packages.

- :mod:`vla_common.manifest`: the embodiment manifest shipped with every dataset and model.
- :mod:`vla_common.features`: the dataset / observation feature keys (LeRobot's names).
- :mod:`vla_common.robots`: the robots' joint conventions (names and order).
- :mod:`vla_common.policy`: the ``Policy`` protocol and the ``ActionChunk`` every backend returns.
- :mod:`vla_common.atomic`: the one atomic file write.
- :mod:`vla_common.node`: ``run_node()`` and ``declare_parameters()`` for the nodes (rclpy imported lazily).
- :mod:`vla_common.testing`: where tests find the shared fixtures.

Pure Python at import time: no rclpy, no torch; numpy only in :mod:`vla_common.policy`.
"""
