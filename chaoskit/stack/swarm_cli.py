"""``chaoskit swarm``: extra Swarm nodes on this machine (add-node, remove-node, nodes).

A node added here belongs to no process (owner ``cli``): no run reaps it as an orphan,
it stays until ``chaoskit swarm remove-node NAME``.  Exit code 0: done; 2: bad input or
a refusal (one line naming it).  Cheap to import: the work is in
:mod:`chaoskit.stack.swarm_nodes`, imported when a command runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from chaoskit.errors import ChaosKitError

USAGE_EXIT = 2


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "swarm", help="extra Docker Swarm nodes on this machine (each a dockerd in its own "
        "network namespace)",
        description="Add, list and remove Swarm worker nodes on this machine: a dockerd "
        "of its own per node, in a network namespace of its own, joined to a manager's "
        "swarm.  Needs root.")  # fmt: skip
    sub = parser.add_subparsers(dest="swarm_command", metavar="ACTION")
    parser.set_defaults(func=lambda args: _help(parser))
    add = sub.add_parser("add-node", help="start a node and join it to a manager's swarm",
                         description="Start a node, copy images into it and join it to the "
                         "swarm of the manager's engine as a worker; it stays until "
                         "remove-node.")  # fmt: skip
    add.add_argument("--name", help="node name (default: node<N>)")
    add.add_argument("--engine", metavar="URL", help="the manager's engine (default: "
                     "$DOCKER_HOST or unix:///var/run/docker.sock)")  # fmt: skip
    add.add_argument("--image", metavar="IMG", nargs="+", action="extend", default=[],
                     help="images to copy from the manager's engine (nothing can be pulled)")
    add.set_defaults(func=_guarded(_add))
    remove = sub.add_parser("remove-node", help="stop a node and remove all of it",
                            description="Stop the node's engine, remove it from the swarm "
                            "it joined, and delete its namespace, veth and data.")  # fmt: skip
    remove.add_argument("name", metavar="NAME")
    remove.set_defaults(func=_guarded(_remove))
    nodes = sub.add_parser("nodes", help="list the nodes on this machine")
    nodes.set_defaults(func=_guarded(_nodes))


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return USAGE_EXIT


def _guarded(action: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """A chaoskit error is one line on stderr and exit code 2."""

    def run(args: argparse.Namespace) -> int:
        try:
            return action(args)
        except ChaosKitError as e:
            print(f"chaoskit: error: {e}", file=sys.stderr)
            return USAGE_EXIT

    return run


def _add(args: argparse.Namespace) -> int:
    from chaoskit.stack import swarm_nodes

    node = swarm_nodes.add_node(args.engine, args.name, images=args.image,
                                owner=swarm_nodes.CLI_OWNER)  # fmt: skip
    print(f"swarm node {node.name} added: {node.address}, engine {node.url}, swarm node id "
          f"{node.node_id}; remove it with `chaoskit swarm remove-node {node.name}`")  # fmt: skip
    return 0


def _remove(args: argparse.Namespace) -> int:
    from chaoskit.stack import swarm_nodes

    swarm_nodes.remove_node(args.name)
    print(f"swarm node {args.name} removed")
    return 0


def _nodes(args: argparse.Namespace) -> int:
    from chaoskit.stack import swarm_nodes

    nodes = swarm_nodes.list_nodes()
    if not nodes:
        print(f"no swarm nodes on this machine (records in {swarm_nodes.state_dir()})")
        return 0
    rows = [("NAME", "ADDRESS", "ENGINE", "SWARM NODE ID", "OWNER")]
    for node in nodes:
        engine = "running" if node.engine_alive() else "stopped"
        rows.append((node.name, node.address, engine, node.node_id or "-", node.owner))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0
