"""`ddpm-codec`: the command line.  Commands parse, call the library, print.

Every error a user can cause (missing data, bad images, damaged streams or
checkpoints, existing outputs) ends in one line on stderr and exit code 2;
a bug still shows its traceback, exit code 1.
"""
from __future__ import annotations

import sys

import click

from . import errors


class Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except errors.USER_ERRORS as e:
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            click.echo(f"ddpm-codec: error: {msg}", err=True)
            sys.exit(2)
        except OSError as e:
            if e.filename is None:           # not about a path the user gave: a bug, keep the traceback
                raise
            click.echo(f"ddpm-codec: error: {e.filename}: {e.strerror or e}", err=True)
            sys.exit(2)
        except click.UsageError:
            raise                               # click prints usage, exit 2
        except click.ClickException as e:
            click.echo(f"ddpm-codec: error: {e.format_message()}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("ddpm-codec: interrupted", err=True)
            sys.exit(130)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ddpm-codec")
def cli():
    """Diffusion models as real image codecs: lossless bits-back coding,
    progressive lossy coding, exact likelihoods and rate-distortion curves."""


def _register():
    """Every command module, imported plainly: a broken one fails loudly."""
    from . import codec_cmds, lossy_cmds, model_cmds
    for commands in (model_cmds, codec_cmds, lossy_cmds):
        commands.register(cli)


_register()


def main():
    cli(prog_name="ddpm-codec")


if __name__ == "__main__":
    main()
