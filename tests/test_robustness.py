"""Issue #6: bad input, corrupt streams and unsafe files fail clearly and lose nothing.

Everything goes through the real command line: click's CliRunner on
`ddpm_codec_cli.main:cli` for most cases, the `ddpm-codec` console script in
a subprocess where it matters (no traceback on stderr, exit code 2, and the
kill tests).  Each error case names the message fragment it expects; every
one must end with exit code 2, one `ddpm-codec: error:` line, no traceback,
no output file and no stray temporary file, with the inputs unchanged.

A tiny untrained model (configs 'tiny') and 2-3 chain steps keep it fast.
"""
import hashlib
import json
import os
import random
import resource
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from ddpm_codec.codec.lossless import _times_hash
from ddpm_codec.diffusion.configs import get_config
from ddpm_codec.diffusion.model import DiffusionModel
from ddpm_codec.format import compact, container, varint
from ddpm_codec.io.checkpoint import load_model, save_model
from ddpm_codec_cli.main import cli

EXE = Path(sys.executable).with_name("ddpm-codec")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


# ---- helpers ------------------------------------------------------------------
def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], prog_name="ddpm-codec")


def assert_user_error(res, fragment, *, stderr=None, code=None):
    """Exit code 2, the last stderr line is our one-line error with `fragment`, no traceback."""
    err = res.stderr if stderr is None else stderr
    code = res.exit_code if code is None else code
    out = err + (res.output if res is not None else "")
    assert code == 2, (code, out[-2000:], getattr(res, "exception", None))
    assert "Traceback" not in out
    last = [ln for ln in err.replace("\r", "\n").splitlines() if ln.strip()][-1]
    assert last.startswith("ddpm-codec: error: "), err[-1000:]
    assert fragment.lower() in last.lower(), (fragment, last)
    return last


