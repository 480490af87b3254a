"""`ddpm-codec`: the command line.  Commands parse, call the library, print.

Every error a user can cause (missing data, bad images, damaged streams or
checkpoints, existing outputs, and usage errors: a missing argument, an unknown
option or value) ends in one line `ddpm-codec: error: ...` on stderr and exit
code 2; a bug still shows its traceback, exit code 1.
"""
from __future__ import annotations

import sys

import click

from . import errors

# `ddpm-codec` alone shows the help (click >= 8.2 raises this UsageError for it)
_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


def _usage_error(e: click.UsageError):
    """A usage error as one line, like every other user error; exit code 2."""
    if isinstance(e, _NO_ARGS_IS_HELP):
        raise e
    msg = " ".join(e.format_message().split()).rstrip(".") or type(e).__name__
    hint = f" (see '{e.ctx.command_path} --help')" if e.ctx is not None else ""
    click.echo(f"ddpm-codec: error: {msg}{hint}", err=True)
    sys.exit(2)


class Group(click.Group):
    def make_context(self, info_name, args, parent=None, **extra):
        try:                                    # the group's own options: `ddpm-codec --bogus`
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as e:
            _usage_error(e)

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
        except click.UsageError as e:          # a command's arguments, an unknown command
            _usage_error(e)
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
