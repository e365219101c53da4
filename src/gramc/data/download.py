"""`gramc data download`: fetch public dataset dumps, resumably and checksum-verified.

Each file is downloaded onto `<name>.part` and renamed when complete; an interrupted download
resumes with an HTTP Range request from the bytes already on disk (a server that ignores Range
restarts it from zero). sha256 sums come from `--sha256 NAME=HEX`, a sha256sum-style file
(`HEX  NAME` per line), or are only recorded when none is given; `manifest.json` lists every
file with its URL, size and sum, and whether the sum was verified.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

from ..io import sha256_file, write_json
from .dataset import DataError

AMAZON_2014_BASE_URL = "http://snap.stanford.edu/data/amazon/productGraph/categoryFiles/"


def amazon_2014_files(category: str) -> list[str]:
    """The 5-core reviews and the metadata dump of one category of the 2014 release."""
    return [f"reviews_{category}_5.json.gz", f"meta_{category}.json.gz"]


@dataclass
class Downloaded:
    name: str
    url: str
    bytes: int
    sha256: str
    verified: bool  # the sum matched an expected one (False: none was given)
    resumed_from: int  # bytes already present in the .part file
    already_present: bool = False  # the complete file was already there (nothing fetched)


def read_sha256_file(path: str | Path) -> dict[str, str]:
    """`HEX  NAME` (sha256sum output; `*NAME` for binary mode too) -> {NAME: HEX}."""
    path = Path(path)
    sums: dict[str, str] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2 or len(parts[0]) != 64:
            raise DataError(f"{path}:{n}: expected `<64 hex digits>  <file name>`, got {line[:80]!r}")
        sums[Path(parts[1].lstrip("*")).name] = parts[0].lower()
    return sums


def parse_sha256_args(values: list[str]) -> dict[str, str]:
    """`NAME=HEX` strings from the command line -> {NAME: HEX}."""
    sums: dict[str, str] = {}
    for v in values:
        name, sep, hexsum = v.partition("=")
        if not sep or len(hexsum) != 64:
            raise DataError(f"--sha256 {v!r}: expected NAME=<64 hex digits>")
        sums[name] = hexsum.lower()
    return sums


def _sha256_of_part(path: Path) -> "hashlib._Hash":
    h = hashlib.sha256()
    if path.exists():
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h


def download_file(url: str, dest: str | Path, expected_sha256: str | None = None, retries: int = 3,
                  timeout: float = 60.0, chunk: int = 1 << 16) -> Downloaded:
    """Fetch `url` to `dest` via `dest.part`, resuming a partial file; verify the sum if given."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        digest = sha256_file(dest)
        if expected_sha256 is None or digest == expected_sha256:
            return Downloaded(dest.name, url, dest.stat().st_size, digest, expected_sha256 is not None, 0, True)
        dest.unlink()  # stale or corrupt: fetch again
    part = dest.with_name(dest.name + ".part")
    resumed_from = part.stat().st_size if part.exists() else 0
    attempt = 0
    while True:
        have = part.stat().st_size if part.exists() else 0
        req = urllib.request.Request(url, headers={"User-Agent": "gramc"})
        if have:
            req.add_header("Range", f"bytes={have}-")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                status = getattr(resp, "status", 200)
                if have and status != 206:  # Range ignored: start over
                    have = 0
                length = resp.headers.get("Content-Length")
                total = have + int(length) if length is not None else None
                with open(part, "ab" if have else "wb") as f, tqdm(
                        total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
                        desc=dest.name, leave=False) as bar:
                    while True:
                        block = resp.read(chunk)
                        if not block:
                            break
                        f.write(block)
                        bar.update(len(block))
                if total is not None and part.stat().st_size < total:
                    raise ConnectionError(f"connection closed after {part.stat().st_size} of {total} bytes")
            break
        except urllib.error.HTTPError as e:
            if e.code == 416 and have:  # the .part is already complete (or longer than the file)
                break
            raise DataError(f"{url}: HTTP {e.code} {e.reason}") from e
        except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError, OSError) as e:
            attempt += 1
            if attempt > retries:
                raise DataError(f"{url}: download failed after {retries} retries ({e}); "
                                f"run the command again to resume from {part}") from e
            time.sleep(min(2.0 ** attempt, 10.0) * 0.1)
    digest = _sha256_of_part(part).hexdigest()
    if expected_sha256 is not None and digest != expected_sha256:
        bad = part.with_name(dest.name + ".bad")
        os.replace(part, bad)
        raise DataError(f"{url}: sha256 mismatch: expected {expected_sha256}, got {digest} "
                        f"(kept as {bad}; delete it and download again)")
    os.replace(part, dest)
    return Downloaded(dest.name, url, dest.stat().st_size, digest, expected_sha256 is not None, resumed_from)


def download_files(base_url: str, names: list[str], out: str | Path,
                   sums: dict[str, str] | None = None) -> list[Downloaded]:
    """Download `names` from `base_url` into `out` and write `out/manifest.json`."""
    out = Path(out)
    sums = sums or {}
    base = base_url if base_url.endswith("/") else base_url + "/"
    results = [download_file(base + n, out / n, sums.get(n)) for n in tqdm(names, desc="files", unit="file")]
    write_json(out / "manifest.json", {"base_url": base, "files": [asdict(r) for r in results]})
    return results
