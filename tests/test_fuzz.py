"""Fuzzing the stream parser and decoder (hypothesis, bounded and derandomized).

The wanted outcome for any damaged or hostile stream is a StreamError (the
CLI's one-line error, exit code 2); a decode that succeeds must give exactly
the original pixels.  Anything else -- another exception type, a hang -- fails.
Most cases stop in the parser (cheap); header mutations re-packed with valid
CRCs and payload damage behind valid CRCs run the full decoder with a tiny
model.  ddpm_codec.testing.fuzz (run long by benchmarks/fuzz_streams.py) makes the same kind of cases.
"""
import json
import signal
import struct
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from ddpm_codec import api
from ddpm_codec.codec import lossless
from ddpm_codec.diffusion.configs import get_config
from ddpm_codec.diffusion.model import DiffusionModel
from ddpm_codec.format import container
from ddpm_codec.io.checkpoint import save_model

BASE = settings(derandomize=True, database=None, deadline=None, print_blob=True,
                suppress_health_check=list(HealthCheck))
CASE_TIMEOUT_S = 30


class Hang(BaseException):
    pass


@contextmanager
def time_limit(seconds=CASE_TIMEOUT_S):
    def on_alarm(*_):
        raise Hang(f"case ran longer than {seconds} s")
    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "tiny"
    save_model(DiffusionModel.from_config(get_config("tiny")), path)
    codec = api.Codec(str(path))
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (6, 5), dtype=np.uint8)
    rgb = rng.integers(0, 256, (4, 3, 3), dtype=np.uint8)
    streams = [codec.compress([grey], steps=2)[0],
               codec.compress([grey, rgb], steps=2, encrypt=False)[0]]
    return {"codec": codec, "streams": streams, "path": path}


# ---- the targets ------------------------------------------------------------
def check_parse(blob: bytes):
    """The header layer: each entry point returns or raises StreamError, nothing else."""
    for allow in (False, True):
        try:
            c = container.parse(blob, allow_truncated=allow)
        except container.StreamError:
            continue
        assert isinstance(c.header, dict) and c.mode in container.MODES and len(c.fingerprint) == 2 * container.FINGERPRINT_BYTES
        assert allow or not c.truncated
    for f in (api.stream_names, api.stream_mode):
        try:
            f(blob)
        except container.StreamError:
            pass


def check_decode(codec, blob: bytes, want_sha=None) -> str:
    """The whole decoder, as the CLI runs it: StreamError, or exactly the original pixels."""
    check_parse(blob)
    with time_limit():
        try:
            if api.stream_mode(blob) == "lossy":
                codec.decompress_lossy(blob)
                return "lossy"
            images = codec.decompress(blob)
        except container.StreamError as e:
            assert str(e) and "\n" not in str(e)
            return "error"
    if want_sha is not None:
        assert lossless.pixel_checksum(images) == want_sha, "a damaged stream decoded to other pixels"
    return "ok"


# ---- strategies -------------------------------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2 ** 70), 2 ** 70) | st.sampled_from([0, 1, -1, 2 ** 31, 2 ** 63])
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12)


@st.composite
def byte_mutations(draw, data: bytes):
    b = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "overwrite"]))
        if not b:
            break
        i = draw(st.integers(0, len(b) - 1))
        if kind == "flip":
            b[i] ^= 1 << draw(st.integers(0, 7))
        elif kind == "truncate":
            del b[i:]
        elif kind == "insert":
            b[i:i] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del b[i:i + draw(st.integers(1, 16))]
        else:
            chunk = draw(st.binary(min_size=1, max_size=8))
            b[i:i + len(chunk)] = chunk
    return bytes(b)


def nudges(v):
    if isinstance(v, bool):
        return st.just(not v)
    if isinstance(v, int):
        return st.sampled_from([v + 1, v - 1, 2 * v, -v, 0, v + 2 ** 32, 2 ** 62])
    if isinstance(v, float):
        return st.sampled_from([v * 2, v / 2, -v, 0.0, v * 1e6])
    if isinstance(v, list) and v:
        return st.one_of(st.just(v[:-1]), st.just(v + v[-1:]), st.just(v * 3),
                         st.integers(0, len(v) - 1).flatmap(
                             lambda i: (nudges(v[i]) if not isinstance(v[i], str) else json_values).map(
                                 lambda x: v[:i] + [x] + v[i + 1:])))
    return json_values


@st.composite
def header_mutations(draw, header: dict):
    h = json.loads(json.dumps(header))
    for _ in range(draw(st.integers(1, 2))):
        key = draw(st.sampled_from(sorted(h) + ["extra"]))
        action = draw(st.sampled_from(["nudge", "nudge", "replace", "drop"]))
        if action == "drop":
            h.pop(key, None)
        elif action == "replace" or key not in h:
            h[key] = draw(json_values)
        else:
            h[key] = draw(nudges(h[key]))
    return h


def repack(blob, **kw):
    c = container.parse(blob)
    fields = dict(mode=c.mode, fingerprint=c.fingerprint, header=c.header, payload=c.payload, encrypted=c.encrypted)
    fields.update(kw)
    return container.pack(container.Container(**fields))


