"""Hugging Face -> ModelScope repo ids: which ModelScope repos may hold the same model.

No hub API maps ids between the two hubs, and many differ (``internlm/internlm2-chat-7b`` is
``Shanghai_AI_Laboratory/internlm2-chat-7b`` on ModelScope). The candidates come, in this order,
from an explicit ``--modelscope-id``, the user's mapping file (``--mapping-file`` or
``HUBGET_ID_MAP``: JSON ``{"hf_org/name": "ms_owner/name", "hf_org/*": "ms_owner/*"}``), the
built-in table (``idmap_table``) and, last, the same id. A candidate is only a claim: the caller
proves it by hashes (``hubget.api.auto``) or, when it cannot, says that it trusts the claim.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from hubget import config
from hubget.errors import UsageError
from hubget.sources.idmap_table import MODEL_PAIRS, ORG_RENAMES

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*/[A-Za-z0-9_.\-]+$")
_ORG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")

# How a candidate was named, from the most to the least deliberate.
EXPLICIT = "explicit"
USER_FILE = "mapping-file"
BUILTIN_PAIR = "builtin-pair"
BUILTIN_ORG = "builtin-org"
SAME_ID = "same-id"


@dataclass(frozen=True)
class Candidate:
    repo_id: str  # the id on ModelScope
    kind: str  # EXPLICIT, USER_FILE, BUILTIN_PAIR, BUILTIN_ORG or SAME_ID
    how: str  # for people: "given with --modelscope-id", "organisation rename internlm -> ..."

    @property
    def from_mapping(self) -> bool:
        """True when a mapping names this id; a same-id guess is never used without a hash proof."""
        return self.kind != SAME_ID


def _check_id(value: object, where: str) -> str:
    if not isinstance(value, str) or not _ID.match(value) or ".." in value:
        raise UsageError(f"{where}: {value!r} is not a repo id of the form owner/name")
    return value


class IdMap:
    """Model pairs and organisation renames: built-in ones, overlaid by the user's."""

    def __init__(
        self,
        user_pairs: dict[str, str] | None = None,
        user_orgs: dict[str, str] | None = None,
        user_origin: str = "",
        *,
        builtin: bool = True,
    ) -> None:
        self.user_pairs = {k.lower(): v for k, v in (user_pairs or {}).items()}
        self.user_orgs = {k.lower(): v for k, v in (user_orgs or {}).items()}
        self.user_origin = user_origin
        self.pairs = {k.lower(): v for k, v in MODEL_PAIRS.items()} if builtin else {}
        self.orgs = {k.lower(): (k, v) for k, v in ORG_RENAMES.items()} if builtin else {}

    @classmethod
    def load(cls, mapping_file: str | Path | None = None) -> IdMap:
        """The built-in table plus ``mapping_file`` (default: ``HUBGET_ID_MAP``, when set)."""
        path = mapping_file or config.id_map_file()
        if not path:
            return cls()
        pairs, orgs = read_mapping_file(Path(path))
        return cls(pairs, orgs, user_origin=str(path))

    def modelscope_candidates(self, hf_id: str, explicit: str | None = None) -> list[Candidate]:
        """Every ModelScope id that may hold ``hf_id``, most deliberate first, without repeats."""
        out: list[Candidate] = []

        def add(repo_id: str, kind: str, how: str) -> None:
            if all(c.repo_id.lower() != repo_id.lower() for c in out):
                out.append(Candidate(repo_id, kind, how))

        if explicit:
            add(_check_id(explicit, "--modelscope-id"), EXPLICIT, "given with --modelscope-id")
        key = hf_id.lower()
        org, _, name = hf_id.partition("/")
        where = f"mapping file {self.user_origin}"
        if key in self.user_pairs:
            add(self.user_pairs[key], USER_FILE, f"{where}: {hf_id} -> {self.user_pairs[key]}")
        if org.lower() in self.user_orgs and name:
            owner = self.user_orgs[org.lower()]
            add(f"{owner}/{name}", USER_FILE, f"{where}: {org}/* -> {owner}/*")
        if key in self.pairs:
            add(self.pairs[key], BUILTIN_PAIR, f"built-in table: {hf_id} -> {self.pairs[key]}")
        if org.lower() in self.orgs and name:
            _, renamed = self.orgs[org.lower()]
            add(f"{renamed}/{name}", BUILTIN_ORG, f"built-in organisation rename {org} -> {renamed}")
        if _ID.match(hf_id):
            add(hf_id, SAME_ID, "same id on both hubs")
        return out


def read_mapping_file(path: Path) -> tuple[dict[str, str], dict[str, str]]:
    """(model pairs, organisation renames) from a JSON object ``{hf_id: ms_id, "org/*": "owner/*"}``."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise UsageError(f"cannot read the id mapping file {path}: {e.strerror or e}") from None
    except ValueError as e:
        raise UsageError(f"the id mapping file {path} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise UsageError(f"the id mapping file {path} must hold a JSON object {{hf_id: modelscope_id}}")
    pairs: dict[str, str] = {}
    orgs: dict[str, str] = {}
    for key, value in data.items():
        where = f"{path}: entry {key!r}"
        if isinstance(key, str) and key.endswith("/*"):
            if not isinstance(value, str) or not value.endswith("/*") or not _ORG.match(value[:-2]):
                raise UsageError(f"{where}: an organisation rule maps to 'owner/*', not {value!r}")
            if not _ORG.match(key[:-2]):
                raise UsageError(f"{where}: not an organisation name")
            orgs[key[:-2]] = value[:-2]
        else:
            pairs[_check_id(key, where)] = _check_id(value, where)
    return pairs, orgs
