"""Build data/corpus/ from extracted Debian wallpaper packages (run by
scripts/fetch-corpus.sh inside .deps/venv, which has Pillow).

usage: make_corpus.py WALLPAPER_ROOT OUT_DIR N

WALLPAPER_ROOT holds one folder per package (the output of `dpkg-deb -x`)
with a file VERSION in each. OUT_DIR receives NNNNNN.jpg (000000.jpg ...),
SOURCES.tsv, LICENSES.txt, licenses/<package>.copyright and the stamp
.recipe, written last.

Determinism: the source list is sorted, and crop parameters come from one
seeded random.Random drawn in the same order for every N, so the first M
images of a corpus of N >= M are the corpus of M. With the same packages and
the same Pillow the files are byte-identical. Files are written as *.tmp and
renamed, so any NNNNNN.jpg present is complete; files from an earlier run are
kept only when .recipe names the same recipe and the same source list.
"""

import fnmatch
import hashlib
import math
import os
import random
import re
import shutil
import sys
from multiprocessing import Pool

from PIL import Image, ImageStat

RECIPE = 1
SEED = 20240521
LONG_MIN, LONG_MAX = 400, 640  # output longer side, pixels
ASPECT = (3 / 4, 4 / 3)  # crop width/height range (log-uniform)
AREA = (0.10, 1.0)  # crop area as a fraction of the largest crop of that aspect
QUALITY = 90
MIN_SIDE = 720  # sources smaller than this (on the short side) are skipped
MIN_STDDEV = 8.0  # near-flat sources (grey-level std-dev) are skipped
BACKGROUND = (128, 128, 128)  # transparent pixels are composited onto this
EXTS = (".jpg", ".jpeg", ".png", ".webp")
SKIP_NAME = re.compile(
    r"screenshot|preview|logo|icon|emblem|password|glow|bullet|star|dot|progress|box|entry|lock",
    re.I,
)
SKIP_DIR = {"icons", "pixmaps", "doc", "debian-logos"}

# Notes written after reading each package's copyright file (Debian bookworm).
PACKAGE_NOTES = {
    "gnome-backgrounds": "GPL-2+ for the package; its (non-machine-readable) copyright file names "
    "CC-BY-SA-3.0 for the adwaita* images by Jakub Steiner, and CC-BY-SA 2.0/3.0 "
    "or CC-BY-2.0 for older photos; it does not list every file of version 43.",
    "mate-backgrounds": "GPL-2+ (per-file authors listed), except desktop/Ubuntu-Mate-*-no-logo.png: CC-BY-SA-4.0.",
    "plasma-workspace-wallpapers": "GPL-2+, copyright KDE Visual Design Group.",
    "ukui-wallpapers": "CC-BY-SA-3.0, Ubuntu Kylin community contributors.",
    "sway-backgrounds": "Expat (MIT), copyright Drew DeVault and sway contributors.",
    "desktop-base": "GPL-2+ for most files; spacefun-theme GPL-2; a few logos GPL-3+ or CC-BY-SA-3.0.",
    "lomiri-wallpapers": "Per file: CC-BY-4.0, CC-BY-SA-3.0, CC-BY-SA-4.0 or CC0-1.0 (author in the file name).",
    "lomiri-wallpapers-16.04": "Per file: CC-BY-4.0, CC-BY-SA-4.0 or CC0-1.0 (author in the file name).",
    "lomiri-wallpapers-20.04": "Per file: CC-BY-SA-3.0 (author in the file name).",
}


def parse_dep5(text):
    """Return [(patterns, licence short name)] from a machine-readable
    Debian copyright file, in file order; [] if it is not one."""
    if "copyright-format" not in text.split("\n", 1)[0]:
        return []
    stanzas = []
    for para in re.split(r"\n[ \t]*\n", text):
        fields, key = {}, None
        for line in para.splitlines():
            if line[:1] in (" ", "\t"):
                if key == "Files":
                    fields[key] += " " + line.strip()
                continue
            if ":" in line:
                key, val = line.split(":", 1)
                fields[key.strip()] = val.strip()
        if "Files" in fields and "License" in fields:
            stanzas.append((fields["Files"].split(), fields["License"]))
    return stanzas


def dep5_licence(stanzas, relpath):
    """Best-effort licence of an installed file: the last stanza whose
    pattern matches the end of the path, or the file name alone."""
    found = None
    base = os.path.basename(relpath)
    for patterns, lic in stanzas:
        for pat in patterns:
            pbase = os.path.basename(pat)
            if (
                pat == "*"
                or fnmatch.fnmatchcase(relpath, "*/" + pat)
                or ("*" not in pbase and "?" not in pbase and fnmatch.fnmatchcase(base, pbase))
            ):
                found = lic
    return found


