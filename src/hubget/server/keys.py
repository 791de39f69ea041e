"""Typed keys of what the server application holds (the store, the tokens, the page size), shared by
the app and its route modules."""

from __future__ import annotations

from aiohttp import web

from hubget.server.store import Store

STORE_KEY: web.AppKey[Store] = web.AppKey("hubget_store", Store)
TOKENS_KEY: web.AppKey[frozenset[str]] = web.AppKey("hubget_tokens", frozenset)
PAGE_SIZE_KEY: web.AppKey[int] = web.AppKey("hubget_page_size", int)
