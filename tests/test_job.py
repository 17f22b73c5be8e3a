"""Tests for reading and validating job files, and for their reference images."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from PIL import Image

from daemon.errors import JobError, ReferenceMissing
from daemon.images import ImageFormat
from daemon.job.names import JOB_SUFFIX, is_job_file, job_name, sibling_references
from daemon.job.parse import MAX_JOB_BYTES, Job, PromptSource, parse_job
from daemon.job.schema import load_job_schema


def job_file(inbox: Path, text: str | bytes, name: str = "cat") -> Path:
    path = inbox / f"{name}{JOB_SUFFIX}"
    if isinstance(text, str):
        path.write_text(text, encoding="utf-8", newline="")
    else:
        path.write_bytes(text)
    return path


def image(path: Path, fmt: str = "PNG") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), "red").save(path, format=fmt)
    return path


def parse(inbox: Path, text: str | bytes, name: str = "cat") -> Job:
    return parse_job(job_file(inbox, text, name), inbox=inbox)


def job_error(inbox: Path, text: str | bytes, name: str = "cat") -> JobError:
    with pytest.raises(JobError) as caught:
        parse(inbox, text, name)
    assert type(caught.value) is JobError
    assert caught.value.exit_code == 2
    assert str(caught.value).startswith(f"{name}{JOB_SUFFIX}")
    return caught.value


class TestNames:
    @pytest.mark.parametrize(
        ("name", "expected"),
        [
            ("cat.prompt.yaml", True),
            ("a cat.v2.prompt.yaml", True),
            (".prompt.yaml", False),
            (".cat.prompt.yaml", False),
            ("._cat.prompt.yaml", False),
            ("cat.prompt.yml", False),
            ("cat.yaml", False),
            ("cat.prompt.yaml.swp", False),
            ("~$cat.prompt.yaml", False),
            ("~syncthing~cat.prompt.yaml", False),
        ],
    )
    def test_is_job_file(self, name: str, expected: bool) -> None:
        """Only `<name>.prompt.yaml` files that are not hidden and not litter are jobs."""
        assert is_job_file(name) is expected

    def test_job_name_drops_the_suffix(self) -> None:
        """The job's name is the file name without `.prompt.yaml`."""
        assert job_name(Path("/in/a.b.prompt.yaml")) == "a.b"

    def test_job_name_refuses_other_files(self) -> None:
        """A file that is not a job file has no job name."""
        with pytest.raises(ValueError, match="not a job file"):
            job_name(Path("/in/cat.png"))


class TestSiblings:
    def test_matching_names_sorted(self, inbox: Path) -> None:
        """`<name>.<ext>` and `<name>.<anything>.<ext>` match, any case of extension, sorted."""
        for name in ("cat.webp", "cat.b.JPG", "cat.a.jpeg", "cat.png", "cat.x.y.Png"):
            (inbox / name).write_bytes(b"")
        job = job_file(inbox, "a cat")
        found = [p.name for p in sibling_references(job)]
        assert found == ["cat.a.jpeg", "cat.b.JPG", "cat.png", "cat.webp", "cat.x.y.Png"]

    def test_other_files_do_not_match(self, inbox: Path) -> None:
        """Other jobs' images, non-image extensions and the job itself are not siblings."""
        for name in ("catalog.png", "cat.gif", "cat.png.bak", "Cat.png", "xcat.png", "cat.txt"):
            (inbox / name).write_bytes(b"")
        assert sibling_references(job_file(inbox, "a cat")) == []

    def test_siblings_become_references(self, inbox: Path) -> None:
        """Without `refs`, sibling images are the job's references and travel with it."""
        first = image(inbox / "cat.1.png")
        second = image(inbox / "cat.2.jpg", "JPEG")
        job = parse(inbox, "prompt: a cat\n")
        assert job.refs == (first, second)
        assert job.siblings == (first, second)

    def test_empty_refs_means_none(self, inbox: Path) -> None:
        """`refs: []` turns sibling references off."""
        image(inbox / "cat.png")
        job = parse(inbox, "prompt: a cat\nrefs: []\n")
        assert job.refs == ()
        assert job.siblings == ()

    def test_sibling_that_is_not_an_image(self, inbox: Path) -> None:
        """A sibling named like an image but holding text is a missing reference (exit 4)."""
        (inbox / "cat.png").write_text("not really a png")
        with pytest.raises(ReferenceMissing) as caught:
            parse(inbox, "a cat")
        assert caught.value.exit_code == 4
        assert "'cat.png' is not a PNG, JPEG or WebP image" in str(caught.value)


