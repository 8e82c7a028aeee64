"""Secrets at rest (``ccpush.secret_box``): sealing, the key's origin, the sealing of plain
secrets at start and the rotation of the key, on both backends."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ccpush.endpoint import BearerAuth, Endpoint
from ccpush.secret_box import (
    SealedTextError,
    SecretBox,
    SecretKeyError,
    new_key,
    parse_keys,
)
from ccpush.service import resolve_secret_box
from ccpush.settings import Settings
from ccpush.store import Store, open_store

NOW = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


def test_seal_and_open() -> None:
    box = SecretBox([new_key()])
    sealed = box.seal("whsec_abc")
    assert sealed != box.seal("whsec_abc")  # a fresh IV every time
    assert "whsec_abc" not in sealed
    assert box.is_sealed(sealed)
    assert not box.is_sealed("whsec_abc")
    assert box.open(sealed) == "whsec_abc"
    with pytest.raises(SealedTextError, match="cannot be opened"):
        SecretBox([new_key()]).open(sealed)
    altered = sealed[:-6] + ("A" if sealed[-6] != "A" else "B") + sealed[-5:]
    with pytest.raises(SealedTextError):
        box.open(altered)


def test_the_first_key_seals_every_key_opens_and_reseal_moves_to_the_first() -> None:
    old, new = new_key(), new_key()
    sealed_old = SecretBox([old]).seal("s1")
    both = SecretBox([new, old])
    assert both.open(sealed_old) == "s1"
    resealed = both.reseal(sealed_old)
    assert SecretBox([new]).open(resealed) == "s1"
    with pytest.raises(SealedTextError):
        SecretBox([old]).open(resealed)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "no key given"),
        (" , ", "no key given"),
        ("changeme", "key 1 is a placeholder"),
        ("c2hvcnQ=", "key 1 is not a key"),
        ("not base64 at all!", "key 1 is not a key"),
        (f"{'A' * 43}=,secret", "key 2 is a placeholder"),
    ],
)
def test_keys_that_are_refused(text: str, says: str) -> None:
    with pytest.raises(SecretKeyError, match=says):
        parse_keys(text)


def test_a_setting_with_a_bad_key_stops_the_start_without_showing_it(tmp_path: Path) -> None:
    env = {**os.environ, "CCPUSH_DATA_DIR": str(tmp_path), "CCPUSH_SECRET_KEY": "c2hvcnQ="}
    run = subprocess.run(
        [sys.executable, "-m", "ccpush", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 2
    assert "invalid setting CCPUSH_SECRET_KEY: key 1 is not a key" in run.stderr
    assert "c2hvcnQ=" not in run.stderr + run.stdout
    keys = f"{new_key()}, {new_key()}"
    assert len(resolve_secret_box(Settings(data_dir=tmp_path, secret_key=keys)).keys) == 2


def test_without_a_setting_a_key_is_made_once_into_the_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CCPUSH_SECRET_KEY", raising=False)
    settings = Settings(data_dir=tmp_path / "data")
    box = resolve_secret_box(settings)
    kept = tmp_path / "data" / "secret-key"
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert resolve_secret_box(settings).keys == box.keys == (kept.read_text().strip(),)


async def opened(url: str, box: SecretBox) -> Store:
    store = open_store(url, box=box)
    await store.open()
    return store


async def test_plain_secrets_are_sealed_when_the_store_opens(db_url: str) -> None:
    box = SecretBox([new_key()])
    store = await opened(db_url, box)
    try:
        app = await store.create_app(name="old", push_url=None, now=NOW)
        current = (await store.signing_keys(app.id)).current
        assert current is not None
        # As an older ccpush kept it: in plain text.
        await raw_execute(
            store, "UPDATE apps SET signing_secret = {p} WHERE id = {q}", current, app.id
        )
        assert current in await raw_secrets(store)
    finally:
        await store.close()
    store = await opened(db_url, box)
    try:
        kept = await raw_secrets(store)
        assert current not in kept
        assert all(SecretBox.is_sealed(text) for text in kept)
        assert (await store.signing_keys(app.id)).current == current
        assert await store.seal_secrets() == 0  # idempotent: nothing left in plain text
    finally:
        await store.close()


async def test_a_new_key_first_rotate_then_drop_the_old_one(db_url: str, tmp_path: Path) -> None:
    old, new = new_key(), new_key()
    store = await opened(db_url, SecretBox([old]))
    try:
        app = await store.create_app(name="r", push_url=None, now=NOW)
        await store.rotate_signing_secret(
            app.id, secret="whsec_" + "A" * 43, now=NOW, overlap=timedelta(hours=1)
        )
        endpoint = Endpoint(headers=(("X-Key", "v1"),), auth=BearerAuth("t1"))
        await store.update_app(app.id, now=NOW, endpoint=endpoint)
        keys = await store.signing_keys(app.id)
    finally:
        await store.close()
    store = await opened(db_url, SecretBox([new, old]))  # old-key data still opens
    try:
        assert await store.signing_keys(app.id) == keys
        assert store.endpoint_of(await store.get_app(app.id)) == endpoint
    finally:
        await store.close()
    run = rotate_command(db_url, tmp_path, f"{new},{old}")
    assert run.stdout.strip() == "re-sealed the secrets of 1 apps with the first key"
    store = await opened(db_url, SecretBox([new]))  # the old key dropped
    try:
        assert await store.signing_keys(app.id) == keys
        assert store.endpoint_of(await store.get_app(app.id)) == endpoint
    finally:
        await store.close()
    store = await opened(db_url, SecretBox([old]))
    try:
        with pytest.raises(SealedTextError):
            await store.signing_keys(app.id)
    finally:
        await store.close()


def rotate_command(db_url: str, tmp_path: Path, keys: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "CCPUSH_DATABASE_URL": db_url,
        "CCPUSH_DATA_DIR": str(tmp_path),
        "CCPUSH_SECRET_KEY": keys,
    }
    run = subprocess.run(
        [sys.executable, "-m", "ccpush", "rotate-secret-key"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert keys.split(",")[0] not in run.stdout + run.stderr
    return run


def test_a_new_key_is_printed_on_request() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "ccpush", "rotate-secret-key", "--new-key"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert parse_keys(run.stdout.strip()) == (run.stdout.strip(),)


# Reading the raw tables: what a dump of the database would show.


async def raw_secrets(store: Store) -> list[str]:
    rows = await raw_fetch(store, "SELECT signing_secret, previous_secret, endpoint FROM apps")
    return [str(value) for row in rows for value in row if value is not None]


async def raw_fetch(store: Store, query: str) -> list[tuple[object, ...]]:
    from ccpush.store.postgres import PostgresStore
    from ccpush.store.sqlite import SqliteStore

    if isinstance(store, SqliteStore):
        return [tuple(row) for row in await store._read(query)]
    assert isinstance(store, PostgresStore)
    return [tuple(row) for row in await store.pool.fetch(query)]


async def raw_execute(store: Store, template: str, *params: object) -> None:
    from ccpush.store.postgres import PostgresStore
    from ccpush.store.sqlite import SqliteStore

    if isinstance(store, SqliteStore):
        query = template.format(p="?", q="?")
        await store._run(lambda: store._db.execute(query, params))
        return
    assert isinstance(store, PostgresStore)
    await store.pool.execute(template.format(p="$1", q="$2"), *params)


def test_a_start_keeps_a_generated_key_only_once_the_store_opened(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCPUSH_")}
    env["CCPUSH_DATA_DIR"] = str(data_dir)

    def migrate(**more: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "ccpush", "migrate"],
            env={**env, **more},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    down = migrate(CCPUSH_DATABASE_URL="postgresql://127.0.0.1:9/ccpush")
    assert down.returncode == 1
    assert "cannot connect to PostgreSQL" in down.stderr
    assert not data_dir.exists()
    assert migrate().returncode == 0
    kept = data_dir / "secret-key"
    key = kept.read_text().strip()
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert parse_keys(key) == (key,)
    assert migrate().returncode == 0
    assert kept.read_text().strip() == key
