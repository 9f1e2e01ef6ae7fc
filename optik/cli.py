"""The command line: ``optik TASK MODE key=value …`` plus ``optik info`` and ``optik demo``.

    optik classify train data=synthetic:shapes model=resnet epochs=3 imgsz=64
    optik classify val model=runs/classify/train
    optik classify predict model=runs/classify/train source=images/ save=true

Errors a user can cause print as one line (``optik: error: …``) and exit with status 2; add
``verbose=true`` for the traceback.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from typing import Any

import click
import typer

from optik.errors import OptikError

try:  # recent typer vendors click; older typer raises the click package's exceptions
    from typer._click.exceptions import ClickException as _TyperClickException
except ImportError:  # pragma: no cover
    _TyperClickException = click.exceptions.ClickException
USAGE_ERRORS = (click.exceptions.ClickException, _TyperClickException)
ABORTS = (KeyboardInterrupt, click.exceptions.Abort, typer.Abort)

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="optik: deep-learning computer vision from one CLI. Usage: optik TASK MODE key=value ...",
    context_settings={"help_option_names": ["-h", "--help"]},
)
MAX_PRINTED = 50  # result lines echoed by predict-like modes; the rest are counted


def run_task(task: str, mode: str | None, args: list[str]) -> Any:
    """Parse ``key=value`` args and run ``task``'s ``mode`` through its catalog runner. A runner that
    returns Results (a list, or a generator that writes as it goes) has one line echoed per result."""
    from optik import catalog
    from optik.config import build_config, parse_cli_args

    spec = catalog.spec(task)
    if mode is None or "=" in mode:  # `optik sam source=…`: the task's default mode
        if mode is not None:
            args = [mode, *args]
        mode = spec.default_mode
        if mode is None:
            raise click.UsageError(f"missing mode: optik {task} {{{' | '.join(spec.modes)}}} key=value ...")
    return run_mode(task, mode, build_config(task, mode, parse_cli_args(args)))


def run_mode(task: str, mode: str, cfg: Any) -> Any:
    """Run a validated config through the catalog's runner for (task, mode). A run dir the runner created
    is removed again if the run dies before writing anything into it (:func:`optik.engine.rundir.cleanup_on_error`)."""
    from optik import catalog
    from optik.engine.rundir import cleanup_on_error

    with cleanup_on_error():
        return echo_results(catalog.load(catalog.mode(task, mode).runner)(cfg))


def echo_results(value: Any) -> Any:
    """Echo ``path: summary`` for each Results in ``value`` (a list or an iterator, consumed here so a
    streaming runner writes as it goes); other values pass through. Returns the number of results for
    an iterator (nothing is kept), else ``value``."""
    from optik.results import Results

    if isinstance(value, Iterator):
        n = 0
        for r in value:
            if n < MAX_PRINTED:
                typer.echo(f"{r.path}: {r.verbose()}")
            n += 1
        if n > MAX_PRINTED:
            typer.echo(f"... {n - MAX_PRINTED} more")
        return n
    if isinstance(value, list) and value and isinstance(value[0], Results):
        for r in value[:MAX_PRINTED]:
            typer.echo(f"{r.path}: {r.verbose()}")
        if len(value) > MAX_PRINTED:
            typer.echo(f"... {len(value) - MAX_PRINTED} more")
    return value


def plain(text: str) -> str:
    """Help text shown as written: typer renders help as rich markup, where ``[port=8000 …]`` is a tag and vanishes."""
    from rich.markup import escape

    return escape(text)


def _make_task_command(spec: Any) -> None:
    mode_help = " | ".join(spec.modes) + (f" (default: {spec.default_mode})" if spec.default_mode else "")

    @app.command(
        name=spec.name,
        help=plain(f"{spec.help} Modes: {' | '.join(spec.modes)}. Example: {spec.example}"),
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )
    def _command(ctx: typer.Context, mode: str = typer.Argument(None if spec.default_mode else ..., help=mode_help)) -> None:
        run_task(spec.name, mode, list(ctx.args))


def _register_tasks() -> None:
    from optik.catalog import CATALOG

    for spec in CATALOG.values():
        _make_task_command(spec)


_register_tasks()


data_app = typer.Typer(help="Dataset tools: convert between COCO / YOLO / VOC.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("convert", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def data_convert(ctx: typer.Context) -> None:
    """optik data convert src=<coco.json | data.yaml | voc dir | synthetic:shapes-det?…> to=coco|yolo|voc out=<dir>"""
    from optik.config import parse_cli_args
    from optik.data.convert import convert
    from optik.errors import ConfigError

    args = parse_cli_args(list(ctx.args))
    unknown = set(args) - {"src", "to", "out", "strict", "skip_bad"}
    if unknown:
        raise ConfigError(f"unknown key '{sorted(unknown)[0]}' for data convert (valid keys: src, to, out, strict, skip_bad)")
    missing = [k for k in ("src", "to", "out") if not args.get(k)]
    if missing:
        raise ConfigError(f"missing key '{missing[0]}' (optik data convert src=… to=coco|yolo|voc out=…)")
    if args["to"] not in ("coco", "yolo", "voc"):
        raise ConfigError(f"bad value for 'to': {args['to']!r} (expected coco, yolo or voc)")
    flags = {k: str(args.get(k, "false")).lower() in ("true", "1", "yes") for k in ("strict", "skip_bad")}
    out = convert(args["src"], args["out"], to=args["to"], **flags)
    typer.echo(f"wrote {args['to']} dataset to {out}")


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    help=plain("optik serve model=<weights | run dir | .onnx | .torchscript> [port=8000 host=127.0.0.1 workers=1]: REST API + web page."),
)
def serve(ctx: typer.Context) -> None:
    """``optik serve model=… [port=8000 host=127.0.0.1 workers=1]``: REST API + web page."""
    from optik.config import build_config, parse_cli_args
    from optik.errors import ConfigError
    from optik.model import Model

    args = parse_cli_args(list(ctx.args))
    if not args.get("model"):
        raise ConfigError("missing key 'model' for serve (e.g. model=runs/classify/train or model=best.onnx)")
    task = args.pop("task", None) or Model(args["model"]).task
    run_mode(task, "serve", build_config(task, "serve", args))


@app.command()
def info() -> None:
    """Versions, device, available models, data sources and tasks."""
    from optik.info import print_info

    print_info()


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def demo(ctx: typer.Context) -> None:
    """Train, validate and predict on built-in data (about a minute on 2 CPU cores)."""
    from optik.config import parse_cli_args
    from optik.demo import run_demo

    run_demo(**parse_cli_args(list(ctx.args)))


def _setup_logging(verbose: bool) -> None:
    from rich.logging import RichHandler

    from optik.console import console

    handler = RichHandler(console=console, show_path=verbose, show_time=False, markup=False)
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s", handlers=[handler], force=True)
    for noisy in ("PIL", "matplotlib", "urllib3", "httpx", "filelock", "fsspec"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``optik`` console script and ``python -m optik``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = any(a.lower() in ("verbose=true", "verbose=1", "verbose=yes") for a in argv)
    _setup_logging(verbose)
    try:
        app(args=argv, prog_name="optik", standalone_mode=False)
    except OptikError as e:
        if verbose:
            raise
        print(f"optik: error: {e}", file=sys.stderr)
        return 2
    except USAGE_ERRORS as e:
        print(f"optik: error: {e.format_message()}", file=sys.stderr)
        return 2
    except ABORTS:
        print("optik: interrupted (the last completed epoch is saved; resume with resume=true)", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
