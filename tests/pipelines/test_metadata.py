"""Metadata download against a local mirror of the official layout: resume, checksums."""
import hashlib
import http.server
import os
import threading

import pytest
import requests

from pipelines import metadata, plan
from pipelines.demo import catalog


class _Mirror(http.server.ThreadingHTTPServer):
    """Serves a folder with Range support; can cut the first response after N bytes."""

    def __init__(self, root):
        self.root, self.cut_after, self.requests = root, None, []
        super().__init__(("127.0.0.1", 0), _RangeHandler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def base_url(self):
        return f"http://127.0.0.1:{self.server_address[1]}"


class _RangeHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        srv = self.server
        srv.requests.append((self.path, self.headers.get("Range")))
        path = os.path.join(srv.root, self.path.lstrip("/"))
        if not os.path.isfile(path):
            self.send_error(404)
            return
        data = open(path, "rb").read()
        start = 0
        if self.headers.get("Range"):
            start = int(self.headers["Range"].split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if srv.cut_after is not None:
            self.wfile.write(body[:srv.cut_after])
            srv.cut_after = None
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture
def mirror(tmp_path):
    root = tmp_path / "mirror"
    files = catalog.write_catalog(str(tmp_path / "cat"), ["Hamburger"], 1500, seed=1)
    for spec, src in ((metadata.FILES["v7"]["boxes"]["validation"], files.bbox_csv),
                      (metadata.FILES["v7"]["images"]["validation"], files.images_csv)):
        os.makedirs(root / os.path.dirname(spec.path), exist_ok=True)
        (root / spec.path).write_bytes(open(src, "rb").read())
    srv = _Mirror(str(root))
    yield srv, root
    srv.shutdown()
    srv.server_close()


def _spec_for(root, path):
    data = (root / path).read_bytes()
    return metadata.RemoteFile(path, len(data), md5=hashlib.md5(data).hexdigest())


def test_download_checks_and_caches(mirror, tmp_path):
    srv, root = mirror
    spec = _spec_for(root, metadata.FILES["v7"]["boxes"]["validation"].path)
    path = metadata.download(spec, srv.base_url, str(tmp_path / "cache"), quiet=True)
    assert open(path, "rb").read() == (root / spec.path).read_bytes()
    assert metadata.download(spec, srv.base_url, str(tmp_path / "cache")) == path
    assert len(srv.requests) == 1  # the second call used the cache


def test_resume_after_a_cut_connection(mirror, tmp_path):
    srv, root = mirror
    spec = _spec_for(root, metadata.FILES["v7"]["images"]["validation"].path)
    assert spec.size > 300_000
    srv.cut_after = 200_000
    with pytest.raises(requests.RequestException):
        metadata.download(spec, srv.base_url, str(tmp_path / "cache"), quiet=True)
    part = tmp_path / "cache" / (spec.path + ".part")
    have = part.stat().st_size
    assert 0 < have <= 200_000
    assert not (tmp_path / "cache" / spec.path).exists()
    path = metadata.download(spec, srv.base_url, str(tmp_path / "cache"), quiet=True)
    assert srv.requests[-1][1] == f"bytes={have}-"
    assert open(path, "rb").read() == (root / spec.path).read_bytes()
    assert not part.exists()


def test_checksum_mismatch_is_rejected_and_nothing_kept(mirror, tmp_path):
    srv, root = mirror
    real = metadata.FILES["v7"]["boxes"]["validation"]  # the official md5, not our file's
    with pytest.raises(metadata.ChecksumError, match="the official file has"):
        metadata.download(real, srv.base_url, str(tmp_path / "cache"), quiet=True)
    assert not any(p.is_file() for p in (tmp_path / "cache").rglob("*"))


def test_plan_with_version_and_split_downloads_through_the_cache(mirror, tmp_path, monkeypatch):
    srv, root = mirror
    for kind in ("boxes", "images"):  # the mirror's files are not Google's: expect their own
        spec = metadata.FILES["v7"][kind]["validation"]
        monkeypatch.setitem(metadata.FILES["v7"][kind], "validation", _spec_for(root, spec.path))
    summary = plan.run(["--classes", "Hamburger", "--version", "v7", "--split", "validation",
                        "--metadata_base_url", srv.base_url, "--metadata_cache",
                        str(tmp_path / "cache"), "--output_dir", str(tmp_path / "plan")])
    assert summary["totals"]["images"] == 1500
    assert len(srv.requests) == 2


def test_official_table_of_files_is_complete():
    for version, files in metadata.FILES.items():
        for split in metadata.SPLITS:
            boxes, images = metadata.tables_for(version, split)
            assert boxes[0].path.endswith(".csv") and images[0].path.endswith(".csv")
    with pytest.raises(ValueError, match="--split"):
        metadata.tables_for("v7", "nope")
