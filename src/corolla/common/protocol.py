"""Protocol constants every side of the wire agrees on, defined once."""

from __future__ import annotations

SERVER_NODE_ID = 0  # the ServerApp's node id: the source of instructions, the target of replies
MAX_LONG_POLL = 30.0  # seconds: the longest wait a server grants one long-poll call
MIN_HEARTBEAT_INTERVAL = 0.05  # seconds: the range a SuperNode's heartbeat interval must be in
MAX_HEARTBEAT_INTERVAL = 3600.0
