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

# Task names and one-line help, known without importing torch (keeps `optik --help` instant).
TASK_HELP = {
    "classify": "Image classification (train | val | predict | export | benchmark | explain | prune).",
    "detect": "Object detection (train | val | predict | export | benchmark): house detector, tv:<torchvision>, hf:<DETR>.",
    "segment": "Segmentation (train | val | predict | export | benchmark), task=semantic|instance|panoptic: unet, fpn, tv:<…>, mask2former, hf:<…>.",
    "sam": "Segment Anything (predict): point/box prompts or mode=auto masks, model=hf:<id|dir>.",
    "generate": "Generative models (train | sample | eval): dcgan, cgan, vae, cvae, ae, ddpm; sample with prompt= runs Stable Diffusion.",
}
TASK_MODES = {
    "classify": ("train", "val", "predict", "export", "benchmark", "explain", "prune"),
    "detect": ("train", "val", "predict", "export", "benchmark"),
    "segment": ("train", "val", "predict", "export", "benchmark"),
    "sam": ("predict",),
    "generate": ("train", "sample", "eval"),
}
TASK_EXAMPLES = {
    "segment": "optik segment train task=instance data=synthetic:shapes-inst model=tv:maskrcnn epochs=3",
    "sam": "optik sam predict model=hf:facebook/sam-vit-base source=img.png points=[[120,80]] labels=[1]",
    "generate": "optik generate train model=ddpm data=digits epochs=20; optik generate sample model=runs/generate/train n=64",
}

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="optik: deep-learning computer vision from one CLI. Usage: optik TASK MODE key=value ...",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def run_task(task: str, mode: str, args: list[str]) -> Any:
    """Parse ``key=value`` args and run ``mode`` for ``task``."""
    from optik.config import build_config, parse_cli_args
    from optik.errors import ConfigError

    modes = TASK_MODES[task]
    if mode not in modes:
        raise ConfigError(f"unknown mode '{mode}' for {task}; expected one of: {', '.join(modes)}")
    cfg = build_config(task, mode, parse_cli_args(args))
    if task == "sam":
        from optik.sam.run import sam_predict

        results = sam_predict(cfg)
        for r in results[:50]:
            typer.echo(f"{r.path}: {r.verbose()}")
        return results
    if task == "generate" and mode != "train":
        from optik.generative import run

        return run.sample(cfg) if mode == "sample" else run.evaluate(cfg)
    if mode == "train":
        from optik.engine.trainer import Trainer

        return Trainer(cfg).fit()
    if mode == "val":
        from optik.engine.inference import validate

        return validate(cfg)
    if mode == "export":
        from optik.deploy.export import export

        return export(cfg)
    if mode == "benchmark":
        from optik.deploy.benchmark import benchmark

        return benchmark(cfg)
    if mode == "explain":
        from optik.explain.run import explain

        return explain(cfg)
    if mode == "prune":
        from optik.deploy.prune import prune

        return prune(cfg)
    from optik.engine.inference import predict

    results = predict(cfg)
    for r in results[:50]:
        typer.echo(f"{r.path}: {r.verbose()}")
    if len(results) > 50:
        typer.echo(f"... {len(results) - 50} more")
    return results


def _make_task_command(task: str) -> None:
    @app.command(
        name=task,
        help=f"{TASK_HELP[task]} Example: {TASK_EXAMPLES.get(task, f'optik {task} train data=synthetic:shapes epochs=3')}",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )
    def _command(ctx: typer.Context, mode: str = typer.Argument(..., help=" | ".join(TASK_MODES[task]))) -> None:
        run_task(task, mode, list(ctx.args))


for _task in TASK_HELP:
    _make_task_command(_task)


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


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def serve(ctx: typer.Context) -> None:
    """optik serve model=<weights | run dir | .onnx | .torchscript> [port=8000 host=127.0.0.1 workers=1]: REST API + web page."""
    from optik.config import build_config, parse_cli_args
    from optik.errors import ConfigError
    from optik.model import Model

    args = parse_cli_args(list(ctx.args))
    if not args.get("model"):
        raise ConfigError("missing key 'model' for serve (e.g. model=runs/classify/train or model=best.onnx)")
    task = args.pop("task", None) or Model(args["model"]).task
    from optik.serve.app import serve as run_server

    run_server(build_config(task, "serve", args))


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def edit(ctx: typer.Context) -> None:
    """optik edit image=photo.jpg point=x,y | box=x1,y1,x2,y2 prompt="…" [negative_prompt=… model=hf:<SD inpaint> sam=hf:<SAM>]: SAM mask → Stable Diffusion inpainting → panel."""
    from optik.config import build_config, parse_cli_args
    from optik.generative.edit import edit as run_edit

    result = run_edit(build_config("edit", "edit", parse_cli_args(list(ctx.args))))
    typer.echo(f"wrote {result['out']} and {result['panel']}")


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

    from optik.engine.callbacks import console

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
