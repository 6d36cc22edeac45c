"""The relay's control channel: line-JSON commands on a loopback port, each carrying the token
the relay wrote into its ready file (created 0600), so that other users of the machine cannot
steer it.

Both halves live here: ``ControlServer`` (in the relay process: framing, deadline, token check;
the commands themselves are ``Relay.command``) and what other processes use to talk to a relay
(``read_ready_file``, ``control_request``). Standard library only: the relay imports it at start.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

# The relay's API key comes in this environment variable, never in argv.
API_KEY_ENV = "ZMD_RELAY_API_KEY"
# A silent control connection is not kept: its next command has a deadline.
_CONTROL_IDLE = 30.0

Command = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class ControlServer:
    """Answers control commands, one JSON object per line, each carrying the token."""

    def __init__(self, token: str, command: Command) -> None:
        """Creates the server's connection handler.

        Args:
            token: the control token ("" refuses every command).
            command: runs one authenticated command and returns its reply.
        """
        self.token = token.encode()
        self.command = command

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Answers control commands, one JSON object per line, each carrying the token.

        A command without the right token is refused, logged, and ends the connection.

        Args:
            reader: control reader.
            writer: control writer.
        """
        try:
            while True:
                async with asyncio.timeout(_CONTROL_IDLE):
                    line = await reader.readline()
                if not line:
                    break
                try:
                    msg = json.loads(line)
                    if not isinstance(msg, dict):
                        raise TypeError("a command is a JSON object")
                    if not self._authentic(msg.get("token")):
                        peer = writer.get_extra_info("peername")
                        print(
                            f"relay: refused an unauthenticated control command "
                            f"{str(msg.get('cmd'))[:20]!r} from {peer}",
                            flush=True,
                        )
                        writer.write(b'{"ok": false, "error": "unauthenticated"}\n')
                        await writer.drain()
                        return
                    reply = await self.command(msg)
                except (ValueError, KeyError, TypeError) as e:
                    reply = {"ok": False, "error": str(e)}
                writer.write((json.dumps(reply) + "\n").encode())
                await writer.drain()
        except (ConnectionError, OSError, ValueError, TimeoutError):
            pass
        finally:
            writer.close()

    def _authentic(self, token: Any) -> bool:
        given = token.encode() if isinstance(token, str) else b""
        return bool(self.token) and hmac.compare_digest(given, self.token)


def write_ready_file(path: Path, data: dict[str, Any]) -> None:
    """Writes the relay's ready file atomically, readable by its owner only (it holds the
    control token).

    Args:
        path: the ready file.
        data: ports, pid and token.
    """
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(json.dumps(data))
    os.replace(tmp, path)


def read_ready_file(path: Path) -> dict[str, Any]:
    """What a running relay wrote at start: ports, pid and the control token.

    Args:
        path: the ready file.

    Returns:
        The JSON object.
    """
    info: dict[str, Any] = json.loads(path.read_text())
    return info


def control_request(
    port: int, token: str, msg: dict[str, Any], timeout: float = 30
) -> dict[str, Any]:
    """Sends one control command to a relay and returns its reply.

    Args:
        port: the relay's control port (loopback).
        token: the control token from its ready file.
        msg: the command, e.g. ``{"cmd": "status"}``.
        timeout: seconds.

    Returns:
        The reply (``{"ok": false, ...}`` when refused; empty when the relay closed).
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall((json.dumps({**msg, "token": token}) + "\n").encode())
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    reply: dict[str, Any] = json.loads(buf or b"{}")
    return reply