class TestValidJobs:
    def test_every_key(self, inbox: Path) -> None:
        """A job using every key gives a Job with each value checked and converted."""
        ref = image(inbox / "refs" / "style.webp", "WEBP")
        job = parse(
            inbox,
            """
prompt: A red fox in the snow
refs: [refs/style.webp]
out: fox
timeout_sec: 90
model: gpt-5.4
format: webp
""",
        )
        assert job == Job(
            path=inbox / "cat.prompt.yaml",
            name="cat",
            prompt="A red fox in the snow",
            refs=(ref,),
            siblings=(),
            out="fox",
            timeout_sec=90.0,
            model="gpt-5.4",
            format=ImageFormat.WEBP,
        )

    def test_defaults(self, inbox: Path) -> None:
        """Keys left out are None and there are no references."""
        job = parse(inbox, "prompt: a cat\n")
        assert (job.refs, job.out, job.timeout_sec, job.model, job.format) == (
            (),
            None,
            None,
            None,
            None,
        )

    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("png", ImageFormat.PNG),
            ("jpeg", ImageFormat.JPEG),
            ("jpg", ImageFormat.JPEG),
            ("webp", ImageFormat.WEBP),
        ],
    )
    def test_formats(self, inbox: Path, value: str, expected: ImageFormat) -> None:
        """png, jpeg, webp are formats, and jpg is another name for jpeg."""
        assert parse(inbox, f"prompt: x\nformat: {value}\n").format is expected

    def test_out_drops_an_image_extension(self, inbox: Path) -> None:
        """`out: sunset.png` means the base name `sunset`; other dots stay."""
        assert parse(inbox, "prompt: x\nout: sunset.PNG\n").out == "sunset"
        assert parse(inbox, "prompt: x\nout: v1.2 final\n").out == "v1.2 final"

    def test_refs_keep_their_order(self, inbox: Path) -> None:
        """Explicit references keep the order they are written in."""
        b = image(inbox / "b.png")
        a = image(inbox / "sub" / "a.jpeg", "JPEG")
        assert parse(inbox, "prompt: x\nrefs: [b.png, sub/../sub/a.jpeg]\n").refs == (b, a)

    def test_symlink_inside_the_inbox_is_fine(self, inbox: Path) -> None:
        """A reference that is a symlink to another image in the inbox is accepted."""
        image(inbox / "real.png")
        (inbox / "link.png").symlink_to(inbox / "real.png")
        assert parse(inbox, "prompt: x\nrefs: [link.png]\n").refs == (inbox / "link.png",)


