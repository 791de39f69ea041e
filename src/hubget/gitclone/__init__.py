"""Git + LFS: clone and pull with LFS objects fetched by hubget's engine and stored once."""

from hubget.gitclone.clone import clone, pull
from hubget.gitclone.lfsfetch import FetchOptions, FetchReport
from hubget.gitclone.placement import LinkMode

__all__ = ["FetchOptions", "FetchReport", "LinkMode", "clone", "pull"]
