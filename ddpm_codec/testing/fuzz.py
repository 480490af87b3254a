"""Fuzzing of the `.ddpmc` header parser and stream decoder: corpus, mutators,
the per-case worker process and the fuzz loop (`main`).  benchmarks/fuzz_streams.py
runs it long and writes benchmarks/results/fuzz.json; tests run it short.

    OMP_NUM_THREADS=1 python benchmarks/fuzz_streams.py --cases 2000 --seconds 600

Corpus: small valid streams made with a tiny untrained model (`configs`
'tiny', fixed seed, and its pixel-group companion): lossless (one grey image;
grey + RGB; two images of one shape; without encryption; one 33x30 image as
2 x 2 tiles; one 28x28 image as pixel groups) and, when the lossy codec can
make one, a lossy stream.  Every case is one mutation of a corpus stream (or fresh bytes):

- byte level, CRCs left broken: bit flips, truncation, insertion, deletion,
  duplicated ranges, splices of two streams, random bytes (with and without
  our magic);
- re-packed with valid CRCs (`container.pack`), to reach the layers below the
  CRCs: header JSON mutations (a field replaced by a random JSON value,
  removed, or nudged: +-1, x2, huge, negative; image records, groups), payload
  bit flips / truncation / extension, another fingerprint, mode or flag;
  raw header bytes (random JSON text, random deflated bytes) with a valid CRC.

Each case runs in a worker process, as the CLI would run it: parse (strict and
truncation-tolerant), `stream_names`, `stream_mode`, then the full decode with
the tiny model.  Outcomes:

- stream_error: a StreamError (ModelMismatch included): the CLI's one-line
  error, exit code 2 -- the wanted outcome for a damaged stream;
- user_error: another error the CLI reports in one line (exit 2), not a
  StreamError (counted apart: it should be a StreamError);
- decoded_ok: decoded; a lossless decode must then give exactly the source's
  pixels, else the case is counted as wrong_output (silent garbage);
- unexpected: any other exception (the CLI would print a traceback);
- crash: the worker died (segfault, abort, out of memory);
- hang: the case took longer than --timeout (the worker is killed).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import random
import struct
import sys
import tempfile
import time
import traceback
import zlib
from collections import Counter, defaultdict
from pathlib import Path

OUTCOMES = ("stream_error", "user_error", "decoded_ok", "wrong_output", "unexpected", "crash", "hang")


# ---- corpus ---------------------------------------------------------------
def make_model(path: Path):
    import torch

    from ddpm_codec.diffusion.configs import get_config
    from ddpm_codec.diffusion.model import DiffusionModel
    from ddpm_codec.io.checkpoint import save_model
    from ddpm_codec.training.groups import conditional_from
    torch.manual_seed(0)
    base = DiffusionModel.from_config(get_config("tiny"))
    fp = save_model(base, path)
    # its (untrained) pixel-group companion, so the corpus holds a pixel-group stream
    save_model(conditional_from(base), path.with_name(path.name + "_groups"), {"base_fingerprint": fp})
    return path


def make_corpus(model_path: Path, lossy: bool = True):
    """[(name, stream bytes, pixel checksum of the source images or None for lossy)]."""
    import numpy as np

    from ddpm_codec.api import Codec
    from ddpm_codec.format.container import parse
    rng = np.random.default_rng(1)
    codec = Codec(str(model_path))
    grey = rng.integers(0, 256, (6, 5), dtype=np.uint8)
    rgb = rng.integers(0, 256, (4, 7, 3), dtype=np.uint8)
    twin = [rng.integers(0, 256, (4, 4), dtype=np.uint8) for _ in range(2)]
    big = rng.integers(0, 256, (33, 30), dtype=np.uint8)      # 2 x 2 tiles of the tiny model's 28
    out = []
    for name, imgs, kw in [("grey", [grey], {}), ("grey+rgb", [grey, rgb], {"steps": 3}),
                           ("twins", twin, {}), ("plain", [grey], {"encrypt": False}),
                           ("tiled", [big], {"tiles": "always"})]:
        data, _ = codec.compress(imgs, steps=kw.get("steps", 2), encrypt=kw.get("encrypt", True),
                                 tiles=kw.get("tiles", "auto"))
        out.append((name, data, parse(data).header["pixels_sha256"]))
    if codec.groups is not None:        # one 28x28 image as pixel groups (forced: untrained, it is larger)
        from ddpm_codec.codec import lossless
        from ddpm_codec.codec.units import ImageRecord
        px = rng.integers(0, 256, (28, 28, 1), dtype=np.uint8)
        data, _ = lossless._encode_pixel_groups([ImageRecord(pixels=px, name="g.png", mode="L")], *codec.groups, 2, 0.25, True, 0)
        out.append(("pixel groups", data, parse(data).header["pixels_sha256"]))
    try:
        if not lossy:
            return out
        data, _ = codec.compress_lossy([grey], steps=3)
        data = data if isinstance(data, (bytes, bytearray)) else data[0]
        parse(bytes(data))
        out.append(("lossy", bytes(data), None))
    except Exception as e:  # noqa: BLE001 - the lossy codec is optional here
        print(f"(no lossy stream in the corpus: {type(e).__name__}: {e})", file=sys.stderr)
    return out


# ---- mutations ------------------------------------------------------------
def _rand_json(r: random.Random, depth=0):
    k = r.randrange(10 if depth < 3 else 7)
    if k == 0:
        return None
    if k == 1:
        return r.choice([True, False])
    if k == 2:
        return r.choice([0, 1, -1, 2, 3, 255, 256, 65535, 65536, 1 << 20, 1 << 31, 1 << 32, 1 << 63,
                         (1 << 64) + 1, -(1 << 63), 10 ** 30, r.randrange(-1000, 1000)])
    if k == 3:
        return r.choice([0.0, -0.0, 1e-300, 1e300, 0.25, -1.5, 1e-7, 5e-7, 1e3, 2e3, r.random()])
    if k in (4, 5):
        return r.choice(["", "bitswap", "L", "RGB", "LA", "RGBA", "P", "x" * r.randrange(300), "../../etc/passwd",
                         "a\x00b", "\ud800", "CON", ".", "..", "é.png", "0" * 64])
    if k == 6:
        return r.randrange(-5, 100)
    if k in (7, 8):
        return [_rand_json(r, depth + 1) for _ in range(r.randrange(5))]
    return {r.choice(["a", "threads", "steps", "images"]): _rand_json(r, depth + 1) for _ in range(r.randrange(3))}


def _nudge(r: random.Random, v):
    if isinstance(v, bool):
        return not v
    if isinstance(v, int):
        return r.choice([v + 1, v - 1, v * 2, -v, 0, v + (1 << 32), 1 << 62, v // 2])
    if isinstance(v, float):
        return r.choice([v * 2, v / 2, -v, 0.0, v * 1e6, v * 1e-6])
    if isinstance(v, str):
        if not v:
            return "x"
        i = r.randrange(len(v))
        return v[:i] + r.choice("0aF\x00/") + v[i + 1:]
    if isinstance(v, list):
        if not v:
            return [_rand_json(r)]
        v = list(v)
        op = r.randrange(5)
        i = r.randrange(len(v))
        if op == 0:
            del v[i]
        elif op == 1:
            v.insert(i, v[i])
        elif op == 2:
            v[i] = _nudge(r, v[i])
        elif op == 3:
            v = v * r.choice([2, 100, 5000])
        else:
            v[i] = _rand_json(r)
        return v
    if isinstance(v, dict):
        return {k: (_nudge(r, x) if r.random() < 0.5 else x) for k, x in v.items()}
    return _rand_json(r)


def _repack(container, c, **kw) -> bytes:
    fields = dict(mode=c.mode, fingerprint=c.fingerprint, header=c.header, payload=c.payload, encrypted=c.encrypted)
    fields.update(kw)
    return container.pack(container.Container(**fields))


def _raw_stream(version=1, mode=0, flags=1, fp=b"\0" * 32, head=b"", payload=b"", hlen=None, plen=None):
    pre = b"DDPMC" + bytes([version, mode, flags]) + fp + struct.pack("<I", len(head) if hlen is None else hlen) + head
    out = pre + struct.pack("<I", zlib.crc32(pre)) + struct.pack("<Q", len(payload) if plen is None else plen)
    return out + payload + struct.pack("<I", zlib.crc32(payload))


def mutate(r: random.Random, corpus, fingerprint: str):
    """One case: (mutator name, bytes, index of the source stream or None)."""
    from ddpm_codec.format import container
    src = r.randrange(len(corpus))
    data = corpus[src][1]
    n = len(data)
    kind = r.choice(["flip", "flips", "truncate", "insert", "delete", "dup", "splice", "random", "magic_random",
                     "header_field", "header_field", "header_nudge", "header_nudge", "header_drop", "images",
                     "groups", "payload_flip", "payload_cut", "payload_extend", "fingerprint", "mode_flag",
                     "raw_header", "lengths"])
    if kind == "flip":
        i = r.randrange(n)
        return kind, data[:i] + bytes([data[i] ^ (1 << r.randrange(8))]) + data[i + 1:], src
    if kind == "flips":
        b = bytearray(data)
        for _ in range(r.randrange(2, 16)):
            b[r.randrange(n)] ^= 1 << r.randrange(8)
        return kind, bytes(b), src
    if kind == "truncate":
        return kind, data[:r.randrange(n)], src
    if kind == "insert":
        i = r.randrange(n + 1)
        return kind, data[:i] + r.randbytes(r.randrange(1, 64)) + data[i:], src
    if kind == "delete":
        i = r.randrange(n)
        return kind, data[:i] + data[i + r.randrange(1, 64):], src
    if kind == "dup":
        i = r.randrange(n)
        j = min(n, i + r.randrange(1, 256))
        return kind, data[:j] + data[i:j] + data[j:], src
    if kind == "splice":
        other = corpus[r.randrange(len(corpus))][1]
        return kind, data[:r.randrange(n)] + other[r.randrange(len(other)):], None
    if kind == "random":
        return kind, r.randbytes(r.randrange(0, 2048)), None
    if kind == "magic_random":
        return kind, b"DDPMC" + r.randbytes(r.randrange(0, 512)), None
    c = container.parse(data, allow_truncated=True)
    h = json.loads(json.dumps(c.header))
    if kind in ("header_field", "header_nudge", "header_drop"):
        key = r.choice(sorted(h) + ["extra"])
        if kind == "header_field":
            h[key] = _rand_json(r)
        elif kind == "header_nudge":
            h[key] = _nudge(r, h.get(key))
        else:
            h.pop(key, None)
        return kind, _repack(container, c, header=h), src
    if kind == "images":
        imgs = h.get("images") or [["a", "L", 1, 1, 1]]
        i = r.randrange(len(imgs))
        rec = list(imgs[i])
        j = r.randrange(len(rec))
        rec[j] = _nudge(r, rec[j]) if r.random() < 0.7 else _rand_json(r)
        if r.random() < 0.2:               # a big claim: many huge images
            imgs = [["x", "RGBA", 65536, 65536, 4]] * r.choice([1, 1000, 30000])
        else:
            imgs = imgs[:i] + [rec] + imgs[i + 1:]
        h["images"] = imgs
        return kind, _repack(container, c, header=h), src
    if kind == "groups":
        h["groups"] = _nudge(r, h.get("groups", []))
        return kind, _repack(container, c, header=h), src
    if kind == "payload_flip":
        p = bytearray(c.payload)
        if p:
            for _ in range(r.randrange(1, 4)):
                p[r.randrange(len(p))] ^= 1 << r.randrange(8)
        return kind, _repack(container, c, payload=bytes(p)), src
    if kind == "payload_cut":
        return kind, _repack(container, c, payload=c.payload[:r.randrange(len(c.payload) + 1)]), src
    if kind == "payload_extend":
        return kind, _repack(container, c, payload=c.payload + r.randbytes(r.choice([1, 4, 64]))), src
    if kind == "fingerprint":
        return kind, _repack(container, c, fingerprint=r.randbytes(32).hex()), src
    if kind == "mode_flag":
        if r.random() < 0.5:
            return kind, _repack(container, c, mode="lossy" if c.mode == "lossless" else "lossless"), src
        return kind, _repack(container, c, encrypted=not c.encrypted), src
    fp = bytes.fromhex(fingerprint)
    if kind == "raw_header":
        choice = r.randrange(4)
        if choice == 0:
            text = json.dumps(_rand_json(r)).encode()
        elif choice == 1:
            text = b"[" * r.choice([10, 1000, 100000]) + b"]" * r.choice([0, 10, 100000])
        elif choice == 2:
            text = r.choice([b'{"steps": NaN}', b'{"a": Infinity}', b'{"n": 1' + b"0" * 5000 + b"}",
                             b'{"a": "\\ud800"}', b"\xff\xfe", b'{"a":1}{"b":2}'])
        else:
            return kind, _raw_stream(fp=fp, head=r.randbytes(r.randrange(64)), payload=c.payload), src
        head = zlib.compress(text, r.choice([0, 9]))
        return kind, _raw_stream(fp=fp, head=head, payload=c.payload), src
    # lengths: header/payload length fields that disagree with the data, CRCs made valid
    head = zlib.compress(json.dumps(h).encode())
    return kind, _raw_stream(fp=fp, head=head, payload=c.payload,
                             hlen=r.choice([None, 0, len(head) + 1, (1 << 20) + 1, (1 << 32) - 1]),
                             plen=r.choice([None, 0, len(c.payload) + 1, (1 << 34) + 1, (1 << 64) - 1])), src


# ---- the target -------------------------------------------------------------
def run_case(codec, blob: bytes, expect_sha):
    """Outcome, message of one case (what the CLI would do with it)."""
    from ddpm_codec import api
    from ddpm_codec.codec.lossless import pixel_checksum
    from ddpm_codec.errors import user_errors
    from ddpm_codec.format import container
    try:
        for strict in (False, True):
            container.parse(blob, allow_truncated=not strict)
        api.stream_names(blob)
        if api.stream_mode(blob) == "lossy":
            codec.decompress_lossy(blob)
            return "decoded_ok", "lossy"
        images = codec.decompress(blob)
        if expect_sha is not None and pixel_checksum(images) != expect_sha:
            return "wrong_output", "decoded pixels differ from the source's"
        return "decoded_ok", "lossless"
    except container.StreamError as e:
        return "stream_error", str(e)
    except user_errors() as e:
        return "user_error", f"{type(e).__name__}: {e}"
    except Exception as e:  # noqa: BLE001 - this is what we are looking for
        tb = traceback.extract_tb(e.__traceback__)[-1]
        return "unexpected", f"{type(e).__name__}: {e} [{Path(tb.filename).name}:{tb.lineno}]"


def _worker(model_path, conn):
    import torch
    torch.set_num_threads(1)
    from ddpm_codec.api import Codec
    codec = Codec(str(model_path))
    conn.send("ready")
    while True:
        msg = conn.recv()
        if msg is None:
            return
        blob, sha = msg
        conn.send(run_case(codec, blob, sha))


class Worker:
    def __init__(self, model_path):
        self.model_path = model_path
        self.start()

    def start(self):
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker, args=(self.model_path, child), daemon=True)
        self.proc.start()
        child.close()
        if not self.conn.poll(300) or self.conn.recv() != "ready":
            raise RuntimeError("fuzz worker did not start")

    def run(self, blob, sha, timeout):
        try:
            self.conn.send((blob, sha))
            if self.conn.poll(timeout):
                return self.conn.recv()
            outcome, msg = "hang", f"no answer within {timeout} s"
        except (EOFError, BrokenPipeError, ConnectionResetError):
            outcome, msg = "crash", None
        self.proc.kill()
        self.proc.join()
        if outcome == "crash":
            msg = f"worker died (exit code {self.proc.exitcode})"
        self.start()
        return outcome, msg

    def stop(self):
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()


def main(argv=None, out: str | None = None, save_cases: str = ""):
    """The fuzz loop; `out` and `save_cases` are the defaults of --out / --save-cases."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", type=int, default=1000, help="stop after this many cases")
    ap.add_argument("--seconds", type=float, default=None, help="stop after this long (whichever comes first)")
    ap.add_argument("--timeout", type=float, default=30.0, help="per-case limit; longer counts as a hang")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=out, required=out is None)
    ap.add_argument("--save-cases", default=save_cases, help="folder for inputs that crash/hang/misbehave")
    ap.add_argument("--no-lossy", action="store_true", help="leave the lossy stream out of the corpus")
    a = ap.parse_args(argv)
    import torch
    torch.set_num_threads(1)
    r = random.Random(a.seed)
    with tempfile.TemporaryDirectory() as tmp:
        model_path = make_model(Path(tmp) / "tiny")
        corpus = make_corpus(model_path, lossy=not a.no_lossy)
        from ddpm_codec.io.checkpoint import read_meta
        fingerprint = read_meta(model_path)["fingerprint"]
        worker = Worker(model_path)
        counts, by_kind, by_src, messages, bad = Counter(), defaultdict(Counter), defaultdict(Counter), Counter(), []
        t0 = time.time()
        slowest = (0.0, None)
        n = 0
        try:
            while n < a.cases and (a.seconds is None or time.time() - t0 < a.seconds):
                try:
                    kind, blob, src = mutate(r, corpus, fingerprint)
                except ValueError:             # container.pack refuses a header over 1 MiB: draw again
                    continue
                sha = corpus[src][2] if src is not None else None
                t1 = time.time()
                outcome, msg = worker.run(blob, sha, a.timeout)
                dt = time.time() - t1
                if dt > slowest[0]:
                    slowest = (dt, f"{kind}: {outcome}: {msg}"[:300])
                n += 1
                counts[outcome] += 1
                by_kind[kind][outcome] += 1
                by_src[corpus[src][0] if src is not None else "none (fresh bytes or splice)"][outcome] += 1
                if outcome in ("stream_error", "user_error"):
                    messages[msg.split("(")[0].strip()[:100]] += 1
                if outcome not in ("stream_error", "decoded_ok"):
                    if len(bad) < 50:
                        bad.append({"case": n, "mutator": kind, "source": corpus[src][0] if src is not None else None,
                                    "outcome": outcome, "message": msg})
                        if a.save_cases:
                            Path(a.save_cases).mkdir(parents=True, exist_ok=True)
                            (Path(a.save_cases) / f"case{n:06d}-{outcome}.ddpmc").write_bytes(blob)
                if n % 100 == 0:
                    print(f"{n} cases, {time.time() - t0:.0f} s: {dict(counts)}", file=sys.stderr)
        finally:
            worker.stop()
    rec = {
        "description": "fuzzing of the .ddpmc parser and decoder (ddpm_codec.testing.fuzz)",
        "cases": n, "seconds": round(time.time() - t0, 1), "seed": a.seed, "per_case_timeout_s": a.timeout,
        "outcomes": {k: counts.get(k, 0) for k in OUTCOMES},
        "by_mutator": {k: dict(v) for k, v in sorted(by_kind.items())},
        "by_source_stream": {k: dict(v) for k, v in sorted(by_src.items())},
        "corpus": [name for name, _, _ in corpus],
        "top_messages": dict(messages.most_common(25)),
        "slowest_case": {"seconds": round(slowest[0], 3), "what": slowest[1]},
        "problems": bad,
        "model": "configs 'tiny', untrained (torch.manual_seed(0))",
        "platform": {"python": platform.python_version(), "torch": torch.__version__,
                     "threads": 1, "machine": platform.machine()},
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(rec, indent=1) + "\n")
    print(json.dumps({"cases": n, "outcomes": rec["outcomes"]}))
    bad_n = sum(counts[k] for k in ("unexpected", "crash", "hang", "wrong_output"))
    return 1 if bad_n else 0

