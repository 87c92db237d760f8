"""Who is calling the Fleet API: SuperNode authentication (``--enable-supernode-auth``).

With auth on, every Fleet request must be signed by a key on the allow-list (managed through
the Exec API: `flwr supernode register`); the node id is the one bound to that key at
registration, and a request naming another node id is PERMISSION_DENIED. Unknown keys, bad
signatures, stale timestamps and replayed nonces are UNAUTHENTICATED. Unregistering a key
takes effect on its next request (the allow-list is read on every call; keys are cached by
fingerprint only as parsed objects).

With auth off, a caller is whichever node id it names: anyone who reaches the Fleet API can act
as any node. `docs/security.md` says what that gives up.
"""

from __future__ import annotations

import collections
import math
import threading
import time
from collections.abc import Callable

from corolla.common import nodekeys
from corolla.common.errors import InvalidArgument, NotFound, PermissionDenied, Unauthenticated
from corolla.common.guard import Caller, CallInfo, Credential
from corolla.common.transfer import NODE_ID_KEY, RUN_ID_KEY
from corolla.superlink.state import LinkState

DEFAULT_WINDOW = 60.0  # seconds a signed request's timestamp may be off, either way
MAX_NONCES = 1_000_000  # replay cache bound; beyond it the window shrinks (oldest forgotten)
_CREATE_NODE = "/corolla.proto.v1.Fleet/CreateNode"


def _claimed_node_id(call: CallInfo) -> int:
    request = call.request
    if request is not None and "node_id" in request.DESCRIPTOR.fields_by_name:
        return int(getattr(request, "node_id", 0))
    raw = call.metadata.get(NODE_ID_KEY, "0")
    try:
        return int(raw)
    except ValueError as exc:
        raise InvalidArgument(f"malformed {NODE_ID_KEY} metadata: {raw!r}") from exc


class _Nonces:
    """Nonces seen within the window, forgotten oldest first."""

    def __init__(self, window: float) -> None:
        self._window = window
        self._seen: dict[tuple[str, str], float] = {}
        self._order: collections.deque[tuple[float, tuple[str, str]]] = collections.deque()
        self._lock = threading.Lock()

    def first_use(self, fingerprint: str, nonce: str, now: float) -> bool:
        key = (fingerprint, nonce)
        with self._lock:
            while self._order and (
                self._order[0][0] < now - 2 * self._window or len(self._order) > MAX_NONCES
            ):
                _, old = self._order.popleft()
                self._seen.pop(old, None)
            if key in self._seen:
                return False
            self._seen[key] = now
            self._order.append((now, key))
            return True


class FleetAuth:
    """The Fleet API's authenticator (see `corolla.common.guard`)."""

    def __init__(
        self,
        state: LinkState,
        *,
        enabled: bool,
        window: float = DEFAULT_WINDOW,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._state = state
        self.enabled = enabled
        self._window = window
        self._clock = clock
        self._nonces = _Nonces(window)
        self._keys: dict[bytes, nodekeys.PublicKey] = {}

    @property
    def blocking(self) -> bool:
        """Whether a check may block (it reads the allow-list from the state): with auth off
        it reads nothing, and a coroutine's check runs on its event loop (`common/guard.py`)."""
        return self.enabled

    def __call__(self, credential: Credential, call: CallInfo) -> Caller:
        if credential is not Credential.NODE:
            raise PermissionDenied(f"{call.method} is not a Fleet call")
        claimed = _claimed_node_id(call)
        if not self.enabled:
            return Caller(Credential.NODE, node_id=claimed)
        node_id = self._verify(call)
        if call.method != _CREATE_NODE and claimed != node_id:
            raise PermissionDenied(f"the key of node {node_id} cannot act as node {claimed}")
        return Caller(Credential.NODE, node_id=node_id, verified=True)

    def _verify(self, call: CallInfo) -> int:
        metadata = call.metadata
        fingerprint = metadata.get(nodekeys.FINGERPRINT_KEY, "")
        if not fingerprint:
            raise Unauthenticated(
                "this SuperLink requires SuperNode authentication: "
                "start the SuperNode with --auth-supernode-private-key"
            )
        timestamp = metadata.get(nodekeys.TIMESTAMP_KEY, "")
        nonce = metadata.get(nodekeys.NONCE_KEY, "")
        signature = nodekeys.unb64(metadata.get(nodekeys.SIGNATURE_KEY, ""))
        try:
            sent_at = float(timestamp)
        except ValueError:
            sent_at = math.nan
        now = self._clock()
        if not abs(now - sent_at) <= self._window:
            raise Unauthenticated(
                f"request timestamp is off by more than {self._window:g} s (check the clocks)"
            )
        try:
            node_id, der = self._state.node_key(fingerprint)
        except NotFound as exc:
            raise Unauthenticated(
                f"unknown SuperNode key {fingerprint} (register it: flwr supernode register)"
            ) from exc
        key = self._keys.get(der)
        if key is None:
            key = self._keys[der] = nodekeys.load_public_key_der(der)
        payload = nodekeys.signed_payload(
            call.method,
            timestamp,
            nonce,
            call.raw,
            metadata.get(NODE_ID_KEY, ""),
            metadata.get(RUN_ID_KEY, ""),
        )
        if not nodekeys.verify(key, signature, payload):
            raise Unauthenticated("bad request signature")
        if not nonce or not self._nonces.first_use(fingerprint, nonce, now):
            raise Unauthenticated("replayed request (nonce seen before)")
        return node_id
