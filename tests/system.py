"""What tests need from the machine: Debian packages, free ports."""

from __future__ import annotations

import os
import socket
import subprocess


def apt_install(*packages: str) -> None:
    """Install Debian packages (as root, like CI on a fresh machine)."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, timeout=900)
    install = ["apt-get", "install", "-y", "-qq", *packages]
    subprocess.run(install, check=True, env=env, timeout=1800)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
