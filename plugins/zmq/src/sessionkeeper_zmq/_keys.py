"""CURVE key pairs on disk, in the ZPL format :func:`zmq.auth.load_certificate` reads."""

from __future__ import annotations

import os
from pathlib import Path

import zmq

from sessionkeeper import ConfigError

__all__ = ["load_keys", "write_key_pair"]

_TEMPLATE = """#   ****  sessionkeeper zmq node key: {what}  ****
#   {note}
metadata
    node = "{name}"
curve
    public-key = "{public}"
{secret_line}"""


def write_key_pair(
    directory: Path, name: str, *, overwrite: bool = False
) -> tuple[Path, Path, str]:
    """Write ``NAME.key`` (public) and ``NAME.key_secret`` (mode 0600) into ``directory``.

    Returns the two paths and the public key (Z85) to put in every node's ``nodes`` list.
    Refuses to replace existing files unless ``overwrite``.
    """
    directory.mkdir(parents=True, exist_ok=True)
    public_path = directory / f"{name}.key"
    secret_path = directory / f"{name}.key_secret"
    if not overwrite:
        for path in (public_path, secret_path):
            if path.exists():
                raise FileExistsError(f"{path} exists; pass overwrite to replace it")
    public, secret = zmq.curve_keypair()
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = os.open(secret_path, flags, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(
            _TEMPLATE.format(
                what="SECRET",
                note="keep this file private: it proves this node's identity",
                name=name,
                public=public.decode(),
                secret_line=f'    secret-key = "{secret.decode()}"\n',
            )
        )
    fd = os.open(public_path, flags, 0o644)
    with os.fdopen(fd, "w") as handle:
        handle.write(
            _TEMPLATE.format(
                what="public",
                note="share freely: its public-key goes in every node's `nodes` list",
                name=name,
                public=public.decode(),
                secret_line="",
            )
        )
    return public_path, secret_path, public.decode()


def load_keys(path: Path) -> tuple[bytes, bytes]:
    """``(public, secret)`` Z85 keys from a key file written by ``keygen``."""
    import zmq.auth

    if not path.exists():
        raise ConfigError(f"no such file: {path} (secret_key_file)", path=path)
    if not path.is_file():
        raise ConfigError(f"not a regular file: {path} (secret_key_file)", path=path)
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the CURVE secret key file: {exc}", path=path) from None
    if not secret:
        raise ConfigError(
            "no secret-key in this file (it is a public key file; use the .key_secret file)",
            path=path,
        )
    return public, secret
