"""The configuration file: read at start-up and validated up front, every problem at once.

Each problem names its dotted key (`codex.timeout_sec`), what is wrong and the fix.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from daemon import yaml_text
from daemon.errors import ConfigError
from daemon.suggest import did_you_mean

APP_NAME = "gpt-image-inbox"
LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True, slots=True)
class CodexConfig:
    command: tuple[str, ...] = ("codex",)
    extra_args: tuple[str, ...] = ()
    home: Path | None = None  # sets CODEX_HOME for the child when given
    timeout_sec: float = 300.0
    term_grace_sec: float = 5.0  # SIGTERM to SIGKILL when codex is stopped


@dataclass(frozen=True, slots=True)
class WatchConfig:
    polling: bool = False
    settle_sec: float = 2.0
    rescan_sec: float = 60.0


@dataclass(frozen=True, slots=True)
class RetryConfig:
    attempts: int = 3  # total tries of a job for transient failures
    backoff_sec: float = 30.0  # first backoff, doubles each time
    max_backoff_sec: float = 900.0


@dataclass(frozen=True, slots=True)
class HooksConfig:
    on_done: tuple[str, ...] = ()  # run after a job is done, its images and sidecar in place
    on_failed: tuple[str, ...] = ()  # run after a job failed for good (not on retries, pauses)
    notify: str | None = None  # "desktop": a desktop notification too
    notifier: Path | None = None  # notify-send or osascript, found on PATH for `desktop`
    timeout_sec: float = 30.0  # then the hook's process group is killed


@dataclass(frozen=True, slots=True)
class Config:
    inbox: Path
    outbox: Path
    codex: CodexConfig
    watch: WatchConfig
    retry: RetryConfig
    hooks: HooksConfig = HooksConfig()
    shutdown_grace_sec: float = 30.0
    gallery: bool = True
    log_level: str = "info"
    source: Path | None = None  # the file it was read from


# Every key, by section ("" is the top level).
_KEYS: dict[str, tuple[str, ...]] = {
    "": (
        "inbox",
        "outbox",
        "gallery",
        "log_level",
        "shutdown_grace_sec",
        "codex",
        "watch",
        "retry",
        "hooks",
    ),
    "codex": ("command", "extra_args", "home", "timeout_sec", "term_grace_sec"),
    "watch": ("polling", "settle_sec", "rescan_sec"),
    "retry": ("attempts", "backoff_sec", "max_backoff_sec"),
    "hooks": ("on_done", "on_failed", "notify", "timeout_sec"),
}
_SECTIONS = ("codex", "watch", "retry", "hooks")
NOTIFY_KINDS = ("desktop",)


def _home(environ: Mapping[str, str]) -> Path:
    return Path(environ.get("HOME") or Path.home())


def default_config_path(
    *, environ: Mapping[str, str] = os.environ, platform: str = sys.platform
) -> Path:
    """Where the configuration lives when `--config` is not given."""
    if platform == "darwin":
        return _home(environ) / "Library" / "Application Support" / APP_NAME / "config.yaml"
    xdg = environ.get("XDG_CONFIG_HOME", "")
    # The XDG spec says a relative XDG_CONFIG_HOME is invalid and must be ignored.
    base = Path(xdg) if xdg and os.path.isabs(xdg) else _home(environ) / ".config"
    return base / APP_NAME / "config.yaml"


def default_config(*, environ: Mapping[str, str] = os.environ) -> Config:
    """The configuration used when the default file does not exist."""
    root = _home(environ) / APP_NAME
    return Config(
        inbox=root / "inbox",
        outbox=root / "outbox",
        codex=CodexConfig(),
        watch=WatchConfig(),
        retry=RetryConfig(),
    )


def load_config(
    path: Path | str | None = None, *, environ: Mapping[str, str] = os.environ
) -> Config:
    """Read and validate the configuration; raises ConfigError listing every problem.

    `path` None means the default file, which may be missing (defaults apply); a file named
    explicitly must exist.
    """
    explicit = path is not None
    file = Path(path) if path is not None else default_config_path(environ=environ)
    try:
        data = file.read_bytes()
    except FileNotFoundError:
        if explicit:
            fix = "create it (config.example.yaml shows every key) or name another with --config"
            raise ConfigError(file, [f"the file does not exist. Fix: {fix}."]) from None
        return default_config(environ=environ)
    except OSError as e:
        raise ConfigError(
            file,
            [f"the file cannot be read: {e.strerror}. Fix: check that it is a file you may read."],
        ) from e
    document, repeated = _parse(data, file)
    reader = _Reader(file, environ)
    reader.problems.extend(repeated)
    return reader.config(document)


def _parse(data: bytes, file: Path) -> tuple[Any, list[str]]:
    """The YAML document and its repeated keys; ConfigError for non-UTF-8 text and bad syntax."""
    try:
        text = yaml_text.decode_utf8(data)
    except yaml_text.NotUtf8 as e:
        raise ConfigError(file, [f"not UTF-8 text: {e.place}. Fix: save the file as UTF-8."]) from e
    loader = _Loader(text)
    try:
        document = loader.get_single_data()
    except yaml.YAMLError as e:
        place = yaml_text.error_place(e, text)
        where = f" at {place}" if place else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(
            file, [f"YAML syntax error{where}: {problem}. Fix: correct the YAML there."]
        ) from e
    finally:
        loader.dispose()
    return document, loader.repeated


class _Loader(yaml_text.SafeLoader):
    """Safe YAML that notes repeated keys, which PyYAML would silently let the last one win."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.repeated: list[str] = []

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[str, int] = {}
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                line = key_node.start_mark.line + 1
                if key_node.value in seen:
                    self.repeated.append(
                        f"{key_node.value}: written twice (lines {seen[key_node.value]} and "
                        f"{line}). Fix: keep one of them."
                    )
                seen.setdefault(key_node.value, line)
        return super().construct_mapping(node, deep=deep)


