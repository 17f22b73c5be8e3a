"""The `gpt-image-inbox` command: argument parsing and exit codes; each command wires the parts.

Modules are imported inside the commands so that `gen` and `once` start without paying for
what they do not use.
"""

from __future__ import annotations

import argparse
import gc
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from daemon.errors import InboxError

if TYPE_CHECKING:
    from daemon.config import Config

EXIT_OK = 0


def _add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="configuration file (default: the user's config folder, see `doctor`)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gpt-image-inbox",
        description="Turn prompt files into GPT Image 2 pictures through your logged-in Codex CLI.",
    )
    parser.add_argument("--version", action=_Version)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_gen(commands)
    _add_config(commands.add_parser("once", help="process every job now in the inbox, then exit"))
    _add_config(
        commands.add_parser("run", help="watch the inbox and run jobs until stopped (the daemon)")
    )
    _add_config(commands.add_parser("status", help="what the daemon is doing (outbox/status.json)"))
    _add_submit(commands)
    _add_config(commands.add_parser("gallery", help="rebuild outbox/index.html from the sidecars"))
    _add_service(commands)
    _add_config(commands.add_parser("doctor", help="check everything image generation needs"))
    commands.add_parser("schema", help="print the JSON Schema of job files")
    return parser


class _Version(argparse.Action):
    """`--version`: the installed distribution's version (pyproject.toml is where it is
    written), looked up only when asked: importlib.metadata costs every other command time."""

    def __init__(self, option_strings: Sequence[str], dest: str, **_kwargs: object) -> None:
        super().__init__(
            option_strings,
            dest=argparse.SUPPRESS,
            nargs=0,
            help="show program's version number and exit",
        )

    def __call__(self, parser: argparse.ArgumentParser, *_args: object) -> None:
        from importlib.metadata import version

        print(f"{parser.prog} {version('gpt-image-inbox')}")
        parser.exit()


def _add_gen(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    gen = commands.add_parser("gen", help="generate one image now (drop-in for the skill's gen.sh)")
    gen.add_argument("--prompt", required=True, help="the prompt, passed to codex unchanged")
    gen.add_argument(
        "--ref",
        action="append",
        type=Path,
        default=[],
        metavar="PATH",
        help="reference image (repeatable)",
    )
    gen.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="PATH",
        help="output file (default ./image-YYYYMMDD-HHMMSS.<ext>)",
    )
    gen.add_argument(
        "--timeout-sec",
        type=_positive_float,
        default=None,
        metavar="N",
        help="wall-clock limit for codex (default codex.timeout_sec, 300)",
    )
    gen.add_argument("--model", default=None, help="codex model (passed as -m)")
    _add_look_flags(gen)
    _add_variants(gen, "images to make; --out x.png gives x.png, x-2.png, ...")
    _add_config(gen)


