"""A GPU search's start as it runs: its processes, read from /proc every 50 ms, and what it says.

    python bench/start_trace.py --data .data/cifar10-jpeg.tar.gz --out $OUT/trace [--seconds 30]

Runs ``scaling search --study studies/cifar10.toml`` on GPU 0 with empty caches (data, unless
``--data-cache``; Triton) under a study folder of its own, and stops it (SIGINT) after ``--seconds``: long
enough for its first trials to start. Each process below the search is recorded: when it was
first and last seen, its command line (a forked child shows the search's own until it runs
another program: a fallback to a fresh interpreter shows as a second command line), its
parent, and the CPU seconds it used; beside them the lines the search wrote, with the second
each came, and the CPU seconds all of them used in each second of the start.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def _read(pid: int) -> tuple[int, str, float] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return int(fields[1]), cmd, (int(fields[11]) + int(fields[12])) / TICK


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--study", default="studies/cifar10.toml")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--data-cache", default=None, help="SCALING_CACHE to use (default: an empty one)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="start-trace-"))
    env = dict(os.environ, SCALING_CACHE=args.data_cache or str(root / "cache"), TRITON_CACHE_DIR=str(root / "triton"))
    cmd = [sys.executable, "-m", "scaling.cli", "search", "--study", args.study, "--data", args.data, "--name",
           "trace", "--gpus", "0", "--studies-dir", str(root / "studies"), "-q", "--no-report"]
    t0 = time.time()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    said = []

    def listen():
        for line in proc.stderr:
            said.append([round(time.time() - t0, 2), line.rstrip()[:160]])

    reader = threading.Thread(target=listen, daemon=True)
    reader.start()
    seen: dict[int, dict] = {}
    cpu_by_second: dict[int, float] = {}
    last_cpu: dict[int, float] = {}
    while proc.poll() is None and time.time() - t0 < args.seconds:
        now = round(time.time() - t0, 2)
        parents = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                got = _read(int(entry))
                if got is not None:
                    parents[int(entry)] = got
        mine = {proc.pid}
        changed = True
        while changed:
            changed = False
            for pid, (ppid, _, _) in parents.items():
                if ppid in mine and pid not in mine:
                    mine.add(pid)
                    changed = True
        for pid in mine:
            if pid not in parents:
                continue
            ppid, command, cpu = parents[pid]
            rec = seen.setdefault(pid, {"pid": pid, "parent": ppid, "first_s": now, "commands": [], "cpu_s": 0.0})
            rec["last_s"] = now
            rec["cpu_s"] = cpu
            if not rec["commands"] or rec["commands"][-1][1] != command[:200]:
                rec["commands"].append([now, command[:200]])
            second = int(now)
            cpu_by_second[second] = cpu_by_second.get(second, 0.0) + cpu - last_cpu.get(pid, 0.0)
            last_cpu[pid] = cpu
        time.sleep(0.05)
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    reader.join(timeout=5)
    found = {"command": cmd, "exit_code": proc.returncode, "said": said,
             "cpu_s_by_second": {k: round(v, 2) for k, v in sorted(cpu_by_second.items())},
             "processes": sorted(seen.values(), key=lambda r: r["first_s"])}
    text = json.dumps(found, indent=1)
    print(text)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "start-trace.json").write_text(text + "\n")


if __name__ == "__main__":
    main()