def digest(folder: Path) -> dict:
    """Every file under `folder` with its sha256 (inputs must not change)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def no_temp_files(folder: Path):
    stray = [p.name for p in folder.rglob("*") if p.name.endswith(".tmp") or ".tmp" in p.name]
    assert not stray, stray


def tiny(path, seed):
    torch.manual_seed(seed)
    save_model(DiffusionModel.from_config(get_config("tiny")), path)
    return path


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def raw_png(width, height, depth=8, colour_type=0, channels=1, rows=True) -> bytes:
    """A PNG written by hand (16-bit RGB, zero or enormous sizes pillow will not write)."""
    body = b""
    if rows:
        row = (width * channels * depth + 7) // 8
        body = b"".join(b"\0" + bytes(row) for _ in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(body))
            + png_chunk(b"IEND", b""))


# ---- fixtures -----------------------------------------------------------------
@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    return {"tiny": tiny(d / "tiny", 0), "other": tiny(d / "other", 1), "dir": d}


@pytest.fixture(scope="module")
def ref(models, tmp_path_factory):
    """A valid two-image stream made by `ddpm-codec compress`, and its source images."""
    d = tmp_path_factory.mktemp("ref")
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (6, 5), dtype=np.uint8)
    b = rng.integers(0, 256, (4, 7, 3), dtype=np.uint8)
    Image.fromarray(a).save(d / "a.png")
    Image.fromarray(b).save(d / "b.png")
    res = run("compress", d / "a.png", d / "b.png", "-o", d / "s.ddpmc", "--model", models["tiny"], "--steps", 2,
              "--classical", "never")
    assert res.exit_code == 0, res.output
    data = (d / "s.ddpmc").read_bytes()
    return {"data": data, "c": container.parse(data), "a": a, "b": b, "dir": d}


def repack(ref, header=None, payload=None, replace=False, **kw):
    c = ref["c"]
    h = json.loads(json.dumps(c.header))
    if header and replace:
        h = header
    elif header:
        h.update(header)
    return container.pack(container.Container(kw.get("mode", "lossless"), kw.get("fingerprint", c.fingerprint), h,
                              c.payload if payload is None else payload, c.encrypted))


def raw_stream(ref, head: bytes, version=container.VERSION):
    """A stream with the given raw header bytes behind valid CRCs."""
    c = ref["c"]
    return container.pack_raw(0, bytes.fromhex(c.fingerprint), head, c.payload, version=version, flags=1)


def flip(data: bytes, i: int, bit=0) -> bytes:
    return data[:i] + bytes([data[i] ^ (1 << bit)]) + data[i + 1:]


def decompress_fails(tmp_path, models, blob, fragment, model="tiny"):
    stream = tmp_path / "in.ddpmc"
    stream.write_bytes(blob)
    out = tmp_path / "out"
    before = digest(tmp_path)
    res = run("decompress", stream, "-o", out, "--model", models[model])
    assert_user_error(res, fragment)
    assert not out.exists(), list(out.iterdir())
    assert digest(tmp_path) == before
    return res


# ---- 1. streams ------------------------------------------------------------------
def _byte_cases(ref):
    d = ref["data"]
    c = ref["c"]
    hend = container.header_end(d)                       # the payload length field starts here
    hlen = varint.decode(d, 16)[0]
    hstart = hend - 2 - hlen
    pay = hend + len(varint.encode(len(c.payload)))
    def other(version):                          # a well-formed file of another format version
        return container.pack_raw(0, bytes.fromhex(c.fingerprint), compact.dumps(container.stored_header(c.header)), c.payload,
                          version=version, flags=1)
    return {
        "empty": (b"", "empty file"),
        "png": ((ref["dir"] / "a.png").read_bytes(), "not a ddpm-codec stream"),
        "random": (np.random.default_rng(5).bytes(3000), "not a ddpm-codec stream"),
        "magic-prefix": (d[:3], "truncated stream"),
        "cut-in-fixed-header": (d[:12], "truncated stream"),
        "cut-in-header": (d[:hstart + hlen // 2], "truncated stream"),
        "cut-in-payload": (d[:pay + 100], "truncated stream: payload has"),
        "cut-last-byte": (d[:-1], "truncated stream"),
        "future-version": (other(container.VERSION + 1), f"version {container.VERSION + 1} is not supported"),
        "old-version": (other(1), "version 1 was written by an older ddpm-codec"),
        "flip-magic": (flip(d, 0), "bad magic"),
        "flip-version": (flip(d, 5, 3), f"version {container.VERSION ^ 8} is not supported"),
        "flip-mode": (flip(d, 6, 3), "unknown mode"),
        "flip-flags": (flip(d, 7, 4), "unknown mode or flags"),
        "flip-fingerprint": (flip(d, 12), "header checksum mismatch"),
        "flip-header-length": (flip(d, 16, 6), "header"),
        "flip-header": (flip(d, hstart + hlen // 2), "header checksum mismatch"),
        "flip-payload-length": (flip(d, hend, 6), "stream"),     # truncated or trailing bytes
        "flip-payload": (flip(d, pay + 200, 5), "checksum mismatch"),
        "flip-crc": (flip(d, len(d) - 1), "checksum mismatch"),
        "trailing-bytes": (d + b"\0", "trailing bytes"),
    }


@pytest.mark.parametrize("case", ["empty", "png", "random", "magic-prefix", "cut-in-fixed-header", "cut-in-header",
                                  "cut-in-payload", "cut-last-byte", "future-version", "flip-magic", "flip-version",
                                  "flip-mode", "flip-flags", "flip-fingerprint", "flip-header-length", "flip-header",
                                  "flip-payload-length", "flip-payload", "flip-crc", "trailing-bytes"])
def test_damaged_stream_fails_cleanly(tmp_path, models, ref, case):
    blob, fragment = _byte_cases(ref)[case]
    decompress_fails(tmp_path, models, blob, fragment)


def test_stream_of_another_model(tmp_path, models, ref):
    decompress_fails(tmp_path, models, ref["data"], "stream was made with model", model="other")


def test_stream_relabelled_lossy(tmp_path, models, ref):
    decompress_fails(tmp_path, models, repack(ref, mode="lossy"), "")


# Valid CRCs, damage below them: the bits-back decoder, the seed check and the pixel
# checksum must notice.  Any of these messages will do:
DEEP = ("decoding failed", "checksum", "corrupt stream")


def assert_deep(res):
    assert any(f in res.stderr for f in DEEP), res.stderr


@pytest.mark.parametrize("where", [0, 1, "mid", -4, -1])
def test_payload_damage_behind_valid_crc(tmp_path, models, ref, where):
    p = bytearray(ref["c"].payload)
    i = len(p) // 2 if where == "mid" else where
    p[i] ^= 0x10
    assert_deep(decompress_fails(tmp_path, models, repack(ref, payload=bytes(p)), ""))


def _set(**kw):
    return lambda h: {**h, **kw}


HEADER_DAMAGE = {
    "pixel-checksum": (_set(pixels_sha256="0" * 16), None),      # also the keystream seed
    "pixel-checksum-long": (_set(pixels_sha256="0" * 64), "bad pixel checksum"),
    "pixel-checksum-not-hex": (_set(pixels_sha256="0123456789abcdeg"), "bad pixel checksum"),
    "grid": (_set(grid_fraction=0.3), None),
    "grid-coarse-added": (lambda h: {**h, "coarse": [len(h["groups"]) - 1, 2]}, None),
    "grid-list-bad": (_set(coarse=[[0, "x"]]), "bad grid list"),
    "grid-list-index": (_set(coarse=[0, 7]), "bad grid list"),
    "grid-list-odd": (_set(coarse=[0, 1, 1]), "bad grid list"),
    "topups-bad": (_set(topups=[[99, 1]]), "bad top-up list"),
    "seed-words-omitted": (_set(seed_words_omitted=1), "'seed_words_omitted' is invalid"),
    "seed-mode": (lambda h: {**h, "seed_mode": "random" if h.get("seed_mode", "classical") == "classical"
                             else "classical"}, None),
    "seed-mode-unknown": (_set(seed_mode="magic"), "unknown seed mode"),
    "seed-codecs-unknown": (lambda h: {**h, "seed_codecs": ["bmp"] * len(h["seed_codecs"])}, "seed codec list"),
    "seed-codecs-index": (lambda h: {**h, "seed_codecs": [9] * len(h["seed_codecs"])}, "seed codec list"),
    "seed-codecs-other": (lambda h: {**h, "seed_codecs": [0] * len(h["seed_codecs"])}, None),
    "groups-short": (lambda h: {**h, "groups": h["groups"][:-1]}, "groups do not cover the images"),
    "groups-longer": (lambda h: {**h, "groups": [h["groups"][0] + 1, *h["groups"][1:]]}, "groups do not"),
    "groups-bad": (_set(groups=[[0, 1]]), "bad group list"),
    "groups-zero": (lambda h: {**h, "groups": [0, *h["groups"]]}, "bad group list"),
    "images-fewer": (lambda h: {**h, "images": h["images"][:1]}, "groups do not"),
    "images-channels": (lambda h: {**h, "images": [[*r[:4], 7] for r in h["images"]]}, "bad image record"),
    "images-not-list": (_set(images="x"), "bad image list"),
    "steps-other": (lambda h: {**h, "steps": h["steps"] + 1}, "chain times differ"),
    "steps-beyond-T": (_set(steps=5000), "does not fit this model"),
    "steps-zero": (_set(steps=0), "'steps' is invalid"),
    "codec": (_set(codec="zip"), "unknown lossless codec"),
    "seed-words-huge": (_set(seed_mode="random", seed_words=1 << 28, seed_words_omitted=1 << 28),
                        "'seed_words' is invalid"),
}


@pytest.mark.parametrize("case", sorted(HEADER_DAMAGE))
def test_header_damage_behind_valid_crc(tmp_path, models, ref, case):
    change, fragment = HEADER_DAMAGE[case]
    h = change(json.loads(json.dumps(ref["c"].header)))
    res = decompress_fails(tmp_path, models, repack(ref, header=h, replace=True), fragment or "")
    if fragment is None:
        assert_deep(res)


def test_encryption_flag_flipped_behind_valid_crc(tmp_path, models, ref):
    """The keystream is on iff flag bit 0 says so (the header no longer repeats it)."""
    c = ref["c"]
    blob = container.pack_raw(0, bytes.fromhex(c.fingerprint), compact.dumps(container.stored_header(c.header)), c.payload, flags=0)
    assert_deep(decompress_fails(tmp_path, models, blob, ""))


@pytest.mark.parametrize("text,fragment", [
    (bytes([compact.LIST, 1]) * 100 + bytes([compact.NONE]), "header is not valid"),     # nesting
    (bytes([compact.F64]) + struct.pack("<d", float("nan")), "header is not valid"),
    (bytes([compact.UINT]) + b"\xff" * 12 + b"\x01", "header is not valid"),           # over-long integer
    (bytes([compact.STR, 2, 0xFF, 0xFE]), "header is not valid"),                         # bad UTF-8
    (bytes([compact.DICT, 1, 250, 1]), "header is not valid"),                           # key out of range
    (compact.dumps([1, 2]), "header is not an object"),
    (compact.dumps({"x": "a" * (1 << 17)}), "header length out of range"),
])
def test_raw_header_bytes_behind_valid_crc(tmp_path, models, ref, text, fragment):
    decompress_fails(tmp_path, models, raw_stream(ref, text), fragment)


def test_header_cannot_make_the_decoder_allocate(tmp_path, models, ref):
    """Huge image claims with a 10-byte payload are refused before any allocation."""
    h = json.loads(json.dumps(ref["c"].header))
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.time()
    # 60000 images of 65536 x 65536: more than the 64 KiB a header may hold
    h["images"] = [["", "RGBA", 65536, 65536, 4]] * 60000
    decompress_fails(tmp_path, models, raw_stream(ref, compact.dumps(h)), "header length out of range")
    # the same claim in a header that fits, with a 10-byte payload
    h["images"] = [["", "RGBA", 65536, 65536, 4]] * 3000
    blob = container.pack(container.Container("lossless", ref["c"].fingerprint, h, b"0123456789", True))
    decompress_fails(tmp_path, models, blob, "larger than any encoder writes")
    # one 256 KiB image: allocatable, but not for a 10-byte payload
    h["images"], h["groups"], h["coarse"], h["topups"] = [["big", "RGBA", 256, 256, 4]], [1], [], []
    blob = container.pack(container.Container("lossless", ref["c"].fingerprint, h, b"0123456789", True))
    decompress_fails(tmp_path, models, blob, "corrupt stream")
    assert time.time() - t0 < 20
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0 < 300_000      # KiB


def test_header_cannot_make_the_decoder_loop(tmp_path, models, ref):
    """A header asking for 1000 chain steps over eight of the largest images with a 1.7 kB payload is
    refused before the chain is run (the chain's hash is made to match, as a hostile file could)."""
    model, _ = load_model(str(models["tiny"]))
    change = {"steps": 1000, "times_sha": _times_hash(model.schedule.chain(1000)),
              "images": [["big.png", "L", 256, 256, 1]] * 8, "groups": [8], "coarse": [], "topups": [],
              "seed_mode": "random", "seed_words": 1,
              "seed_codecs": []}
    t0 = time.time()
    decompress_fails(tmp_path, models, repack(ref, header=change), "more decoding work than its payload")
    assert time.time() - t0 < 20


def test_harmless_header_fields_still_decode_exactly(tmp_path, models, ref):
    """Fields the pixel checksum does not cover (names, modes, determinism notes) cannot make
    the CLI crash or write outside the output folder; pixels stay exact."""
    change = {"torch": 7, "threads": True,          # a bool is not a thread count (found by the fuzzer)
              "images": [["../../evil\x00\x07.png", "RGB", 6, 5, 1], ["b.png", "XYZ", 4, 7, 3]]}
    stream = tmp_path / "s.ddpmc"
    stream.write_bytes(repack(ref, header=change))
    out = tmp_path / "out"
    res = run("decompress", stream, "-o", out, "--model", models["tiny"])
    assert res.exit_code == 0, (res.output, res.exception)
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["b.png", "evil.png", "s.ddpmc"]
    assert np.array_equal(np.asarray(Image.open(out / "evil.png")), ref["a"])
    assert np.array_equal(np.asarray(Image.open(out / "b.png")), ref["b"])


# ---- 2. images -------------------------------------------------------------------
def _bad_images(d: Path):
    """name -> (path to compress, expected message fragment)."""
    cases = {}

    def put(name, fragment, writer):
        p = d / name
        writer(p)
        cases[name] = (p, fragment)

    put("gray16.png", "16-bit", lambda p: Image.fromarray(np.full((4, 4), 300, np.uint16)).save(p))
    put("rgb16.png", "16-bit PNG samples", lambda p: p.write_bytes(raw_png(3, 2, 16, 2, 3)))
    put("int32.tif", "32-bit integer", lambda p: Image.fromarray(np.full((4, 4), 70000, np.int32)).save(p))
    put("float.tif", "32-bit float", lambda p: Image.fromarray(np.full((4, 4), 0.5, np.float32)).save(p))
    put("cmyk.tif", "mode 'CMYK'", lambda p: Image.new("CMYK", (4, 4), (1, 2, 3, 4)).save(p))
    put("cmyk.jpg", "mode 'CMYK'", lambda p: Image.new("CMYK", (8, 8), (1, 2, 3, 4)).save(p))
    put("anim.gif", "multi-frame", lambda p: Image.new("L", (4, 4), 0).save(
        p, save_all=True, append_images=[Image.new("L", (4, 4), 255)]))
    put("pages.tif", "multi-frame", lambda p: Image.new("L", (4, 4)).save(
        p, save_all=True, append_images=[Image.new("L", (4, 4), 9)]))
    put("zero.png", "zero width or height", lambda p: p.write_bytes(raw_png(0, 5)))
    put("bomb.png", "too large", lambda p: p.write_bytes(raw_png(100000, 100000, rows=False)))
    put("big.png", "too large", lambda p: p.write_bytes(raw_png(9000, 9000, rows=False)))
    noise = np.random.default_rng(7).integers(0, 256, (64, 64), dtype=np.uint8)
    put("cut.png", "corrupt", lambda p: (Image.fromarray(noise).save(p), p.write_bytes(p.read_bytes()[:2000])))
    put("text.png", "not a recognised image", lambda p: p.write_text("hello, not an image\n"))
    put("empty.png", "file is empty", lambda p: p.write_bytes(b""))
    cases["missing.png"] = (d / "missing.png", "no such file")
    (d / "no-images").mkdir()
    (d / "no-images" / "notes.txt").write_text("x")
    cases["no-images"] = (d / "no-images", "no images in this folder")
    (d / "dir.png").mkdir()
    cases["dir.png"] = (d / "dir.png", "no images in this folder")
    return cases


BAD_IMAGES = ["gray16.png", "rgb16.png", "int32.tif", "float.tif", "cmyk.tif", "cmyk.jpg", "anim.gif", "pages.tif",
              "zero.png", "bomb.png", "big.png", "cut.png", "text.png", "empty.png", "missing.png", "no-images",
              "dir.png"]


@pytest.mark.parametrize("name", BAD_IMAGES)
def test_bad_image_fails_cleanly(tmp_path, models, name):
    src = tmp_path / "in"
    src.mkdir()
    path, fragment = _bad_images(src)[name]
    Image.fromarray(np.zeros((3, 3), np.uint8)).save(src / "good.png")
    before = digest(src)
    out = tmp_path / "x.ddpmc"
    res = run("compress", src / "good.png", path, "-o", out, "--model", models["tiny"], "--steps", 2)
    assert_user_error(res, fragment)
    assert not out.exists()
    assert digest(src) == before
    no_temp_files(tmp_path)


# ---- 4. models -------------------------------------------------------------------
def _bad_models(d: Path, good: Path):
    meta = json.loads(good.with_suffix(".json").read_text())
    weights = good.with_suffix(".safetensors").read_bytes()
    out = {}

    def put(name, fragment, meta_text=None, w=weights):
        (d / f"{name}.json").write_text(json.dumps(meta) if meta_text is None else meta_text)
        (d / f"{name}.safetensors").write_bytes(w)
        out[name] = (d / name, fragment)

    put("cut-weights", "are damaged", w=weights[:1000])
    put("empty-weights", "are damaged", w=b"")
    put("flipped-weights", "do not match the fingerprint", w=weights[:-10] + bytes([weights[-10] ^ 1]) + weights[-9:])
    put("not-json", "is not valid JSON", meta_text="{")
    put("not-ours", "is not a ddpm-codec model config", meta_text='{"format": "x"}')
    put("future", "model format version 9", meta_text=json.dumps({**meta, "version": 9}))
    neg = json.loads(json.dumps(meta))
    neg["config"]["unet"]["base_channels"] = -4
    put("negative-size", "invalid model config", meta_text=json.dumps(neg))
    steps = json.loads(json.dumps(meta))
    steps["recommended_steps"] = "many"
    put("bad-steps", "recommended_steps", meta_text=json.dumps(steps))
    other = json.loads(json.dumps(meta))
    other["config"]["unet"]["base_channels"] = 16
    put("other-shape", "config expects", meta_text=json.dumps(other))
    out["missing"] = (d / "nothere", "model config not found")
    out["a-png"] = (d / "x.png", "model config not found")
    return out


BAD_MODELS = ["cut-weights", "empty-weights", "flipped-weights", "not-json", "not-ours", "future", "negative-size",
              "bad-steps", "other-shape", "missing", "a-png"]


@pytest.mark.parametrize("name", BAD_MODELS)
def test_bad_model_fails_cleanly(tmp_path, models, ref, name):
    md = tmp_path / "m"
    md.mkdir()
    path, fragment = _bad_models(md, models["tiny"])[name]
    res = run("compress", ref["dir"] / "a.png", "-o", tmp_path / "x.ddpmc", "--model", path, "--steps", 2)
    assert_user_error(res, fragment)
    assert not (tmp_path / "x.ddpmc").exists()
    stream = tmp_path / "s.ddpmc"
    stream.write_bytes(ref["data"])
    res = run("decompress", stream, "-o", tmp_path / "out", "--model", path)
    assert_user_error(res, fragment)
    assert not (tmp_path / "out").exists()


# ---- the real console script: one line on stderr, exit code 2, no traceback ------
def _cmd(*args):
    exe = [str(EXE)] if EXE.exists() else [sys.executable, "-m", "ddpm_codec_cli"]
    return exe + [str(a) for a in args]


def test_console_script_errors_are_one_line(tmp_path, models, ref):
    bad = tmp_path / "bad.ddpmc"
    bad.write_bytes(ref["data"][:-7])
    gray16 = tmp_path / "g16.png"
    Image.fromarray(np.full((4, 4), 300, np.uint16)).save(gray16)
    # three failures in one process each: a corrupt stream, a 16-bit image, a damaged model
    (tmp_path / "m.json").write_text("{")
    (tmp_path / "m.safetensors").write_bytes(b"")
    cases = [(("decompress", bad, "-o", tmp_path / "out", "--model", models["tiny"]), "truncated stream"),
             (("compress", gray16, "-o", tmp_path / "g.ddpmc", "--model", models["tiny"]), "16-bit"),
             (("compress", ref["dir"] / "a.png", "-o", tmp_path / "m.ddpmc", "--model", tmp_path / "m"),
              "not valid JSON")]
    procs = [subprocess.Popen(_cmd(*a), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
             for a, _ in cases]
    for p, (_, fragment) in zip(procs, cases):
        out, err = p.communicate(timeout=120)
        assert_user_error(None, fragment, stderr=err + out, code=p.returncode)
        assert "Traceback" not in err
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.glob("*.ddpmc")] == ["bad.ddpmc"]
    no_temp_files(tmp_path)


# ---- 6. kill tests ---------------------------------------------------------------
def _wait_for(cond, timeout, proc):
    t0 = time.time()
    while not cond():
        if proc.poll() is not None:
            raise AssertionError(f"process ended early with code {proc.returncode}")
        if time.time() - t0 > timeout:
            proc.kill()
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


def test_killed_compress_leaves_input_and_no_output(tmp_path, models):
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(3)
    for k in range(16):              # ~15 s of coding at 1000 steps: the kill lands mid-way
        Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(src / f"i{k:02d}.png")
    before = digest(src)
    dest = tmp_path / "dest"
    dest.mkdir()
    log = tmp_path / "stderr.txt"
    with open(log, "wb") as err:
        p = subprocess.Popen(_cmd("compress", src, "-o", dest / "all.ddpmc", "--model", models["tiny"],
                                  "--steps", 1000, "--classical", "never"), stdout=subprocess.DEVNULL, stderr=err, env=ENV)
        try:
            _wait_for(lambda: b"compress:" in log.read_bytes(), 120, p)   # the coder has started
            time.sleep(1.0)
        finally:
            p.send_signal(signal.SIGKILL)
            p.wait(30)
    assert p.returncode == -signal.SIGKILL, log.read_text()
    assert list(dest.iterdir()) == []                 # no OUT, no temporary file
    assert digest(src) == before


def _idx_file(path: Path, n=32):
    a = np.random.default_rng(0).integers(0, 256, (n, 28, 28), dtype=np.uint8)
    import gzip
    path.write_bytes(gzip.compress(bytes([0, 0, 8, 3]) + struct.pack(">3I", *a.shape) + a.tobytes()))
    return path


def _checkpoint_in_use(run_dir: Path):
    """The checkpoint `train` would resume from (last, else last.old), checked complete."""
    from safetensors.torch import load_file
    if (run_dir / "last").exists():             # swapped in whole, never half-written
        assert (run_dir / "last" / "state.json").exists(), sorted(p.name for p in (run_dir / "last").iterdir())
    for cand in (run_dir / "last", run_dir / "last.old"):
        if (cand / "state.json").exists():
            state = json.loads((cand / "state.json").read_text())
            model, meta = load_model(str(cand / "model"))
            assert meta["step"] == state["step"]
            load_file(str(cand / "raw.safetensors"))
            load_file(str(cand / "optim.safetensors"))
            return cand, int(state["step"])
    return None, None


def test_killed_train_leaves_a_loadable_checkpoint_and_resumes(tmp_path):
    data = _idx_file(tmp_path / "d-idx3-ubyte.gz")
    run_dir = tmp_path / "run"
    common = ("train", "--config", "tiny", "--data", data, "--out", run_dir, "--batch-size", 4, "--ckpt-every", 5,
              "--eval-every", 0, "--eval-n", 8, "--device", "cpu")
    data_before = digest(tmp_path)
    p = subprocess.Popen(_cmd(*common, "--steps", 300), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         env=ENV)
    try:
        _wait_for(lambda: (run_dir / "last" / "state.json").exists(), 120, p)
        time.sleep(random.Random().uniform(0.2, 1.5))       # mid-run, often mid-save (saves every 5 steps)
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait(30)
    assert p.returncode == -signal.SIGKILL
    cand, step = _checkpoint_in_use(run_dir)
    assert cand is not None and 5 <= step < 300 and step % 5 == 0
    res = subprocess.run(_cmd(*common, "--steps", step + 3), capture_output=True, text=True, env=ENV, timeout=180)
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"resumed {run_dir} at step {step}" in res.stderr
    cand, final = _checkpoint_in_use(run_dir)
    assert cand == run_dir / "last" and final == step + 3
    assert not (run_dir / "last.old").exists()
    assert {k: v for k, v in digest(tmp_path).items() if not k.startswith("run")} == data_before
