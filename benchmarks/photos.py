"""A small, reproducible set of real photographs, cut from what the package registries ship.

    python benchmarks/photos.py --download            # fetch the two .debs with apt-get, then build
    python benchmarks/photos.py --debs DIR            # build from .debs already in DIR
    python benchmarks/photos.py --check [--debs DIR]  # rebuild in memory, compare with the committed set

Writes benchmarks/photos/NAME.png (12 crops, lossless PNG) and
benchmarks/photos/provenance.json.  The project's rule is "real images, not only
Fashion-MNIST: photos assembled from the package registries, with each one's
provenance; never scikit-image's bundled images"; this is that set, used by
benchmarks/bench_any_image.py.

Sources (all three are photographs, not renders; licences as their packages state them):

- PyPI ``matplotlib`` (a dependency of this project, so already in the venv):
  ``mpl-data/sample_data/grace_hopper.jpg``, the U.S. Navy portrait of Grace Hopper
  (public domain; matplotlib PR #1599 added it as a public-domain image, and the
  package ships no separate notice for it, matplotlib issue #4930).
- Debian bookworm ``mate-backgrounds`` 1.26.0-1: ``/usr/share/backgrounds/mate/nature/*.jpg``,
  licences in its ``/usr/share/doc/mate-backgrounds/copyright`` (GPL-2+).
- Debian bookworm ``lomiri-wallpapers-16.04`` 20.04.0-2: ``/usr/share/backgrounds/*.jpg``
  (Ubuntu Touch wallpaper contest photos), licences in its
  ``/usr/share/doc/lomiri-wallpapers-16.04/copyright`` (CC-BY-4.0, CC-BY-SA-4.0, CC0-1.0).

To rebuild from nothing, on Debian/Ubuntu (no root needed: ``apt-get download``
only fetches the .deb; ``dpkg-deb -x`` unpacks it in a temporary folder)::

    python3 -m venv .venv && .venv/bin/pip install -q torch==2.13.0 -e '.[bench]'   # pulls matplotlib, pillow
    mkdir -p /tmp/photo-debs && cd /tmp/photo-debs && \\
        apt-get download mate-backgrounds=1.26.0-1 lomiri-wallpapers-16.04=20.04.0-2 && cd -
    .venv/bin/python benchmarks/photos.py --debs /tmp/photo-debs

Without apt, the same .debs come from the Debian archive (their SHA256 are checked)::

    curl -O https://deb.debian.org/debian/pool/main/m/mate-backgrounds/mate-backgrounds_1.26.0-1_all.deb
    curl -O https://deb.debian.org/debian/pool/main/l/lomiri-wallpapers/lomiri-wallpapers-16.04_20.04.0-2_all.deb

(old versions stay at https://snapshot.debian.org).  Unpacking needs ``dpkg-deb``
(or ``ar`` and ``tar``, used when dpkg-deb is missing).

Each crop: decode the JPEG with Pillow (RGB), optionally shrink it by an integer
factor with ``Image.reduce`` (a box average: a thumbnail of the whole photo, with no
JPEG block structure left), cut a fixed box, convert to the crop's mode (``L`` is
Pillow's ITU-R 601 luma).  Pixels depend only on the JPEG decoder: libjpeg-turbo
gives identical pixels across versions for these baseline/progressive files in
practice, but each crop's pixel SHA256 is recorded so that ``--check`` can say
when a rebuild differs; the committed PNGs are the reference.
"""
from __future__ import annotations

import argparse
import fnmatch
import hashlib
import io
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, features

HERE = Path(__file__).parent
OUT = HERE / "photos"

