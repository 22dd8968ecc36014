#!/usr/bin/env python3
"""How long after a file is complete its row is readable, for a watched folder.

    .deps/venv-readers/bin/python scripts/dev/watch-latency.py SSLPIPE_BINARY SETTLE_MS POLL_MS ROLL_SECONDS|default

Starts `sslpipe run` on a temporary watched folder, then puts the first six bundled photos into it
one at a time (written under a hidden name and renamed, so each is complete at once), and polls
the published part files (pyarrow) until the photo's row is there. Prints the median, minimum and
maximum of those delays. Needs scripts/setup.sh (photos) and scripts/dev/readers-venv.sh (pyarrow).
"""
import glob, os, shutil, statistics, subprocess, sys, tempfile, time

import pyarrow.parquet as pq

binary, settle, poll, roll = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
photos = sorted(glob.glob(os.path.join(repo, "data/photos/*.png")))[:6]
root = tempfile.mkdtemp()
incoming, out = os.path.join(root, "in"), os.path.join(root, "out")
os.makedirs(incoming)
roll_line = f"roll_seconds = {roll}\n" if roll != "default" else ""
with open(os.path.join(root, "p.toml"), "w") as f:
    f.write(f'[source]\nkind = "watch"\npath = "{incoming}"\nsettle_ms = {settle}\n'
            f'poll_ms = {poll}\n[decode]\nsize = 96\n[output]\ndir = "{out}"\n{roll_line}')
run = subprocess.Popen([binary, "run", "-q", os.path.join(root, "p.toml")],
                       stderr=subprocess.DEVNULL)
time.sleep(2)  # ONNX Runtime and the encoder are loaded


def published(key):
    for part in glob.glob(os.path.join(out, "part-*.parquet")):
        if key in pq.read_table(part, columns=["key"]).column("key").to_pylist():
            return True
    return False


delays = []
for i, photo in enumerate(photos):
    key = f"img{i}.png"
    hidden = os.path.join(incoming, "." + key)
    shutil.copy(photo, hidden)
    os.rename(hidden, os.path.join(incoming, key))
    complete = time.monotonic()
    while not published(key):
        time.sleep(0.01)
    delays.append(time.monotonic() - complete)
run.send_signal(2)
run.wait()
shutil.rmtree(root)
print(f"settle_ms={settle} poll_ms={poll} roll_seconds={roll}: row readable "
      f"{statistics.median(delays):.2f} s after the file is complete (median; min "
      f"{min(delays):.2f}, max {max(delays):.2f}; {len(delays)} files)")
