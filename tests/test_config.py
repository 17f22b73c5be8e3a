"""Tests for loading and validating the configuration file."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest

from daemon.config import (
    CodexConfig,
    Config,
    HooksConfig,
    RetryConfig,
    WatchConfig,
    default_config_path,
    load_config,
)
from daemon.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(path: Path, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ=environ or {"HOME": "/home/u"})
    assert caught.value.exit_code == 2
    return caught.value.problems


class TestDefaultPath:
    def test_linux_uses_xdg_config_home(self) -> None:
        """On Linux the file lives under $XDG_CONFIG_HOME when it is set."""
        path = default_config_path(
            environ={"XDG_CONFIG_HOME": "/x/cfg", "HOME": "/h"}, platform="linux"
        )
        assert path == Path("/x/cfg/gpt-image-inbox/config.yaml")

    def test_linux_falls_back_to_dot_config(self) -> None:
        """Without XDG_CONFIG_HOME (or with a relative one) the file is under ~/.config."""
        for environ in ({"HOME": "/h"}, {"HOME": "/h", "XDG_CONFIG_HOME": "rel"}):
            path = default_config_path(environ=environ, platform="linux")
            assert path == Path("/h/.config/gpt-image-inbox/config.yaml")

    def test_macos_uses_application_support(self) -> None:
        """On macOS the file is under ~/Library/Application Support."""
        path = default_config_path(environ={"HOME": "/Users/u"}, platform="darwin")
        assert path == Path("/Users/u/Library/Application Support/gpt-image-inbox/config.yaml")


class TestMissingFiles:
    def test_missing_default_file_gives_defaults(self, tmp_path: Path) -> None:
        """No file at the default place means every default, with the folders under HOME."""
        config = load_config(None, environ={"HOME": str(tmp_path), "XDG_CONFIG_HOME": ""})
        assert config == Config(
            inbox=tmp_path / "gpt-image-inbox" / "inbox",
            outbox=tmp_path / "gpt-image-inbox" / "outbox",
            codex=CodexConfig(),
            watch=WatchConfig(),
            retry=RetryConfig(),
        )
        assert config.source is None

    def test_default_file_is_read_when_present(self, tmp_path: Path) -> None:
        """A file at the default place is read when no path is given."""
        folder = tmp_path / "cfg" / "gpt-image-inbox"
        folder.mkdir(parents=True)
        write(folder, "inbox: /srv/in\n")
        config = load_config(None, environ={"HOME": "/h", "XDG_CONFIG_HOME": str(tmp_path / "cfg")})
        assert config.inbox == Path("/srv/in")
        assert config.source == folder / "config.yaml"

    def test_missing_explicit_file_is_an_error(self, tmp_path: Path) -> None:
        """A file named with --config must exist."""
        problems = problems_of(tmp_path / "nope.yaml")
        assert "does not exist" in problems[0]

    def test_unreadable_file_is_an_error(self, tmp_path: Path) -> None:
        """A folder given as the config file is reported, not a crash."""
        problems = problems_of(tmp_path)
        assert "cannot be read" in problems[0]


class TestValues:
    def test_every_key_is_read(self, tmp_path: Path) -> None:
        """Every documented key reaches the Config."""
        path = write(
            tmp_path,
            """
inbox: /srv/in
outbox: /srv/out
gallery: false
log_level: WARNING
shutdown_grace_sec: 0
codex:
  command: [/opt/codex/bin/codex, --flag]
  extra_args: ["-c", "x=1"]
  home: /srv/codex-home
  timeout_sec: 12.5
watch:
  polling: true
  settle_sec: 0
  rescan_sec: 5
retry:
  attempts: 1
  backoff_sec: 2
  max_backoff_sec: 2
