"""Data is never code: what a data source string may be, given where it came from, and how it is opened.

A *source* is a string that names data: a local path, an ``http(s)://`` URL, a ``pipe:COMMAND``
that the ``webdataset`` library runs through the shell, or another scheme that library hands to
a program (``gs://`` to gsutil, ``ais://``, ``scp://``, ``sftp://``, ``ftps://``, ``hf://``,
``-`` for standard input). Which of these rdfer honours depends on who wrote the string:

================  =========================================================================
origin            allowed
================  =========================================================================
``user``          anything: the user typed it for this run, on the command line or in a
                  Python call (``pipe:``, URLs, local paths)
``config``        a YAML config, a checkpoint, a model card: local paths and ``http(s)://``
                  URLs (data the file's author names); never a program (``pipe:``, ``-``,
                  ``gs://``, ``scp://``, ...): re-running a downloaded config runs nothing
``index``         a shard name inside a pack's ``index.json``: a plain relative name inside
                  the index's own folder (or its own URL prefix), nothing else: no scheme, no
                  absolute path, no ``..``. A local index therefore never reaches the network
================  =========================================================================

:func:`check_source` is the one place that decides; :func:`open_source` opens what it allowed
(local files directly, ``http(s)`` through :mod:`urllib` with a timeout, never a shell;
programs through the ``webdataset`` library, for command-line sources only).
"""

from __future__ import annotations

import os
import re
import urllib.error
import urllib.request
from typing import BinaryIO, List, Optional

__all__ = ["SourceError", "ORIGINS", "MAX_SHARDS", "MAX_INDEX_BYTES", "check_source", "source_kind", "expand_pattern", "open_source",
           "read_source", "network_timeout", "join_index_name"]

ORIGINS = ("user", "config", "index")
# Sources a data file may name as well as the user: data fetched, nothing run.
_FETCHED = ("http://", "https://")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
# Index shard names: what rdfer pack writes (shard-000000.tar) and what WebDataset tools write.
_SHARD_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.,+=@%-]*$")
_DEFAULT_TIMEOUT = 60.0
MAX_SHARDS = 100_000  # a brace pattern expanding to more is refused before it is expanded
MAX_INDEX_BYTES = 1 << 30  # an index.json read whole: 1 GiB is some 10 million sample records


class SourceError(ValueError):
    """A data source that its origin may not name (a program in a config, a URL in a local index)."""


def source_kind(spec: str) -> str:
    """``"local"`` (a path, or ``file://``), ``"url"`` (``http(s)://``) or ``"program"`` (``pipe:``,
    ``-`` and every other scheme, which the ``webdataset`` library opens by running a program)."""
    if spec == "-" or spec.startswith("pipe:"):
        return "program"
    if spec.startswith(_FETCHED):
        return "url"
    if spec.startswith("file://"):
        return "local"
    if _SCHEME.match(spec) and not re.match(r"^[A-Za-z]:[\\/]", spec):  # C:\ is a (Windows) path
        return "program"
    return "local"


def join_index_name(location: str, name: str) -> str:
    """A shard name from an index at ``location`` (a local ``index.json`` path or its URL), joined to
    the index's own folder or URL prefix; a :class:`SourceError` when the name would leave it."""
    if not isinstance(name, str) or not _SHARD_NAME.match(name.replace("/", "_")) \
            or any(part in ("", ".", "..") for part in name.split("/")) or "\\" in name:
        raise SourceError(f"{location}: the shard name {str(name)[:200]!r} is not a plain name inside the "
                          f"index's own folder (an index names its own shards only: no URL, program, absolute "
                          f"path or '..'); it was not opened")
    if source_kind(location) == "url":
        return location.rsplit("/", 1)[0] + "/" + name
    return os.path.join(os.path.dirname(location), name)


def check_source(spec: str, origin: str, what: str = "the data source", index: Optional[str] = None) -> str:
    """The source ``spec`` as rdfer may open it, given where it came from (``origin``, one of
    :data:`ORIGINS`), else a one-line :class:`SourceError` naming ``what`` (e.g. ``CONFIG:
    train_source``) and the rule. ``index`` is the location (path or URL) of the ``index.json``
    an ``"index"`` name comes from; such a name comes back joined to that location."""
    if origin not in ORIGINS:
        raise ValueError(f"unknown source origin {origin!r}; one of {ORIGINS}")
    if origin == "index":
        return join_index_name(index or "", spec)
    if not isinstance(spec, str):
        raise SourceError(f"{what}: {spec!r} is not a path or URL")
    kind = source_kind(spec)
    if origin == "user" or kind in ("local", "url"):
        return spec
    action = "would read standard input" if spec == "-" else "would run a program"
    raise SourceError(f"{what}: {spec[:200]!r} {action}; a source that runs a program or reads standard input "
                      f"(pipe:, -, gs://, scp://, ...) is honoured only when typed on the command line, never from a "
                      f"{origin} file or a pack's index (nothing was run). Pass it as --train/--test yourself if you trust it")