class TestPromptText:
    def test_bare_string_is_the_prompt(self, inbox: Path) -> None:
        """A file containing just `a cat` has the prompt "a cat"."""
        assert parse(inbox, "a cat\n").prompt == "a cat"

    def test_bare_plain_text_keeps_its_lines(self, inbox: Path) -> None:
        """Unquoted text over several lines is kept as written, not folded into one line."""
        text = "A quiet harbour at dawn,\n  boats   asleep.\n\nPastel colours\n"
        expected = "A quiet harbour at dawn,\n  boats   asleep.\n\nPastel colours"
        assert parse(inbox, text).prompt == expected

    def test_bare_plain_text_windows_line_endings(self, inbox: Path) -> None:
        """CRLF line endings become plain line breaks, as in every YAML string."""
        assert parse(inbox, "one\r\ntwo\r\n").prompt == "one\ntwo"

    def test_bare_text_comment_is_not_part_of_it(self, inbox: Path) -> None:
        """A YAML comment line (such as a schema line for the editor) is not sent."""
        text = "# yaml-language-server: $schema=job.schema.json\na cat\n"
        assert parse(inbox, text).prompt == "a cat"

    def test_bare_quoted_and_block_scalars_follow_yaml(self, inbox: Path) -> None:
        """Quoted text and block scalars mean what YAML says (escapes, kept line breaks)."""
        assert parse(inbox, '"a\\tcat"\n').prompt == "a\tcat"
        assert parse(inbox, "|\n  line one\n  line two\n").prompt == "line one\nline two\n"

    def test_bare_unicode(self, inbox: Path) -> None:
        """Non-ASCII prompts and a UTF-8 byte-order mark are fine."""
        assert parse(inbox, "\ufeffUn chat 🐈 sur un toit\n").prompt == "Un chat 🐈 sur un toit"

    def test_mapping_prompt_is_never_stripped(self, inbox: Path) -> None:
        """Spaces and the final line break of a `prompt:` value are kept."""
        assert parse(inbox, 'prompt: "  a cat  "\n').prompt == "  a cat  "
        assert parse(inbox, "prompt: |\n  a cat\n  on a mat\n").prompt == "a cat\non a mat\n"

    def test_dates_stay_text(self, inbox: Path) -> None:
        """A prompt that looks like a date is text, not a date (nor a crash)."""
        assert parse(inbox, "prompt: 2024-13-45\n").prompt == "2024-13-45"


class TestWholeFilePrompt:
    """Prose with `Key: value` lines whose keys are no job keys is the prompt, whole."""

    @pytest.mark.parametrize(
        "text",
        [
            "Style: watercolor, a fox in the snow",
            "while you were away: a moonlit pond",
            "Mood: quiet\nImage: a fox, looking back",
        ],
    )
    def test_one_line_of_prose_with_a_colon(self, inbox: Path, text: str) -> None:
        """The file's text is the prompt, exactly, and the job says where it came from."""
        job = parse(inbox, text + "\n")
        assert job.prompt == text
        assert job.prompt_source is PromptSource.WHOLE_FILE

    def test_several_lines_nested_values_and_lists_are_kept_as_written(self, inbox: Path) -> None:
        """Continuation lines, a value that is a mapping, a list and quotes all stay verbatim;
        comments and blank lines around the text are left out, as for a bare prompt."""
        body = (
            "Scene: a harbour at dawn,\r\n"
            "   boats asleep  \r\n"
            "Characters:\r\n"
            "  Fox: red, curious\r\n"
            '  Owl: "white" # an owl\r\n'
            "Palette:\r\n"
            "  - ochre\r\n"
            "  - slate"
        )
        text = "# yaml-language-server: $schema=job.schema.json\r\n" + body + "\r\n\r\n# end\r\n"
        job = parse(inbox, text)
        assert job.prompt == body.replace("\r\n", "\n")
        assert job.prompt_source is PromptSource.WHOLE_FILE

    def test_a_repeated_key_is_no_mistake_in_prose(self, inbox: Path) -> None:
        """Prose may say `Scene:` twice; only a job mapping must name each key once."""
        assert parse(inbox, "Scene: a fox\nScene: a pond\n").prompt == "Scene: a fox\nScene: a pond"

    def test_siblings_are_its_references(self, inbox: Path) -> None:
        """A whole-file prompt takes the images beside it, like any job without `refs`."""
        image(inbox / "cat.png")
        assert parse(inbox, "Style: ink\n").refs == (inbox / "cat.png",)

    def test_other_files_say_where_their_prompt_came_from(self, inbox: Path) -> None:
        """`prompt:` and a file that is one YAML string have their own prompt_source."""
        assert parse(inbox, 'prompt: "a: b"\n').prompt_source is PromptSource.PROMPT_KEY
        assert parse(inbox, "a cat\n").prompt_source is PromptSource.YAML_STRING

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("promt: a fox\n", "unknown key 'promt' (did you mean 'prompt'?)"),
            ("Prompt: a fox\n", "unknown key 'Prompt' (did you mean 'prompt'?)"),
            ("Mode: night, a fox\n", "unknown key 'Mode' (did you mean 'model'?)"),
            ("image: fox.png\n", "unknown key 'image' (did you mean 'refs'?)"),
            ("Style: ink\nprompt: a fox\n", "unknown key 'Style'"),
            ("job:\n  prompt: a fox\n", "the key `prompt` is missing"),
            ("Notes:\n  - refs: [a.png]\n", "the key `prompt` is missing"),
        ],
    )
    def test_a_job_key_or_a_near_miss_anywhere_keeps_the_error(
        self, inbox: Path, text: str, expected: str
    ) -> None:
        """A typo of a job key, a job key at any depth or beside prose is a job mistake."""
        assert expected in str(job_error(inbox, text))

    def test_a_missing_prompt_says_how_to_send_text_with_keys(self, inbox: Path) -> None:
        """The hint of a mapping without `prompt` shows the block form for such text."""
        assert "`prompt: |`" in job_error(inbox, "Mode: night\n").hint


