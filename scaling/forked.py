"""Child processes forked from this one, for a GPU search's start: they begin with its
imports done. On an H200 machine a fresh Python process spends 3-4 s importing torch
(bench/start_probe.py); a search starts eight of them (its workers, the kernels' compiles),
and they all did that while the search had done it already.

A fork is only safe before this process has started CUDA: :func:`can_fork` says whether it
may. A child that finds CUDA or autograd unusable all the same (started in the parent by a
call this module cannot see, :func:`usable_here`) replaces itself with a fresh interpreter
(:func:`exec_instead`).
:class:`Forked` has the part of :class:`subprocess.Popen`'s interface that the pool uses.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import traceback
from typing import Callable

# Our ends of the pipes to live children: a child closes all of them, so that a child's
# input ends when this process closes its end, whatever other children it started.
_PARENT_ENDS: set[int] = set()


def can_fork() -> bool:
    """Whether children forked now may use CUDA: Linux, and CUDA not started in this process
    (torch's lazy start not run, and torch's GPU count read from NVML rather than from CUDA,
    which starts the driver: ``torch.cuda.device_count``'s way, not ``is_available``'s), or
    no CUDA driver on this machine at all."""
    if not sys.platform.startswith("linux") or not hasattr(os, "fork"):
        return False
    import torch

    if not torch.cuda._is_compiled():
        return True
    if torch.cuda.is_initialized():
        return False
    nvml = getattr(torch.cuda, "_device_count_nvml", None)
    try:
        if nvml is not None and nvml() >= 0:
            return True
    except Exception:  # noqa: BLE001 - a private helper of torch's: without it, ask the driver
        pass
    # No NVML: torch's GPU count asks CUDA's driver, which a fork cannot survive; safe only
    # where there is no driver to start (a machine without a GPU).
    import ctypes

    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return True
    return False


def usable_here(device: str = "cuda") -> bool:
    """Whether this forked child can use what it inherited: CUDA (``device`` not the CPU) and
    autograd. Each fails in a child of a process that had started it (autograd: its threads;
    seen in a test process, never in a search's), and the child then runs as a fresh
    interpreter instead (:func:`exec_instead`)."""
    import torch

    try:
        if device != "cpu":
            torch.cuda.init()
        torch.ones(1, requires_grad=True).sum().backward()
    except RuntimeError:
        return False
    return True


def exec_instead(argv: list[str]) -> None:
    """Replace this (forked) process with a fresh interpreter running ``argv``: same process
    id, input, output and ignored signals. Never returns."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os.execv(sys.executable, [sys.executable, *argv])


class Forked:
    """A child forked from this process: it sets ``env`` in its environment, ignores Ctrl+C
    (the terminal sends it to the whole group; its parent says it and stops it), takes SIGTERM's
    default, runs ``target`` with one CPU thread for torch and exits with what it returns (an
    int; an exception: its traceback on stderr and 1; ``SystemExit``: its code).

    Args:
        target: what the child runs.
        env: variables set in the child before ``target`` (CUDA reads them when it starts).
        stdin: give the child a pipe as its standard input, written through :attr:`stdin`.
        stderr: catch the child's standard error, read by :meth:`communicate`.
        name: what the child is, for errors (``subprocess.TimeoutExpired``).
    """

    def __init__(self, target: Callable[[], int | None], env: dict[str, str] | None = None, *, stdin: bool = False,
                 stderr: bool = False, name: str = "forked child"):
        self.args = name
        self.returncode: int | None = None
        self.stdin = None
        self._err_fd: int | None = None
        in_r, in_w = os.pipe() if stdin else (None, None)
        err_r, err_w = os.pipe() if stderr else (None, None)
        for stream in (sys.stdout, sys.stderr):  # nothing buffered here is written twice
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        pid = os.fork()
        if pid == 0:  # the child
            code = 1
            try:
                for fd in list(_PARENT_ENDS) + [w for w in (in_w, err_r) if w is not None]:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                if in_r is not None:
                    os.dup2(in_r, 0)
                    os.close(in_r)
                    sys.stdin = open(0, "r", closefd=False)
                if err_w is not None:
                    os.dup2(err_w, 2)
                    os.close(err_w)
                    sys.stderr = open(2, "w", buffering=1, closefd=False)
                os.environ.update(env or {})
                _own_start()
                result = target()
                code = result if isinstance(result, int) else 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            except BaseException:  # noqa: BLE001 - the child's end, said on its stderr
                traceback.print_exc()
                code = 1
            finally:
                for stream in (sys.stdout, sys.stderr):
                    try:
                        stream.flush()
                    except (OSError, ValueError):
                        pass
                os._exit(code)
        self.pid = pid
        if in_r is not None:
            os.close(in_r)
            _PARENT_ENDS.add(in_w)
            self.stdin = _Input(in_w)
        if err_w is not None:
            os.close(err_w)
            _PARENT_ENDS.add(err_r)
            self._err_fd = err_r

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere
                self.returncode = 1
                return self.returncode
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.001
        while self.poll() is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(self.args, timeout)
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
        return self.returncode

    def communicate(self) -> tuple[None, str]:
        """Read the child's standard error to its end (where it was caught), wait for it."""
        err = b""
        if self._err_fd is not None:
            chunks = []
            while chunk := os.read(self._err_fd, 1 << 16):
                chunks.append(chunk)
            os.close(self._err_fd)
            _PARENT_ENDS.discard(self._err_fd)
            self._err_fd = None
            err = b"".join(chunks)
        self.wait()
        return None, err.decode(errors="replace")

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class _Input:
    """Our end of a child's standard input: text lines written, closed once."""

    def __init__(self, fd: int):
        self.fd, self.closed = fd, False

    def write(self, text: str) -> int:
        if self.closed:
            raise ValueError("write to a closed input")
        data = text.encode()
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]
        return len(text)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            _PARENT_ENDS.discard(self.fd)
            os.close(self.fd)


def _own_start() -> None:
    """A forked child's own clock (its start is the fork: :data:`scaling.STARTED`) and one CPU
    thread for torch: a thread pool the parent had started is not there in the child (more
    threads would wait for it forever)."""
    import scaling

    scaling.STARTED = time.time()
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
