"""``ppl-models train ... --nproc N``: N data-parallel processes on this machine, without ``torchrun``.

The launcher starts ``python -m ppl_models`` N times with the variables
``torchrun`` would set (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``,
``MASTER_ADDR``/``MASTER_PORT`` on the loopback, and ``OMP_NUM_THREADS`` = the
cores shared out, unless set), waits for them, and answers for them: exit 0
when all finish; otherwise the first failure's status, after the others have
had a short grace period to stop by themselves (a rank that loses a peer stops
with its own one-line error) and are then terminated. Across machines, use
``torchrun`` with its rendezvous flags: the same command, minus ``--nproc``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

__all__ = ["run_ranks", "without_nproc"]

#: seconds the other ranks get to stop by themselves after one has failed
GRACE_S = 20.0


def without_nproc(argv: list) -> list:
    """``argv`` without ``--nproc N`` / ``--nproc=N`` (the children are ranks, not launchers)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(nproc: int, argv: list) -> int:
    """Run ``python -m ppl_models *argv`` as ``nproc`` ranks on this machine; their exit status."""
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), WORLD_SIZE=str(nproc),
               LOCAL_WORLD_SIZE=str(nproc))
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    procs = [subprocess.Popen([sys.executable, "-m", "ppl_models", *without_nproc(argv)],
                              env=dict(env, RANK=str(r), LOCAL_RANK=str(r))) for r in range(nproc)]
    failed, failed_at = None, None
    try:
        while any(p.poll() is None for p in procs):
            if failed is None:
                failed = next((r for r, p in enumerate(procs) if p.returncode not in (None, 0)), None)
                failed_at = time.monotonic() if failed is not None else None
            elif time.monotonic() - failed_at > GRACE_S:
                for p in procs:
                    if p.poll() is None:
                        p.terminate()
            time.sleep(0.05)
    except KeyboardInterrupt:  # the ranks got the same SIGINT: let them say so and stop
        for p in procs:
            try:
                p.wait(GRACE_S)
            except subprocess.TimeoutExpired:
                p.kill()
        return 130
    codes = [p.returncode for p in procs]
    if failed is None:
        failed = next((r for r, c in enumerate(codes) if c != 0), None)
    if failed is None:
        return 0
    code = codes[failed]
    if code < 0:  # killed by a signal: nobody printed anything about it
        name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
        print(f"ppl-models: error: rank {failed} of {nproc} was killed ({name}); run the same command again to "
              "resume from the last finished epoch", file=sys.stderr)
        return 1
    return code
