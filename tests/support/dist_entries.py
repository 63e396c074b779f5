"""Helper-rank entry points for the tests of `flashbeam.model.engine.ranks` (importable by name from
spawned processes: tests/conftest.py puts this folder on sys.path)."""

import os
import time

import torch
import torch.distributed as dist

from flashbeam.model.engine.ranks import STOP


def echo(group, payload):
    """Answer each command by all-reducing (rank + 1) * command; stop on STOP."""
    while True:
        command = group.receive()
        if command == STOP:
            return
        if command == "exit":
            os._exit(3)
        if command == "hang":
            time.sleep(3600)
        dist.all_reduce(torch.tensor([float(command * (group.rank + 1))]))


def report_pid(group, path):
    """Write this helper's pid to `path`, then serve commands like `echo`."""
    # Written whole, then renamed: a reader never sees the file half written.
    with open(f"{path}.{group.rank}.partial", "w") as f:
        f.write(str(os.getpid()))
    os.replace(f"{path}.{group.rank}.partial", f"{path}.{group.rank}")
    echo(group, None)
