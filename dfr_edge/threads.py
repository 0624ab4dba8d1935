"""How many CPU threads a command uses: `--threads N`, or a default that stays fast on a busy machine.

Torch and ONNX Runtime default to one thread per core and make every thread meet at the end of
each operation. When other processes occupy some of the cores (a camera box running its line, a
shared build machine), each operation waits for a thread the scheduler has put aside, and a job
can run several times slower than with fewer threads (measured: benchmarks/threads_under_load.py).
So the default counts only the cores that are free right now.
"""

from __future__ import annotations

import os


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, e.g. a container's cpuset)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def default_threads() -> int:
    """Usable cores minus the ones other processes keep busy (1-minute load average), at least 1."""
    cores = usable_cores()
    try:
        busy = os.getloadavg()[0]
    except (AttributeError, OSError):  # no load average on this system: assume an idle machine
        busy = 0.0
    return max(1, min(cores, round(cores - busy)))


def use_torch_threads(threads: int | None) -> int:
    """Set torch's intra-op threads (the default when None); returns the number used."""
    import torch

    threads = threads or default_threads()
    torch.set_num_threads(threads)
    return threads
