"""compress --fast (issue 21): the short chain, said in --help, and refused beside --steps."""

from pathlib import Path

GOLDEN = Path(__file__).resolve().parent / "golden"
def test_compress_fast_uses_the_short_chain(tmp_path):
    from click.testing import CliRunner

    from ddpm_codec import api
    from ddpm_codec.format.container import parse
    from ddpm_codec_cli.main import cli
    codec = api.Codec(str(GOLDEN / "tiny_vdm"))
    assert codec.fast_steps() == min(api.FAST_STEPS, codec.default_steps)
    out = tmp_path / "f.ddpmc"
    r = CliRunner().invoke(cli, ["compress", str(GOLDEN / "in_grey.png"), str(GOLDEN / "in_rgb.png"), "--model",
                                 str(GOLDEN / "tiny_vdm"), "--classical", "never", "--fast", "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert parse(out.read_bytes()).header["steps"] == codec.fast_steps()
    assert f"a {api.FAST_STEPS}-step" in " ".join(CliRunner().invoke(cli, ["compress", "--help"]).output.split())
    r = CliRunner().invoke(cli, ["compress", str(GOLDEN / "in_grey.png"), "--fast", "--steps", "3", "-o",
                                 str(tmp_path / "g.ddpmc")])
    assert r.exit_code != 0 and "--fast" in r.output
