"""What cupsd leaves of a job on disk: control and document files, and the job cache. R12"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

_JOB_FILE = re.compile(r"^[cd](\d{5,})(-\d+)?$")


def spool_residue(spool_dir: Path, cache_dir: Path | None, job_ids: Iterable[int]) -> list[str]:
    """Files in cupsd's spool or cache that belong to any of ``job_ids`` (names only).

    cupsd names a job's control file ``c<id>`` and its documents ``d<id>-<n>`` in
    RequestRoot. The cache directory holds ``job.cache`` (one metadata block per job: id,
    queue, user, size, state; no job name, no content); a per-job file there would be
    residue too. cupsd does not rewrite job.cache when a job is purged, so a stale block may
    still list a document file that is already gone: the files themselves are what counts.
    """
    wanted = set(job_ids)
    found: list[str] = []
    for directory in (spool_dir, cache_dir):
        if directory is None or not directory.is_dir():
            continue
        for path in sorted(directory.rglob("*")):
            if not path.is_file():
                continue
            match = _JOB_FILE.match(path.name)
            if match and int(match.group(1)) in wanted:
                found.append(str(path.relative_to(directory.parent)))
    return found


def spool_readable(spool_dir: Path | None) -> bool:
    if spool_dir is None:
        return False
    try:
        next(iter(spool_dir.iterdir()), None)
    except OSError:
        return False
    return True