def expand_pattern(spec: str, origin: str = "user", what: str = "the data source") -> List[str]:
    """The sources a shard pattern names: ``::``-separated parts, each brace-expanded
    (``train-{000000..000009}.tar``; no environment variables), each checked by
    :func:`check_source` for ``origin``. More than :data:`MAX_SHARDS` is a :class:`SourceError`
    raised before the rest is expanded (``{0..99999999}`` never builds its list)."""
    from braceexpand import braceexpand

    if not isinstance(spec, str):
        raise SourceError(f"{what}: {spec!r} is not a path, URL or brace pattern")
    if _expansion_bound(spec) > MAX_SHARDS:
        raise SourceError(f"{what}: {spec[:200]!r} expands to more than {MAX_SHARDS} shards; use fewer, "
                          f"larger shards (rdfer pack --shard-size)")
    return [check_source(source, origin, what) for part in spec.split("::") for source in braceexpand(part)]


def _expansion_bound(spec: str) -> int:
    """An upper bound on the strings a brace pattern expands to, without expanding it (braceexpand
    builds a range's list whole: ``{0..999999999}`` would fill the memory first)."""
    total = 0
    for part in spec.split("::"):
        bound, stack = 1, []
        i = 0
        while i < len(part):
            c = part[i]
            if c == "\\":
                i += 2
                continue
            if c == "{":
                stack.append(i)
            elif c == "}" and stack:
                body = part[stack.pop() + 1: i]
                m = re.fullmatch(r"(-?\d+|[A-Za-z])\.\.(-?\d+|[A-Za-z])(?:\.\.(-?\d+))?", body)
                if m:
                    a, b = (int(x) if x.lstrip("-").isdigit() else ord(x) for x in m.group(1, 2))
                    step = abs(int(m.group(3) or 1)) or 1
                    bound *= abs(b - a) // step + 1
                else:
                    bound *= body.count(",") + 1
            i += 1
            if bound > MAX_SHARDS:
                return bound
        total += bound
    return total


def network_timeout() -> float:
    """Seconds a network read may wait for the server (``RDFER_NETWORK_TIMEOUT``, default 60)."""
    try:
        value = float(os.environ.get("RDFER_NETWORK_TIMEOUT", _DEFAULT_TIMEOUT))
    except ValueError:
        value = _DEFAULT_TIMEOUT
    return value if value > 0 else _DEFAULT_TIMEOUT


def open_source(spec: str, what: Optional[str] = None) -> BinaryIO:
    """A binary stream of an allowed source (call :func:`check_source` first): a local file,
    an ``http(s)`` response (urllib, :func:`network_timeout` seconds per connect and read, no
    shell), or, for command-line sources, the ``webdataset`` library's program pipes. Network
    failures and timeouts are an :class:`OSError` naming the URL."""
    kind = source_kind(spec)
    if kind == "local":
        return open(spec[len("file://"):] if spec.startswith("file://") else spec, "rb")
    if kind == "url":
        timeout = network_timeout()
        try:
            return urllib.request.urlopen(urllib.request.Request(spec, headers={"User-Agent": "rdfer"}),
                                          timeout=timeout)
        except urllib.error.HTTPError as err:
            raise OSError(f"{spec}: HTTP {err.code} {err.reason}") from None
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            if isinstance(reason, TimeoutError) or "timed out" in str(reason):
                raise TimeoutError(f"{spec}: no answer from the server within {timeout:g} s "
                                   f"(RDFER_NETWORK_TIMEOUT sets the limit)") from None
            raise OSError(f"{spec}: cannot fetch: {reason}") from None
    from webdataset.gopen import gopen

    return gopen(spec, "rb")


def read_source(spec: str, limit: int = MAX_INDEX_BYTES) -> bytes:
    """The whole content of an allowed source (an index file), at most ``limit`` bytes (more is
    a :class:`SourceError`: an endless stream never fills the memory); a read that stalls past
    :func:`network_timeout` is a :class:`TimeoutError` naming the URL."""
    import socket

    with open_source(spec) as stream:
        try:
            data = stream.read(limit + 1)
        except socket.timeout:
            raise TimeoutError(f"{spec}: the server stopped answering for {network_timeout():g} s "
                               f"(RDFER_NETWORK_TIMEOUT sets the limit)") from None
    if len(data) > limit:
        raise SourceError(f"{spec}: more than {limit:,} bytes, larger than a shard index may be "
                          f"(one record a video: about 10 million videos)")
    return data
