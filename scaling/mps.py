"""Several trials on one GPU: NVIDIA's Multi-Process Service (MPS), a daemon of the search's own.

Small proxy networks leave most of an H200 idle, and without MPS the kernels of several
processes on one GPU only take turns (time-slicing). Under an MPS control daemon the
processes' kernels run side by side. :func:`shared_gpu` gives the environment that the
search's workers need to join a daemon:

- a daemon the user already runs (its pipe folder in ``CUDA_MPS_PIPE_DIRECTORY``, or the
  default ``/tmp/nvidia-mps``) is joined and never stopped;
- otherwise one is started with a pipe folder of its own (a short temporary folder: the
  daemon's sockets live there) and its log in the folder the caller names, and it is
  stopped (``quit``) when the search ends, however it ends;
- where the machine has no ``nvidia-cuda-mps-control`` or the daemon does not start, it says
  so once and the workers share the GPU time-sliced.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

CONTROL = "nvidia-cuda-mps-control"
DEFAULT_PIPE_DIR = Path("/tmp/nvidia-mps")
KNOWN_PLACES = (Path("/usr/local/nvidia/bin"), Path("/usr/bin"), Path("/usr/local/cuda/bin"))
START_SECONDS = 10.0  # for the daemon's control pipe to appear
STOP_SECONDS = 10.0


class MpsError(RuntimeError):
    """The daemon could not be started or asked."""


@dataclass(frozen=True)
class Mps:
    """An MPS control daemon that workers can join.

    Args:
        pipe_dir: the daemon's pipe folder (``CUDA_MPS_PIPE_DIRECTORY``).
        log_dir: its log folder (``CUDA_MPS_LOG_DIRECTORY``), where known.
        owned: started by this process, so this process stops it.
    """

    pipe_dir: Path
    log_dir: Path | None
    owned: bool

    def env(self) -> dict[str, str]:
        """The variables a client process needs to find this daemon."""
        out = {"CUDA_MPS_PIPE_DIRECTORY": str(self.pipe_dir)}
        if self.log_dir is not None:
            out["CUDA_MPS_LOG_DIRECTORY"] = str(self.log_dir)
        return out


def control_binary(environ: dict[str, str] | None = None) -> Path | None:
    """``nvidia-cuda-mps-control`` on the PATH or in the driver's usual folders; None if absent."""
    environ = os.environ if environ is None else environ
    found = shutil.which(CONTROL, path=environ.get("PATH"))
    if found:
        return Path(found)
    for folder in KNOWN_PLACES:
        if (folder / CONTROL).is_file() and os.access(folder / CONTROL, os.X_OK):
            return folder / CONTROL
    return None


def _ask(control: Path, pipe_dir: Path, command: str, timeout: float) -> subprocess.CompletedProcess:
    env = dict(os.environ, CUDA_MPS_PIPE_DIRECTORY=str(pipe_dir))
    return subprocess.run([str(control)], input=command + "\n", env=env, capture_output=True, text=True,
                          timeout=timeout)


