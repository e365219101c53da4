"""`gramc doctor all` on the real Amazon Beauty data: wall time per section and the grad-sync ratio.

    .venv/bin/python bench/doctor_beauty.py --work DIR [--gcn GCN_DIR] [key.sub=value ...]

Prepares Beauty from ../shared/datasets/amazon-beauty into DIR/data (once), then builds the run's
assets once (GRAM's released IDs with the T5 vocabulary, GRAM's SASRec similar items, tiny preset;
the GCN folder from --gcn if given, else trained into DIR/run/gcn, which takes long on this CPU) and
times `gramc doctor all ... --json` as a user would run it (a fresh process reusing the assets).
Writes bench/results/doctor_beauty.json.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEAUTY = ROOT / ".." / "shared" / "datasets" / "amazon-beauty"
T5_SPM = ROOT / ".." / "shared" / "tokenizers" / "t5-base-spm"


def gramc(*args: str, capture: bool = False) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("gramc")
    return subprocess.run([str(exe), *args], cwd=ROOT, text=True, capture_output=capture)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", required=True, type=Path, help="folder for the prepared data and the run's assets")
    p.add_argument("--gcn", help="an existing GCN folder for this data (skips LightGCN training)")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    data = args.work / "data"
    if not (data / "dataset.json").is_file():
        rc = gramc("data", "prepare", "--sequences", str(BEAUTY / "user_sequence.txt"),
                   "--items", str(BEAUTY / "Amazon_Beauty.item"), "--out", str(data)).returncode
        if rc:
            return rc
    over = [f"run.out={args.work / 'run'}", f"data.path={data}",
            f"ids.file={BEAUTY / 'item_generative_indexing_hierarchy_v1_c128_l7_len32768_split.txt'}",
            f"ids.tokenizer={T5_SPM}", f"model.similar_source={BEAUTY / 'similar_item_sasrec.txt'}",
            "model.preset=tiny", "run.device=cpu"]
    if args.gcn:
        over.append(f"gcn.out={args.gcn}")
    over += args.overrides

    t0 = time.perf_counter()
    # build (or reuse) the assets once, outside the timed command
    prep = subprocess.run([sys.executable, "-c", "import sys; from gramc.config import load_config; "
                           "from gramc.model.assets import Assets; Assets.from_config(load_config(None, sys.argv[1:]))",
                           *over], cwd=ROOT)
    if prep.returncode:
        return prep.returncode
    assets_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    proc = gramc("doctor", "all", *over, "--json", capture=True)
    wall = time.perf_counter() - t0
    if proc.returncode not in (0, 1):
        print(proc.stderr[-3000:], file=sys.stderr)
        return proc.returncode
    report = json.loads(proc.stdout)
    sections = {m.group(1): float(m.group(2)) for m in re.finditer(r"doctor ([\w-]+): ([\d.]+)s", proc.stderr)}
    checks = {c["name"]: c for c in report["checks"]}
    ratio = checks.get("grad_sync.ratio", {}).get("value", {})
    result = {
        "command": "gramc doctor all " + " ".join(over) + " --json",
        "wall_s": round(wall, 1), "sections_s": sections, "assets_build_s": round(assets_s, 1),
        "checks": len(report["checks"]), "ok": report["ok"],
        "failed": [n for n, c in checks.items() if c["level"] == "fail"],
        "warnings": [n for n, c in checks.items() if c["level"] == "warn"],
        "grad_sync_max_abs_ratio_minus_1": ratio.get("max_abs_ratio_minus_1"),
        "grad_sync_rel_err": ratio.get("rel_err"),
        "machine": "2 CPU cores shared with other jobs (load average noted in docs/benchmarks.md)",
    }
    from gramc.io import write_json

    write_json(ROOT / "bench" / "results" / "doctor_beauty.json", result)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
