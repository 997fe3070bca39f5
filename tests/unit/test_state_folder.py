"""`stratus up`'s state folder is the user's alone, its admin key shown once, and a short
admin key is refused without being printed."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from pydantic import ValidationError

from workers import stack
from workers.settings import Settings


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_state_folder_and_what_it_holds_become_private(tmp_path: Path) -> None:
    state = tmp_path / "state"
    (state / "postgres").mkdir(parents=True)
    (state / "temporal.db").write_text("jobs")
    (state / "postgres" / "PG_VERSION").write_text("18")
    os.chmod(state, 0o755)
    os.chmod(state / "postgres", 0o755)
    os.chmod(state / "temporal.db", 0o644)
    previous = os.umask(0o022)
    try:
        stack.make_state_private(state)
        assert mode(state) == 0o700 and mode(state / "postgres") == 0o700
        assert mode(state / "temporal.db") == 0o600
        assert mode(state / "postgres" / "PG_VERSION") == 0o600
        created_later = state / "temporal.db-wal"
        created_later.write_text("")  # what a server makes afterwards: private by the umask
        assert mode(created_later) == 0o600
    finally:
        os.umask(previous)


def test_the_admin_key_is_printed_on_the_first_start_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = Settings(state_dir=tmp_path)
    key = stack.admin_api_key(settings)
    assert mode(tmp_path / "admin-api-key") == 0o600 and len(key) >= 32
    stack.announce(settings, key, None, first_start=True)
    first = capsys.readouterr().out
    stack.announce(settings, key, None, first_start=False)
    later = capsys.readouterr().out
    assert key in first
    assert key not in later and "admin-api-key" in later


def test_an_admin_key_from_the_environment_is_never_printed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = "k" * 40
    settings = Settings(state_dir=tmp_path, admin_api_key=key)
    stack.announce(settings, key, None, first_start=False)
    assert key not in capsys.readouterr().out


def test_an_admin_key_shorter_than_32_characters_is_refused_without_being_shown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STRATUS_ADMIN_API_KEY", "short-secret-1234")
    with pytest.raises(ValidationError) as refused:
        Settings()
    assert "admin_api_key" in str(refused.value)
    assert "short-secret-1234" not in str(refused.value)
