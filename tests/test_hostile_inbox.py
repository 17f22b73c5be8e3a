"""One bad job never stops the queue: whatever codex, the disk or another writer of a synced
inbox does, that job ends with its sidecar (or waits) and the next job still runs."""

from __future__ import annotations

import base64
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
import yaml

from daemon import files as disk
from daemon.config import load_config
from daemon.errors import ConfigError, RecoveryFailed
from daemon.pipeline.recovery import recover_processing, remove_leftovers
from daemon.pipeline.run_record import RunRecord, record_path
from tests.support import rollout_shapes as shapes
from tests.support.mock_openai import MockOpenAI
from tests.support.procs import wait_for
from tests.support.world import RealWorld, World


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares `width` x `height` pixels, with one tiny compressed row."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body).to_bytes(4, "big")
        return len(body).to_bytes(4, "big") + kind + body + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def once_process(world: World, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "daemon", "once", "--config", str(world.config_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
        start_new_session=True,
    )


# --- codex's output ----------------------------------------------------------------------


def test_a_decompression_bomb_from_codex_fails_that_job_and_the_next_one_runs(
    world: World,
) -> None:
    """An image in the session log declaring 50000 x 50000 pixels is refused undecoded, with an
    error sidecar; the job after it still becomes an image."""
    bomb = png_declaring(50_000, 50_000)
    world.write_config(retry={"attempts": 2})
    world.set_script(
        image_b64=base64.b64encode(bomb).decode(),
        image_b64_calls=2,  # both tries of the first job
    )
    world.write_job("a-bomb", "prompt: first\n")
    world.write_job("b-next", "prompt: second\n")
    os.utime(world.inbox / "b-next.prompt.yaml", (time.time() + 5, time.time() + 5))
    world.once()
    error = world.sidecar("a-bomb.error.yaml")
    assert error["error"] == "no-image"
    assert "2500000000 pixels" in error["message"]
    assert (world.outbox / "b-next.png").exists()
    assert world.files(world.inbox / "processing") == []


# --- names and files ---------------------------------------------------------------------


def test_a_job_name_of_236_bytes_is_done_with_every_name_within_255_bytes(world: World) -> None:
    """Temp files, the run record and the outputs of a very long job name all fit a file name;
    a second job of the same name is still told apart."""
    stem = "é" * 118  # 236 bytes of UTF-8
    for _ in range(2):
        world.write_job(stem, "prompt: a long name\n")
        assert world.once() == 0
    names = world.files(world.outbox)
    assert len([n for n in names if n.endswith(".png")]) == 2
    assert len([n for n in names if n.endswith(".result.yaml")]) == 2
    for folder in (world.outbox, world.inbox / "done"):
        assert all(len(name.encode()) <= 255 for name in world.files(folder))
    assert len(world.files(world.inbox / "done")) == 2
    long_record = record_path(world.inbox / "processing" / (stem + "-22.prompt.yaml"))
    assert len(long_record.name.encode()) <= 255


def test_fitted_names_stay_apart_and_keep_their_tails() -> None:
    """Two long stems that share their first 240 bytes shorten to different names."""
    a, b = "x" * 240 + "-one", "x" * 240 + "-two"
    fit_a, fit_b = disk.fit_stem(a, [".result.yaml"]), disk.fit_stem(b, [".result.yaml"])
    assert fit_a != fit_b
    assert len((fit_a + ".result.yaml").encode()) == 255
    assert disk.fit_stem("short", [".result.yaml"]) == "short"


def test_a_job_file_deleted_while_codex_runs_still_delivers_its_image(world: World) -> None:
    """codex has spent the quota: the image is delivered, the sibling reference still goes to
    done/, and `once` ends without a traceback."""
    world.set_script(delay_sec=3.0)
    world.write_job("gone", "prompt: deleted mid-run\n")
    (world.inbox / "gone.png").write_bytes(shapes.tiny_png(2))
    proc = once_process(world)
    claimed = world.inbox / "processing" / "gone.prompt.yaml"
    wait_for(lambda: world.calls(), what="codex started")
    claimed.unlink()
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr.decode()
    assert b"Traceback" not in stderr
    assert (world.outbox / "gone.png").exists()
    assert world.files(world.inbox / "done") == ["gone.png"]
    assert world.files(world.inbox / "processing") == []


def test_the_inbox_removed_while_codex_runs_is_not_a_disk_full(world: World) -> None:
    """The image is delivered and the inbox is not recreated behind the person's back."""
    world.set_script(delay_sec=3.0)
    world.write_job("orphan", "prompt: the inbox vanishes\n")
    proc = once_process(world)
    wait_for(lambda: world.calls(), what="codex started")
    subprocess.run(["rm", "-rf", str(world.inbox)], check=True)
    _, stderr = proc.communicate(timeout=60)
    assert b"Traceback" not in stderr
    assert b"disk space" not in stderr
    assert (world.outbox / "orphan.png").exists()
    assert not world.inbox.exists()


def test_a_fifo_named_like_a_reference_is_refused_without_hanging(world: World) -> None:
    """A FIFO sibling is not opened: the job fails as a bad reference (code 4) and the
    command ends by itself; the next job runs."""
    world.write_job("piped", "prompt: with a pipe\n")
    os.mkfifo(world.inbox / "piped.png")
    world.write_job("plain", "prompt: no pipe\n")
    proc = once_process(world)
    try:
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    error = world.sidecar("piped.error.yaml")
    assert error["error"] == "reference"
    assert error["code"] == 4
    assert "not a regular file" in error["message"]
    assert (world.outbox / "plain.png").exists()
    assert b"Traceback" not in stderr


def test_a_fifo_named_like_a_job_is_refused_without_hanging(world: World) -> None:
    world.write_job("a", "prompt: fine\n")
    os.mkfifo(world.inbox / "b.prompt.yaml")
    proc = once_process(world)
    try:
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert world.sidecar("b.error.yaml")["error"] == "job"
    assert (world.outbox / "a.png").exists()


@pytest.mark.parametrize("damage", ["truncated", "garbage-after-magic"])
def test_a_damaged_reference_is_a_bad_reference_not_a_missing_image(
    world: World, damage: str
) -> None:
    """A reference cut short is refused before codex runs, with code 4."""
    from PIL import Image

    path = world.inbox / "cut.jpg"
    Image.new("RGB", (64, 64), "red").save(path, format="JPEG")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncated" else data[:4] + b"x" * 500)
    world.write_job("cut", "prompt: the reference is broken\n")
    world.once()
    error = world.sidecar("cut.error.yaml")
    assert error["code"] == 4
    assert error["error"] == "reference"
    assert world.calls() == []


# --- containment ------------------------------------------------------------------------


def test_a_job_file_linking_out_of_the_inbox_is_never_read(world: World, tmp_path: Path) -> None:
    """Its text reaches neither codex nor the sidecar nor the gallery, and the link moves to
    failed/ as a link: the outside file gets no second name inside the synced folder."""
    secret = tmp_path / "secret.txt"
    secret.write_text("prompt: the contents of a private file\n")
    os.symlink(secret, world.inbox / "leak.prompt.yaml")
    world.write_config()
    data = yaml.safe_load(world.config_path.read_text())
    data["gallery"] = True
    world.config_path.write_text(yaml.safe_dump(data))
    world.once()
    error = world.sidecar("leak.error.yaml")
    assert error["error"] == "job"
    assert "outside the inbox" in error["message"]
    assert error["prompt"] is None
    assert world.calls() == []
    for path in world.outbox.iterdir():
        assert b"private file" not in path.read_bytes(), path
    moved = world.inbox / "failed" / "leak.prompt.yaml"
    assert moved.is_symlink()
    assert secret.stat().st_nlink == 1


def test_a_link_inside_the_inbox_is_a_job_like_any_other(world: World) -> None:
    (world.inbox / "drafts").mkdir()
    (world.inbox / "drafts" / "real.txt").write_text("prompt: kept in drafts\n")
    os.symlink(world.inbox / "drafts" / "real.txt", world.inbox / "linked.prompt.yaml")
    assert world.once() == 0
    assert world.sidecar("linked.result.yaml")["prompt"] == "kept in drafts"


# --- configuration ----------------------------------------------------------------------


def _config(tmp_path: Path, inbox: Path, outbox: Path) -> Path:
    path = tmp_path / "overlap.yaml"
    path.write_text(yaml.safe_dump({"inbox": str(inbox), "outbox": str(outbox)}))
    return path


def test_an_outbox_inside_the_inbox_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(_config(tmp_path, tmp_path / "in", tmp_path / "in" / "results"))
    assert caught.value.exit_code == 2
    assert "outbox" in str(caught.value)
    assert "inside the inbox" in str(caught.value)
    assert "`inbox`" in str(caught.value)


def test_an_inbox_inside_the_outbox_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"inbox: .* is inside the outbox"):
        load_config(_config(tmp_path, tmp_path / "out" / "jobs", tmp_path / "out"))


