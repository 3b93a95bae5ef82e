"""The request log: JSON lines, rotated by size like logging's RotatingFileHandler."""

from __future__ import annotations

import json
from pathlib import Path

from serve.gateway.requestlog import RequestLog


def test_lines_are_json_and_nothing_is_written_outside_open(tmp_path: Path) -> None:
    log = RequestLog(tmp_path / "logs" / "requests.log")
    log.write(tenant="early")  # before open: dropped, as no handler was attached before
    log.open()
    log.write(tenant="acme", status=200, usage={"prompt_tokens": 3})
    log.write(tenant="b\u00e9ta", status=503)
    log.close()
    log.write(tenant="late")
    lines = (tmp_path / "logs" / "requests.log").read_text().splitlines()
    assert [json.loads(line)["tenant"] for line in lines] == ["acme", "b\u00e9ta"]
    first = json.loads(lines[0])
    assert first["status"] == 200 and first["usage"] == {"prompt_tokens": 3}
    assert first["time"].endswith("Z") and len(first["time"]) == 20


def test_appends_across_opens_and_counts_the_existing_size(tmp_path: Path) -> None:
    path = tmp_path / "requests.log"
    path.write_text("x" * 90 + "\n")
    log = RequestLog(path, max_bytes=120, backups=2)
    log.open()
    log.write(n=1)  # 91 bytes already there: this line passes 120, so it starts a new file
    log.close()
    assert path.with_name("requests.log.1").read_text() == "x" * 90 + "\n"
    assert json.loads(path.read_text())["n"] == 1


def test_rotation_keeps_at_most_the_backups(tmp_path: Path) -> None:
    path = tmp_path / "requests.log"
    log = RequestLog(path, max_bytes=200, backups=2)
    log.open()
    for i in range(20):
        log.write(i=i, pad="p" * 40)  # ~70 bytes a line: two lines a file
    log.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["requests.log", "requests.log.1", "requests.log.2"]
    numbers = [
        [json.loads(line)["i"] for line in (tmp_path / name).read_text().splitlines()]
        for name in ("requests.log.2", "requests.log.1", "requests.log")
    ]
    assert numbers == [[14, 15], [16, 17], [18, 19]]
    assert all(p.stat().st_size < 200 for p in tmp_path.iterdir())


def test_no_backups_means_no_rotation(tmp_path: Path) -> None:
    path = tmp_path / "requests.log"
    log = RequestLog(path, max_bytes=100, backups=0)
    log.open()
    for i in range(5):
        log.write(i=i, pad="p" * 40)
    log.close()
    assert [p.name for p in tmp_path.iterdir()] == ["requests.log"]
    assert len(path.read_text().splitlines()) == 5


def test_a_failing_write_does_not_stop_the_log(tmp_path: Path) -> None:
    path = tmp_path / "requests.log"
    log = RequestLog(path)
    log.open()
    assert log.flush()
    assert log._file is not None
    log._file.close()
    log._file = None  # as after a rotation that failed half-way
    path.unlink()
    path.mkdir()  # opening the log now fails with an OSError (IsADirectoryError)
    log.write(i=1)  # a warning from the writer thread, never an exception in the request
    assert log.flush()
    path.rmdir()
    log.write(i=2)  # reopened once it can be
    log.close()
    assert [json.loads(line)["i"] for line in path.read_text().splitlines()] == [2]


def test_flush_waits_for_what_was_queued(tmp_path: Path) -> None:
    path = tmp_path / "requests.log"
    log = RequestLog(path)
    assert log.flush()  # not open: nothing to wait for
    log.open()
    for i in range(200):
        log.write(i=i)
    assert log.flush()
    assert len(path.read_text().splitlines()) == 200
    log.close()
    log.close()  # twice is harmless
