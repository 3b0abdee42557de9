"""Roles of repository keys and the operations each may run.

``admin`` may do everything, key management included; ``operator`` backs up, restores,
checks, forgets and prunes; ``reader`` lists, verifies, restores and checks; ``writer``
only adds snapshots (and lists the recovery points' headers, which every key may: when
and from where, never what they hold).  Every role may change its own password (the new
key file has the same role).  The writer's limit is cryptographic (it holds no key that
opens existing data, see :mod:`chaoskit.dr.protect.repository.keyring`); operator and
reader hold the master key, so theirs is enforced by chaoskit, not by the cipher.
"""

from __future__ import annotations

from chaoskit.errors import ConfigError, PermissionDeniedError

ROLES = ("admin", "operator", "writer", "reader")
OPERATIONS = (
    "backup", "list", "snapshots", "restore", "verify", "check", "forget", "prune",
    "key add", "key list", "key remove", "key passwd",
)  # fmt: skip
ALLOWED: dict[str, frozenset[str]] = {
    "admin": frozenset(OPERATIONS),
    "operator": frozenset(
        {
            "backup",
            "list",
            "snapshots",
            "restore",
            "verify",
            "check",
            "forget",
            "prune",
            "key list",
            "key passwd",
        }  # fmt: skip
    ),
    "reader": frozenset(
        {"list", "snapshots", "restore", "verify", "check", "key list", "key passwd"}
    ),
    "writer": frozenset({"backup", "list", "key passwd"}),
}
_WHAT = {
    "admin": "everything",
    "operator": "backup, restore, verify, check, forget and prune",
    "reader": "list, verify, restore and check",
    "writer": "add snapshots only",
}


def check_role(role: str) -> str:
    if role not in ROLES:
        raise ConfigError(f"role {role!r} is not one of {', '.join(ROLES)}")
    return role


def require(role: str, key_id: str, operation: str) -> None:
    """PermissionDeniedError naming the key, its role and *operation* unless allowed."""
    if operation not in ALLOWED.get(role, frozenset()):
        raise PermissionDeniedError(
            f"key {key_id[:8]} has role {role}, which may not {operation} "
            f"(a {role} key may {_WHAT.get(role, 'nothing')})"
        )
