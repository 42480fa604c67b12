"""Data-parallel training over several processes, launched the torchrun way.

``scaling train ... --ddp N`` calls :func:`launch`, which runs the same command (less
``--ddp``) under ``torch.distributed.run --standalone`` with N processes. Each process
finds torchrun's environment (:func:`is_distributed`), joins the process group
(:func:`init`: NCCL with one GPU per process, ``cuda:LOCAL_RANK``; gloo on the CPU) and
calls :func:`scaling.train.train`, which wraps the network in DistributedDataParallel
whenever a process group of more than one process is up. Started by hand, the same
works too: ``torchrun --standalone --nproc_per_node 4 -m scaling.cli train ...``.

Outside a process group every helper here is a no-op for one process (rank 0 of 1).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import torch
import torch.distributed as dist

_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


def is_distributed() -> bool:
    """Whether this process was started by torchrun (RANK, WORLD_SIZE and LOCAL_RANK set)."""
    return all(k in os.environ for k in _ENV)


def initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if initialized() else 1


def backend() -> str:
    """The process group's backend (nccl or gloo); empty outside one."""
    return str(dist.get_backend()) if initialized() else ""


def init(device_kind: str | torch.device = "cpu", timeout_s: float | None = None) -> tuple[int, int, int, torch.device]:
    """Join the process group torchrun's environment describes.

    Args:
        device_kind: ``cuda`` (one GPU per process, ``cuda:LOCAL_RANK``, NCCL) or ``cpu``
            (gloo). A ``torch.device`` counts by its type.
        timeout_s: how long a collective may wait for the other processes (torch's
            default where None).

    Returns:
        ``(rank, world_size, local_rank, device)``. Called again, returns the same
        without joining twice.
    """
    kind = torch.device(device_kind).type
    if kind not in ("cpu", "cuda"):
        raise ValueError(f"device must be cpu or cuda, got {device_kind!r}")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if kind == "cuda":
        n = torch.cuda.device_count()
        if local >= n:
            raise ValueError(f"process {local} on this machine needs cuda:{local}, but {n} GPU"
                             f"{'s are' if n != 1 else ' is'} visible")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if not initialized():
        kw = {}
        if timeout_s is not None:
            import datetime

            kw["timeout"] = datetime.timedelta(seconds=timeout_s)
        dist.init_process_group("nccl" if kind == "cuda" else "gloo", **kw)
    return dist.get_rank(), dist.get_world_size(), local, device


def barrier() -> None:
    """Wait for every process (nothing outside a process group)."""
    if world_size() > 1:
        if dist.get_backend() == "nccl":
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all processes, in place; returns it (unchanged for one process)."""
    if world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_object(obj, src: int = 0):
    """Process ``src``'s ``obj`` on every process (any picklable object)."""
    if world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def shutdown() -> None:
    """Leave the process group, if one is up."""
    if initialized():
        dist.destroy_process_group()


def command(argv: list[str], nproc: int) -> list[str]:
    """The torchrun command line :func:`launch` runs."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
            "-m", "scaling.cli", *argv]


def launch(argv: list[str], nproc: int, env: dict[str, str] | None = None) -> int:
    """Run ``scaling <argv>`` in ``nproc`` processes under torchrun; return its exit code.

    SIGINT and SIGTERM sent to this process are passed on to torchrun once, which stops
    its workers. torchrun runs in a session of its own, so that Ctrl+C in a terminal
    reaches it through this process only (not twice). Without OMP_NUM_THREADS set, each
    process gets an equal share of the CPU cores (torchrun would set 1 and say so).

    Returns:
        torchrun's exit code (non-zero where any process failed); 128 + the signal's
        number where it ended by a signal, or a signal sent here stopped it.
    """
    if nproc < 1:
        raise ValueError(f"nproc must be at least 1, got {nproc}")
    env = dict(os.environ if env is None else env)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    for k in (*_ENV, "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "GROUP_RANK", "ROLE_RANK"):
        env.pop(k, None)  # a launch from inside a torchrun process starts a group of its own
    got: list[int] = []
    proc: subprocess.Popen | None = None

    def forward(signum, frame):
        got.append(signum)
        if proc is not None and proc.poll() is None:
            proc.send_signal(signum)

    old = {}
    try:
        for s in (signal.SIGINT, signal.SIGTERM):
            old[s] = signal.signal(s, forward)
    except ValueError:  # not the main thread: signals are not ours to handle
        pass
    try:
        proc = subprocess.Popen(command(argv, nproc), env=env, start_new_session=True)
        if got:  # a signal came before torchrun did
            proc.send_signal(got[0])
        rc = proc.wait()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if proc is not None and proc.poll() is None:  # going down for another reason: take torchrun along
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    if got:  # stopped on request: say so as the shell would (130 for Ctrl+C), not as torchrun's failure
        return 128 + got[0]
    return 128 - rc if rc < 0 else rc
