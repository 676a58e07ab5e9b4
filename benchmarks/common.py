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


# --------------------------------------------------------------------- scripts a lent GPU machine runs

PLUMBING = "plumbing check on CPU — not a GPU measurement"


def render_returned(argv: list[str] | None, markdown) -> bool:
    """``SCRIPT --render FILE.json``: print the page of a JSON a GPU machine returned (it returns at most 8
    files, so the scripts write only their JSON there); True when that was asked for and done."""
    import sys

    given = sys.argv[1:] if argv is None else argv
    if given[:1] != ["--render"] or len(given) != 2:
        return False
    print(markdown(json.loads(Path(given[1]).read_text())), end="")
    return True


def start_gpu_script(parser, argv: list[str] | None, markdown):
    """``(exit status or None, args, log)``: ``--render FILE.json`` done (0), no CUDA where asked for (2), or the
    parsed arguments and :func:`gpu_run_log`'s logger to run with."""
    if render_returned(argv, markdown):
        return 0, None, None
    args = parser.parse_args(argv)
    status, log = gpu_run_log(args.device)
    return status, args, log


def gpu_run_log(device: str):
    """``(exit status or None, log)`` of a GPU script: 2 with the reason on stderr when ``device`` is cuda and
    there is none; else a logger that stamps seconds and, on the CPU, says every line is only a plumbing check."""
    import sys

    import torch

    if device == "cuda" and not torch.cuda.is_available():
        print(f"no CUDA GPU here (torch {torch.__version__}); run on a GPU machine or use --device cpu",
              file=sys.stderr)
        return 2, None
    start = time.perf_counter()
    prefix = f"({PLUMBING}) " if device == "cpu" else ""
    return None, lambda msg: print(f"[{time.perf_counter() - start:6.1f} s] {prefix}{msg}", flush=True)


def write_page(out: Path, name: str, record: dict, markdown) -> None:
    """``out/name.json`` (the record, one line) and ``out/name.md`` (its page), and the page on stdout."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(record) + "\n")
    text = markdown(record)
    (out / f"{name}.md").write_text(text)
    print(text, flush=True)
