#!/usr/bin/env bash
# For tests/test_wheel.py: a CPython of another minor version than .venv's (the abi3 wheel must install
# there) and the wheels of the light dependencies its test venv needs, fetched once so the test runs offline.
# Writes .venv/wheel-test/python (a link to that interpreter) and .venv/wheel-test/wheels/, or
# .venv/wheel-test/none when this machine has no other CPython.
set -euo pipefail
cd "$(dirname "$0")/.."
out=.venv/wheel-test
mine=$(.venv/bin/python -c 'import sys; print("%d.%d" % sys.version_info[:2])')
pyenv_root=$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")

other=""
for v in 3.12 3.13 3.10 3.11 3.14; do
    [ "$v" = "$mine" ] && continue
    for candidate in "$pyenv_root"/versions/"$v".*/bin/python"$v" "$(command -v "python$v" || true)"; do
        if [ -n "$candidate" ] && [ -x "$candidate" ]; then other=$candidate; break 2; fi
    done
done

mkdir -p "$out"
if [ -z "$other" ]; then
    rm -f "$out/python"; touch "$out/none"
    exit 0
fi
rm -f "$out/none"
ln -sfn "$other" "$out/python"
version=$("$other" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
stamp="$out/wheels/.complete-$version"
if [ ! -e "$stamp" ]; then
    rm -rf "$out/wheels"
    # typer and rich: the `jitrs` console script's imports short of torch; numpy: load_batch's result.
    .venv/bin/python -m pip download -q --only-binary=:all: --python-version "$version" -d "$out/wheels" numpy typer rich
    touch "$stamp"
fi
