"""Fixtures of the fault suite: a scripted hub and CDN on raw sockets, small timeouts in-process."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from hubget.transfer.engine import Engine
from hubget.transfer.http import HttpClient
from tests.faults.faultserver import FaultServer
from tests.faults.harness import ENGINE_KNOBS, ENV_KNOBS, HTTP_KNOBS


@pytest.fixture
def hub() -> Iterator[FaultServer]:
    with FaultServer() as server:
        yield server


@pytest.fixture
def cdn() -> Iterator[FaultServer]:
    with FaultServer() as server:
        yield server


@pytest.fixture
def fast(monkeypatch: pytest.MonkeyPatch) -> None:
    """Small timeouts and ranges for small files, for downloads run in this process."""
    for cls, knobs in ((HttpClient, HTTP_KNOBS), (Engine, ENGINE_KNOBS)):
        defaults = cls.__init__.__kwdefaults__
        assert defaults is not None
        for name, value in knobs.items():
            assert name in defaults, f"{cls.__name__} has no knob {name}"
            monkeypatch.setitem(defaults, name, value)
    for name, value in ENV_KNOBS.items():
        monkeypatch.setenv(name, value)
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_ENDPOINT", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_HOME", os.devnull + "-hf-home")
