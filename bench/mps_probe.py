"""What an MPS daemon's stop costs, and what it leaves behind: the facts scaling.mps.stop relies on.

    python bench/mps_probe.py --out $OUT/mps

Starts a control daemon as the search does (:func:`scaling.mps.start`: a pipe folder of its
own), runs one CUDA client under it (so that a server starts), then asks it to ``quit`` and
records, against the second the quit was asked: when the control program returned, whether
the pipe folder's files are still there, and when the daemon's processes (found by
:func:`scaling.mps.daemon_processes`) had all ended. Also whether a process outside the
daemon can use the GPU while the daemon's client runs (the speed pass beside the workers
does), and the GPU's compute mode.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from scaling import mps

CLIENT = ("import torch, time; x = torch.ones(1 << 20, device='cuda'); torch.cuda.synchronize(); "
          "print('client', float(x.sum()), flush=True); time.sleep({sleep})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    control = mps.control_binary()
    found: dict = {"control": str(control) if control else None}
    mode = subprocess.run(["nvidia-smi", "--query-gpu=compute_mode", "--format=csv,noheader"], capture_output=True,
                          text=True)
    found["compute_mode"] = mode.stdout.strip()
    if control is None:
        print(json.dumps(found, indent=2))
        return
    log = Path(tempfile.mkdtemp(prefix="mps-probe-log-"))
    daemon = mps.start(control, log)
    env = dict(__import__("os").environ, **daemon.env())
    client = subprocess.Popen([sys.executable, "-c", CLIENT.format(sleep=4)], env=env, stdout=subprocess.PIPE,
                              text=True)
    first = client.stdout.readline().strip()
    outside = subprocess.run([sys.executable, "-c", CLIENT.format(sleep=0)], capture_output=True, text=True,
                             env=dict(env, CUDA_MPS_PIPE_DIRECTORY=str(log / "no-mps")), timeout=120)
    found["client_under_mps"] = first
    found["outside_while_client_runs"] = {"exit_code": outside.returncode, "said": outside.stdout.strip(),
                                          "error": outside.stderr.strip()[-300:]}
    client.wait()
    found["processes_before_quit"] = len(mps.daemon_processes(daemon.pipe_dir))
    found["pipe_files_before_quit"] = sorted(p.name for p in daemon.pipe_dir.iterdir())
    t0 = time.perf_counter()
    answer = mps._ask(control, daemon.pipe_dir, "quit", timeout=10)
    found["quit_returned_s"] = round(time.perf_counter() - t0, 3)
    found["quit_exit_code"] = answer.returncode
    gone = None
    while time.perf_counter() - t0 < 15:
        if not mps.daemon_processes(daemon.pipe_dir):
            gone = round(time.perf_counter() - t0, 3)
            break
        time.sleep(0.01)
    found["processes_gone_s"] = gone
    time.sleep(1.0)
    found["pipe_files_1s_after"] = sorted(p.name for p in daemon.pipe_dir.iterdir()) if daemon.pipe_dir.exists() else None
    __import__("shutil").rmtree(daemon.pipe_dir, ignore_errors=True)
    print(json.dumps(found, indent=2))
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "mps-probe.json").write_text(json.dumps(found, indent=2))


if __name__ == "__main__":
    main()
