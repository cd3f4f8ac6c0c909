"""The de-identification key: where it comes from, and what is derived from it (date offset, pseudonym, UIDs).

Everything keyed is an HMAC-SHA256 of the key and the original value, so the
same patient de-identified twice (or two cases of one patient in a batch) gets
the same pseudonym, date offset and UIDs, and nobody without the key can link
them back. Only a fingerprint of the key ever appears in a report.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from deface_ts.errors import ConfigError
from deface_ts.io.dicom.uids import UidMap

ENVIRONMENT = "DEFACE_TS_DEID_KEY"
MIN_KEY_LENGTH = 16  # characters of a key given as text: shorter secrets can be guessed


def default_key_file() -> Path:
    """The user's own key file, created on first use: $XDG_CONFIG_HOME/deface-ts/deid.key."""
    config_home = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return config_home / "deface-ts" / "deid.key"


@dataclass(frozen=True)
class DeidKey:
    secret: bytes
    source: str  # "file <path>", "environment", "created <path>"

    @property
    def fingerprint(self) -> str:
        """Identifies the key in reports without revealing it."""
        return hashlib.sha256(b"deface-ts deid key fingerprint\0" + self.secret).hexdigest()[:16]

    def digest(self, purpose: str, value: str) -> bytes:
        return hmac.new(self.secret, purpose.encode() + b"\0" + value.encode(), hashlib.sha256).digest()

    def date_offset_days(self, patient_id: str) -> int:
        """A whole number of weeks (weekdays survive) between 1 and 10 years back; never 0."""
        weeks = int.from_bytes(self.digest("date-offset", patient_id)[:8], "big") % 470
        return -7 * (52 + weeks)

    def pseudonym(self, patient_id: str) -> str:
        return "ANON-" + self.digest("patient", patient_id).hex()[:12].upper()

    def uid_map(self) -> UidMap:
        return UidMap(key=self.digest("uid-key", "v1"))


def load_key(path: Path | str | None = None) -> DeidKey:
    """The key from ``path``, else $DEFACE_TS_DEID_KEY, else the user's key file (created, mode 600)."""
    if path is not None:
        return DeidKey(_read_key_file(Path(path)), f"file {path}")
    text = os.environ.get(ENVIRONMENT)
    if text is not None:
        return DeidKey(_check_text(text.strip(), ENVIRONMENT), "environment")
    default = default_key_file()
    if default.exists():
        return DeidKey(_read_key_file(default), f"file {default}")
    default.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # O_EXCL: two processes starting at once must not each write a different key.
    try:
        fd = os.open(default, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return DeidKey(_read_key_file(default), f"file {default}")
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_hex(32) + "\n")
    return DeidKey(_read_key_file(default), f"created {default}")


def _read_key_file(path: Path) -> bytes:
    try:
        mode = path.stat().st_mode
        text = path.read_text().strip()
    except FileNotFoundError:
        raise ConfigError(f"{path}: de-identification key file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the de-identification key ({exc})") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"{path}: key file is readable by other users (mode {stat.S_IMODE(mode):o}); "
                          f"run: chmod 600 {path}")
    return _check_text(text, str(path))


def _check_text(text: str, where: str) -> bytes:
    if len(text) < MIN_KEY_LENGTH:
        raise ConfigError(f"{where}: de-identification key is shorter than {MIN_KEY_LENGTH} characters")
    return text.encode()