class TestStructureErrors:
    def test_misspelt_key_gets_a_suggestion(self, inbox: Path) -> None:
        """`promt` is reported with a did-you-mean and the fix, once."""
        error = job_error(inbox, "promt: a cat\n")
        assert str(error) == "cat.prompt.yaml: unknown key 'promt' (did you mean 'prompt'?)."
        assert error.hint == "Rename `promt` to `prompt`."

    def test_synonym_gets_a_suggestion(self, inbox: Path) -> None:
        """A word people use for a key (`images`) points to the key (`refs`)."""
        error = job_error(inbox, "prompt: x\nimages: [a.png]\n")
        assert "unknown key 'images' (did you mean 'refs'?)" in str(error)

    def test_unknown_key_without_a_guess_lists_the_keys(self, inbox: Path) -> None:
        """A key that resembles nothing is reported with the list of known keys."""
        error = job_error(inbox, "prompt: x\nzzz: 1\n")
        assert (
            "known keys: aspect, format, model, out, prompt, refs, timeout_sec, transparent"
            in str(error)
        )
        assert error.hint == "Remove `zzz`."

    def test_every_problem_at_once(self, inbox: Path) -> None:
        """Several mistakes are all listed in one error."""
        error = job_error(inbox, "prompt: ''\nformat: gif\ntimeout_sec: abc\nmodle: x\n")
        message = str(error)
        assert message.startswith("cat.prompt.yaml has 4 problems: ")
        for words in (
            "'modle' (did you mean 'model'?)",
            "`prompt` is empty",
            "`format` must be png, jpeg (or jpg) or webp, not 'gif'",
            "`timeout_sec` must be a number of seconds, not text",
        ):
            assert words in message

    @pytest.mark.parametrize(
        ("text", "words"),
        [
            ("", "the file is empty"),
            ("# just a comment\n", "the file is empty"),
            ("'   '\n", "holds no prompt text"),
            ("42\n", "the whole file reads as a number (42)"),
            ("- a\n- b\n", "the whole file reads as a list"),
            ("refs: []\n", "the key `prompt` is missing"),
            ("prompt:\n", "`prompt` must be text, not empty (null)"),
            ("prompt: '  \n\n  '\n", "`prompt` is empty"),
            ("prompt: 12\n", "`prompt` must be text, not a number (12)"),
            ("prompt: [a]\n", "`prompt` must be text, not a list"),
            ("prompt: x\nrefs: a.png\n", "`refs` must be a list of image paths, not text"),
            ("prompt: x\nrefs:\n", "`refs` must be a list of image paths, not empty (null)"),
            ("prompt: x\nrefs: [3]\n", "`refs` must list image paths as text"),
            ("prompt: x\nrefs: ['']\n", "`refs` must list image paths as text"),
            ("prompt: x\nrefs: [/etc/a.png]\n", "not relative to the job file"),
            ("prompt: x\nrefs: ['~/a.png']\n", "not relative to the job file"),
            ("prompt: x\nout: a/b\n", "contains a path separator"),
            ("prompt: x\nout: 'a\\\\b'\n", "contains a path separator"),
            ('prompt: x\nout: "a\\tb"\n', "control character"),
            ("prompt: x\nout: .hidden\n", "starts with a dot"),
            ("prompt: x\nout: ''\n", "`out` is empty"),
            ("prompt: x\nout: 7\n", "`out` must be a file name, not a number (7)"),
            (f"prompt: x\nout: {'a' * 101}\n", "longer than 100 characters"),
            (f"prompt: x\nout: {'é' * 101}\n", "longer than 100 characters"),
            ("prompt: x\ntimeout_sec: true\n", "not true/false (true)"),
            ("prompt: x\ntimeout_sec: 0\n", "more than 0"),
            ("prompt: x\ntimeout_sec: -5\n", "more than 0"),
            ("prompt: x\ntimeout_sec: .inf\n", "more than 0"),
            ("prompt: x\ntimeout_sec: .nan\n", "more than 0"),
            ("prompt: x\ntimeout_sec: 86401\n", "at most 86400"),
            ("prompt: x\nmodel: ''\n", "`model` is empty"),
            ("prompt: x\nmodel: 5\n", "`model` must be a model name, not a number"),
            ("prompt: x\nmodel: --dangerously-bypass\n", "is not a model name"),
            ("prompt: x\nmodel: gpt 5\n", "is not a model name"),
            ("prompt: x\nformat: PNG\n", "not 'PNG'"),
            ("prompt: x\nformat: 1\n", "not a number (1)"),
            ("prompt: x\n<<: {out: y}\n", "unknown key '<<'"),
            ("prompt: x\n3: y\n", "unknown key '3'"),
        ],
    )
    def test_wrong_values(self, inbox: Path, text: str, words: str) -> None:
        """Each wrong value is refused with the file, the key and what is wrong."""
        error = job_error(inbox, text)
        assert words in str(error)
        assert error.hint

    def test_yaml_syntax_error_has_line_and_column(self, inbox: Path) -> None:
        """A syntax error says where, and how to write a prompt containing ': '."""
        error = job_error(inbox, "prompt: a cat\nout: x: y\n")
        assert "YAML syntax error at line 2, column 7" in str(error)
        assert "prompt: |" in error.hint

    def test_control_character_has_line_and_column(self, inbox: Path) -> None:
        """A control character YAML refuses is located like any syntax error."""
        error = job_error(inbox, "prompt: ok\nout: a\x01b\n")
        assert str(error).startswith("cat.prompt.yaml: YAML syntax error at line 2, column 7: ")
        assert "\n" not in str(error)

    def test_unclosed_quote_points_at_its_start(self, inbox: Path) -> None:
        """An unclosed quote names both where the file ended and where the quote began."""
        error = job_error(inbox, 'prompt: "a cat\n')
        assert "scanning a quoted scalar at line 1, column 9" in str(error)


