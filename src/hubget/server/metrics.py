"""``GET /metrics``: what a mirror (``--upstream``) did, in the Prometheus text format (0.0.4)."""

from __future__ import annotations

from aiohttp import web

from hubget.server.keys import STORE_KEY

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def render(samples: list[tuple[str, str, str, dict[str, str], float]]) -> str:
    lines: list[str] = []
    described: set[str] = set()
    for name, kind, help_text, labels, value in samples:
        if name not in described:
            described.add(name)
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")
        label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
        number = repr(float(value)) if value != int(value) else str(int(value))
        lines.append(f"{name}{{{label_text}}} {number}" if label_text else f"{name} {number}")
    return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


async def metrics(request: web.Request) -> web.Response:
    store = request.app[STORE_KEY]
    samples = [s for up in (store.upstream, store.ms_upstream) if up is not None for s in up.metrics()]
    order = {name: i for i, (name, *_) in reversed(list(enumerate(samples)))}
    samples.sort(key=lambda s: order[s[0]])  # (stable) the samples of one metric in one group
    return web.Response(body=render(samples).encode(), headers={"Content-Type": CONTENT_TYPE})


def setup(app: web.Application) -> None:
    app.router.add_get("/metrics", metrics)
