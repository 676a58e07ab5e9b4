"""Shared helpers for benchmark scripts: environment record and JSONL output."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
DOCS = Path(__file__).resolve().parents[1] / "docs" / "results"


def environment() -> dict:
    """Machine facts recorded next to every result (numbers depend on them)."""
    import numpy as np
    import torch

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from crossrec.hardware.detect import detect_cpu

    found = detect_cpu()  # the model name alone does not tell this VM's Zen 3 and Zen 5 hosts apart
    cpu = f"{cpu} ({found.catalog_match or 'no catalog entry'}: {' '.join(found.flags) or 'no AVX2'})"
    return {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "cpu": cpu, "cpu_flags": list(found.flags),
            "catalog_device": found.catalog_match, "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__, "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE")}


def append_jsonl(name: str, record: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.jsonl"
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
    return path