""",
        )
        config = load_config(path, environ={"HOME": "/h"})
        assert config == Config(
            inbox=Path("/srv/in"),
            outbox=Path("/srv/out"),
            codex=CodexConfig(
                command=("/opt/codex/bin/codex", "--flag"),
                extra_args=("-c", "x=1"),
                home=Path("/srv/codex-home"),
                timeout_sec=12.5,
            ),
            watch=WatchConfig(polling=True, settle_sec=0.0, rescan_sec=5.0),
            retry=RetryConfig(attempts=1, backoff_sec=2.0, max_backoff_sec=2.0),
            shutdown_grace_sec=0.0,
            gallery=False,
            log_level="warning",
            source=path,
        )

    def test_empty_file_gives_defaults(self, tmp_path: Path) -> None:
        """A file of only comments is valid and changes nothing but the source."""
        config = load_config(write(tmp_path, "# nothing yet\n"), environ={"HOME": "/h"})
        assert config.inbox == Path("/h/gpt-image-inbox/inbox")
        assert config.codex == CodexConfig()

    def test_empty_values_and_sections_take_defaults(self, tmp_path: Path) -> None:
        """A key or section written with no value keeps its default."""
        config = load_config(
            write(tmp_path, "inbox:\ncodex:\nwatch:\n  settle_sec:\n"), environ={"HOME": "/h"}
        )
        assert config.inbox == Path("/h/gpt-image-inbox/inbox")
        assert config.watch.settle_sec == 2.0

    def test_tilde_and_relative_paths(self, tmp_path: Path) -> None:
        """`~` is the HOME of the given environment; relative paths start at the file's folder."""
        path = write(tmp_path, "inbox: ~/pics/in\noutbox: out/../results\ncodex:\n  home: .codex\n")
        config = load_config(path, environ={"HOME": "/home/u"})
        assert config.inbox == Path("/home/u/pics/in")
        assert config.outbox == tmp_path / "results"
        assert config.codex.home == tmp_path / ".codex"

    def test_command_string_is_split_like_a_shell(self, tmp_path: Path) -> None:
        """A command given as one line is split with shell quoting rules."""
        path = write(
            tmp_path,
            "codex:\n  command: npx '@openai/codex' --x \"a b\"\n  extra_args: -c model=o3\n",
        )
        config = load_config(path, environ={"HOME": "/h"})
        assert config.codex.command == ("npx", "@openai/codex", "--x", "a b")
        assert config.codex.extra_args == ("-c", "model=o3")

    def test_command_path_is_resolved_but_a_bare_name_is_not(self, tmp_path: Path) -> None:
        """A relative program path resolves against the file's folder; a name stays for PATH."""
        config = load_config(
            write(tmp_path, "codex:\n  command: [./fake-codex, -v]\n"), environ={"HOME": "/h"}
        )
        assert config.codex.command == (str(tmp_path / "fake-codex"), "-v")
        config = load_config(
            write(tmp_path, "codex:\n  command: ~/bin/codex\n"), environ={"HOME": "/h"}
        )
        assert config.codex.command == ("/h/bin/codex",)

    def test_example_file_is_valid_and_holds_the_defaults(self) -> None:
        """config.example.yaml loads and documents exactly the built-in defaults."""
        example = REPO / "config.example.yaml"
        environ = {"HOME": "/h", "XDG_CONFIG_HOME": "/nowhere"}
        defaults = load_config(None, environ=environ)
        assert load_config(example, environ=environ) == replace(defaults, source=example)

    def test_example_file_mentions_every_key(self) -> None:
        """Every key the loader knows appears in config.example.yaml."""
        text = (REPO / "config.example.yaml").read_text(encoding="utf-8")
        for key in (
            "inbox",
            "outbox",
            "gallery",
            "log_level",
            "shutdown_grace_sec",
            "codex",
            "command",
            "extra_args",
            "home",
            "timeout_sec",
            "watch",
            "polling",
            "settle_sec",
            "rescan_sec",
            "retry",
            "attempts",
            "backoff_sec",
            "max_backoff_sec",
            "hooks",
            "on_done",
            "on_failed",
            "notify",
        ):
            assert f"\n{key}:" in text or f"\n  {key}:" in text, key