# Debian packages: version pinned, SHA256 of the .deb as the bookworm archive lists it
DEBS = {
    "mate-backgrounds": {
        "version": "1.26.0-1",
        "sha256": "7bf4c2209f34b4f61ba6d24c8b58c28b361e82e4b943aae6d42c030169af9e04",
        "url": "https://deb.debian.org/debian/pool/main/m/mate-backgrounds/mate-backgrounds_1.26.0-1_all.deb",
        "registry": "Debian bookworm main",
    },
    "lomiri-wallpapers-16.04": {
        "version": "20.04.0-2",
        "sha256": "a99ff6a3bfe451e4cc0682ecb3cc82e71740626d59e4845ae34a0a0e45421eab",
        "url": "https://deb.debian.org/debian/pool/main/l/lomiri-wallpapers/"
               "lomiri-wallpapers-16.04_20.04.0-2_all.deb",
        "registry": "Debian bookworm main",
    },
}

# source photographs: package, path inside it, the licence line expected in the package's copyright file
SOURCES = {
    "hopper": {"package": "matplotlib", "registry": "PyPI", "path": "matplotlib/mpl-data/sample_data/grace_hopper.jpg",
               "licence": "public domain (U.S. Navy photograph; added to matplotlib as a public-domain image in "
                          "matplotlib PR #1599; the package has no notice of its own for it, matplotlib issue #4930)",
               "author": "U.S. Navy official portrait"},
    "ladybird": {"package": "mate-backgrounds", "path": "usr/share/backgrounds/mate/nature/LadyBird.jpg"},
    "dune": {"package": "mate-backgrounds", "path": "usr/share/backgrounds/mate/nature/Dune.jpg"},
    "storm": {"package": "mate-backgrounds", "path": "usr/share/backgrounds/mate/nature/Storm.jpg"},
    "meadow": {"package": "mate-backgrounds", "path": "usr/share/backgrounds/mate/nature/GreenMeadow.jpg"},
    "dragonfly": {"package": "lomiri-wallpapers-16.04", "path": "usr/share/backgrounds/Dragonfly_by_Bolly.jpg"},
    "brushes": {"package": "lomiri-wallpapers-16.04", "path": "usr/share/backgrounds/Picture_1A_by_freespace.jpg"},
    "wine": {"package": "lomiri-wallpapers-16.04", "path": "usr/share/backgrounds/Wine_by_Jakkub_Mede.jpg"},
    "picos": {"package": "lomiri-wallpapers-16.04",
              "path": "usr/share/backgrounds/picosdeeuropa_by_Aitzol_Berasategi.jpg"},
    "seeding": {"package": "lomiri-wallpapers-16.04",
                "path": "usr/share/backgrounds/seeding_by_Clements_Engelhardt.jpg"},
    "dogs": {"package": "lomiri-wallpapers-16.04", "path": "usr/share/backgrounds/friends_by_Aitzol_Berasategi.jpg"},
    "river": {"package": "lomiri-wallpapers-16.04", "path": "usr/share/backgrounds/life_by_Aitzol_Berasategi.jpg"},
}

# crops: name, source, reduce factor (1: native pixels), (left, top) in the reduced image, size, mode.
# Half native-resolution detail, half whole-photo thumbnails; half L, half RGB; half 64, half 96.
CROPS = [
    ("hopper_face_L64", "hopper", 1, (200, 160), 64, "L"),
    ("hopper_thumb_RGB96", "hopper", 5, (3, 12), 96, "RGB"),
    ("ladybird_RGB64", "ladybird", 1, (1760, 790), 64, "RGB"),
    ("dune_thumb_L96", "dune", 8, (60, 20), 96, "L"),
    ("storm_L64", "storm", 1, (900, 880), 64, "L"),
    ("meadow_thumb_RGB96", "meadow", 8, (32, 16), 96, "RGB"),
    ("dragonfly_L64", "dragonfly", 1, (2000, 1200), 64, "L"),
    ("brushes_thumb_RGB96", "brushes", 8, (40, 20), 96, "RGB"),
    ("wine_thumb_L96", "wine", 16, (30, 120), 96, "L"),
    ("picos_thumb_RGB64", "picos", 16, (110, 20), 64, "RGB"),
    ("seeding_RGB64", "seeding", 1, (1560, 760), 64, "RGB"),
    ("dogs_thumb_L96", "dogs", 16, (20, 50), 96, "L"),
]