def open_rgb(path):
    im = Image.open(path)
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, BACKGROUND + (255,))
        bg.alpha_composite(im)
        return bg.convert("RGB")
    return im.convert("RGB")


def scan(root):
    """All usable source images, sorted, as dicts."""
    cands, seen = [], set()
    for pkg in sorted(os.listdir(root)):
        pdir = os.path.join(root, pkg)
        if not os.path.isfile(os.path.join(pdir, "VERSION")):
            continue
        for dirpath, dirnames, files in os.walk(pdir):
            dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIR)
            for f in sorted(files):
                p = os.path.join(dirpath, f)
                if not f.lower().endswith(EXTS) or os.path.islink(p) or SKIP_NAME.search(f):
                    continue
                digest = hashlib.sha256(open(p, "rb").read()).hexdigest()
                if digest in seen:
                    continue
                seen.add(digest)
                try:
                    with Image.open(p) as im:
                        w, h = im.size
                except Exception:
                    continue
                if min(w, h) < MIN_SIDE:
                    continue
                rel = os.path.relpath(p, pdir)
                # Several resolutions of one wallpaper: keep the largest.
                group = (pkg, os.path.dirname(rel), re.sub(r"_?\d{3,5}x\d{3,5}", "", os.path.splitext(f)[0]))
                cands.append({"pkg": pkg, "rel": rel, "path": p, "w": w, "h": h, "group": group, "sha": digest})
    best = {}
    for c in cands:
        g = best.get(c["group"])
        if g is None or (c["w"] * c["h"], c["rel"]) > (g["w"] * g["h"], g["rel"]):
            best[c["group"]] = c
    out = []
    for c in sorted(best.values(), key=lambda c: (c["pkg"], c["rel"])):
        im = Image.open(c["path"])
        im.draft("RGB", (512, 512))
        im = open_rgb(c["path"]) if im.mode not in ("RGB", "L") else im.convert("RGB")
        im.thumbnail((256, 256))
        c["stddev"] = ImageStat.Stat(im.convert("L")).stddev[0]
        if c["stddev"] >= MIN_STDDEV:
            out.append(c)
    return out


def plan(sources, n):
    rng = random.Random(SEED)
    jobs = []
    la, lb = math.log(ASPECT[0]), math.log(ASPECT[1])
    for i in range(n):
        s = rng.randrange(len(sources))
        long_side = rng.randint(LONG_MIN, LONG_MAX)
        aspect = math.exp(rng.uniform(la, lb))
        area = rng.uniform(*AREA)
        fx, fy = rng.random(), rng.random()
        flip = rng.random() < 0.5
        W, H = sources[s]["w"], sources[s]["h"]
        cw_max = min(W, H * aspect)
        ch_max = cw_max / aspect
        k = math.sqrt(area)
        cw, ch = cw_max * k, ch_max * k
        if max(cw, ch) < long_side:  # never upscale
            f = min(long_side / max(cw, ch), cw_max / cw)
            cw, ch = cw * f, ch * f
        x0, y0 = fx * (W - cw), fy * (H - ch)
        if cw >= ch:
            size = (long_side, max(1, round(long_side * ch / cw)))
        else:
            size = (max(1, round(long_side * cw / ch)), long_side)
        jobs.append((i, s, (x0, y0, x0 + cw, y0 + ch), size, flip))
    return jobs


def render(task):
    path, out_dir, jobs = task
    im = open_rgb(path)
    for i, _s, box, size, flip in jobs:
        out = im.resize(size, Image.Resampling.LANCZOS, box=box)
        if flip:
            out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        dest = os.path.join(out_dir, f"{i:06d}.jpg")
        out.save(dest + ".tmp", "JPEG", quality=QUALITY)
        os.replace(dest + ".tmp", dest)
    return len(jobs)