class TestProblems:
    def test_every_problem_is_reported_at_once(self, tmp_path: Path) -> None:
        """Several mistakes give one error listing each of them with its dotted key."""
        path = write(
            tmp_path,
            """
inbx: /in
codex:
  timeout_sec: -1
  command: []
watch:
  polling: "yes"
retry:
  attempts: 2.5
log_level: loud
""",
        )
        problems = problems_of(path)
        keys = [p.split(":")[0] for p in problems]
        assert keys == [
            "inbx",
            "codex.command",
            "codex.timeout_sec",
            "watch.polling",
            "retry.attempts",
            "log_level",
        ]
        assert all("Fix:" in p for p in problems)

    def test_message_names_the_file_and_counts(self, tmp_path: Path) -> None:
        """The error message starts with the file and the number of problems."""
        path = write(tmp_path, "inbx: /in\nlog_level: loud\n")
        with pytest.raises(ConfigError) as caught:
            load_config(path, environ={"HOME": "/h"})
        assert str(caught.value).startswith(f"{path}: 2 problem(s)")
        assert "  - inbx:" in str(caught.value)

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            (
                "inbx: /in\n",
                "inbx: unknown key (did you mean `inbox`?). Fix: rename it to `inbox`.",
            ),
            (
                "codex:\n  timout_sec: 3\n",
                "codex.timout_sec: unknown key (did you mean `codex.timeout_sec`?)",
            ),
            (
                "timeout_sec: 3\n",
                "timeout_sec: unknown key (did you mean `codex.timeout_sec`?). "
                "Fix: move it under `codex:`.",
            ),
            ("zzz: 1\n", "zzz: unknown key. Fix: remove it; the keys here are inbox, outbox"),
        ],
    )
    def test_unknown_keys_get_a_suggestion(self, tmp_path: Path, text: str, expected: str) -> None:
        """An unknown key is named with its section and the key it probably meant."""
        [problem] = problems_of(write(tmp_path, text))
        assert problem.startswith(expected)

    @pytest.mark.parametrize(
        ("text", "key", "words"),
        [
            ("codex:\n  timeout_sec: true\n", "codex.timeout_sec", "not true/false"),
            ("codex:\n  timeout_sec: 0\n", "codex.timeout_sec", "more than 0"),
            ("codex:\n  timeout_sec: .inf\n", "codex.timeout_sec", "more than 0"),
            ("codex:\n  timeout_sec: '300'\n", "codex.timeout_sec", "not text ('300')"),
            ("shutdown_grace_sec: -1\n", "shutdown_grace_sec", "0 or more"),
            ("watch:\n  rescan_sec: 0\n", "watch.rescan_sec", "more than 0"),
            ("watch:\n  settle_sec: -0.5\n", "watch.settle_sec", "0 or more"),
            ("retry:\n  attempts: 0\n", "retry.attempts", "more than 0"),
            ("retry:\n  attempts: true\n", "retry.attempts", "whole number"),
            (
                "retry:\n  backoff_sec: 60\n  max_backoff_sec: 10\n",
                "retry.max_backoff_sec",
                "less than retry.backoff_sec",
            ),
            ("gallery: 1\n", "gallery", "true or false"),
            ("watch:\n  polling: 'no'\n", "watch.polling", "true or false"),
            ("log_level: 3\n", "log_level", "one of debug, info, warning, error"),
            ("inbox: 3\n", "inbox", "folder path"),
            ("outbox: ''\n", "outbox", "folder path"),
            ("inbox: /same\noutbox: /same/\n", "outbox", "same folder as the inbox"),
            ("codex:\n  command: []\n", "codex.command", "is empty"),
            ("codex:\n  command: ''\n", "codex.command", "is empty"),
            ("codex:\n  command: [codex, 3]\n", "codex.command", "list of non-empty strings"),
            ("codex:\n  command: 'codex \"x'\n", "codex.command", "cannot be split"),
            ("codex:\n  extra_args: {a: 1}\n", "codex.extra_args", "list of non-empty strings"),
            ("codex: [1]\n", "codex", "must be a mapping"),
            ("hooks:\n  on_done: []\n", "hooks.on_done", "is empty"),
            ("hooks:\n  on_failed: ['']\n", "hooks.on_failed", "list of non-empty strings"),
            ("hooks:\n  on_done: {a: 1}\n", "hooks.on_done", "list of non-empty strings"),
            ("hooks:\n  notify: email\n", "hooks.notify", "not 'email'"),
            ("hooks:\n  timeout_sec: -1\n", "hooks.timeout_sec", "more than 0"),
            ("hooks: [a]\n", "hooks", "must be a mapping"),
            ("on_done: [x]\n", "on_done", "did you mean `hooks.on_done`?"),
        ],
    )
    def test_wrong_values_name_key_problem_and_fix(
        self, tmp_path: Path, text: str, key: str, words: str
    ) -> None:
        """Each wrong value (hooks' too) is reported under its dotted key, saying what is wrong
        and the fix."""
        [problem] = problems_of(write(tmp_path, text))
        assert problem.startswith(f"{key}: ")
        assert words in problem
        assert "Fix:" in problem

    def test_yaml_syntax_error_has_line_and_column(self, tmp_path: Path) -> None:
        """A YAML syntax error says where it is."""
        [problem] = problems_of(write(tmp_path, "inbox: /in\ncodex:\n  command: [a, b\n"))
        assert problem.startswith("YAML syntax error at line 4, column 1")

    def test_control_character_says_where(self, tmp_path: Path) -> None:
        """A control character is reported on one line with its place."""
        [problem] = problems_of(write(tmp_path, "log_level: info\ninbox: a\x01b\n"))
        assert problem.startswith("YAML syntax error at line 2, column 9: ")
        assert "\n" not in problem

    def test_non_utf8_file_says_where(self, tmp_path: Path) -> None:
        """A file that is not UTF-8 names the bad byte and its line."""
        path = tmp_path / "config.yaml"
        path.write_bytes(b"inbox: /in\noutbox: /caf\xe9\n")
        [problem] = problems_of(path)
        assert "byte 0xe9 at line 2" in problem

    def test_repeated_keys_are_reported_with_the_rest(self, tmp_path: Path) -> None:
        """A key written twice is a problem, listed along with the other problems."""
        problems = problems_of(write(tmp_path, "inbox: /a\ninbox: /b\nlog_level: loud\n"))
        assert problems[0] == "inbox: written twice (lines 1 and 2). Fix: keep one of them."
        assert problems[1].startswith("log_level:")

    def test_top_level_must_be_a_mapping(self, tmp_path: Path) -> None:
        """A file that is a list or a string is refused with a pointer to the example."""
        [problem] = problems_of(write(tmp_path, "- inbox\n"))
        assert "not a mapping" in problem

    def test_unsafe_tags_are_refused(self, tmp_path: Path) -> None:
        """Python object tags are a YAML error, never executed."""
        [problem] = problems_of(write(tmp_path, "inbox: !!python/object/apply:os.getcwd []\n"))
        assert problem.startswith(
            "YAML syntax error at line 1, column 8: could not determine a constructor for the tag"
        )


