"""Runs a command and reports its wall time and peak memory as one JSON line:
  python measure.py OUT.json -- CMD ARGS...
wall_s: seconds from start to exit; peak_rss_mb: the largest resident set of the process tree
(sum over the process and its children, sampled every 20 ms, and never below the main process's
own maximum as the kernel counts it); images: from the command's JSON summary on stdout.
"""

import json
import resource
import subprocess
import sys
import time

import psutil


def images_of(stdout):
    """Images done, from the command's JSON summary: sslpipe's `--json` (images.ok) or the peers'
    one line (images)."""
    for text in (stdout, stdout.strip().splitlines()[-1] if stdout.strip() else ""):
        try:
            d = json.loads(text)
        except ValueError:
            continue
        n = d.get("images")
        return n.get("ok") if isinstance(n, dict) else n
    return None


def main():
    out = sys.argv[1]
    cmd = sys.argv[sys.argv.index("--") + 1:]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ps = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        try:
            total = ps.memory_info().rss
            for child in ps.children(recursive=True):
                try:
                    total += child.memory_info().rss
                except psutil.Error:
                    pass
            peak = max(peak, total)
        except psutil.Error:
            pass
        time.sleep(0.02)
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - started
    own_max = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    result = {
        "rc": proc.returncode,
        "images": images_of(stdout),
        "wall_s": wall,
        "peak_rss_mb": max(peak, own_max) / 2**20,
        "stdout_tail": stdout[-2000:],
        "stderr_tail": stderr[-2000:],
    }
    with open(out, "w") as f:
        json.dump(result, f)
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
