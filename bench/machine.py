"""The machine and the peers' versions, printed with every result."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess

import psutil


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "-"


def _tool(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except OSError:
        return "-"
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0] if text else "-"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "-"


def describe() -> dict[str, str]:
    return {
        "cpu": f"{os.cpu_count()} x {_cpu_model()}",
        "memory": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "hubget": _version("hubget"),
        "huggingface_hub": _version("huggingface_hub"),
        "hf_transfer": _version("hf_transfer"),
        "modelscope": _version("modelscope"),
        "modelscope_hub": _version("modelscope_hub"),
        "urllib3": _version("urllib3"),
        "aiohttp": _version("aiohttp"),
        "aria2c": _tool(["aria2c", "--version"]).replace("aria2 version ", ""),
        "nginx": _tool(["nginx", "-v"]).replace("nginx version: ", ""),
        "git": _tool(["git", "--version"]).replace("git version ", ""),
        "git-lfs": _tool(["git", "lfs", "version"]).split(" (")[0],
    }