def test_the_same_folder_through_a_symlink_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "alias")
    with pytest.raises(ConfigError, match=r"same folder as the inbox .*symbolic link"):
        load_config(_config(tmp_path, tmp_path / "real", tmp_path / "alias"))


def test_an_inbox_that_is_a_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "inbox").write_text("not a folder")
    with pytest.raises(ConfigError, match=r"inbox: .* is not a folder"):
        load_config(_config(tmp_path, tmp_path / "inbox", tmp_path / "outbox"))


# --- recovery ---------------------------------------------------------------------------


def test_a_recovery_that_raises_twice_gives_the_job_up_with_a_sidecar(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The error still surfaces (a bug must be seen), but the third start moves the job to
    failed/ with a sidecar instead of failing again."""
    processing = world.inbox / "processing"
    processing.mkdir()
    job = processing / "stuck.prompt.yaml"
    job.write_text("prompt: stuck\n")
    RunRecord(job, job="stuck.prompt.yaml", refs=[], prompt="stuck\n", wanted="stuck").save()
    config = load_config(world.config_path)

    def broken(*_args: object) -> None:
        raise RuntimeError("a bug in recovery")

    monkeypatch.setattr("daemon.pipeline.recovery._finish", broken)
    for _ in range(2):
        with pytest.raises(RuntimeError):
            recover_processing(config, get_setup=lambda: pytest.fail("no codex needed"))
    outcomes = recover_processing(config, get_setup=lambda: pytest.fail("no codex needed"))
    assert [o.status.value for o in outcomes] == ["failed"]
    assert isinstance(outcomes[0].error, RecoveryFailed)
    error = world.sidecar("stuck.error.yaml")
    assert error["error"] == "recovery"
    assert error["retrying"] is False
    assert error["prompt"] == "stuck\n"
    assert world.files(world.inbox / "failed") == ["stuck.prompt.yaml"]
    assert world.files(processing) == []


def test_leftovers_of_killed_processes_are_removed_and_live_ones_kept(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run folders and temp files of a dead process go; those of a live one stay, and so does
    the run folder of a codex that outlived its killed parent."""
    temp_root = tmp_path / "tmp"
    temp_root.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp_root))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    codex_left = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True
    )
    try:
        (temp_root / f"gpt-image-inbox-{dead.pid}-abc").mkdir()
        (temp_root / f"gpt-image-inbox-{alive.pid}-def").mkdir()
        kept_for_codex = temp_root / f"gpt-image-inbox-{dead.pid}-ghi"
        kept_for_codex.mkdir()
        (kept_for_codex / ".codex-pgid").write_text(str(codex_left.pid))
        world.outbox.mkdir(exist_ok=True)
        (world.outbox / f".fox.png.{dead.pid}-0123abcd.tmp").write_bytes(b"half")
        (world.outbox / f".cat.png.{alive.pid}-0123abcd.tmp").write_bytes(b"being written")
        remove_leftovers(load_config(world.config_path))
        assert sorted(p.name for p in temp_root.iterdir()) == sorted(
            [f"gpt-image-inbox-{alive.pid}-def", kept_for_codex.name]
        )
        assert world.files(world.outbox) == [f".cat.png.{alive.pid}-0123abcd.tmp"]
    finally:
        alive.kill()
        codex_left.kill()


@pytest.mark.real_codex
def test_a_decompression_bomb_through_the_real_codex_ends_with_a_sidecar(
    tmp_path: Path, codex_bin: Path, codex_home: Path, mock_openai: MockOpenAI
) -> None:
    """The images endpoint returns a PNG declaring 50000 x 50000 pixels: the real codex puts
    it into its session log, and `once` refuses it undecoded, with a sidecar, no traceback."""
    mock_openai.image_bytes = png_declaring(50_000, 50_000)
    world = RealWorld(tmp_path, codex_bin, codex_home, mock_openai)
    (world.inbox / "bomb.prompt.yaml").write_text("prompt: a very large picture\n")
    done = world.cli("once")
    assert done.returncode == 7, done.stderr
    assert "Traceback" not in done.stderr
    error = world.sidecar("bomb.error.yaml")
    assert error["error"] == "no-image"
    assert "2500000000 pixels" in error["message"]
    assert error["retrying"] is False
    assert (world.inbox / "failed" / "bomb.prompt.yaml").exists()
    assert len(mock_openai.image_requests()) == 2  # both tries reached the image tool
