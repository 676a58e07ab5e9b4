#!/usr/bin/env bash
# Wheels of the serve extra for a lent GPU machine (Python 3.12, no network there; its image lacks fastapi,
# starlette, pydantic and uvicorn). Run here, before the device call; the folder .whl is git-ignored through
# .git/info/exclude and travels with `carry: [".whl"]`; benchmarks/gpu_all.sh installs it with --no-deps
# into /tmp/site and then runs benchmarks/gpu_serve.py. Versions: the ones this project's venv runs.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
    fastapi==0.165.0 starlette==1.10.0 pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 \
    typing-inspection==0.4.5 typing-extensions==4.16.0 uvicorn==0.54.0 opentelemetry-api==1.45.2
ls .whl