class TestFileErrors:
    def test_non_utf8_says_where(self, inbox: Path) -> None:
        """A Latin-1 file is refused, naming the byte, its line and column."""
        error = job_error(inbox, "prompt: ok\nout: café\n".encode("latin-1"))
        assert "not UTF-8 text: byte 0xe9 at line 2, column 9" in str(error)
        assert "UTF-8" in error.hint

    def test_limit_is_exactly_one_mib(self, inbox: Path) -> None:
        """A job file of exactly 1 MiB is read; one byte more is refused."""
        body = "prompt: " + "a" * (MAX_JOB_BYTES - len("prompt: ") - 1) + "\n"
        assert len(parse(inbox, body).prompt) == MAX_JOB_BYTES - len("prompt: ") - 1
        error = job_error(inbox, body + " ")
        assert f"is {MAX_JOB_BYTES + 1} bytes, over the limit" in str(error)

    def test_huge_file_is_refused_without_reading_it(self, inbox: Path) -> None:
        """A 64 GiB (sparse) job file is refused at once, from its size alone."""
        path = inbox / "cat.prompt.yaml"
        with path.open("wb") as f:
            f.truncate(64 * 1024**3)
        started = time.monotonic()
        with pytest.raises(JobError, match="over the limit"):
            parse_job(path, inbox=inbox)
        assert time.monotonic() - started < 1.0

    def test_fifo_is_refused_without_hanging(self, inbox: Path) -> None:
        """A named pipe called like a job is refused instead of blocking the reader."""
        path = inbox / "cat.prompt.yaml"
        os.mkfifo(path)
        with pytest.raises(JobError, match="is not a regular file"):
            parse_job(path, inbox=inbox)

    def test_folder_is_refused(self, inbox: Path) -> None:
        """A folder called like a job is refused."""
        (inbox / "cat.prompt.yaml").mkdir()
        with pytest.raises(JobError, match="is not a regular file"):
            parse_job(inbox / "cat.prompt.yaml", inbox=inbox)

    def test_vanished_file(self, inbox: Path) -> None:
        """A job file that no longer exists is a JobError naming it."""
        with pytest.raises(JobError, match=r"cat\.prompt\.yaml: cannot be read: No such file"):
            parse_job(inbox / "cat.prompt.yaml", inbox=inbox)


