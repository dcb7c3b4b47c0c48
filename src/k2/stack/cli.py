"""`k2 stack`: start, inspect and stop the local services (all on 127.0.0.1).

k2 stack up [--services kafka,registry,catalog] [--dir DIR]   # prints DIR/stack.json
k2 stack status [--json] [--dir DIR]
k2 stack down [--purge] [--dir DIR]
k2 stack prepare [--services ...]                             # fetch/build only
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from k2.stack import services


def _names(value: str) -> list[str]:
    names = [n.strip() for n in value.split(",") if n.strip()]
    unknown = [n for n in names if n not in services.SERVICES]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown service(s) {', '.join(unknown)}; choose from {', '.join(services.SERVICES)}"
        )
    return names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="stack_command", metavar="ACTION", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--dir", type=Path, default=None, help="stack directory (default: <data dir>/stack)"
    )
    with_services = argparse.ArgumentParser(add_help=False)
    with_services.add_argument(
        "--services",
        type=_names,
        default=list(services.DEFAULT_SERVICES),
        help=f"comma-separated (default: {','.join(services.DEFAULT_SERVICES)}; "
        f"known: {','.join(services.SERVICES)})",
    )
    sub.add_parser(
        "up",
        parents=[common, with_services],
        help="start the services (reusing healthy ones), print their endpoints as JSON",
    )
    status = sub.add_parser("status", parents=[common], help="health, endpoints and pids")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    down = sub.add_parser("down", parents=[common], help="stop every service of the stack")
    down.add_argument("--purge", action="store_true", help="also delete their data and logs")
    sub.add_parser(
        "prepare",
        parents=[with_services],
        help="fetch/build what the services need (cached), start nothing",
    )


def run(args: argparse.Namespace) -> int:
    from k2.stack.stack import Stack, StackError

    stack = Stack(getattr(args, "dir", None))
    action = args.stack_command
    if action == "prepare":
        stack.prepare(args.services)
        return 0
    if action == "up":
        try:
            endpoints = stack.up(args.services)
        except StackError as exc:
            print(f"k2 stack up: {exc}", file=sys.stderr)
            return 1
        print(json.dumps(stack.endpoints(), indent=2, sort_keys=True))
        names = ", ".join(endpoints)
        print(f"k2: {names} up; endpoints in {stack.state_file}", file=sys.stderr)
        return 0
    if action == "status":
        status = stack.status()
        if args.json:
            print(json.dumps(status, indent=2, sort_keys=True))
        elif not status:
            print(f"no services in {stack.dir}")
        else:
            for name, info in status.items():
                health = "healthy" if info["healthy"] else "NOT healthy"
                pids = " ".join(
                    f"{p}={i['pid']}{'' if i['alive'] else '(dead)'}"
                    for p, i in info["pids"].items()
                )
                print(f"{name:9} {health:12} {json.dumps(info['endpoints'])}  pids: {pids or '-'}")
        return 0 if all(i["healthy"] for i in status.values()) else 1
    if action == "down":
        stopped = stack.down(purge=args.purge)
        print(f"k2: stopped {', '.join(stopped) or 'nothing'}", file=sys.stderr)
        return 0
    raise AssertionError(action)
