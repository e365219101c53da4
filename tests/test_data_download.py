"""`gramc data download`: a local HTTP server serves fixture files; downloads resume and verify sums."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading

import pytest

from gramc.data.dataset import DataError
from gramc.data.download import (amazon_2014_files, download_file, download_files, parse_sha256_args,
                                 read_sha256_file)

PAYLOAD = bytes(range(256)) * 400  # 100 KiB


class _Server:
    """Serves `files` with Range support; `cut[name] = n` sends only n bytes of the next full GET."""

    def __init__(self, files: dict[str, bytes], honour_range: bool = True):
        self.files, self.cut, self.honour_range = files, {}, honour_range
        self.requests: list[tuple[str, str | None]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                name = self.path.rsplit("/", 1)[-1]
                rng = self.headers.get("Range")
                outer.requests.append((name, rng))
                if name not in outer.files:
                    self.send_error(404)
                    return
                data = outer.files[name]
                start = 0
                if rng and outer.honour_range:
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if start == 0 and name in outer.cut:
                    self.wfile.write(body[: outer.cut.pop(name)])  # interrupted transfer
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/files/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def test_interrupted_download_resumes_with_range(tmp_path):
    with _Server({"f.gz": PAYLOAD}) as srv:
        srv.cut["f.gz"] = 30000
        with pytest.raises(DataError, match="run the command again to resume"):
            download_file(srv.url + "f.gz", tmp_path / "f.gz", _sha(PAYLOAD), retries=0)
        assert (tmp_path / "f.gz.part").stat().st_size == 30000
        assert not (tmp_path / "f.gz").exists()
        r = download_file(srv.url + "f.gz", tmp_path / "f.gz", _sha(PAYLOAD), retries=0)
    assert (tmp_path / "f.gz").read_bytes() == PAYLOAD
    assert r.verified and r.resumed_from == 30000 and r.sha256 == _sha(PAYLOAD)
    assert srv.requests == [("f.gz", None), ("f.gz", "bytes=30000-")]
    assert not (tmp_path / "f.gz.part").exists()


def test_retry_resumes_within_one_call(tmp_path):
    with _Server({"f.gz": PAYLOAD}) as srv:
        srv.cut["f.gz"] = 1234
        r = download_file(srv.url + "f.gz", tmp_path / "f.gz", None, retries=2)
    assert (tmp_path / "f.gz").read_bytes() == PAYLOAD and not r.verified
    assert srv.requests[-1] == ("f.gz", "bytes=1234-")


def test_server_ignoring_range_restarts_cleanly(tmp_path):
    (tmp_path / "f.gz.part").write_bytes(PAYLOAD[:5000])
    with _Server({"f.gz": PAYLOAD}, honour_range=False) as srv:
        download_file(srv.url + "f.gz", tmp_path / "f.gz", _sha(PAYLOAD))
    assert (tmp_path / "f.gz").read_bytes() == PAYLOAD


def test_checksum_mismatch_is_an_error_and_nothing_is_installed(tmp_path):
    with _Server({"f.gz": PAYLOAD}) as srv:
        with pytest.raises(DataError, match="sha256 mismatch"):
            download_file(srv.url + "f.gz", tmp_path / "f.gz", "0" * 64)
    assert not (tmp_path / "f.gz").exists() and (tmp_path / "f.gz.bad").exists()


def test_http_error_names_the_url(tmp_path):
    with _Server({}) as srv:
        with pytest.raises(DataError, match=r"missing.gz: HTTP 404"):
            download_file(srv.url + "missing.gz", tmp_path / "missing.gz")


def test_cli_downloads_amazon_files_with_sha256_file_and_manifest(tmp_path, capsys):
    from gramc.cli import main

    names = amazon_2014_files("Beauty")
    assert names == ["reviews_Beauty_5.json.gz", "meta_Beauty.json.gz"]
    files = {names[0]: PAYLOAD, names[1]: PAYLOAD[::-1][:7777]}
    sums = tmp_path / "SHA256SUMS"
    sums.write_text("".join(f"{_sha(b)}  {n}\n" for n, b in files.items()))
    out = tmp_path / "dl"
    with _Server(files) as srv:
        srv.cut[names[0]] = 10000
        rc = main(["data", "download", "amazon-2014", "--category", "Beauty", "--out", str(out),
                   "--base-url", srv.url, "--sha256-file", str(sums)])
    assert rc == 0
    for n, b in files.items():
        assert (out / n).read_bytes() == b
    manifest = json.loads((out / "manifest.json").read_text())
    assert [f["name"] for f in manifest["files"]] == names
    assert all(f["verified"] for f in manifest["files"])
    assert manifest["files"][0]["sha256"] == _sha(PAYLOAD)
    assert "verified" in capsys.readouterr().out


def test_existing_complete_file_is_not_fetched_again(tmp_path):
    (tmp_path / "f.gz").write_bytes(PAYLOAD)
    with _Server({"f.gz": PAYLOAD}) as srv:
        (r,) = download_files(srv.url, ["f.gz"], tmp_path, {"f.gz": _sha(PAYLOAD)})
    assert r.already_present and r.verified and srv.requests == []


def test_sha256_inputs_are_validated(tmp_path):
    assert parse_sha256_args([f"a.gz={'AB' * 32}"]) == {"a.gz": "ab" * 32}
    with pytest.raises(DataError, match="NAME=<64 hex digits>"):
        parse_sha256_args(["a.gz=123"])
    p = tmp_path / "sums"
    p.write_text(f"{'a' * 64} *dir/x.gz\nnonsense\n")
    with pytest.raises(DataError, match=r"sums:2: expected"):
        read_sha256_file(p)
    p.write_text(f"{'a' * 64} *dir/x.gz\n")
    assert read_sha256_file(p) == {"x.gz": "a" * 64}