class TestSafeYaml:
    def test_billion_laughs_fails_fast(self, inbox: Path) -> None:
        """The classic alias bomb is refused within a second, at its first anchor."""
        lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
        for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
            lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
        started = time.monotonic()
        error = job_error(inbox, "\n".join(lines) + "\n")
        assert time.monotonic() - started < 1.0
        assert "line 1, column 4: anchors (&name) and aliases (*name) are not allowed" in str(error)

    def test_alias_alone_is_refused(self, inbox: Path) -> None:
        """An alias to an undefined anchor is refused as well (it is never resolved)."""
        assert "aliases" in str(job_error(inbox, "prompt: *x\n"))

    @pytest.mark.parametrize(
        "text",
        [
            "prompt: !!python/object/apply:os.system ['touch pwned']\n",
            "!!python/name:os.system\n",
            "prompt: !!str x\n",
            "prompt: !custom x\n",
            "prompt: ! x\n",
        ],
    )
    def test_tags_are_refused(self, inbox: Path, text: str) -> None:
        """Every explicit tag is refused before anything is constructed."""
        error = job_error(inbox, text)
        assert "is not allowed in a job file" in str(error)
        assert not (Path.cwd() / "pwned").exists()

    def test_duplicate_keys_are_refused(self, inbox: Path) -> None:
        """A key written twice is an error naming both lines (PyYAML would keep the last)."""
        error = job_error(inbox, "prompt: a cat\nout: x\nprompt: a dog\n")
        assert "line 3, column 1: the key 'prompt' appears twice (first at line 1)" in str(error)

    @pytest.mark.parametrize("depth", [50, 100_000])
    def test_deep_nesting_is_refused(self, inbox: Path, depth: int) -> None:
        """Deeply nested brackets give a job error, not a recursion crash."""
        error = job_error(inbox, "prompt: x\nout: " + "[" * depth + "]" * depth + "\n")
        assert "nest" in str(error)

    def test_several_documents_are_refused(self, inbox: Path) -> None:
        """A file with two YAML documents is not a job."""
        assert "YAML syntax error" in str(job_error(inbox, "prompt: a\n---\nprompt: b\n"))


