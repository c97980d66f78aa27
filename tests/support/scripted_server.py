"""A loopback HTTP/1.1 server that answers with scripted bytes, for client edge cases."""

from __future__ import annotations

import socket
import threading
from collections import deque


class ScriptedServer:
    """Reads each request (head and Content-Length body) and answers with the next script:
    (bytes to send, whether to close the connection afterwards)."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.scripts: deque[tuple[bytes, bool]] = deque()
        self.requests: list[bytes] = []
        self.connections = 0
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def answer(self, data: bytes, *, close: bool = False) -> None:
        self.scripts.append((data, close))

    def close_idle_connections(self) -> None:
        for conn in self._open:
            try:
                conn.shutdown(socket.SHUT_RDWR)  # close() alone waits for the serving thread's reader
            except OSError:
                pass

    def close(self) -> None:
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
        reader = conn.makefile("rb")
        try:
            while True:
                head = b""
                while not head.endswith(b"\r\n\r\n"):
                    line = reader.readline()
                    if not line:
                        return
                    head += line
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                self.requests.append(head + reader.read(length))
                data, close = self.scripts.popleft()
                conn.sendall(data)
                if close:
                    conn.shutdown(socket.SHUT_RDWR)
                    return
        except OSError:
            return
        finally:
            conn.close()
