"""The command line: ``nstlib stylize CONTENT STYLE [STYLE ...] -o OUT.png`` (also ``python -m nstlib``).

Subcommands:
  stylize   run one transfer and write OUT.png plus OUT.json (the settings) beside it;
  layers    print the layer table of VGG-16/19 (channels, stride, receptive field, shapes);
  weights   print the one-line report of the weights a setting resolves to.

`main(argv)` returns the exit status instead of exiting, so that an instructor's sweep script
can call it in a loop: 0 done, 1 a problem with the inputs or the run (bad file, unknown layer,
missing weights, image too small), 2 a usage error (unknown or conflicting options), 130
interrupted (after saving the best image so far). Errors are one line, ``nstlib: error: ...``,
never a traceback (``--traceback`` shows one, for bug reports); the exception is missing
weights, whose message says over several lines how to get them.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import warnings
from pathlib import Path
from typing import Sequence

from nstlib import __version__
from nstlib.cli_options import (COLOR_METHODS, PRESERVE_COLORS, PRESETS, SETTING_OPTIONS, WEIGHTS_HELP,  # noqa: F401
                                UsageError, _positive_int, _ratio, _size, parse_layers)

PROG = "nstlib"
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
#: Suffixes `save_image` can write (checked before the run, not after it).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")



class _Parser(argparse.ArgumentParser):
    """argparse, but an error is one line and raises instead of calling sys.exit."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see '{self.prog} --help')")


