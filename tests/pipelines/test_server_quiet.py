"""The demo's image server keeps quiet about clients that hang up, as the internet's do."""
import io
import socket
import socketserver
import struct
import time

import pytest
import requests
from PIL import Image

from pipelines.demo import server

IMAGE_ID = "0123456789abcdef"


def _hang_up_mid_answer(srv: server.ImageServer) -> None:
    """A request, then a reset (SO_LINGER 0) before the answer (latency_s) is written."""
    s = socket.create_connection(("127.0.0.1", srv.server_address[1]))
    s.sendall(f"GET /original/{IMAGE_ID}.jpg HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


@pytest.mark.parametrize("quiet", [True, False])
def test_clients_that_hang_up_leave_no_traceback(tmp_path, capsys, monkeypatch, quiet):
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 40, 40)).save(buf, "JPEG")
    (tmp_path / f"{IMAGE_ID}.jpg").write_bytes(buf.getvalue())
    if not quiet:  # the same server with socketserver's own handler: the traceback it printed
        monkeypatch.setattr(server.ImageServer, "handle_error",
                            socketserver.BaseServer.handle_error)
    with server.ImageServer(str(tmp_path), latency_s=0.3) as srv:
        for _ in range(3):
            _hang_up_mid_answer(srv)
        time.sleep(1.0)  # the handlers wake and write into reset connections
        srv.latency_s = 0.0
        assert requests.get(f"{srv.base_url}/original/{IMAGE_ID}.jpg", timeout=5).status_code == 200
    err = capsys.readouterr().err
    if quiet:
        assert err == ""
    else:
        assert "ConnectionResetError" in err or "BrokenPipeError" in err