def running_daemon(control: Path, environ: dict[str, str] | None = None) -> Mps | None:
    """The daemon the user started, if one answers at the user's pipe folder."""
    environ = os.environ if environ is None else environ
    pipe_dir = Path(environ.get("CUDA_MPS_PIPE_DIRECTORY") or DEFAULT_PIPE_DIR)
    if not (pipe_dir / "control").exists():
        return None
    try:
        answer = _ask(control, pipe_dir, "get_server_list", timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if answer.returncode != 0:
        return None  # a pipe left behind by a daemon that died
    log_dir = environ.get("CUDA_MPS_LOG_DIRECTORY")
    return Mps(pipe_dir, Path(log_dir) if log_dir else None, owned=False)


def start(control: Path, log_dir: Path) -> Mps:
    """Start a control daemon with a pipe folder of its own; raise MpsError if it does not come up."""
    log_dir.mkdir(parents=True, exist_ok=True)
    pipe_dir = Path(tempfile.mkdtemp(prefix="scaling-mps-"))  # short: socket paths are limited to ~100 bytes
    env = dict(os.environ, CUDA_MPS_PIPE_DIRECTORY=str(pipe_dir), CUDA_MPS_LOG_DIRECTORY=str(log_dir))
    said = log_dir / "start.log"  # a file, not a pipe: a daemon that keeps its output open cannot hang us
    try:
        with open(said, "w") as out:
            done = subprocess.run([str(control), "-d"], env=env, stdin=subprocess.DEVNULL, stdout=out,
                                  stderr=subprocess.STDOUT, timeout=START_SECONDS)
    except (OSError, subprocess.TimeoutExpired) as e:
        shutil.rmtree(pipe_dir, ignore_errors=True)
        raise MpsError(f"{control} -d did not start: {e}") from None
    if done.returncode != 0:
        shutil.rmtree(pipe_dir, ignore_errors=True)
        why = said.read_text(errors="replace").strip().splitlines()
        raise MpsError(f"{control} -d exited with {done.returncode}" + (f": {why[-1]}" if why else ""))
    deadline = time.monotonic() + START_SECONDS
    while not (pipe_dir / "control").exists():
        if time.monotonic() > deadline:
            shutil.rmtree(pipe_dir, ignore_errors=True)
            raise MpsError(f"the MPS daemon wrote no control pipe in {pipe_dir} within {START_SECONDS:.0f} s "
                           f"(its log: {log_dir})")
        time.sleep(0.05)
    return Mps(pipe_dir, log_dir, owned=True)


def stop(control: Path, mps: Mps) -> None:
    """Ask a daemon this process started to quit, and remove its pipe folder; a daemon the
    user started is left alone."""
    if not mps.owned:
        return
    try:
        known = daemon_processes(mps.pipe_dir)
        _ask(control, mps.pipe_dir, "quit", timeout=STOP_SECONDS)
        # Waited for: the daemon's processes, not its pipe. The control program leaves its pipe
        # files behind when it quits, so waiting for them to go cost every search 10 s. Those
        # found before the quit are waited for by their state: an exiting process's environment
        # reads empty before it has ended.
        deadline = time.monotonic() + STOP_SECONDS
        while ({p for p in known if _running(p)} or daemon_processes(mps.pipe_dir)) and time.monotonic() < deadline:
            time.sleep(0.02)
    except (OSError, subprocess.TimeoutExpired):
        pass
    finally:
        shutil.rmtree(mps.pipe_dir, ignore_errors=True)


def daemon_processes(pipe_dir: Path, proc: Path = Path("/proc")) -> set[int]:
    """The live processes started with ``pipe_dir`` as their ``CUDA_MPS_PIPE_DIRECTORY``: the
    control daemon, its servers and any client still there (read from ``/proc``; nothing
    where it cannot be read, another user's process, or a system without it)."""
    needle = f"CUDA_MPS_PIPE_DIRECTORY={pipe_dir}".encode()
    found = set()
    try:
        entries = [e for e in proc.iterdir() if e.name.isdigit()]
    except OSError:
        return found
    for entry in entries:
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found.add(int(entry.name))
        except OSError:  # gone already, or not ours to read
            continue
    found.discard(os.getpid())
    return found


def _running(pid: int, proc: Path = Path("/proc")) -> bool:
    """Whether process ``pid`` is still there and has not ended (a zombie, or one being reaped, has)."""
    try:
        status = (proc / str(pid) / "status").read_text()
    except OSError:
        return False
    state = next((line.split()[1] for line in status.splitlines() if line.startswith("State:")), "X")
    return state not in ("Z", "X")


@contextlib.contextmanager
def shared_gpu(log_dir: Path, *, control: Path | None = None,
               say: Callable[[str], None] = print) -> Iterator[dict[str, str]]:
    """The environment for workers that share GPUs: a daemon's variables, or nothing
    (time-sliced) where MPS is not there; a daemon started here is stopped on the way out.

    Example:
        with shared_gpu(folder / "mps") as env:
            start the workers with dict(os.environ, **env)
    """
    control = control or control_binary()
    if control is None:
        say(f"no {CONTROL} here: the workers on each GPU take turns (time-sliced), without MPS")
        yield {}
        return
    user = running_daemon(control)
    if user is not None:
        say(f"joining the MPS daemon already running at {user.pipe_dir}")
        yield user.env()
        return
    try:
        mps = start(control, log_dir)
    except MpsError as e:
        say(f"MPS did not start ({e}): the workers on each GPU take turns (time-sliced)")
        yield {}
        return
    try:
        yield mps.env()
    finally:
        stop(control, mps)


# Measured on an H200 (docs/BENCHMARKS.md, 2026-12-01): B0's CUDA-graph steps of K processes
# on one GPU under MPS gave 1.29x (K=2) and 1.45x (K=4) the images/s of one at 64 px
# (31.5 MFLOPs an image), 1.13x and 1.15x at 128 px (126 MFLOPs); a new network's first
# step also spends ~8 s building cuDNN plans on the host, which other workers' training
# overlaps.
AUTO_PER_GPU = ((60e6, 4), (250e6, 2))  # (FLOPs an image at most, workers per GPU), else 1


def auto_per_gpu(flops_per_image: float) -> int:
    """Workers per GPU for networks of this size (the study's base network)."""
    for most, k in AUTO_PER_GPU:
        if flops_per_image <= most:
            return k
    return 1
