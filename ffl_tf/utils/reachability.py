"""Whether a host can be reached, answered within seconds even on a machine without network."""

import socket
import threading

PROBE_TIMEOUT_SECONDS = 3.0


def reachable(host: str, port: int = 443, timeout: float = PROBE_TIMEOUT_SECONDS) -> bool:
    """Whether a TCP connection to host:port opens within `timeout` seconds, DNS included.

    The connect runs in a daemon thread because name resolution ignores socket timeouts and can block far
    longer on a machine without network.
    """
    opened = threading.Event()

    def connect():
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            opened.set()
        except OSError:
            pass

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout)
    return opened.is_set()
