"""nginx, Prometheus and curl for the fleet tests (which run the deployment page's shell
commands), from Debian's packages, installed once.

``python -m tests`` calls :func:`install`: as root with ``apt-get`` it installs what is
missing; otherwise it says what to install, and the fleet tests skip (or fail, under
``LLAMATELEMETRY_REQUIRE_FLEET=1``, which CI sets).
"""

from __future__ import annotations

import os
import shutil
import subprocess

PACKAGES = {
    "nginx": "nginx-light",
    "prometheus": "prometheus",
    "curl": "curl",
}  # program -> package
SBIN = "/usr/sbin:/sbin"


def missing() -> list[str]:
    path = f"{os.environ.get('PATH', '')}:{SBIN}"
    return [
        package for program, package in PACKAGES.items() if not shutil.which(program, path=path)
    ]


def install() -> str:
    needed = missing()
    if not needed:
        return f"{', '.join(PACKAGES)} present"
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        return f"missing: run `apt-get install {' '.join(needed)}` as root (fleet tests skip)"
    command = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *needed]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(command, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, check=True)
        subprocess.run(command, env=env, capture_output=True, check=True)
    return f"installed {' '.join(needed)}"