# -- the parser ---------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of the `nstlib` command (subcommands stylize, layers, weights)."""
    parser = _Parser(
        prog=PROG,
        description="Neural style transfer (Gatys et al. 2016; normalized losses of Choi & Kim 2020).",
        epilog="Run 'nstlib COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument("--traceback", action="store_true", help="on an error, show the Python traceback (for bug reports)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True


    s = sub.add_parser("stylize", help="paint CONTENT in the style of STYLE and save the result",
                       description="Optimize an image whose VGG features match CONTENT's and whose Gram matrices match STYLE's. "
                       "Several STYLE images are blended (--style-weights) or placed by region (--mask). "
                       "Writes OUT (PNG, JPEG, ...) and OUT.json with the settings beside it.")
    s.add_argument("content", metavar="CONTENT", help="the content image (a photo)")
    s.add_argument("style", metavar="STYLE", nargs="+",
                   help="the style image (a painting); several are blended, equally unless --style-weights, or placed by --mask")
    s.add_argument("-o", "--output", required=True, metavar="OUT.png", help="where to write the result (its folder must exist)")
    s.add_argument("--preset", choices=PRESETS, default=argparse.SUPPRESS,
                   help="fast: the converged picture: from the photo, coarse to fine from 128 px, bfloat16 where "
                   "faster, the last scale until the loss stops falling (at most 300 steps); draft: the same with 30 "
                   "steps at the last scale (quick); paper: Gatys et al. 2016 (noise start, one scale, 300 steps). "
                   "Options below override it (default fast)")
    s.add_argument("--settings", metavar="FILE.json", default=None,
                   help="start from the settings of an earlier run (the JSON written beside its image) instead of a "
                   "preset; options given override them")
    s.add_argument("--mask", default=None, metavar="PATH",
                   help="with several STYLE images: a label image (PNG, flat colours, one per STYLE) saying where each "
                   "style goes; its colours sorted dark to light select STYLE 1, 2, ... (black and white: black = the first)")
    groups: dict[str, argparse._ArgumentGroup] = {}
    for group, flag, field, kw in SETTING_OPTIONS:
        if group not in groups:
            groups[group] = s.add_argument_group(group)
        groups[group].add_argument(flag, dest=field, default=argparse.SUPPRESS, **kw)
    groups["loss"].add_argument(
        "--ratio", type=_ratio, default=None, metavar="R",
        help="gatys: alpha/beta on the paper's scale, as in the notebooks and the panel (e.g. 1e-3, the paper's): "
        "beta = 1, alpha = K * R, K = r*/1e-3 of the loaded network and style layers (nstlib.paper_scale; "
        "notebook 4); instead of --alpha/--beta")
    g = s.add_argument_group("output")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("--save-every", type=_positive_int, default=None, metavar="N",
                   help="also write a preview OUT_stepNNNN.png every N steps")

    lay = sub.add_parser("layers", help="print the VGG layer table (channels, stride, receptive field)",
                         description="Print the layer table of VGG-16 or VGG-19; with --size, the output shape of each layer too.")
    lay.add_argument("--arch", choices=("vgg19", "vgg16"), default="vgg19", help="default vgg19")
    lay.add_argument("--size", type=_size, default=None, help="input size, HxW or one number for a square (optional)")

    w = sub.add_parser("weights", help="print which weights a setting loads, in one line",
                       description="Load the weights a setting names and print the one-line report (architecture, source, input convention).")
    w.add_argument("--weights", default=None, help=WEIGHTS_HELP)
    w.add_argument("--pooling", choices=("avg", "max"), default="avg", help="default avg")
    return parser


# -- main ---------------------------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with `argv` (default: sys.argv[1:]); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    show_traceback = "--traceback" in argv
    argv = [a for a in argv if a != "--traceback"]  # accepted anywhere on the line, not only before COMMAND
    try:
        try:
            args, extra = parser.parse_known_args(argv)  # parse_args, with a hint for a STYLE path after an option
        except SystemExit as e:  # --help and --version exit 0 through argparse
            return int(e.code or 0)
        if extra:
            hint = ""
            if args.command == "stylize" and not any(a.startswith("-") for a in extra):
                hint = "; the STYLE paths go together after CONTENT, e.g. nstlib stylize photo.jpg a.jpg b.jpg -o out.png"
            parser.error(f"unrecognized arguments: {' '.join(extra)}{hint}")
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            if args.command == "stylize":
                return _cmd_stylize(args)
            if args.command == "layers":
                return _cmd_layers(args)
            return _cmd_weights(args)
    except UsageError as e:
        _error(str(e))
        return EXIT_USAGE
    except KeyboardInterrupt:
        _error("interrupted (Ctrl-C) before a result was saved")
        return EXIT_INTERRUPTED
    except Exception as e:
        if show_traceback:
            raise
        from nstlib.weights import WeightsUnavailableError

        if isinstance(e, WeightsUnavailableError):
            print(f"{PROG}: error: {e}", file=sys.stderr)  # several lines on purpose: how to get weights
        else:
            _error(_one_line(e))
        return EXIT_FAILED


def _cmd_stylize(args: argparse.Namespace) -> int:
    """Check the files, build the run's settings, load the network, run, save: each a step below."""
    styles: list[str] = args.style
    out = _check_output(Path(args.output))
    settings = _run_settings(args)
    _check_style_options(args, len(styles))
    content_hw = _check_files(args, out, styles, settings)  # cheap checks first: a typo must not cost a weights download

    from nstlib.devices import pick_device
    from nstlib.precision import resolve_precision
    from nstlib.stylize import StopReason, stylize
    from nstlib.vgg import load_vgg

    device = pick_device(settings.device)
    net = load_vgg(settings.weights, pooling=settings.pooling or "avg", device=device)
    if args.ratio is not None:  # the paper's scale needs the network: K is measured on it
        from nstlib import paper_scale
        from nstlib.vgg import style_layer_preset

        layers = settings.style_layers
        names = style_layer_preset(layers, net.arch) if isinstance(layers, str) else tuple(layers)
        settings = settings.replace(**paper_scale.weights(net, args.ratio, names))
    settings = settings.replace(precision=resolve_precision(settings.precision, device), device=str(device))
    _print_header(args, styles, settings, net, device, content_hw)
    callback = None
    if args.save_every:
        from nstlib.images import save_image

        def callback(info) -> None:
            save_image(info.image, out.with_name(f"{out.stem}_step{info.step:04d}{out.suffix}"))

    result = stylize(args.content, styles[0] if len(styles) == 1 else styles, settings, extractor=net,
                     progress=not args.no_progress, callback=callback, callback_every=args.save_every or 10,
                     **({"style_masks": args.mask} if args.mask is not None else {}))
    with _no_ctrl_c():  # the best image so far is in memory: a Ctrl-C now must not lose it
        path = result.save(out)
    _print_result(result, device, path)
    interrupted = result.stop_reason is StopReason.INTERRUPTED
    return EXIT_INTERRUPTED if interrupted else EXIT_OK


def _run_settings(args: argparse.Namespace):
    """The preset (or --settings FILE), with every option given over it -> a RunSettings."""
    from nstlib.losses import resolve_weights
    from nstlib.settings import RunSettings

    given = {field: getattr(args, field) for _, _, field, _ in SETTING_OPTIONS if hasattr(args, field)}
    if args.settings is not None:
        if hasattr(args, "preset"):
            raise UsageError("--settings FILE and --preset exclude each other: the file replaces the preset")
        base = RunSettings.from_json(Path(args.settings))
    else:
        base = RunSettings.preset(getattr(args, "preset", "fast"), given.get("size", 256))
    seed = given.get("seed", 0)
    if not 0 <= seed < 2**63:
        raise UsageError(f"--seed must be from 0 to 2**63 - 1 (9223372036854775807), got {seed}")
    variant = given.get("variant", base.variant)
    if args.ratio is not None and (variant != "gatys" or "alpha" in given or "beta" in given):
        raise UsageError("--ratio sets alpha and beta of the gatys variant (beta = 1, alpha = K * R): give it "
                         "without --alpha/--beta and --variant normalized (whose weight is --lambda-os)")
    if variant != base.variant:  # the other variant's weights do not carry over
        base = base.replace(variant=variant, alpha=None, beta=None, lambda_os=None)
    try:  # the variant and its weights: a usage error, said as the library says it
        resolve_weights(variant, *(given.get(k, getattr(base, k)) for k in ("alpha", "beta", "lambda_os")))
    except ValueError as e:
        raise UsageError(str(e)) from None
    if given.get("init") is not None and given["init"] not in ("noise", "content", "style") and not os.path.exists(given["init"]):
        raise FileNotFoundError(f"--init {given['init']!r}: expected noise, content, style or an image file; "
                                f"no file at {given['init']}")
    return base.replace(**given)


def _check_files(args: argparse.Namespace, out: Path, styles: list[str], settings) -> tuple[int, int]:
    """Every input is a readable image, -o is none of them, the mask has a colour per STYLE, the scales fit.

    Returns the output size (H, W)."""
    from nstlib.images import load_image, target_size
    from nstlib.stylize import plan_scales

    init = settings.init if isinstance(settings.init, str) and settings.init not in ("noise", "content", "style") else None
    for what, given in (("CONTENT", args.content), *(("STYLE", s) for s in styles), ("--init", init), ("--mask", args.mask)):
        if given and os.path.exists(given) and _same_file(out, Path(given)):
            raise UsageError(f"-o {out} is the {what} image itself; writing the result there would destroy it. "
                             f"Choose another name, e.g. {out.with_name(out.stem + '_stylized' + out.suffix)}")
    content_hw = target_size(tuple(load_image(args.content).shape[-2:]), settings.size)
    for style in styles:
        load_image(style)
    if args.mask is not None:
        import inspect

        from nstlib.stylize import stylize

        load_image(args.mask)
        if "style_masks" not in inspect.signature(stylize).parameters:
            raise UsageError("--mask needs stylize(style_masks=...), which this version of nstlib does not have yet")
        from nstlib.regions import masks_from_labels

        masks_from_labels(args.mask, len(styles))  # one colour per STYLE, checked before the weights load
    try:
        plan_scales(content_hw, settings.scales, settings.steps)
    except ValueError as e:
        raise UsageError(f"--scales/--steps: {e}") from None
    if init is not None:
        load_image(init)
    return content_hw


def _print_header(args: argparse.Namespace, styles: list[str], settings, net, device,
                  content_hw: tuple[int, int]) -> None:
    """What will run: the weights, the device and precision, the memory, the images, the settings."""
    from nstlib.devices import describe_device
    from nstlib.vgg import style_layer_preset

    layers = settings.style_layers
    if isinstance(layers, str):
        layers = style_layer_preset(layers, net.arch)
    net.check_layers([*settings.content_layers, *layers])
    where = f"preset {getattr(args, 'preset', 'fast')}" if args.settings is None else f"from {args.settings}"
    print(f"weights: {net.describe()}")
    print(f"device:  {describe_device(device)}; precision {settings.precision}")
    print(f"memory:  {_memory_line(net, device, content_hw, settings, layers)}")
    print(f"content: {args.content}\nstyle:   {', '.join(styles)}" + (f"\nmask:    {args.mask}" if args.mask else ""))
    print(f"settings ({where}): " + _settings_line(settings))


def _print_result(result, device, path: Path) -> None:
    per_step = f" ({result.wall_time / result.steps_done:.3g} s/step)" if result.steps_done else ""
    if result.peak_memory_mib is not None:
        memory = f", peak GPU memory {result.peak_memory_mib:.0f} MiB"
    else:  # the CPU: the process's peak resident memory (weights and images included)
        from nstlib.bench import peak_memory_mib

        memory = f", peak memory {peak_memory_mib(device):.0f} MiB (process)"
    print(f"time:    {result.wall_time:.1f} s for {result.steps_done} steps{per_step}, final loss {float(result.loss[0]):.4g}{memory}")
    from nstlib.stylize import StopReason

    if result.stop_reason is StopReason.CONVERGED:
        tol = result.settings.get("tolerance")
        print(f"         converged: the last scale's loss fell by less than {tol:g} per step" if tol else
              "         converged: L-BFGS found no lower point (more steps would not lower the loss)")
    if result.stop_reason is StopReason.INTERRUPTED:
        print(f"{result.stopped}: saved the best image so far.")
    elif result.stopped:
        print(f"stopped early: {result.stopped}")
    print(f"wrote:   {path}\n         {path.with_suffix('.json')}")


def _cmd_layers(args: argparse.Namespace) -> int:
    from nstlib.vgg import layer_table

    size = (args.size, args.size) if isinstance(args.size, int) else args.size
    rows = layer_table(args.arch, size)
    head = f"{'layer':<8} {'channels':>8} {'stride':>6} {'RF px':>6} {'min px':>6}"
    if size:
        head += f"  shape (C, H, W) for {size[0]}x{size[1]}"
    print(head)
    for r in rows:
        line = f"{r.name:<8} {r.channels:>8} {r.stride:>6} {r.receptive_field:>6} {r.min_input:>6}"
        if size:
            c, h, w = r.shape
            line += f"  ({c}, {h}, {w})" + ("  <- empty: input too small" if h < 1 or w < 1 else "")
        print(line)
    return EXIT_OK


def _cmd_weights(args: argparse.Namespace) -> int:
    from nstlib.vgg import load_vgg

    print(load_vgg(args.weights, pooling=args.pooling).describe())
    return EXIT_OK


# -- helpers ------------------------------------------------------------------------------

def _check_style_options(args: argparse.Namespace, n_styles: int) -> None:
    """--style-weights, --mask and --color-method against the number of STYLE images and each other."""
    style_weights = getattr(args, "style_weights", None)
    if style_weights is not None:
        if n_styles == 1:
            raise UsageError("--style-weights blends several STYLE images, and 1 was given; "
                             "give two or more STYLE paths after CONTENT, or drop --style-weights")
        if len(style_weights) != n_styles:
            example = ",".join([f"{1 / n_styles:.2g}"] * n_styles)
            raise UsageError(f"--style-weights has {len(style_weights)} value{'s' if len(style_weights) != 1 else ''} "
                             f"but {n_styles} STYLE images were given; give one per style, e.g. {example}")
    if args.mask is not None:
        if n_styles == 1:
            raise UsageError("--mask places several STYLE images by region, and 1 was given; "
                             "give one STYLE path per colour of the mask after CONTENT, or drop --mask")
        if style_weights is not None:
            raise UsageError("--mask and --style-weights exclude each other: with a mask each region takes one style "
                             "whole; drop --style-weights (or --mask, to blend the styles everywhere)")
    preserve = getattr(args, "preserve_colors", None)
    if getattr(args, "color_method", None) is not None and preserve != "histogram":
        raise UsageError(f"--color-method only applies to --preserve-colors histogram, "
                         f"got {'no --preserve-colors' if preserve is None else '--preserve-colors ' + preserve}")


def _check_output(path: Path) -> Path:
    """Fail before the run, not after it: the suffix, the folder, the permission."""
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise UsageError(f"-o {path}: unknown image suffix {path.suffix!r}; use one of {', '.join(IMAGE_SUFFIXES)}")
    if path.is_dir():
        raise ValueError(f"-o {path} is a folder; give a file name such as {path / 'result.png'}")
    folder = path.parent
    if not folder.is_dir():
        raise FileNotFoundError(f"-o {path}: the folder {folder} does not exist (create it first: mkdir -p {folder})")
    if not os.access(folder, os.W_OK):
        raise PermissionError(f"-o {path}: the folder {folder} is not writable")
    return path


@contextlib.contextmanager
def _no_ctrl_c():
    """Ignore Ctrl-C (SIGINT) while the result is written; main thread only, else nothing."""
    try:
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def _memory_line(net, device, hw: tuple[int, int], settings, style_layers) -> str:
    """The memory the run will need at its output size, and what is free (refusing is stylize's job)."""
    from nstlib.memory import estimate_bytes, free_bytes, human

    layers = [*settings.content_layers, *style_layers]
    need = estimate_bytes(net, hw, layers, precision=settings.precision.name, optimizer=settings.optimizer)
    free = free_bytes(device)
    return f"about {human(need)} needed at {hw[0]}x{hw[1]}" + (f", {human(free)} free" if free is not None else "")


def _same_file(a: Path, b: Path) -> bool:
    """Do two paths name one file (also through links, or a second name on a case-insensitive disk)?"""
    try:
        return a.exists() and os.path.samefile(a, b) or a.resolve() == b.resolve()
    except OSError:
        return False


def _settings_line(settings) -> str:
    """key=value for every setting that is set, as an option would spell it (tv_weight only when used)."""
    shown = {k: v for k, v in settings.to_dict().items()
             if v is not None and k not in ("precision", "device") and not (k == "tv_weight" and v == 0)}
    for key in ("scales", "steps", "size", "style_size", "style_weights"):
        if isinstance(shown.get(key), list):
            shown[key] = ",".join(map(str, shown[key]))
    for key in ("content_layers", "style_layers"):
        v = shown[key]
        shown[key] = ",".join(f"{n}={w:g}" for n, w in v.items()) if isinstance(v, dict) else v if isinstance(v, str) else ",".join(v) or "none"
    return " ".join(f"{k}={v}" for k, v in shown.items())


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    if type(e).__name__ == "OutOfMemoryError":  # torch.OutOfMemoryError (CUDA / MPS)
        return f"out of GPU memory; try a smaller --size or --style-size ({text[:200]})"
    if isinstance(e, (ValueError, TypeError, OSError, MemoryError)) or type(e).__module__.startswith("nstlib"):
        return text
    return f"{type(e).__name__}: {text} (run with --traceback for details)"


def _error(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"{PROG}: warning: {' '.join(str(message).split())}", file=sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