# ---- parser layer (cheap, many cases) ------------------------------------------
@settings(BASE, max_examples=300)
@given(st.binary(max_size=400) | st.binary(max_size=400).map(lambda b: container.MAGIC + b))
def test_parser_random_bytes(blob):
    check_parse(blob)


@settings(BASE, max_examples=400)
@given(st.data())
def test_parser_mutated_streams(env, data):
    src = data.draw(st.sampled_from(env["streams"]))
    check_parse(data.draw(byte_mutations(src)))


@settings(BASE, max_examples=200)
@given(st.one_of(json_values.map(lambda v: json.dumps(v).encode()), st.binary(max_size=200),
                 st.integers(1, 5000).map(lambda n: b"[" * n + b"]" * n)),
       st.sampled_from([0, 9]), st.integers(0, 2))
def test_parser_raw_headers_with_valid_crcs(env, text, level, length_lie):
    """Arbitrary header bytes (JSON or not) behind a valid CRC, and lying length fields."""
    c = container.parse(env["streams"][0])
    head = zlib.compress(text, level)
    hlen = [len(head), len(head) + 1, (1 << 32) - 1][length_lie]
    pre = container.MAGIC + bytes([1, 0, 1]) + bytes.fromhex(c.fingerprint) + struct.pack("<I", hlen) + head
    blob = (pre + struct.pack("<I", zlib.crc32(pre)) + struct.pack("<Q", len(c.payload)) + c.payload
            + struct.pack("<I", zlib.crc32(c.payload)))
    check_parse(blob)
    try:
        parsed = container.parse(blob)
        lossless._check_header(parsed.header, len(parsed.payload))
    except container.StreamError:
        pass


# ---- the decoder (full decodes with the tiny model, fewer cases) -----------------
@settings(BASE, max_examples=300)
@given(st.data())
def test_repacked_headers_fail_cleanly_or_decode_exactly(env, data):
    src = data.draw(st.sampled_from(env["streams"]))
    c = container.parse(src)
    h = data.draw(header_mutations(c.header))
    try:
        blob = repack(src, header=h)
    except ValueError:                       # pack refuses a header over 1 MiB
        assume(False)
    event(check_decode(env["codec"], blob, c.header["pixels_sha256"]))


@settings(BASE, max_examples=60)
@given(st.data())
def test_payload_damage_behind_valid_crc_never_decodes_wrongly(env, data):
    """Damage the CRC cannot see either fails cleanly or, where it only touched
    bytes that carry no pixel information (e.g. inside the classical seed's
    own container), still gives exactly the original pixels (checksum)."""
    src = data.draw(st.sampled_from(env["streams"]))
    c = container.parse(src)
    p = bytearray(c.payload)
    kind = data.draw(st.sampled_from(["flip", "flip", "cut", "extend", "swap"]))
    if kind == "flip":
        for _ in range(data.draw(st.integers(1, 3))):
            p[data.draw(st.integers(0, len(p) - 1))] ^= 1 << data.draw(st.integers(0, 7))
    elif kind == "cut":
        del p[4 * data.draw(st.integers(0, len(p) // 4 - 1)):]
    elif kind == "extend":
        p += data.draw(st.integers(1, 16).flatmap(lambda n: st.binary(min_size=4 * n, max_size=4 * n)))
    else:
        i = 4 * data.draw(st.integers(0, len(p) // 4 - 2))
        p[i:i + 8] = p[i + 4:i + 8] + p[i:i + 4]
    assume(bytes(p) != c.payload)
    outcome = check_decode(env["codec"], repack(src, payload=bytes(p)), c.header["pixels_sha256"])
    event(outcome)
    assert outcome in ("error", "ok")


@settings(BASE, max_examples=100)
@given(st.data())
def test_mutated_streams_through_the_decoder(env, data):
    """Byte-level damage (CRCs not repaired) all the way through the decoder entry point."""
    src = data.draw(st.sampled_from(env["streams"]))
    blob = data.draw(byte_mutations(src))
    assume(blob != src)
    assert check_decode(env["codec"], blob) == "error"


# ---- the long-running fuzzer's own entry point ---------------------------------
def test_fuzz_benchmark_script_runs(tmp_path, monkeypatch):
    from ddpm_codec.testing import fuzz
    out = tmp_path / "fuzz.json"
    rc = fuzz.main(["--cases", "60", "--timeout", "60", "--no-lossy", "--out", str(out), "--save-cases", ""])
    rec = json.loads(out.read_text())
    assert rec["cases"] == 60 and sum(rec["outcomes"].values()) == 60
    assert {k: rec["outcomes"][k] for k in ("unexpected", "crash", "hang", "wrong_output")} == \
        {"unexpected": 0, "crash": 0, "hang": 0, "wrong_output": 0}, rec["problems"]
    assert rc == 0


# ---- replay: every input that once misbehaved is now a clean error or an exact decode ----------
REPLAY = sorted((Path(__file__).resolve().parent / "fuzz_cases").glob("*.ddpmc"))


def test_replay_corpus_is_present():
    assert len(REPLAY) >= 50


@pytest.mark.parametrize("path", REPLAY, ids=[p.stem for p in REPLAY])
def test_replayed_fuzz_case_is_handled(env, path):
    from ddpm_codec.testing.fuzz import run_case
    outcome, msg = run_case(env["codec"], path.read_bytes(), None)
    assert outcome in ("stream_error", "decoded_ok"), msg