def _kind(value: object) -> str:
    if isinstance(value, bool):
        return f"true/false ({str(value).lower()})"
    if isinstance(value, (int, float)):
        return f"a number ({value})"
    if isinstance(value, str):
        return f"text ({value!r})"
    return "a list" if isinstance(value, list) else "a mapping"


def _unknown_key(prefix: str, guess: str | None, known: tuple[str, ...]) -> tuple[str, str]:
    """What is said of an unknown key and its fix: the key it may stand for, here or in
    another section (`watch.settle_sec` for a top-level `settle_sec`)."""
    if guess is None:
        return "unknown key", "remove it; the keys here are " + ", ".join(known)
    if "." in guess:
        return f"unknown key (did you mean `{guess}`?)", f"move it under `{guess.split('.')[0]}:`"
    return f"unknown key (did you mean `{prefix}{guess}`?)", f"rename it to `{guess}`"


class _Reader:
    """Checks one configuration document, collecting every problem before raising."""

    def __init__(self, file: Path, environ: Mapping[str, str]) -> None:
        self.file = file
        self.folder = Path(os.path.abspath(file.parent))
        self.environ = environ
        self.problems: list[str] = []

    def bad(self, key: str, what: str, fix: str) -> None:
        self.problems.append(f"{key}: {what}. Fix: {fix}.")

    def config(self, document: Any) -> Config:
        if document is None:  # an empty file, or only comments
            document = {}
        if not isinstance(document, dict):
            what = f"the file holds {_kind(document)}, not a mapping of keys"
            fix = "write `key: value` lines, as in config.example.yaml"
            raise ConfigError(self.file, [f"{what}. Fix: {fix}."])
        top = self.section(document, "")
        defaults = default_config(environ=self.environ)
        config = Config(
            inbox=self.path(top, "inbox") or defaults.inbox,
            outbox=self.path(top, "outbox") or defaults.outbox,
            codex=self.codex(self.section(top.get("codex"), "codex")),
            watch=self.watch(self.section(top.get("watch"), "watch")),
            retry=self.retry(self.section(top.get("retry"), "retry")),
            hooks=self.hooks(self.section(top.get("hooks"), "hooks")),
            shutdown_grace_sec=self.number(top, "shutdown_grace_sec", 30.0, allow_zero=True),
            gallery=self.boolean(top, "gallery", True),
            log_level=self.log_level(top),
            source=self.folder / self.file.name,
        )
        self.folders(config.inbox, config.outbox)
        if self.problems:
            raise ConfigError(self.file, self.problems)
        return config

    def folders(self, inbox: Path, outbox: Path) -> None:
        """The two folders must be folders (or not exist yet) and must not overlap, compared
        with every symbolic link followed: an outbox inside the inbox would be emptied into
        the inbox by crash recovery, and the same folder twice mixes jobs with results."""
        for key, folder in (("inbox", inbox), ("outbox", outbox)):
            if os.path.lexists(folder) and not folder.is_dir():
                self.bad(
                    key, f"{folder} is not a folder", "name a folder; it is created if missing"
                )
        inbox_real, outbox_real = Path(os.path.realpath(inbox)), Path(os.path.realpath(outbox))
        linked = inbox_real != inbox or outbox_real != outbox
        how = " (through a symbolic link)" if linked else ""
        if inbox_real == outbox_real:
            self.bad(
                "outbox",
                f"{outbox} is the same folder as the inbox ({inbox}){how}",
                "give `inbox` and `outbox` two different folders",
            )
        elif outbox_real.is_relative_to(inbox_real):
            self.bad(
                "outbox",
                f"{outbox} is inside the inbox ({inbox}){how}",
                "put `outbox` beside `inbox`, not inside it",
            )
        elif inbox_real.is_relative_to(outbox_real):
            self.bad(
                "inbox",
                f"{inbox} is inside the outbox ({outbox}){how}",
                "put `inbox` beside `outbox`, not inside it",
            )

    def section(self, value: Any, name: str) -> dict[str, Any]:
        """The mapping of one section with unknown keys reported; empty when left out."""
        if value is None:  # left out, or written with every key commented out
            return {}
        if not isinstance(value, dict):
            self.bad(
                name,
                f"must be a mapping of keys, not {_kind(value)}",
                f"indent the {name} keys under `{name}:`, as in config.example.yaml",
            )
            return {}
        known = _KEYS[name]
        prefix = f"{name}." if name else ""
        # A section's key written at the top level (`timeout_sec:`) points to its section.
        # A key in two sections (`timeout_sec`) points to the first of them.
        aliases = {} if name else {k: f"{s}.{k}" for s in reversed(_SECTIONS) for k in _KEYS[s]}
        for key in value:
            if key not in known:
                guess = did_you_mean(str(key), known, aliases=aliases)
                self.bad(f"{prefix}{key}", *_unknown_key(prefix, guess, known))
        return {k: v for k, v in value.items() if k in known}

    def codex(self, section: dict[str, Any]) -> CodexConfig:
        command = self.program(self.argv(section, "codex.command", ("codex",), allow_empty=False))
        return CodexConfig(
            command=command,
            extra_args=self.argv(section, "codex.extra_args", (), allow_empty=True),
            home=self.path(section, "home", "codex.home"),
            timeout_sec=self.number(section, "timeout_sec", 300.0, "codex.timeout_sec"),
            term_grace_sec=self.number(
                section, "term_grace_sec", 5.0, "codex.term_grace_sec", allow_zero=True
            ),
        )

    def program(self, command: tuple[str, ...]) -> tuple[str, ...]:
        """A first word with "/" or a leading ~ is a path: expanded, relative to this file."""
        if command and ("/" in command[0] or command[0].startswith("~")):
            return (str(self.expand(command[0])), *command[1:])
        return command

    def hooks(self, section: dict[str, Any]) -> HooksConfig:
        on_done = self.program(self.hook_argv(section, "on_done"))
        on_failed = self.program(self.hook_argv(section, "on_failed"))
        notify = self.notify(section)
        return HooksConfig(
            on_done=on_done,
            on_failed=on_failed,
            notify=notify,
            notifier=self.notifier() if notify == "desktop" else None,
            timeout_sec=self.number(section, "timeout_sec", 30.0, "hooks.timeout_sec"),
        )

    def hook_argv(self, section: dict[str, Any], key: str) -> tuple[str, ...]:
        """A non-empty list of words; no shell runs it, so a line of text is refused."""
        value = section.get(key)
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            self.bad(
                f"hooks.{key}",
                "must be a list of non-empty strings (program, then its arguments; no shell "
                "runs it)",
                f'write e.g. `{key}: ["notify-send", "done"]`, or `["sh", "-c", "..."]` '
                "for a shell",
            )
            return ()
        if not value:
            self.bad(f"hooks.{key}", "is empty", f"name a program, or remove `{key}`")
        return tuple(value)

    def notify(self, section: dict[str, Any]) -> str | None:
        value = section.get("notify")
        if value is None or value in NOTIFY_KINDS:
            return value
        shown = repr(value) if isinstance(value, str) else _kind(value)
        self.bad(
            "hooks.notify",
            f"must be `desktop` or left empty, not {shown}",
            "write `notify: desktop`, or leave it empty for no notification",
        )
        return None

    def notifier(self) -> Path | None:
        """notify-send (osascript on macOS) as found on this environment's PATH, now."""
        name = "osascript" if sys.platform == "darwin" else "notify-send"
        found = shutil.which(name, path=self.environ.get("PATH", os.defpath))
        if found is None:
            package = "" if sys.platform == "darwin" else " (package libnotify-bin or libnotify)"
            self.bad(
                "hooks.notify",
                f"desktop notifications need {name}, which is not on PATH",
                f"install {name}{package} or put it on the daemon's PATH, or leave `notify` empty",
            )
            return None
        return Path(os.path.abspath(found))

    def watch(self, section: dict[str, Any]) -> WatchConfig:
        return WatchConfig(
            polling=self.boolean(section, "polling", False, "watch.polling"),
            settle_sec=self.number(section, "settle_sec", 2.0, "watch.settle_sec", allow_zero=True),
            rescan_sec=self.number(section, "rescan_sec", 60.0, "watch.rescan_sec"),
        )

    def retry(self, section: dict[str, Any]) -> RetryConfig:
        attempts = self.number(section, "attempts", 3, "retry.attempts", whole=True)
        backoff = self.number(section, "backoff_sec", 30.0, "retry.backoff_sec")
        most = self.number(section, "max_backoff_sec", 900.0, "retry.max_backoff_sec")
        if most < backoff:
            self.bad(
                "retry.max_backoff_sec",
                f"is {most:g}, less than retry.backoff_sec ({backoff:g})",
                "make it at least as large as retry.backoff_sec",
            )
        return RetryConfig(attempts=int(attempts), backoff_sec=backoff, max_backoff_sec=most)

    def number(
        self,
        section: dict[str, Any],
        key: str,
        default: float,
        dotted: str = "",
        *,
        allow_zero: bool = False,
        whole: bool = False,
    ) -> float:
        dotted = dotted or key
        value = section.get(key)
        if value is None:
            return default
        kind = "a whole number" if whole else "a number of seconds"
        least = "0 or more" if allow_zero else "more than 0"
        example = f"`{key}: {default:g}`"
        if isinstance(value, bool) or not isinstance(value, int if whole else (int, float)):
            self.bad(dotted, f"must be {kind}, not {_kind(value)}", f"write e.g. {example}")
        elif not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
            self.bad(dotted, f"must be {least}, not {value}", f"write e.g. {example}")
        else:
            return float(value) if not whole else value
        return default

    def boolean(self, section: dict[str, Any], key: str, default: bool, dotted: str = "") -> bool:
        value = section.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.bad(
                dotted or key,
                f"must be true or false, not {_kind(value)}",
                f"write `{key}: true` or `{key}: false`",
            )
            return default
        return value

    def log_level(self, section: dict[str, Any]) -> str:
        value = section.get("log_level")
        if value is None:
            return "info"
        if not isinstance(value, str) or value.lower() not in LOG_LEVELS:
            shown = repr(value) if isinstance(value, str) else _kind(value)
            self.bad(
                "log_level",
                f"must be one of {', '.join(LOG_LEVELS)}, not {shown}",
                "write e.g. `log_level: info`",
            )
            return "info"
        return value.lower()

    def path(self, section: dict[str, Any], key: str, dotted: str = "") -> Path | None:
        value = section.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            shown = "empty text" if isinstance(value, str) else _kind(value)
            self.bad(
                dotted or key,
                f"must be a folder path, not {shown}",
                f"write e.g. `{key}: ~/gpt-image-inbox/{key}`",
            )
            return None
        return self.expand(value)

    def expand(self, text: str) -> Path:
        """`~` expanded (from this environment's HOME), relative to the config file's folder."""
        if text == "~" or text.startswith("~/"):
            text = str(_home(self.environ)) + text[1:]
        elif text.startswith("~"):
            text = os.path.expanduser(text)  # ~user
        return Path(os.path.normpath(self.folder / text))

    def argv(
        self, section: dict[str, Any], key: str, default: tuple[str, ...], *, allow_empty: bool
    ) -> tuple[str, ...]:
        value = section.get(key.split(".")[-1])
        if value is None:
            return default
        fix = (
            f'write a list such as `{key.split(".")[-1]}: ["codex"]` '
            "or one line of words split like a shell would"
        )
        if isinstance(value, str):
            import shlex

            try:
                value = shlex.split(value)
            except ValueError as e:
                self.bad(key, f"cannot be split into words: {e}", fix)
                return default
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            self.bad(key, "must be a list of non-empty strings", fix)
            return default
        if not value and not allow_empty:
            self.bad(key, "is empty", fix)
            return default
        return tuple(value)
