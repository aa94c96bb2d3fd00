"""A member's data (my_data) as a JSON file: its default name, written for its owner alone, never over another file."""

from __future__ import annotations

import json
import os
from datetime import date
from pathlib import Path
from typing import Any

from client_link import UsageError


def default_name(username: str, day: date | None = None) -> str:
    """waymark-data-<username>-<date>.json (a username is letters, digits, '_', '.' and '-')."""
    return f"waymark-data-{username}-{(day or date.today()).isoformat()}.json"


def counts(data: dict[str, Any]) -> dict[str, int]:
    """How many loans, holds, orders and notices my_data's answer holds."""
    return {name: len(data.get(name) or []) for name in ("loans", "holds", "orders", "notices")}


def check_writable(path: Path) -> Path:
    """path, absolute, when a new file may be made there; UsageError saying why not."""
    path = path.expanduser().absolute()
    if path.exists() or path.is_symlink():
        raise UsageError(f"{path} already exists, and it is not replaced; choose another name.")
    if not path.parent.is_dir():
        raise UsageError(f"There is no folder {path.parent} to save {path.name} in.")
    return path


def write_data(path: Path, data: Any) -> Path:
    """Write data as indented JSON to a new file at path (mode 0600: it is personal data);
    UsageError when the file exists or cannot be written. The absolute path written."""
    path = check_writable(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        descriptor = os.open(path, flags, 0o600)
    except FileExistsError:  # made meanwhile by someone else: still never replaced
        raise UsageError(
            f"{path} already exists, and it is not replaced; choose another name."
        ) from None
    except OSError as error:
        raise UsageError(f"Cannot write {path}: {error.strerror or error}.") from None
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            json.dump(data, file, ensure_ascii=False, indent=2)
            file.write("\n")
    except OSError as error:  # a full disk: no half-written file is left behind
        path.unlink(missing_ok=True)
        raise UsageError(f"Cannot write {path}: {error.strerror or error}.") from None
    return path