def main():
    root, out_dir, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    os.makedirs(out_dir, exist_ok=True)
    sources = scan(root)
    if not sources:
        sys.exit("make_corpus: no usable source images under " + root)
    src_digest = hashlib.sha256("\n".join(c["sha"] for c in sources).encode()).hexdigest()[:16]
    recipe_line = f"recipe={RECIPE} seed={SEED} pillow={Image.__version__} sources={src_digest}"

    stamp = os.path.join(out_dir, ".recipe")
    old = open(stamp).read().splitlines()[0] if os.path.exists(stamp) else ""
    existing = {f for f in os.listdir(out_dir) if re.fullmatch(r"\d{6}\.jpg(\.tmp)?", f)}
    if old != recipe_line:
        for f in existing:
            os.remove(os.path.join(out_dir, f))
        existing = set()
    for f in existing:  # leftovers of an interrupted run, or beyond N
        if f.endswith(".tmp") or int(f[:6]) >= n:
            os.remove(os.path.join(out_dir, f))
    # Mark the directory as "this recipe, incomplete" before writing images.
    with open(stamp, "w") as fh:
        fh.write(recipe_line + "\nn=incomplete\n")

    jobs = plan(sources, n)
    todo = {}
    for job in jobs:
        if not os.path.exists(os.path.join(out_dir, f"{job[0]:06d}.jpg")):
            todo.setdefault(job[1], []).append(job)
    tasks = [(sources[s]["path"], out_dir, js) for s, js in sorted(todo.items())]
    workers = max(1, min(int(os.environ.get("SSLPIPE_JOBS", os.cpu_count() or 1)), len(tasks) or 1))
    done = 0
    if tasks:
        with Pool(workers) as pool:
            for k in pool.imap_unordered(render, tasks):
                done += k
    print(f"make_corpus: {len(sources)} source images, wrote {done} of {n} files", flush=True)

    # Licences and provenance.
    lic_dir = os.path.join(out_dir, "licenses")
    os.makedirs(lic_dir, exist_ok=True)
    pkgs = sorted({c["pkg"] for c in sources})
    dep5, named = {}, {}
    for pkg in pkgs:
        cfile = os.path.join(root, pkg, "usr/share/doc", pkg, "copyright")
        text = open(cfile, encoding="utf-8", errors="replace").read() if os.path.exists(cfile) else ""
        if text:
            shutil.copyfile(cfile, os.path.join(lic_dir, pkg + ".copyright"))
        dep5[pkg] = parse_dep5(text)
        named[pkg] = sorted({m.strip() for m in re.findall(r"^License:[ \t]*(\S.*)$", text, re.M)})
    used = {}
    for _i, s, *_ in jobs:
        used[s] = used.get(s, 0) + 1
    with open(os.path.join(out_dir, "SOURCES.tsv"), "w") as fh:
        fh.write("file\tpackage\tsource\tcrop_box_x0_y0_x1_y1\tsize\thflip\n")
        for i, s, box, size, flip in jobs:
            c = sources[s]
            fh.write(
                f"{i:06d}.jpg\t{c['pkg']}\t/{c['rel']}\t"
                + ",".join(f"{v:.1f}" for v in box)
                + f"\t{size[0]}x{size[1]}\t{int(flip)}\n"
            )
    with open(os.path.join(out_dir, "LICENSES.txt"), "w") as fh:
        fh.write(
            "Throughput corpus for sslpipe (not part of the repository; made by scripts/fetch-corpus.sh)\n\n"
            f"{n} JPEG images (quality {QUALITY}, longer side {LONG_MIN}-{LONG_MAX} px), each a random crop\n"
            "(optionally mirrored) and downscale of one wallpaper image from the Debian packages\n"
            "below. They are derivative works of those images and carry their licences;\n"
            "SOURCES.tsv names the source file and crop of every image. Do not commit them.\n"
            "Full copyright files: licenses/<package>.copyright.\n\n"
            f"Recipe: {recipe_line}\n\nPackages:\n"
        )
        for pkg in pkgs:
            version = open(os.path.join(root, pkg, "VERSION")).read().strip()
            nsrc = sum(1 for c in sources if c["pkg"] == pkg)
            fh.write(f"\n  {pkg} {version} ({nsrc} source images)\n")
            fh.write(f"    licences named in its copyright file: {', '.join(named[pkg]) or 'none'}\n")
            if pkg in PACKAGE_NOTES:
                fh.write(f"    summary: {PACKAGE_NOTES[pkg]}\n")
        fh.write("\nSource images (licence: best-effort match of the file against its package's\n"
                 "copyright file; 'see package' where the file is not machine-readable):\n\n")
        for s, c in enumerate(sources):
            lic = dep5_licence(dep5[c["pkg"]], c["rel"]) or "see package"
            fh.write(f"  {c['pkg']}: /{c['rel']} ({c['w']}x{c['h']}, used {used.get(s, 0)}x) -- {lic}\n")
    # Stamp last: the directory now holds exactly N images of this recipe.
    with open(stamp, "w") as fh:
        fh.write(recipe_line + f"\nn={n}\n")


if __name__ == "__main__":
    main()
