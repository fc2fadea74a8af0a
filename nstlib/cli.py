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
import math
import os
import re
import signal
import sys
import warnings
from pathlib import Path
from typing import Any, Sequence

from nstlib import __version__

PROG = "nstlib"
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
#: Suffixes `save_image` can write (checked before the run, not after it).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
#: nstlib.color's PRESERVE_COLORS and COLOR_METHODS, spelled out so that --help does not import torch
#: (tests/test_cli.py checks that they agree).
PRESERVE_COLORS = ("luminance", "histogram")
COLOR_METHODS = ("cholesky", "pca")


class UsageError(Exception):
    """A bad command line: exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but an error is one line and raises instead of calling sys.exit."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see '{self.prog} --help')")


# -- option types: each raises ArgumentTypeError with what was expected --------------------

def _int_at_least(minimum: int):
    """An argparse type: a whole number >= minimum."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a number >= {minimum}, got {value}")
        return value

    return parse


_positive_int = _int_at_least(1)
_count = _int_at_least(0)


def _weight(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number such as 1e3, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def _noise_level(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1] such as 0.02, got {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1] such as 0.02, got {text!r}")
    return value


def _style_weights(text: str) -> list[float]:
    """'0.7,0.3' -> [0.7, 0.3]: numbers >= 0, not all 0 (the count is checked against the STYLE images later)."""
    parts = [t.strip() for t in text.split(",")]
    try:
        values = [float(t) for t in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers >= 0 separated by commas, one per STYLE (e.g. 0.7,0.3), "
                                         f"got {text!r}") from None
    bad = [t for t, v in zip(parts, values) if not math.isfinite(v) or v < 0]
    if bad:
        raise argparse.ArgumentTypeError(f"expected finite numbers >= 0 (e.g. 0.7,0.3), got {bad[0]} in {text!r}")
    if sum(values) <= 0:
        raise argparse.ArgumentTypeError(f"the weights are all 0 ({text!r}); give at least one style a weight > 0, e.g. 0.7,0.3")
    return values


def _size(text: str) -> int | tuple[int, int]:
    """'256' (longest side) or '192x256' (height x width)."""
    m = re.fullmatch(r"\s*(\d+)\s*(?:[xX]\s*(\d+)\s*)?", text)
    if not m:
        raise argparse.ArgumentTypeError(f"expected a number of pixels (256) or HEIGHTxWIDTH (192x256), got {text!r}")
    h = int(m.group(1))
    w = int(m.group(2)) if m.group(2) else None
    if h < 1 or (w is not None and w < 1):
        raise argparse.ArgumentTypeError(f"sizes must be >= 1 px, got {text!r}")
    return h if w is None else (h, w)


def _steps(text: str) -> int | tuple[int, ...]:
    """'300' (every scale) or '80,30' (one per scale)."""
    parts = [t.strip() for t in text.split(",")]
    try:
        values = [int(t) for t in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number (300) or one per scale (80,30), got {text!r}") from None
    if any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"steps must be >= 0, got {text!r}")
    return values[0] if len(values) == 1 else tuple(values)


def _scales(text: str) -> tuple[int, ...]:
    """'none' -> () (one scale); '128' or '128,181' -> those sizes, increasing."""
    if text.strip().lower() in ("none", "off", "0", ""):
        return ()
    try:
        values = tuple(int(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sizes in px like 128 or 128,181, or 'none', got {text!r}") from None
    if any(v < 1 for v in values) or any(b <= a for a, b in zip(values, values[1:])):
        raise argparse.ArgumentTypeError(f"expected increasing sizes >= 1 px like 128,181, got {text!r}")
    return values


def parse_layers(text: str, option: str) -> tuple[str, ...] | dict[str, float] | str:
    """'relu4_2' / 'relu1_1,relu2_1' -> names (equal weights); 'relu4_2=1,relu5_1=0.5' -> {name: weight}.

    'gatys' and 'choi-kim' are returned as they are (presets, resolved once the architecture
    is known); '' means no layer (drops that loss term).
    """
    from nstlib.vgg import preset_name

    text = text.strip()
    if preset_name(text):
        return preset_name(text)
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        return ()
    weighted = ["=" in t for t in items]
    if not any(weighted):
        if len(set(items)) != len(items):
            raise UsageError(f"{option} names a layer twice: {text!r}")
        return tuple(items)
    if not all(weighted):
        raise UsageError(f"{option}: give a weight to every layer or to none, got {text!r} (e.g. relu4_2=1,relu5_2=0.5)")
    out: dict[str, float] = {}
    for item in items:
        name, _, value = item.partition("=")
        name = name.strip()
        try:
            w = _weight(value)
        except argparse.ArgumentTypeError as e:
            raise UsageError(f"{option}: weight of {name!r}: {e}") from None
        if name in out:
            raise UsageError(f"{option} names the layer {name!r} twice")
        out[name] = w
    return out


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

    weights_help = "weights setting: torchvision, random[:vgg16][:SEED], or [vgg16:][caffe:]PATH (default: $NSTLIB_WEIGHTS, else torchvision's VGG-19)"

    s = sub.add_parser("stylize", help="paint CONTENT in the style of STYLE and save the result",
                       description="Optimize an image whose VGG features match CONTENT's and whose Gram matrices match STYLE's. "
                       "Several STYLE images are blended (--style-weights) or placed by region (--mask). "
                       "Writes OUT (PNG, JPEG, ...) and OUT.json with the settings beside it.")
    s.add_argument("content", metavar="CONTENT", help="the content image (a photo)")
    s.add_argument("style", metavar="STYLE", nargs="+",
                   help="the style image (a painting); several are blended, equally unless --style-weights, or placed by --mask")
    s.add_argument("-o", "--output", required=True, metavar="OUT.png", help="where to write the result (its folder must exist)")
    s.add_argument("--preset", choices=("fast", "paper"), default="fast",
                   help="fast: start from the photo, coarse to fine from 128 px, bfloat16 where faster; "
                   "paper: Gatys et al. 2016 (noise start, one scale, 300 steps). Options below override it (default fast)")
    g = s.add_argument_group("images")
    g.add_argument("--size", type=_size, default=256, help="output size: longest side in px, or HxW (default 256)")
    g.add_argument("--style-size", type=_size, default=None, help="style image size at the output size (default: the output's longest side)")
    g = s.add_argument_group("several styles, colours (Gatys et al. 2017)")
    g.add_argument("--style-weights", type=_style_weights, default=None, metavar="W1,W2,...",
                   help="with several STYLE images: how much of each, one number >= 0 per STYLE, e.g. 0.7,0.3 "
                   "(normalized to sum 1; default equal)")
    g.add_argument("--mask", default=None, metavar="PATH",
                   help="with several STYLE images: a label image (PNG, flat colours, one per STYLE) saying where each "
                   "style goes; its colours sorted dark to light select STYLE 1, 2, ... (black and white: black = the first)")
    g.add_argument("--preserve-colors", choices=PRESERVE_COLORS, default=None,
                   help="keep the photo's colours: luminance (transfer on luminance only) or histogram "
                   "(recolour the style images to the photo's colours first) (default: off)")
    g.add_argument("--color-method", choices=COLOR_METHODS, default=None,
                   help="with --preserve-colors histogram: the recolouring matrix (default cholesky)")
    g = s.add_argument_group("loss")
    g.add_argument("--variant", choices=("gatys", "normalized"), default="gatys",
                   help="gatys: alpha*L_content + beta*L_style; normalized: Choi & Kim, lambda_os*L_o + L_s")
    g.add_argument("--alpha", type=_weight, help="gatys content weight (default 1)")
    g.add_argument("--beta", type=_weight, help="gatys style weight (default 1e3)")
    g.add_argument("--lambda-os", type=_weight, help="normalized variant's content weight (default 1e-2)")
    g.add_argument("--content-layers", default="relu4_2", metavar="LAYERS",
                   help="comma list, optionally name=weight (default relu4_2)")
    g.add_argument("--style-layers", default="gatys", metavar="LAYERS",
                   help="comma list, optionally name=weight, or a preset: gatys (relu1_1..relu5_1), "
                   "choi-kim (last ReLU of each block) (default gatys)")
    g.add_argument("--tv-weight", type=_weight, default=0.0, help="total-variation weight (default 0)")
    g = s.add_argument_group("optimization")
    g.add_argument("--steps", type=_steps, default=None,
                   help="steps per scale, or one per scale (80,30); default: fast 80 at the first scale and 30 "
                   "at each finer one, paper 300")
    g.add_argument("--scales", type=_scales, default=None,
                   help="coarse to fine: sizes (longest sides) to run at before the output size, e.g. 128 or 128,181; "
                   "'none' for one scale (default: fast 128, 256, ... doubling up to --size; paper none)")
    g.add_argument("--optimizer", choices=("lbfgs", "adam"), default="lbfgs", help="default lbfgs")
    g.add_argument("--lr", type=float, default=None, help="learning rate (default: 1 for lbfgs, 0.02 for adam)")
    g.add_argument("--init", default=None, help="noise, content, style, or an image PATH (default: fast content, paper noise)")
    g.add_argument("--noise-level", type=_noise_level, default=1.0,
                   help="amplitude of the noise start around grey, in (0, 1]: 1 = uniform in [0, 1] (default); "
                   "0.02 leaves less speckle where a layer does not see it")
    g.add_argument("--seed", type=int, default=0, help="seed of the noise start (default 0)")
    g = s.add_argument_group("network and machine")
    g.add_argument("--weights", default=None, help=weights_help)
    g.add_argument("--pooling", choices=("avg", "max"), default="avg", help="default avg (the paper's choice)")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    g.add_argument("--precision", choices=("auto", "float32", "bfloat16"), default="auto",
                   help="the network's number format; auto: bfloat16 where it is native and measured faster (default auto)")
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
    w.add_argument("--weights", default=None, help=weights_help)
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
    from nstlib.losses import resolve_weights
    from nstlib.presets import preset
    from nstlib.vgg import GATYS_CONTENT_LAYERS

    try:
        resolve_weights(args.variant, args.alpha, args.beta, args.lambda_os)
    except ValueError as e:
        raise UsageError(str(e)) from None
    content_layers = parse_layers(args.content_layers, "--content-layers")
    style_layers = parse_layers(args.style_layers, "--style-layers")
    if isinstance(content_layers, str):
        content_layers = GATYS_CONTENT_LAYERS  # both papers take content from conv4_2 (relu4_2 here)
    styles: list[str] = args.style
    _check_style_options(args, len(styles))
    out = _check_output(Path(args.output))
    for what, given in (("CONTENT", args.content), *(("STYLE", s) for s in styles), ("--init", args.init), ("--mask", args.mask)):
        if given and os.path.exists(given) and _same_file(out, Path(given)):
            raise UsageError(f"-o {out} is the {what} image itself; writing the result there would destroy it. "
                             f"Choose another name, e.g. {out.with_name(out.stem + '_stylized' + out.suffix)}")
    if not 0 <= args.seed < 2**63:
        raise UsageError(f"--seed must be from 0 to 2**63 - 1 (9223372036854775807), got {args.seed}")

    # The preset's settings, then every option given on the command line over them.
    kwargs: dict[str, Any] = preset(args.preset, args.size)
    if args.init is not None:
        kwargs["init"] = args.init
    if args.steps is not None:
        kwargs["steps"] = args.steps
    if args.scales is not None:
        kwargs["scales"] = list(args.scales) or None
    kwargs.update(
        style_size=args.style_size, variant=args.variant, content_layers=content_layers, style_layers=style_layers,
        alpha=args.alpha, beta=args.beta, lambda_os=args.lambda_os, tv_weight=args.tv_weight,
        noise_level=args.noise_level, seed=args.seed, optimizer=args.optimizer, lr=args.lr, precision=args.precision,
    )
    # Only what was asked for, so that a plain run passes the same keywords as before.
    if args.style_weights is not None:
        kwargs["style_weights"] = args.style_weights
    if args.mask is not None:
        kwargs["style_masks"] = args.mask
    if args.preserve_colors is not None:
        kwargs["preserve_colors"] = args.preserve_colors
        if args.preserve_colors == "histogram":
            kwargs["color_method"] = args.color_method or "cholesky"

    # Cheap checks first, so that a typo in a path does not cost a weights download.
    from nstlib.images import load_image, target_size
    from nstlib.stylize import plan_scales

    content_hw = target_size(tuple(load_image(args.content).shape[-2:]), args.size)
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
        plan_scales(content_hw, kwargs["scales"], kwargs["steps"])
    except ValueError as e:
        raise UsageError(f"--scales/--steps: {e}") from None
    if kwargs["init"] not in ("noise", "content", "style"):
        if not os.path.exists(kwargs["init"]):
            raise FileNotFoundError(f"--init {kwargs['init']!r}: expected noise, content, style or an image file; no file at {kwargs['init']}")
        load_image(kwargs["init"])

    from nstlib.devices import describe_device, pick_device
    from nstlib.images import save_image
    from nstlib.precision import resolve_precision
    from nstlib.stylize import StopReason, stylize
    from nstlib.vgg import load_vgg, style_layer_preset

    device = pick_device(args.device)
    net = load_vgg(args.weights, pooling=args.pooling, device=device)
    if isinstance(style_layers, str):
        kwargs["style_layers"] = style_layers = style_layer_preset(style_layers, net.arch)
    net.check_layers([*content_layers, *style_layers])
    kwargs["precision"] = resolve_precision(args.precision, device)

    print(f"weights: {net.describe()}")
    print(f"device:  {describe_device(device)}; precision {kwargs['precision']}")
    print(f"memory:  {_memory_line(net, device, content_hw, kwargs)}")
    print(f"content: {args.content}\nstyle:   {', '.join(styles)}" + (f"\nmask:    {args.mask}" if args.mask else ""))
    print(f"settings (preset {args.preset}): " + _settings_line(kwargs))

    callback = None
    if args.save_every:
        def callback(info) -> None:
            save_image(info.image, out.with_name(f"{out.stem}_step{info.step:04d}{out.suffix}"))

    result = stylize(
        args.content, styles[0] if len(styles) == 1 else styles, extractor=net, device=device, progress=not args.no_progress,
        callback=callback, callback_every=args.save_every or 10, **kwargs,
    )
    with _no_ctrl_c():  # the best image so far is in memory: a Ctrl-C now must not lose it
        path = result.save(out)
    per_step = f" ({result.wall_time / result.steps_done:.3g} s/step)" if result.steps_done else ""
    if result.peak_memory_mib is not None:
        memory = f", peak GPU memory {result.peak_memory_mib:.0f} MiB"
    else:  # the CPU: the process's peak resident memory (weights and images included)
        from nstlib.bench import peak_memory_mib

        memory = f", peak memory {peak_memory_mib(device):.0f} MiB (process)"
    print(f"time:    {result.wall_time:.1f} s for {result.steps_done} steps{per_step}, final loss {float(result.loss[0]):.4g}{memory}")
    interrupted = result.stop_reason is StopReason.INTERRUPTED
    if interrupted:
        print(f"{result.stopped}: saved the best image so far.")
    elif result.stopped:
        print(f"stopped early: {result.stopped}")
    print(f"wrote:   {path}\n         {path.with_suffix('.json')}")
    return EXIT_INTERRUPTED if interrupted else EXIT_OK


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
    if args.style_weights is not None:
        if n_styles == 1:
            raise UsageError("--style-weights blends several STYLE images, and 1 was given; "
                             "give two or more STYLE paths after CONTENT, or drop --style-weights")
        if len(args.style_weights) != n_styles:
            example = ",".join([f"{1 / n_styles:.2g}"] * n_styles)
            raise UsageError(f"--style-weights has {len(args.style_weights)} value{'s' if len(args.style_weights) != 1 else ''} "
                             f"but {n_styles} STYLE images were given; give one per style, e.g. {example}")
    if args.mask is not None:
        if n_styles == 1:
            raise UsageError("--mask places several STYLE images by region, and 1 was given; "
                             "give one STYLE path per colour of the mask after CONTENT, or drop --mask")
        if args.style_weights is not None:
            raise UsageError("--mask and --style-weights exclude each other: with a mask each region takes one style "
                             "whole; drop --style-weights (or --mask, to blend the styles everywhere)")
    if args.color_method is not None and args.preserve_colors != "histogram":
        raise UsageError(f"--color-method only applies to --preserve-colors histogram, "
                         f"got {'no --preserve-colors' if args.preserve_colors is None else '--preserve-colors ' + args.preserve_colors}")


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


def _memory_line(net, device, hw: tuple[int, int], kwargs: dict[str, Any]) -> str:
    """The memory the run will need at its output size, and what is free (refusing is stylize's job)."""
    from nstlib.memory import estimate_bytes, free_bytes, human

    layers = [*kwargs["content_layers"], *kwargs["style_layers"]]
    need = estimate_bytes(net, hw, layers, precision=kwargs["precision"].name, optimizer=kwargs["optimizer"])
    free = free_bytes(device)
    return f"about {human(need)} needed at {hw[0]}x{hw[1]}" + (f", {human(free)} free" if free is not None else "")


def _same_file(a: Path, b: Path) -> bool:
    """Do two paths name one file (also through links, or a second name on a case-insensitive disk)?"""
    try:
        return a.exists() and os.path.samefile(a, b) or a.resolve() == b.resolve()
    except OSError:
        return False


def _settings_line(kwargs: dict[str, Any]) -> str:
    shown = {k: v for k, v in kwargs.items() if v is not None and k != "precision" and not (k == "tv_weight" and v == 0)}
    for key in ("scales", "steps", "size", "style_weights"):
        if isinstance(shown.get(key), (list, tuple)):
            shown[key] = ",".join(map(str, shown[key]))
    for key in ("content_layers", "style_layers"):
        v = shown[key]
        shown[key] = ",".join(f"{n}={w:g}" for n, w in v.items()) if isinstance(v, dict) else ",".join(v) or "none"
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
