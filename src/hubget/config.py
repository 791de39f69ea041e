"""Environment variables and defaults, read in one place (at call time, so tests can set them)."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_HF_ENDPOINT = "https://huggingface.co"
DEFAULT_MS_ENDPOINT = "https://www.modelscope.cn"
TRUTHY = {"1", "true", "yes", "on", "y", "t"}


def _env(name: str) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else None


def env_flag(name: str) -> bool:
    return (_env(name) or "").strip().lower() in TRUTHY


def hf_endpoint() -> str:
    return (_env("HF_ENDPOINT") or DEFAULT_HF_ENDPOINT).rstrip("/")


def hf_home() -> Path:
    if home := _env("HF_HOME"):
        return Path(home).expanduser()
    xdg = _env("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "huggingface"


def hf_hub_cache() -> Path:
    if cache := _env("HF_HUB_CACHE") or _env("HUGGINGFACE_HUB_CACHE"):
        return Path(cache).expanduser()
    return hf_home() / "hub"


def hf_token() -> str | None:
    """HF_TOKEN, then HUGGING_FACE_HUB_TOKEN, then the file $HF_HOME/token."""
    if token := _env("HF_TOKEN") or _env("HUGGING_FACE_HUB_TOKEN"):
        return token.strip()
    path = Path(_env("HF_TOKEN_PATH") or hf_home() / "token")
    try:
        token = path.read_text().strip()
    except OSError:
        return None
    return token or None


def hf_offline() -> bool:
    return env_flag("HF_HUB_OFFLINE") or env_flag("TRANSFORMERS_OFFLINE")


def progress_disabled() -> bool:
    return env_flag("HF_HUB_DISABLE_PROGRESS_BARS")


def ms_endpoint() -> str:
    if endpoint := _env("MODELSCOPE_ENDPOINT"):
        return endpoint.rstrip("/")
    if domain := _env("MODELSCOPE_DOMAIN"):
        domain = domain.rstrip("/")
        return domain if "://" in domain else f"https://{domain}"
    return DEFAULT_MS_ENDPOINT


def ms_cache() -> Path:
    if cache := _env("MODELSCOPE_CACHE"):
        return Path(cache).expanduser()
    return Path.home() / ".cache" / "modelscope"


def ms_token() -> str | None:
    return _env("MODELSCOPE_API_TOKEN")


def hf_mirrors() -> list[str]:
    raw = _env("HUBGET_HF_MIRRORS") or ""
    return [m.strip().rstrip("/") for m in raw.split(",") if m.strip()]


def id_map_file() -> str | None:
    """A JSON file mapping Hugging Face ids to ModelScope ids (``--mapping-file`` overrides it)."""
    return _env("HUBGET_ID_MAP")


def xet_disabled() -> bool:
    """HUBGET_DISABLE_XET, or huggingface_hub's HF_HUB_DISABLE_XET: Xet-backed files come over the
    hub's HTTP bridge instead of from the Xet CAS."""
    return env_flag("HUBGET_DISABLE_XET") or env_flag("HF_HUB_DISABLE_XET")


def xet_batch_bytes() -> int:
    """File bytes asked for per Xet reconstruction request at most (HUBGET_XET_BATCH_BYTES, 64 MiB)."""
    return int(_number("HUBGET_XET_BATCH_BYTES", 64 * 1024 * 1024, 1))


def probe_timeout() -> float:
    """Seconds `--source auto` gives each hub to answer its listing before counting it unreachable."""
    try:
        return max(0.1, float(_env("HUBGET_PROBE_TIMEOUT") or 6.0))
    except ValueError:
        return 6.0


# -- network knobs (the defaults of HttpClient and Engine; keyword arguments override them) ------


def _number(name: str, default: float, minimum: float) -> float:
    raw = _env(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value >= minimum:  # also catches nan
        from hubget.errors import UsageError

        raise UsageError(f"{name}={raw!r}: expected a number >= {minimum:g}")
    return value


def connect_timeout() -> float:
    """Seconds to wait for a TCP (and TLS) connection."""
    return _number("HUBGET_CONNECT_TIMEOUT", 10.0, 0.001)


def read_timeout() -> float:
    """Seconds of silence after which a request is given up (file bodies: the stall timeout)."""
    return _number("HUBGET_READ_TIMEOUT", 60.0, 0.001)


def body_timeout() -> float | None:
    """Seconds a whole API answer may take; None: twice the read timeout."""
    if _env("HUBGET_BODY_TIMEOUT") is None:
        return None
    return _number("HUBGET_BODY_TIMEOUT", 0.0, 0.001)


def retries() -> int:
    """Retries of a request after a connection error, 5xx or 429."""
    return int(_number("HUBGET_RETRIES", 5, 0))


def retry_after_cap() -> float:
    """The longest wait a server's Retry-After can impose, in seconds."""
    return _number("HUBGET_RETRY_AFTER_CAP", 60.0, 0)


def rate_limit_wait() -> float:
    """Seconds one request may spend waiting out a server's rate limit (429) before it fails."""
    return _number("HUBGET_RATE_LIMIT_WAIT", 900.0, 0)


def stall_timeout() -> float:
    """Seconds a file body may be silent, and the window over which ``min_speed`` is measured."""
    return _number("HUBGET_STALL_TIMEOUT", 30.0, 0.001)


def min_speed() -> int:
    """Bytes per second below which a connection counts as stalled (over ``stall_timeout``)."""
    return int(_number("HUBGET_MIN_SPEED", 1024, 0))


def ca_bundles() -> list[str]:
    """CA certificates to trust (files, or c_rehash'ed folders): HUBGET_CA_BUNDLE alone; else
    REQUESTS_CA_BUNDLE (requests' variable: modelscope, huggingface_hub < 1.0) together with
    SSL_CERT_FILE (httpx's and OpenSSL's: huggingface_hub >= 1.0), since a machine may set one to the
    system bundle and a user the other to their own CA. Empty: the system store, which OpenSSL lets
    SSL_CERT_FILE / SSL_CERT_DIR replace."""
    if path := _env("HUBGET_CA_BUNDLE"):
        return [str(Path(path).expanduser())]
    found: list[str] = []
    if path := _env("REQUESTS_CA_BUNDLE"):
        found.append(str(Path(path).expanduser()))
        if (also := _env("SSL_CERT_FILE")) and str(Path(also).expanduser()) not in found:
            found.append(str(Path(also).expanduser()))
    return found
