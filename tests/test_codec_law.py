"""The codec law, pop(push(m, x)) == (m, x), for every codec of the algebra
(bitsback.ans.codecs) and every codec a lossless plan is made of
(ddpm_codec.codec.lossless_plan), on a message that already holds data."""
import numpy as np
import pytest
import torch
from helpers import random_model

from bitsback.ans.codecs import base_words, chained, known_words, serial
from bitsback.ans.initial import seeded_words
from bitsback.ans.message import Message
from bitsback.chains import bitswap
from bitsback.errors import DecodeMismatch, InsufficientInitialBits
from ddpm_codec.codec import classical_seed
from ddpm_codec.codec.chain import DiffusionChain
from ddpm_codec.codec.lossless_plan import Plan, SeedMode, Step, group_codec, seed_codec, stream_codec
from ddpm_codec.testing.reference_chains import LinearGaussian

RNG = np.random.default_rng(0)
UNDER = seeded_words(99, 400)             # words already on the stack: the law holds on any message


def assert_law(codec, x, under=UNDER):
    m = Message.from_words(under)
    pushed = codec.push(m, x)
    assert m == Message.from_words(under), "push changed the message it was given"
    back, y = codec.pop(pushed)
    assert back == m
    assert_same(y, x)


def assert_same(y, x):
    if isinstance(x, (list, tuple)):
        assert len(y) == len(x)
        for a, b in zip(y, x):
            assert_same(a, b)
    elif isinstance(x, np.ndarray):
        np.testing.assert_array_equal(y, x)
    else:
        assert y == x


@pytest.fixture(scope="module")
def tiny_chain():
    model = random_model("tiny", 0)
    with torch.no_grad():
        yield {g: DiffusionChain(model, model.schedule.chain(3), g) for g in (0.25, 1.0)}


def pixels(n, shape=(1, 8, 8)):
    return RNG.integers(0, 256, (n, *shape), dtype=np.uint8)


def test_known_words_law_and_check():
    c = known_words(seeded_words(5, 7))
    assert_law(c, None)
    with pytest.raises(DecodeMismatch):
        c.pop(Message.from_words(seeded_words(6, 7)))


def test_base_words_law_needs_an_empty_message():
    c = base_words(lambda b: classical_seed.seed_words(b), lambda w: classical_seed.unseed(w, 2))
    assert_law(c, [b"abc", b"\x00\x01\x02\x03\x04"], under=np.zeros(0, np.uint32))
    with pytest.raises(ValueError):
        c.push(Message.from_words(UNDER), [b"a", b"b"])


def test_bitswap_codec_law_on_a_linear_gaussian_chain():
    chain = LinearGaussian(np.geomspace(0.01, 0.5, 4), v0=0.25)
    x = np.clip(np.rint((RNG.normal(0, 0.5, (3, 16)) + 1) * 127.5), 0, 255).astype(np.uint8)
    assert_law(bitswap.Codec(chain, x.shape, seed=3), x)


def test_bitswap_codec_refuses_what_the_message_cannot_fund():
    chain = LinearGaussian(np.geomspace(0.01, 0.5, 4), v0=0.25)
    x = pixels(2, (16,))
    with pytest.raises(InsufficientInitialBits):
        bitswap.Codec(chain, x.shape, seed=3).push(Message.empty(), x)


def test_serial_law_and_order():
    a, b = known_words(seeded_words(1, 3)), known_words(seeded_words(2, 5))
    assert_law(serial([a, b]), [None, None])
    top = serial([a, b]).push(Message.from_words(UNDER), [None, None]).words()
    np.testing.assert_array_equal(top[-5:], seeded_words(2, 5))      # the last codec ends on top
    with pytest.raises(ValueError):
        serial([a, b]).push(Message.empty(), [None])


def _plan(mode, steps, seed_codecs=(), seed_words=0):
    return Plan(SeedMode(mode), 0, tuple(seed_codecs), seed_words, 0.25, tuple(steps))


def test_group_codecs_of_a_plan_obey_the_law(tiny_chain):
    plan = _plan("classical", [Step(0, 2, 0.25), Step(2, 1, 1.0, topup=40)])
    assert_law(group_codec(plan, 0, (1, 8, 8), tiny_chain.__getitem__, 11, True), pixels(2))
    assert_law(group_codec(plan, 1, (1, 8, 8), tiny_chain.__getitem__, 11, False), [None, pixels(1)])


def test_seed_codecs_obey_the_law():
    units = pixels(2)
    codes = [classical_seed.classical_best(u)[1] for u in units]
    names = [classical_seed.classical_best(u)[0] for u in units]
    empty = np.zeros(0, np.uint32)
    assert_law(seed_codec(_plan("classical", [], names), 7), codes, under=empty)
    assert_law(seed_codec(_plan("random", [Step(0, 1, 0.25)], seed_words=9), 7), None, under=empty)


def test_stream_codec_is_the_composite(tiny_chain):
    """A whole plan's codec pops what it pushed, from the empty message."""
    units = pixels(4)
    codes = [classical_seed.classical_best(u) for u in units[:1]]
    plan = _plan("classical", [Step(1, 1, 1.0, topup=300), Step(2, 2, 0.25)], [c for c, _ in codes])
    codec = stream_codec(plan, [u.shape for u in units], tiny_chain.__getitem__, 5, True)
    assert_law(codec, [[b for _, b in codes], [None, units[1:2]], units[2:]], under=np.zeros(0, np.uint32))


def test_auto_seeded_first_group_equals_the_seed_codec_then_the_group(tiny_chain):
    """What the planner relies on for a PRNG seed: bitswap's "auto" initial
    bits are the seed codec's words under the group's own push."""
    x = pixels(1)
    auto, st = bitswap.encode(x, tiny_chain[0.25], None, seed=21, encrypt=True, initial="auto", initial_seed=21)
    plan = _plan("random", [Step(0, 1, 0.25)], seed_words=int(st.added_initial_words))
    codec = stream_codec(plan, [x[0].shape], tiny_chain.__getitem__, 21, True)
    assert codec.push(Message.empty(), [None, x]) == auto


def test_chained_law_each_piece_sees_those_popped_before():
    """Piece i's words depend on the values before it, so a wrong order fails."""
    def make(i, before):
        return known_words(seeded_words(100 + len(before), 2 + i)) if i else known_words(seeded_words(7, 3))
    assert_law(chained(make, 3), [None, None, None])


def test_pixel_group_codecs_obey_the_law():
    from ddpm_codec.codec.pixel_group_codec import DIRECT_FACTORS, GroupCoding
    from ddpm_codec.training.groups import conditional_from
    net = conditional_from(random_model("tiny", 0))
    with torch.no_grad():
        coding = GroupCoding(net, net.schedule.chain(2), 1.0, 3, True, (28, 28))
        xs = [pixels(1, (f.size,)).reshape(1, -1) for f in coding.flat]
        k = coding.K - 1
        assert_law(coding.codec(k, xs[:k], None, len(DIRECT_FACTORS) - 1), xs[k])
        assert_law(coding.codec(k, xs[:k], 4.0, None), xs[k], under=seeded_words(5, 4000))
        direct = {n: 3 for n in range(coding.K)}            # every group direct: no stack needed
        assert_law(coding.stream_codec({}, direct), xs, under=np.zeros(0, np.uint32))
