"""The schema's migrations: numbered ``NNNN_name.sql`` files, one folder per backend."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def label(self) -> str:
        """``0007_attempts_by_app``: how ``Store.migrate`` names it."""
        return f"{self.version:04d}_{self.name}"


def load_migrations(dialect: str) -> list[Migration]:
    """The numbered ``NNNN_name.sql`` files of a backend, in order."""
    found = []
    for entry in (resources.files(__name__) / dialect).iterdir():
        if entry.name.endswith(".sql"):
            number, _, rest = entry.name.partition("_")
            found.append(Migration(int(number), rest.removesuffix(".sql"), entry.read_text()))
    return sorted(found, key=lambda migration: migration.version)
