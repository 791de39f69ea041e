"""ModelScope as a source: the /api/v1 protocol the modelscope SDK (1.38+) speaks.

Every JSON answer is wrapped in ``{"Code": 200, "Success": true, "Message": ..., "Data": ...}``.
The default branch is ``master``. A model's recursive listing is cut at 3000 entries by the hub, so
a listing that comes back at the cap is walked per folder (``Root=...``) the way the SDK does;
dataset listings are paginated instead.
"""

from __future__ import annotations

import json
import logging
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote, quote_plus, urlencode, urlsplit

from hubget import config
from hubget.errors import (
    AuthError,
    EntryNotFoundError,
    HubgetError,
    NetworkError,
    ProtocolError,
    RepoNotFoundError,
    RevisionNotFoundError,
    UsageError,
)
from hubget.models import RemoteFile, RepoRef, Snapshot
from hubget.paths import safe_relpath
from hubget.transfer.http import HttpClient, Response

log = logging.getLogger(__name__)

DEFAULT_REVISION = "master"
LISTING_CAP = 3000  # the hub silently truncates a repo/files answer at this many entries
DATASET_PAGE_SIZE = 200
MAX_DATASET_PAGES = 100_000  # a server that never returns a short page must not loop forever
MAX_WALK_REQUESTS = 10_000
WALK_WORKERS = 8
TOKEN_COOKIE = "m_session_id"

_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*/[A-Za-z0-9_.\-]+$")
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_SEGMENTS = {"model": "models", "dataset": "datasets"}


def repo_segment(repo_type: str) -> str:
    try:
        return _SEGMENTS[repo_type]
    except KeyError:
        raise UsageError(f"ModelScope serves models and datasets, not {repo_type!r} repos") from None


def check_repo_id(repo_id: str) -> str:
    """ModelScope ids are exactly ``owner/name``; anything else would build a wrong URL path."""
    if not _REPO_ID.match(repo_id or "") or ".." in repo_id:
        raise UsageError(f"not a ModelScope repo id (expected owner/name): {repo_id!r}")
    return repo_id


def auth_headers(token: str | None) -> dict[str, str]:
    """The SDK sends the token both ways: newer endpoints read the Bearer header, older the cookie."""
    if not token:
        return {}
    return {"Authorization": f"Bearer {token}", "Cookie": f"{TOKEN_COOKIE}={token}"}


def file_url(endpoint: str, repo_type: str, repo_id: str, revision: str, path: str) -> str:
    """The URL the SDK downloads a file from (``quote_plus`` on revision and path, as it does)."""
    owner, name = check_repo_id(repo_id).split("/")
    return (
        f"{endpoint}/api/v1/{repo_segment(repo_type)}/{quote(owner)}/{quote(name)}/repo"
        f"?Revision={quote_plus(revision)}&FilePath={quote_plus(path)}"
    )