def _add_submit(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    submit = commands.add_parser("submit", help="write a job into the inbox (and follow it)")
    submit.add_argument("--prompt", required=True, help="the prompt, written to the job unchanged")
    submit.add_argument(
        "--ref",
        action="append",
        type=Path,
        default=[],
        metavar="PATH",
        help="reference image, copied in next to the job (repeatable)",
    )
    submit.add_argument(
        "--name",
        default=None,
        help="job name (default job-YYYYMMDD-HHMMSS); made unique when taken",
    )
    submit.add_argument(
        "--wait",
        action="store_true",
        help="follow the job to its result, print the image path(s), exit like gen",
    )
    _add_look_flags(submit)
    _add_variants(submit, "images the job makes (its `variants` key)")
    _add_config(submit)


def _add_service(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    service = commands.add_parser("service", help="install the daemon as a login service")
    actions = service.add_subparsers(dest="action", required=True, metavar="ACTION")
    install = actions.add_parser(
        "install",
        help="write, enable and start the systemd unit or launchd agent for this installation",
    )
    _add_config(install)
    install.add_argument(
        "--dry-run", action="store_true", help="print what would be written and run, change nothing"
    )
    uninstall = actions.add_parser("uninstall", help="stop, disable and remove the service")
    uninstall.add_argument(
        "--dry-run", action="store_true", help="print what would be run, change nothing"
    )
    actions.add_parser("status", help="installed? running? since when? last log lines")


def _add_look_flags(parser: argparse.ArgumentParser) -> None:
    """`--transparent` and `--aspect`, the job keys `transparent` and `aspect`."""
    parser.add_argument(
        "--transparent",
        action="store_true",
        help="ask for a transparent background (kept in PNG and WebP; not with a .jpg --out)",
    )
    parser.add_argument(
        "--aspect",
        type=_aspect,
        default=None,
        metavar="SHAPE",
        help="square, portrait, landscape or W:H from 1:4 to 4:1 (asked of the model: the "
        "image tool's size is always auto)",
    )


def _aspect(text: str) -> str:
    from daemon.job.look import BadAspect, parse_aspect

    try:
        return parse_aspect(text).asked
    except BadAspect as bad:
        raise argparse.ArgumentTypeError(str(bad)) from None


def _add_variants(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--variants", type=_variants, default=1, metavar="N", help=f"{what} (1 to 8, default 1)"
    )


def _variants(text: str) -> int:
    from daemon.job.values import MAX_VARIANTS

    if not text.isdigit() or not 1 <= int(text) <= MAX_VARIANTS:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number from 1 to {MAX_VARIANTS}")
    return int(text)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be greater than 0")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = _COMMANDS[args.command]
    try:
        return handler(args)
    except InboxError as error:
        report_failure(error)
        return error.exit_code
    except KeyboardInterrupt:
        return 130


def script() -> None:
    """The console script: `main()`'s exit code through a normal exit, so atexit handlers run
    and log handlers flush."""
    code = main()
    # The interpreter's last collections would walk every object the imported modules made:
    # 4-15 ms for `once` on an empty inbox (median and best of 25 runs). Frozen, they are
    # skipped; teardown by reference count (closing files, flushing streams) still happens.
    gc.freeze()
    sys.exit(code)


def report_failure(error: InboxError) -> None:
    """One sentence naming the layer, then the hint: no stderr dump (it is in `detail`)."""
    print(f"gpt-image-inbox: {error.layer}: {error.message}", file=sys.stderr)
    if error.hint:
        print(f"  hint: {error.hint}", file=sys.stderr)


def _load_config(path: Path | None) -> Config:
    from daemon.config import load_config
    from daemon.logs import configure

    config = load_config(path)
    configure(config.log_level)
    return config


def cmd_gen(args: argparse.Namespace) -> int:
    from daemon.commands.gen import generate_to_file
    from daemon.commands.interrupt import stop_signals
    from daemon.errors import Cancelled

    config = _load_config(args.config)
    with stop_signals() as stop:
        try:
            paths = generate_to_file(
                prompt=args.prompt,
                refs=args.ref,
                out=args.out,
                timeout_sec=args.timeout_sec,
                model=args.model,
                config=config,
                stop=stop,
                transparent=args.transparent,
                aspect=args.aspect,
                variants=args.variants,
            )
        except Cancelled:
            return stop.report("codex was stopped, no image was written")
        except InboxError:
            if stop.requested:  # e.g. the version probe, which shares our process group
                return stop.report("no image was written")
            raise
    for path in paths:
        print(path)
    if stop.requested:
        return stop.report("codex had already finished, the image was written")
    return EXIT_OK


def cmd_once(args: argparse.Namespace) -> int:
    from daemon.commands.interrupt import stop_signals
    from daemon.commands.once import pending_jobs, process_inbox
    from daemon.errors import Cancelled

    config = _load_config(args.config)
    with stop_signals() as stop:
        try:
            code = process_inbox(config, stop=stop)
        except Cancelled as stopped:
            return stop.report(stopped.message)
    if stop.requested:
        left = len(pending_jobs(config.inbox))
        return stop.report(f"no further job was started, {left} left in the inbox")
    return code


def cmd_run(args: argparse.Namespace) -> int:
    from daemon.loop.runner import Daemon

    _load_config(args.config)  # sets up logging; the daemon reads the file again on SIGHUP
    return Daemon(args.config).run()


def cmd_status(args: argparse.Namespace) -> int:
    from daemon.loop.status import describe, not_running_notice, read_status

    config = _load_config(args.config)
    running, notice = not_running_notice(config.inbox, args.config)
    data = read_status(config.outbox)
    if data is None:
        print(f"No status file in {config.outbox}: the daemon has not run with this outbox yet.")
        if running is not True:
            print(notice)
        return 1
    print(describe(data, running=running is not False))
    if running is not True:
        print(notice)
    return EXIT_OK if running is not False else 1


def cmd_submit(args: argparse.Namespace) -> int:
    from datetime import datetime

    from daemon.commands.interrupt import stop_signals
    from daemon.commands.submit import submit_job, wait_for_result
    from daemon.errors import Cancelled

    config = _load_config(args.config)
    since = datetime.now().astimezone().replace(microsecond=0)
    job_path = submit_job(
        prompt=args.prompt,
        refs=args.ref,
        name=args.name,
        config=config,
        transparent=args.transparent,
        aspect=args.aspect,
        variants=args.variants,
    )
    if not args.wait:
        print(job_path)
        return EXIT_OK
    with stop_signals() as stop:
        try:
            paths = wait_for_result(
                job_path, config, since=since, config_path=args.config, stop=stop.cancel
            )
        except Cancelled as stopped:
            return stop.report(f"no longer waiting: {stopped.message}")
    for path in paths:
        print(path)
    return EXIT_OK


def cmd_gallery(args: argparse.Namespace) -> int:
    from daemon.outbox.gallery import write_gallery

    config = _load_config(args.config)
    print(write_gallery(config.outbox))
    return EXIT_OK


def cmd_service(args: argparse.Namespace) -> int:
    from daemon.service import manager

    if args.action == "install":
        return manager.install(args.config, dry_run=args.dry_run)
    if args.action == "uninstall":
        return manager.uninstall(dry_run=args.dry_run)
    return manager.status()


def cmd_doctor(args: argparse.Namespace) -> int:
    from daemon.commands.doctor import run_doctor

    return run_doctor(args.config)


def cmd_schema(_args: argparse.Namespace) -> int:
    import json

    from daemon.job.schema import load_job_schema

    print(json.dumps(load_job_schema(), indent=2, ensure_ascii=False))
    return EXIT_OK


_COMMANDS = {
    "gen": cmd_gen,
    "once": cmd_once,
    "run": cmd_run,
    "status": cmd_status,
    "submit": cmd_submit,
    "gallery": cmd_gallery,
    "service": cmd_service,
    "doctor": cmd_doctor,
    "schema": cmd_schema,
}