def sha256(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def download(dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    cmd = ["apt-get", "download"] + [f"{p}={d['version']}" for p, d in DEBS.items()]
    print("+ (cd", dest, "&&", " ".join(cmd) + ")", file=sys.stderr)
    subprocess.run(cmd, cwd=dest, check=True)


def unpack(deb: Path, root: Path) -> None:
    if shutil.which("dpkg-deb"):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
        return
    with tempfile.TemporaryDirectory() as t:     # a .deb is an ar archive holding data.tar.*
        subprocess.run(["ar", "x", str(deb.resolve())], cwd=t, check=True)
        data = next(Path(t).glob("data.tar*"))
        with tarfile.open(data) as tf:
            tf.extractall(root, filter="data")


def copyright_paragraph(copyright_text: str, path: str) -> dict:
    """The DEP-5 Files paragraph of a Debian copyright file that names this file (by basename)."""
    best = None
    for para in copyright_text.split("\n\n"):
        fields, key = {}, None
        for line in para.splitlines():
            if line[:1] in (" ", "\t") and key:
                fields[key] += "\n" + line.strip()
            elif ":" in line:
                key, _, v = line.partition(":")
                fields[key] = v.strip()
        pats = fields.get("Files", "").split()
        # by basename: the package's install paths differ from its source tree's; "*" and "debian/*" name no photo
        if any(Path(p).name != "*" and fnmatch.fnmatch(Path(path).name, Path(p).name) for p in pats):
            best = fields
    if best is None:
        raise SystemExit(f"no Files paragraph names {path} in the copyright file")
    return {"copyright": " ".join(best.get("Copyright", "").split()),
            "licence": best.get("License", "").splitlines()[0].strip()}


def locate_sources(debs_dir: Path | None, work: Path) -> dict:
    """{source key: (bytes of the photo, provenance dict)}."""
    import matplotlib
    out = {}
    roots = {}
    for pkg, d in DEBS.items():
        if debs_dir is None:
            raise SystemExit("the Debian photos need --debs DIR (holding the .debs) or --download")
        deb = debs_dir / f"{pkg}_{d['version']}_all.deb"
        if not deb.exists():
            raise SystemExit(f"{deb} is missing: apt-get download {pkg}={d['version']} (or curl -O {d['url']})")
        got = sha256(deb.read_bytes())
        if got != d["sha256"]:
            raise SystemExit(f"{deb}: SHA256 {got}, expected {d['sha256']}")
        roots[pkg] = work / pkg
        unpack(deb, roots[pkg])
    for key, s in SOURCES.items():
        if s["package"] == "matplotlib":
            f = Path(matplotlib.__file__).parent / s["path"].split("/", 1)[1]
            prov = {"registry": "PyPI", "package": "matplotlib", "version": matplotlib.__version__,
                    "path": s["path"], "licence": s["licence"], "copyright": s["author"],
                    "get": "pip install matplotlib (a dependency of ddpm-codec)"}
        else:
            pkg = s["package"]
            d = DEBS[pkg]
            f = roots[pkg] / s["path"]
            cr = (roots[pkg] / "usr/share/doc" / pkg / "copyright").read_text(encoding="utf-8", errors="replace")
            para = copyright_paragraph(cr, s["path"])
            prov = {"registry": d["registry"], "package": pkg, "version": d["version"], "deb_sha256": d["sha256"],
                    "path": "/" + s["path"], "licence": para["licence"], "copyright": para["copyright"],
                    "licence_file": f"/usr/share/doc/{pkg}/copyright",
                    "get": f"apt-get download {pkg}={d['version']}  (or {d['url']})"}
        data = f.read_bytes()
        prov["file_sha256"] = sha256(data)
        out[key] = (data, prov)
    return out


def build(sources: dict) -> list[tuple[str, np.ndarray, dict]]:
    crops = []
    for name, src, factor, (left, top), size, mode in CROPS:
        data, prov = sources[src]
        with Image.open(io.BytesIO(data)) as im:
            full = im.convert("RGB")
        w, h = full.size
        small = full.reduce(factor) if factor > 1 else full
        box = (left, top, left + size, top + size)
        if box[2] > small.size[0] or box[3] > small.size[1]:
            raise SystemExit(f"{name}: box {box} outside the {small.size} image")
        px = np.asarray(small.crop(box).convert(mode))
        rec = {"name": name, "file": f"{name}.png", "mode": mode, "height": size, "width": size,
               "source": prov, "source_size": [w, h],
               "transform": (f"Image.reduce({factor}) (box average) to {small.size[0]}x{small.size[1]}, then "
                             if factor > 1 else "native pixels, ") + f"crop box (left, top, right, bottom) {box}, "
                             f"convert('{mode}')",
               "reduce": factor, "crop_box": list(box), "pixels_sha256": sha256(px.tobytes())}
        crops.append((name, px, rec))
    return crops


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--debs", type=Path, help="folder with the two .debs (see the module docstring)")
    ap.add_argument("--download", action="store_true", help="apt-get download the .debs into --debs (default "
                    "a temporary folder) first")
    ap.add_argument("--check", action="store_true", help="rebuild and compare with the committed set; write nothing")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        debs = args.debs
        if args.download:
            debs = debs or work / "debs"
            download(debs)
        crops = build(locate_sources(debs, work))
    if args.check:
        committed = json.loads((OUT / "provenance.json").read_text())
        bad = 0
        for name, px, rec in crops:
            ref = next((c for c in committed["crops"] if c["name"] == name), None)
            disk = np.asarray(Image.open(OUT / rec["file"]))
            ok = ref is not None and ref["pixels_sha256"] == rec["pixels_sha256"] and np.array_equal(disk, px)
            bad += not ok
            print(f"{name}: {'same' if ok else 'DIFFERS'}")
        raise SystemExit(1 if bad else 0)
    OUT.mkdir(exist_ok=True)
    for name, px, rec in crops:
        buf = io.BytesIO()
        Image.fromarray(px, mode=rec["mode"]).save(buf, format="PNG", optimize=True)
        (OUT / rec["file"]).write_bytes(buf.getvalue())
        rec["png_bytes"] = len(buf.getvalue())
    import matplotlib
    meta = {"name": "photos",
            "description": "Real photographs from PyPI (matplotlib) and Debian (mate-backgrounds, "
                           "lomiri-wallpapers-16.04) packages, cut into 64x64 and 96x96 crops (native pixels or "
                           "box-reduced thumbnails), L and RGB. Built by benchmarks/photos.py; see its docstring "
                           "for the exact commands to rebuild.",
            "rebuild": ["mkdir -p /tmp/photo-debs && cd /tmp/photo-debs && apt-get download "
                        + " ".join(f"{p}={d['version']}" for p, d in DEBS.items()) + " && cd -",
                        ".venv/bin/python benchmarks/photos.py --debs /tmp/photo-debs"],
            "built_with": {"pillow": Image.__version__, "libjpeg_turbo": features.version("libjpeg_turbo"),
                           "matplotlib": matplotlib.__version__, "numpy": np.__version__},
            "crops": [rec for _, _, rec in crops]}
    (OUT / "provenance.json").write_text(json.dumps(meta, indent=1) + "\n")
    total = sum(r["png_bytes"] for _, _, r in crops)
    for _, _, r in crops:
        print(f"{r['name']:22s} {r['mode']:3s} {r['width']}x{r['height']}  {r['png_bytes']:6d} B  "
              f"{r['source']['package']} {r['source']['path']}  [{r['source']['licence']}]")
    print(f"{len(crops)} crops, {total} bytes of PNG, in {OUT}")


if __name__ == "__main__":
    main()
