"""The PEP 517 build backend of jitrs: maturin's, after a check for the assembler of libjpeg-turbo's SIMD code.

The turbojpeg crate builds libjpeg-turbo with cmake and REQUIRE_SIMD (rather than quietly building a slower
decoder); a missing nasm then surfaces as a cmake error inside a panicking build script, a hundred lines deep in
pip's output. Cargo cannot run a check of ours first (turbojpeg-sys `links` a native library, so its build script
runs before ours), hence this check here, in front of `pip install .` and `pip wheel .`.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping
from typing import Any

import maturin

# Every hook but the two that compile is maturin's own.
build_sdist = maturin.build_sdist
get_requires_for_build_sdist = maturin.get_requires_for_build_sdist
get_requires_for_build_wheel = maturin.get_requires_for_build_wheel
get_requires_for_build_editable = maturin.get_requires_for_build_editable
prepare_metadata_for_build_wheel = maturin.prepare_metadata_for_build_wheel
prepare_metadata_for_build_editable = maturin.prepare_metadata_for_build_editable

MISSING_NASM = (
    "jitrs: building needs the nasm assembler for libjpeg-turbo's SIMD decoder and there is none on PATH: "
    "install it with `apt-get install nasm` (or set ASM_NASM to a nasm or yasm binary), "
    "or install a prebuilt jitrs wheel instead."
)


def _require_nasm() -> None:
    # The same lookup as libjpeg-turbo's simd/CMakeLists.txt: $ASM_NASM if set, else nasm or yasm.
    asm = os.environ.get("ASM_NASM")
    found = shutil.which(asm) if asm else shutil.which("nasm") or shutil.which("yasm")
    if not found:
        sys.exit(MISSING_NASM)


def build_wheel(
    wheel_directory: str, config_settings: Mapping[str, Any] | None = None, metadata_directory: str | None = None
) -> str:
    _require_nasm()
    return maturin.build_wheel(wheel_directory, config_settings, metadata_directory)


def build_editable(
    wheel_directory: str, config_settings: Mapping[str, Any] | None = None, metadata_directory: str | None = None
) -> str:
    _require_nasm()
    return maturin.build_editable(wheel_directory, config_settings, metadata_directory)
