"""The node ``main()``: one owner of rclpy init, spin, clean shutdown and exit codes; one parameter loop.

rclpy is imported inside the functions, so importing this module (or any of vla_common) never loads ROS.

Signals: ``rclpy.init`` installs rclpy's handlers for SIGINT and SIGTERM, which shut the context down; the
executor then stops (``ExternalShutdownException``, or a ``KeyboardInterrupt`` where Python saw the SIGINT
first) and :func:`run_node` destroys the node and exits 0. A ``launch`` stop, ``vla-up`` and Ctrl-C all
end a node this way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from rclpy.node import Node
    from rclpy.task import Future

EXIT_OK = 0
EXIT_REFUSED = 2  # the configuration or the embodiment is refused: the node did not start (or stopped itself)


N = TypeVar("N", bound="Node")


def run_node(
    make_node: Callable[[], N],
    name: str,
    args: list[str] | None = None,
    *,
    refuse_on: tuple[type[BaseException], ...] = (ValueError,),
    refused_exit_code: int = EXIT_REFUSED,
    until: Callable[[N], Future] | None = None,
    before_destroy: Callable[[N], None] | None = None,
) -> int:
    """Init rclpy, build the node, spin it until shutdown, clean up; return the process exit code.

    ``refuse_on``: exceptions the node's constructor raises for a configuration it refuses (logged as fatal,
    exit ``refused_exit_code``). ``until``: a future the node completes with a reason when it must stop by
    itself (logged as fatal, exit ``refused_exit_code``); without it the node spins until shutdown.
    ``before_destroy``: stops the node's own threads before ``destroy_node``.
    """
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    from rclpy.utilities import ok as rclpy_ok
    from rclpy.utilities import try_shutdown

    rclpy.init(args=args)
    node: N | None = None
    code = EXIT_OK
    try:
        try:
            node = make_node()
        except refuse_on as error:
            rclpy.logging.get_logger(name).fatal(f"refusing to start: {type(error).__name__}: {error}")  # type: ignore[no-untyped-call]
            return refused_exit_code
        # Single-threaded: the nodes keep their heavy work in their own threads, and rclpy's multi-threaded
        # executor costs more per callback than these nodes can spare (vla_collector's collector_node).
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        if until is None:
            executor.spin()
        else:
            stop = until(node)
            executor.spin_until_future_complete(stop)
            if stop.done():  # type: ignore[no-untyped-call]
                node.get_logger().fatal(str(stop.result()))  # type: ignore[no-untyped-call]
                code = refused_exit_code
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except RuntimeError:
        # A SIGINT can shut the context down while the executor is mid-wait; rclpy then raises from its
        # bindings (e.g. "Unable to convert call argument '0' to Python object"). Once rclpy is no longer ok
        # that is a clean stop, not a failure; any other RuntimeError is real and propagates.
        if node is None or rclpy_ok():
            raise
    finally:
        if node is not None:
            if before_destroy is not None:
                before_destroy(node)
            node.destroy_node()  # type: ignore[no-untyped-call]
        try_shutdown()
    return code


def declare_parameters(
    node: Any,
    parameters: Mapping[str, tuple[Any, str]],
    *,
    read_only: bool = False,
    floats_take_ints: bool = False,
) -> dict[str, Any]:
    """Declare every ``name -> (default, description)`` with a descriptor; return the values it starts with.

    ``read_only``: ``ros2 param set`` is refused rather than silently ignored (for values read once at start).
    ``floats_take_ints``: a float parameter also accepts an integer (``-p fps:=15``).
    """
    from rcl_interfaces.msg import ParameterDescriptor  # type: ignore[import-untyped]

    for name, (default, description) in parameters.items():
        descriptor = ParameterDescriptor(
            description=description,
            read_only=read_only,
            dynamic_typing=floats_take_ints and isinstance(default, float),
        )
        node.declare_parameter(name, default, descriptor)
    return {name: node.get_parameter(name).value for name in parameters}