class ModelScopeSource:
    name = "modelscope"
    listing_cap = LISTING_CAP

    def __init__(
        self, endpoint: str | None = None, token: str | None = None, client: HttpClient | None = None
    ) -> None:
        self.endpoint = (endpoint or config.ms_endpoint()).rstrip("/")
        parts = urlsplit(self.endpoint)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise UsageError(f"ModelScope endpoint must be an http(s) URL: {self.endpoint!r}")
        self.token = token if token is not None else config.ms_token()
        self.client = client or HttpClient()

    # -- public API ---------------------------------------------------------------------------

    def resolve(self, ref: RepoRef) -> Snapshot:
        revision = ref.revision or DEFAULT_REVISION
        files = self.listing(ref, revision)[1]
        return Snapshot(ref=ref, commit=revision, files=files, source=self.name, endpoint=self.endpoint)

    def listing(self, ref: RepoRef, revision: str) -> tuple[str | None, list[RemoteFile]]:
        """Every file of ``revision`` (sorted by path, URLs at ``revision``) and the commit its entries
        name (``Revision``), or None when they name no single 40-hex commit."""
        entries = self._list_all(ref, revision)
        files: list[RemoteFile] = []
        seen: set[str] = set()
        commits: set[str] = set()
        for entry in entries:
            remote = self._remote_file(ref, revision, entry)
            if remote is not None and remote.path not in seen:
                seen.add(remote.path)
                files.append(remote)
                commits.add(str(entry.get("Revision") or ""))
        files.sort(key=lambda f: f.path)
        commit = commits.pop() if len(commits) == 1 else None
        return (commit if commit and _COMMIT.match(commit) else None), files

    def file_info(self, ref: RepoRef, path: str) -> RemoteFile:
        safe_relpath(path)
        revision = ref.revision or DEFAULT_REVISION
        parent = path.rpartition("/")[0] or None
        try:
            if ref.repo_type == "dataset":
                entries = self._list_dataset(ref, revision, root=parent)
            else:
                entries = self._list_page(ref, revision, recursive=False, root=parent)
        except (RepoNotFoundError, RevisionNotFoundError):
            raise
        except EntryNotFoundError:
            entries = []
        for entry in entries:
            if _entry_path(entry) == path:
                remote = self._remote_file(ref, revision, entry)
                if remote is not None:
                    return remote
        raise EntryNotFoundError(f"{path} not found in {ref.repo_id}@{revision} on {self.endpoint}")

    def list_revisions(self, ref: RepoRef) -> tuple[list[str], list[str]]:
        """(branches, tags) by name, tags newest first as the hub orders them."""
        data = self._get_data(self._api_url(ref, "revisions"), what=f"{ref.repo_id}")
        revision_map = data.get("RevisionMap") if isinstance(data, dict) else None
        if not isinstance(revision_map, dict):
            raise ProtocolError(f"{self.endpoint}: revisions answer without Data.RevisionMap")

        def names(key: str) -> list[str]:
            items = revision_map.get(key) or []
            return [str(i["Revision"]) for i in items if isinstance(i, dict) and i.get("Revision")]

        return names("Branches"), names("Tags")

    def headers(self) -> dict[str, str]:
        return auth_headers(self.token)

    # -- listing ------------------------------------------------------------------------------

    def _list_all(self, ref: RepoRef, revision: str) -> list[dict[str, Any]]:
        if ref.repo_type == "dataset":
            return self._list_dataset(ref, revision, root=None)
        entries = self._list_page(ref, revision, recursive=True, root=None)
        if len(entries) < self.listing_cap:
            return entries
        return self._walk(ref, revision, entries)

    def _walk(self, ref: RepoRef, revision: str, first: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Recover a listing cut at the cap: each subtree whole, and only the subtrees that come
        back at the cap listed shallowly and split by sub-folder (as the SDK does)."""
        collected: dict[str, dict[str, Any]] = {}
        incomplete: list[str] = []
        requests = 0

        def absorb(entries: list[dict[str, Any]]) -> None:
            for entry in entries:
                if path := _entry_path(entry):
                    collected.setdefault(path, entry)

        def fetch(roots: list[str | None], recursive: bool) -> dict[str | None, list[dict[str, Any]]]:
            nonlocal requests
            requests += len(roots)
            if requests > MAX_WALK_REQUESTS:
                raise ProtocolError(f"{ref.repo_id}: listing needs more than {MAX_WALK_REQUESTS} requests")
            with ThreadPoolExecutor(max_workers=min(WALK_WORKERS, max(1, len(roots)))) as pool:
                answers = pool.map(
                    lambda r: self._list_page(ref, revision, recursive=recursive, root=r), roots
                )
                return dict(zip(roots, answers, strict=True))

        known: dict[str | None, list[dict[str, Any]]] = {None: first}
        frontier: list[str | None] = [None]
        while frontier:
            known.update(fetch([r for r in frontier if r not in known], recursive=True))
            capped: list[str | None] = []
            for root in frontier:
                subtree = known.pop(root)
                absorb(subtree)
                if len(subtree) >= self.listing_cap:
                    capped.append(root)
            if not capped:
                break
            shallow = fetch(capped, recursive=False)
            next_frontier: list[str | None] = []
            for root in capped:
                level = shallow[root]
                absorb(level)
                children = [_entry_path(e) for e in level if _entry_type(e) == "tree" and _entry_path(e)]
                if len(level) >= self.listing_cap or not children:
                    incomplete.append(root or "/")
                next_frontier.extend(children)
            frontier = list(dict.fromkeys(next_frontier))
        if incomplete:
            # The hub cannot enumerate a folder with more direct entries than its cap; say so.
            log.warning(
                "%s: the hub lists at most %d entries per folder; these folders may hold more: %s",
                ref.repo_id,
                self.listing_cap,
                ", ".join(incomplete[:5]),
            )
        return list(collected.values())

    def _list_page(
        self, ref: RepoRef, revision: str, recursive: bool, root: str | None
    ) -> list[dict[str, Any]]:
        params = {"Revision": revision, "Recursive": str(recursive)}
        if root:
            params["Root"] = root
        url = self._api_url(ref, "repo/files", params)
        return _files_of(self._get_data(url, what=f"{ref.repo_id}@{revision}", ref=ref, revision=revision))

    def _list_dataset(self, ref: RepoRef, revision: str, *, root: str | None) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = []
        seen_pages: set[tuple[str, ...]] = set()
        for page in range(1, MAX_DATASET_PAGES + 1):
            params: dict[str, Any] = {
                "Revision": revision,
                "Recursive": "True",
                "PageNumber": page,
                "PageSize": DATASET_PAGE_SIZE,
            }
            if root:
                params["Root"] = root
            url = self._api_url(ref, "repo/tree", params)
            files = _files_of(
                self._get_data(url, what=f"{ref.repo_id}@{revision}", ref=ref, revision=revision)
            )
            key = tuple(_entry_path(f) for f in files)
            if files and key in seen_pages:
                raise ProtocolError(
                    f"{self.endpoint}: dataset listing repeats page {page}; it would never end"
                )
            seen_pages.add(key)
            entries.extend(files)
            if len(files) < DATASET_PAGE_SIZE:
                return entries
        raise ProtocolError(f"{ref.repo_id}: dataset listing longer than {MAX_DATASET_PAGES} pages")

    # -- HTTP ---------------------------------------------------------------------------------

    def _api_url(self, ref: RepoRef, suffix: str, params: dict[str, Any] | None = None) -> str:
        owner, name = check_repo_id(ref.repo_id).split("/")
        url = f"{self.endpoint}/api/v1/{repo_segment(ref.repo_type)}/{quote(owner)}/{quote(name)}/{suffix}"
        return f"{url}?{urlencode(params)}" if params else url

    def _get_data(
        self, url: str, *, what: str, ref: RepoRef | None = None, revision: str | None = None
    ) -> Any:
        """GET a JSON envelope and return its ``Data``, mapping failures to hubget errors."""
        response = self.client.request("GET", url, headers=self.headers())
        body = _json_body(response)
        code = _business_code(body)
        status = response.status
        if (
            status < 400
            and code in (None, 200)
            and not (isinstance(body, dict) and body.get("Success") is False)
        ):
            if not isinstance(body, dict) or "Data" not in body:
                raise ProtocolError(f"{url}: answer is not a ModelScope JSON envelope")
            return body["Data"]
        if status < 400 and code is not None and code >= 400 and code < 600:
            status = code  # the hub sometimes reports a failure inside a 200
        message = _message(body) or f"HTTP {response.status}"
        raise self._error(status, what, message, ref=ref, revision=revision)

    def _error(
        self, status: int, what: str, message: str, *, ref: RepoRef | None, revision: str | None
    ) -> HubgetError:
        if status == 401:
            return AuthError(
                f"{what}: authentication required or token rejected ({message}); set MODELSCOPE_API_TOKEN"
            )
        if status == 403:
            return AuthError(f"{what}: access denied ({message}); check MODELSCOPE_API_TOKEN and repo access")
        if status == 404:
            if ref is not None and revision is not None:
                return self._which_not_found(ref, revision, message)
            return RepoNotFoundError(f"{what} not found on {self.endpoint} ({message})")
        if status >= 500 or status == 429:
            return NetworkError(f"{what}: {self.endpoint} kept failing ({message})")
        return ProtocolError(f"{what}: {self.endpoint} answered {status} ({message})")

    def _which_not_found(self, ref: RepoRef, revision: str, message: str) -> HubgetError:
        """A 404 on a listing is a missing repo or a missing revision; the revisions call tells which."""
        try:
            branches, tags = self.list_revisions(ref)
        except RepoNotFoundError:
            return RepoNotFoundError(
                f"{ref.repo_type} {ref.repo_id} not found on {self.endpoint} ({message})"
            )
        except HubgetError:
            return RepoNotFoundError(f"{ref.repo_id}@{revision} not found on {self.endpoint} ({message})")
        if revision not in branches and revision not in tags:
            known = ", ".join((branches + tags)[:10]) or "none"
            return RevisionNotFoundError(
                f"revision {revision!r} not found in {ref.repo_id} on {self.endpoint} (known: {known})"
            )
        return EntryNotFoundError(f"{ref.repo_id}@{revision}: {message}")

    def _remote_file(self, ref: RepoRef, revision: str, entry: dict[str, Any]) -> RemoteFile | None:
        if _entry_type(entry) == "tree":
            return None
        path = safe_relpath(_entry_path(entry))
        size = entry.get("Size", entry.get("size"))
        try:
            size = int(size) if size is not None else None
        except (TypeError, ValueError):
            raise ProtocolError(f"{path}: listing gives a size that is not a number: {size!r}") from None
        if size is not None and size < 0:
            raise ProtocolError(f"{path}: listing gives a negative size")
        digest = entry.get("Sha256") or entry.get("sha256") or None
        if digest is not None and not (isinstance(digest, str) and _SHA256.match(digest)):
            raise ProtocolError(f"{path}: listing gives a malformed sha256: {digest!r}")
        return RemoteFile(
            path=path,
            size=size,
            url=file_url(self.endpoint, ref.repo_type, ref.repo_id, revision, path),
            sha256=digest.lower() if digest else None,
            headers=self.headers(),
        )


def _entry_path(entry: dict[str, Any]) -> str:
    return str(entry.get("Path") or entry.get("path") or entry.get("Name") or "")


def _entry_type(entry: dict[str, Any]) -> str:
    return str(entry.get("Type") or entry.get("type") or "blob")


def _files_of(data: Any) -> list[dict[str, Any]]:
    files = data.get("Files", data.get("files")) if isinstance(data, dict) else data
    if files is None:
        return []
    if not isinstance(files, list) or not all(isinstance(f, dict) for f in files):
        raise ProtocolError("file listing is not a list of entries")
    return files


def _json_body(response: Response) -> Any:
    data = response.data or b""
    try:
        return json.loads(data) if data else None
    except (ValueError, UnicodeDecodeError):
        if response.status < 400:
            raise ProtocolError(f"{response.url}: answer is not JSON") from None
        return None


def _business_code(body: Any) -> int | None:
    if not isinstance(body, dict):
        return None
    raw = body.get("Code", body.get("code"))
    try:
        return int(raw) if raw is not None else None
    except (TypeError, ValueError):
        return None


def _message(body: Any) -> str:
    if isinstance(body, dict):
        return str(body.get("Message") or body.get("message") or "")[:300]
    return ""
