"""Who may do what on the Exec API: the user behind a call, their roles, run ownership, and an
audit trail of every decision.

With user login (``--user-auth-config``) every Exec call but `GetLoginDetails` carries an OIDC
access token (``authorization: Bearer ...``), validated by `TokenValidator`; the token's claims
name the user and their roles. `ROLES` says which roles each method needs; on top of it a
``user`` sees and stops only the runs they submitted, ``read-only`` reads every run but changes
nothing, and ``admin`` may do everything. Without user login the transport decides (mutual TLS:
the client certificate's common name is the user) and every caller may do everything, as
before.

Every authenticated call (allowed, refused, or failed) becomes one `AuditEvent`: a row in the
state's audit table and one JSON line on the ``corolla.audit`` logger. Tokens never appear in
either.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

from corolla.common import errors
from corolla.common.guard import Call, Caller, CallInfo, Credential
from corolla.superlink.oidc import Identity
from corolla.superlink.state import AuditEvent, LinkState, RunRecord
from corolla.superlink.userauth import Role

log = logging.getLogger(__name__)
audit_log = logging.getLogger("corolla.audit")

EVERYONE = frozenset(Role)
WRITERS = frozenset({Role.ADMIN, Role.USER})
ADMINS = frozenset({Role.ADMIN})

# Exec method -> the roles that may call it (None: anyone, no credential needed). A test checks
# this table against the Exec service's methods, like the policy tables.
ROLES: dict[str, frozenset[Role] | None] = {
    "StartRun": WRITERS,
    "StopRun": WRITERS,
    "ListRuns": EVERYONE,
    "StreamLogs": EVERYONE,
    "RegisterNode": ADMINS,
    "UnregisterNode": ADMINS,
    "ListNodes": EVERYONE,
    "GetLoginDetails": None,
    "ListAuditEvents": ADMINS,
}
LOGIN_HINT = "run `flwr login`"


def bearer_token(metadata: Mapping[str, str]) -> str:
    """The token of an ``authorization: Bearer <token>`` header, or ``""``."""
    scheme, _, token = metadata.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def certificate_user(call: CallInfo) -> str:
    """The common name of the client certificate (mutual TLS), ``""`` without one."""
    names = list(call.context.auth_context().get("x509_common_name", ()))
    first = names[0] if names else b""
    return first.decode("utf-8", "replace") if isinstance(first, bytes) else ""


class Validator(Protocol):
    """Turns an access token into an `Identity` (`corolla.superlink.oidc.TokenValidator`)."""

    def validate(self, token: str) -> Identity: ...


@dataclass
class Outcome:
    """What an audited call did; the servicer fills in the run once it knows it."""

    run_id: int = 0


class ExecAccess:
    """The Exec API's authenticator (for `add_service`), its ownership rules and its audit."""

    def __init__(
        self,
        state: LinkState,
        validator: Validator | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._state = state
        self.validator = validator
        self._clock = clock

    @property
    def login(self) -> bool:
        return self.validator is not None

    # -- authentication and roles (before the servicer runs) ---------------------------------
    def authenticate(self, credential: Credential, call: CallInfo) -> Caller:
        action = call.method.rpartition("/")[2]
        if credential is Credential.PUBLIC:
            return Caller(Credential.PUBLIC)
        if self.validator is None:
            return Caller(Credential.USER, user=certificate_user(call), roles=ADMINS)
        peer = call.context.peer()
        token = bearer_token(call.metadata)
        if not token:
            error: errors.CorollaError = errors.Unauthenticated(
                f"not authenticated: this SuperLink requires login; {LOGIN_HINT}"
            )
            self._record("", action, 0, error, peer)
            raise error
        try:
            identity = self.validator.validate(token)
        except errors.Unauthenticated as exc:
            refused = errors.Unauthenticated(f"not authenticated: {exc}; {LOGIN_HINT} again")
            self._record("", action, 0, refused, peer)
            raise refused from None
        except errors.CorollaError as exc:  # the provider cannot be reached, ...
            self._record("", action, 0, exc, peer)
            raise
        caller = Caller(Credential.USER, user=identity.user, roles=frozenset(identity.roles))
        needed = ROLES[action] or EVERYONE
        if not identity.roles:
            denied = errors.PermissionDenied(
                f"permission denied: user {identity.user!r} has no role on this SuperLink "
                "(an administrator maps the provider's groups to roles)"
            )
        elif not identity.roles & needed:
            denied = errors.PermissionDenied(
                f"permission denied: {action} needs the role {_names(needed)}; user "
                f"{identity.user!r} has {_names(identity.roles)}"
            )
        else:
            return caller
        self._record(identity.user, action, _run_id(call), denied, peer)
        raise denied

    # -- ownership (inside the servicer) -----------------------------------------------------
    def sees_all_runs(self, caller: Caller) -> bool:
        return not self.login or bool(caller.roles & {Role.ADMIN, Role.READ_ONLY})

    def visible(self, caller: Caller, run: RunRecord) -> bool:
        return self.sees_all_runs(caller) or run.owner == caller.user

    def check_read(self, caller: Caller, run: RunRecord) -> None:
        if not self.visible(caller, run):
            raise errors.PermissionDenied(
                f"permission denied: run {run.run_id} belongs to another user "
                f"(only its owner or an admin may see it)"
            )

    def check_write(self, caller: Caller, run: RunRecord) -> None:
        if self.login and Role.ADMIN not in caller.roles and run.owner != caller.user:
            raise errors.PermissionDenied(
                f"permission denied: run {run.run_id} belongs to another user "
                f"(only its owner or an admin may stop it)"
            )

    # -- audit ---------------------------------------------------------------------------------
    @contextmanager
    def audited(self, context: Call, action: str, run_id: int = 0) -> Iterator[Outcome]:
        """Record the call's outcome when the block ends: allowed, refused (PermissionDenied,
        Unauthenticated) or failed (any other error, as its reason)."""
        outcome = Outcome(run_id)
        caller = context.caller
        try:
            yield outcome
        except errors.CorollaError as exc:
            self._record(caller.user, action, outcome.run_id, exc, context.peer())
            raise
        self._record(caller.user, action, outcome.run_id, None, context.peer())

    def _record(
        self,
        user: str,
        action: str,
        run_id: int,
        error: errors.CorollaError | None,
        peer: str,
    ) -> None:
        refused = isinstance(error, errors.PermissionDenied | errors.Unauthenticated)
        event = AuditEvent(
            at=self._clock(),
            user=user,
            action=action,
            run_id=run_id,
            allowed=not refused,
            reason="" if error is None else f"{type(error).__name__}: {error}",
            peer=peer,
        )
        fields = {
            "user": event.user,
            "action": event.action,
            "run_id": event.run_id,
            "allowed": event.allowed,
            "reason": event.reason,
            "peer": event.peer,
        }
        audit_log.info("audit %s", json.dumps(fields, sort_keys=True))
        try:
            self._state.record_audit(event)
        except errors.CorollaError as exc:  # the call's own outcome matters more than its row
            log.warning("audit event not stored: %s", exc)


def _names(roles: frozenset[Role] | frozenset[str]) -> str:
    return " or ".join(sorted(str(role) for role in roles)) or "none"


def _run_id(call: CallInfo) -> int:
    run_id = getattr(call.request, "run_id", 0)
    return run_id if isinstance(run_id, int) else 0
