"""See, verify, repair, prune and share what the Hugging Face and ModelScope caches hold.

    import hubget.cache
    report = hubget.cache.scan()                  # every repo of both caches, sizes as scan_cache_dir()
    hubget.cache.verify("org/model", repair=True) # hash every file; refetch only what is wrong
    hubget.cache.rm("org/model", revision="v1")   # or prune(): detached revisions, orphans, temp files
    hubget.cache.export("org/model", "./model")   # a plain folder sharing the blobs' bytes
    hubget.cache.import_folder("./model", "org/model")
    hubget.cache.dedup()                          # identical files of both caches stored once

Each returns a dataclass report. Every change takes the locks the downloaders take, without
waiting, and leaves alone what a running download holds.
"""

from hubget.cache.dedup import DedupGroup, DedupReport, dedup
from hubget.cache.deletion import CleanReport, Removed, Skipped
from hubget.cache.export import ExportedFile, ExportReport, export
from hubget.cache.hashpool import FileCheck
from hubget.cache.import_folder import ImportedFile, ImportReport, import_folder
from hubget.cache.prune import prune, rm
from hubget.cache.scan import CachedRepo, CachedRevision, CacheScan, PartialFile, scan
from hubget.cache.verify import VerifyReport, verify

__all__ = [
    "CacheScan",
    "CachedRepo",
    "CachedRevision",
    "CleanReport",
    "DedupGroup",
    "DedupReport",
    "ExportReport",
    "ExportedFile",
    "FileCheck",
    "ImportReport",
    "ImportedFile",
    "PartialFile",
    "Removed",
    "Skipped",
    "VerifyReport",
    "dedup",
    "export",
    "import_folder",
    "prune",
    "rm",
    "scan",
    "verify",
]