class TestReferenceSafety:
    def test_dotdot_leading_out_is_refused(self, inbox: Path) -> None:
        """A reference escaping the inbox with `..` is a job error (exit 2), even if it exists."""
        image(inbox.parent / "secret.png")
        error = job_error(inbox, "prompt: x\nrefs: [../secret.png]\n")
        assert "'../secret.png' leads out of the inbox through '..'" in str(error)

    def test_symlink_leading_out_is_refused(self, inbox: Path) -> None:
        """A reference that is a symlink to an image outside the inbox is refused."""
        image(inbox.parent / "secret.png")
        (inbox / "link.png").symlink_to(inbox.parent / "secret.png")
        error = job_error(inbox, "prompt: x\nrefs: [link.png]\n")
        assert "'link.png' leads out of the inbox through a symbolic link" in str(error)

    def test_symlinked_folder_leading_out_is_refused(self, inbox: Path) -> None:
        """A folder symlink inside the inbox cannot be used to reach outside files."""
        image(inbox.parent / "outside" / "a.png")
        (inbox / "pics").symlink_to(inbox.parent / "outside")
        assert "leads out of the inbox" in str(job_error(inbox, "prompt: x\nrefs: [pics/a.png]\n"))

    def test_sibling_symlink_leading_out_is_refused(self, inbox: Path) -> None:
        """A sibling reference that links outside the inbox is refused too."""
        image(inbox.parent / "secret.png")
        (inbox / "cat.png").symlink_to(inbox.parent / "secret.png")
        assert "'cat.png' leads out of the inbox" in str(job_error(inbox, "a cat"))

    def test_symlink_loop_does_not_crash(self, inbox: Path) -> None:
        """A reference caught in a symlink loop is reported, not a crash."""
        (inbox / "loop.png").symlink_to(inbox / "loop.png")
        with pytest.raises((JobError, ReferenceMissing)):
            parse(inbox, "prompt: x\nrefs: [loop.png]\n")

    def test_inbox_reached_through_a_symlink(self, tmp_path: Path, inbox: Path) -> None:
        """An inbox named through a symlinked path still accepts its own references."""
        image(inbox / "a.png")
        alias = tmp_path / "alias"
        alias.symlink_to(inbox)
        job = parse_job(job_file(alias, "prompt: x\nrefs: [a.png]\n"), inbox=alias)
        assert job.refs == (alias / "a.png",)

    def test_missing_reference_is_exit_4(self, inbox: Path) -> None:
        """A reference that does not exist is ReferenceMissing, naming it."""
        with pytest.raises(ReferenceMissing) as caught:
            parse(inbox, "prompt: x\nrefs: [gone.png]\n")
        assert caught.value.exit_code == 4
        assert str(caught.value) == "cat.prompt.yaml: the reference 'gone.png' does not exist."

    def test_reference_that_is_not_an_image(self, inbox: Path) -> None:
        """A reference whose bytes are not PNG, JPEG or WebP is refused, whatever its name."""
        (inbox / "fake.png").write_bytes(b"GIF89a....")
        with pytest.raises(ReferenceMissing, match=r"'fake\.png' is not a PNG, JPEG or WebP"):
            parse(inbox, "prompt: x\nrefs: [fake.png]\n")

    def test_reference_that_is_a_folder(self, inbox: Path) -> None:
        """A reference naming a folder is refused."""
        (inbox / "dir.png").mkdir()
        with pytest.raises(ReferenceMissing, match=r"'dir\.png' is a folder, not an image"):
            parse(inbox, "prompt: x\nrefs: [dir.png]\n")

    def test_escapes_win_over_missing(self, inbox: Path) -> None:
        """With both an escaping and a missing reference, the job error names the escape."""
        error = job_error(inbox, "prompt: x\nrefs: [gone.png, ../x.png]\n")
        assert "'../x.png' leads out of the inbox" in str(error)

    def test_all_missing_references_are_listed(self, inbox: Path) -> None:
        """Every missing reference is named in one error."""
        with pytest.raises(ReferenceMissing) as caught:
            parse(inbox, "prompt: x\nrefs: [a.png, b.png]\n")
        assert "2 problems" in str(caught.value)
        assert "'a.png'" in str(caught.value)
        assert "'b.png'" in str(caught.value)


def test_schema_is_shipped() -> None:
    """The job schema loads from the package as a draft 2020-12 JSON Schema."""
    schema = load_job_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert set(schema["$defs"]["job"]["properties"]) == {
        "prompt",
        "refs",
        "out",
        "timeout_sec",
        "model",
        "format",
        "transparent",
        "aspect",
        "variants",
    }
