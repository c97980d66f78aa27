"""A loopback HTTP/1.1 server that answers with scripted bytes, for client edge cases."""

from __future__ import annotations

import socket
import ssl
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Script:
    data: bytes
    close: bool = False  # close the connection after sending
    delay: float = 0.0  # seconds to wait before sending
    drip: float = 0.0  # send one byte at a time, this many seconds apart


class ScriptedServer:
    """Reads each request (head and Content-Length body) and answers with the next script, or when
    none is queued, with `respond(request bytes)`. With `ssl_context` (a server context) it speaks TLS."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None,
                 respond: Callable[[bytes], bytes] | None = None) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.scripts: deque[Script] = deque()
        self.requests: list[bytes] = []
        self.connections = 0
        self._ssl_context = ssl_context
        self._respond = respond
        self._open: list[socket.socket] = []
        self._stopping = threading.Event()  # cuts delays and drips short at close()
        threading.Thread(target=self._accept, daemon=True).start()

    def answer(self, data: bytes, *, close: bool = False, delay: float = 0.0, drip: float = 0.0) -> None:
        self.scripts.append(Script(data, close, delay, drip))

    def close_idle_connections(self) -> None:
        for conn in self._open:
            try:
                conn.shutdown(socket.SHUT_RDWR)  # close() alone waits for the serving thread's reader
            except OSError:
                pass

    def close(self) -> None:
        self._stopping.set()
        self._listener.close()
        self.close_idle_connections()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            self._open.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            if self._ssl_context is not None:
                conn = self._ssl_context.wrap_socket(conn, server_side=True)
                self._open.append(conn)
            reader = conn.makefile("rb")
            while True:
                head = b""
                while not head.endswith(b"\r\n\r\n"):
                    line = reader.readline()
                    if not line:
                        return
                    head += line
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                request = head + reader.read(length)
                self.requests.append(request)
                script = self.scripts.popleft() if self.scripts or not self._respond else Script(self._respond(request))
                if self._stopping.wait(script.delay):
                    return
                if script.drip:
                    for i in range(len(script.data)):
                        conn.sendall(script.data[i:i + 1])
                        if self._stopping.wait(script.drip):
                            return
                else:
                    conn.sendall(script.data)
                if script.close:
                    conn.shutdown(socket.SHUT_RDWR)
                    return
        except (OSError, ValueError):
            return
        finally:
            conn.close()