class TestHooks:
    def test_hooks_are_off_by_default_and_the_example_documents_their_defaults(self) -> None:
        """No hook, no notification and a 30 s limit, as config.example.yaml's hooks section
        says."""
        assert load_config(None, environ={"HOME": "/h", "XDG_CONFIG_HOME": "/no"}).hooks == (
            HooksConfig(timeout_sec=30.0)
        )
        text = (REPO / "config.example.yaml").read_text(encoding="utf-8")
        section = text[text.index("\nhooks:\n") :]
        for line in ("  on_done:\n", "  on_failed:\n", "  notify:\n", "  timeout_sec: 30\n"):
            assert line in section, line
        example = load_config(REPO / "config.example.yaml", environ={"HOME": "/h"})
        assert example.hooks == HooksConfig()

    def test_hook_lists_are_read_with_the_program_path_expanded(self, tmp_path: Path) -> None:
        """on_done and on_failed are argv lists; a first word with ~ or / is a path like
        codex.command, a bare name stays for PATH, and the time limit is read."""
        path = write(
            tmp_path,
            "hooks:\n"
            "  on_done: [~/bin/to-phone, --all]\n"
            "  on_failed: [notify-send, failed]\n"
            "  timeout_sec: 2.5\n",
        )
        hooks = load_config(path, environ={"HOME": "/h"}).hooks
        assert hooks == HooksConfig(
            on_done=("/h/bin/to-phone", "--all"),
            on_failed=("notify-send", "failed"),
            timeout_sec=2.5,
        )
        path = write(tmp_path, "hooks:\n  on_done: [./hook.py]\n")
        assert load_config(path, environ={"HOME": "/h"}).hooks.on_done == (
            str(tmp_path / "hook.py"),
        )

    def test_every_hooks_problem_is_reported_at_once(self, tmp_path: Path) -> None:
        """A line of text (no shell runs hooks), a list with a number, an unknown notify kind,
        a zero time limit and an unknown key are all reported with their dotted keys."""
        path = write(
            tmp_path,
            "hooks:\n"
            "  on_done: notify-send done\n"
            "  on_failed: [notify-send, 3]\n"
            "  notify: yes\n"
            "  timeout_sec: 0\n"
            "  when: always\n",
        )
        problems = problems_of(path)
        assert [p.split(": ")[0] for p in problems] == [
            "hooks.when",
            "hooks.on_done",
            "hooks.on_failed",
            "hooks.notify",
            "hooks.timeout_sec",
        ]
        assert "no shell" in problems[1]
        assert "must be `desktop` or left empty, not true/false" in problems[3]
        assert all("Fix:" in p for p in problems)

    @pytest.mark.skipif(sys.platform == "darwin", reason="macOS notifies with osascript")
    def test_desktop_notify_finds_notify_send_on_path_or_says_it_is_missing(
        self, tmp_path: Path
    ) -> None:
        """`notify: desktop` resolves notify-send on the environment's PATH when the file is
        read; without it the problem names hooks.notify and what to install."""
        path = write(tmp_path, "hooks:\n  notify: desktop\n")
        empty = tmp_path / "empty"
        empty.mkdir()
        [problem] = problems_of(path, {"HOME": "/h", "PATH": str(empty)})
        assert problem.startswith(
            "hooks.notify: desktop notifications need notify-send, which is not on PATH. Fix:"
        )
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        program = bin_dir / "notify-send"
        program.write_text("#!/bin/sh\n")
        program.chmod(0o755)
        hooks = load_config(path, environ={"HOME": "/h", "PATH": f"{empty}:{bin_dir}"}).hooks
        assert (hooks.notify, hooks.notifier) == ("desktop", program)
