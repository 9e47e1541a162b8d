"""WordNet offline: the NLTK data folder built from Debian's files, lexnames, and the missing-WordNet
error."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import pytest

from alignlab.ambiguity import wordnet as wnmod
from alignlab.core.errors import DependencyError

DEBIAN = Path("/usr/share/wordnet")
MAN_PAGE = Path("/usr/share/man/man5/lexnames.5WN.gz")


def test_lexnames_has_45_numbered_lines_with_pos_numbers():
    lines = wnmod.lexnames_text().splitlines()
    assert len(lines) == 45
    for i, line in enumerate(lines):
        num, name, pos = line.split("\t")
        assert int(num) == i
        assert pos == {"adj": "3", "adv": "4", "noun": "1", "verb": "2"}[name.split(".")[0]]
    assert lines[18].split("\t")[1] == "noun.person"  # no trailing spaces (the man page has some)


@pytest.mark.skipif(not MAN_PAGE.is_file(), reason="WordNet man pages not installed")
def test_lexnames_match_the_lexnames_man_page():
    text = gzip.decompress(MAN_PAGE.read_bytes()).decode("latin-1")
    found = re.findall(r"^(\d\d)\t(\S+)\s*\t", text, flags=re.M)
    assert [name for _, name in found] == [name for name, _ in wnmod.LEXNAMES]


@pytest.mark.skipif(not (DEBIAN / "index.sense").is_file(), reason="Debian WordNet files not installed")
def test_build_copies_real_files_and_reuses_a_complete_folder(tmp_path):
    root = wnmod.build_nltk_data(DEBIAN, tmp_path / "nltk_data")
    folder = root / "corpora" / "wordnet"
    for name in (*wnmod.REQUIRED_FILES, "lexnames"):
        assert (folder / name).is_file() and not (folder / name).is_symlink(), name
    assert (folder / "index.sense").stat().st_size == (DEBIAN / "index.sense").stat().st_size
    assert (folder / "lexnames").read_text() == wnmod.lexnames_text()
    stamp = (folder / "data.noun").stat().st_mtime_ns
    assert wnmod.build_nltk_data(DEBIAN, tmp_path / "nltk_data") == root
    assert (folder / "data.noun").stat().st_mtime_ns == stamp  # not rebuilt
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".wordnet.")]  # no temp folders left


def test_build_from_incomplete_files_names_both_install_routes(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "data.noun").write_text("x")
    with pytest.raises(DependencyError) as e:
        wnmod.build_nltk_data(tmp_path / "src", tmp_path / "out")
    msg = str(e.value)
    assert "index.sense" in msg and "nltk.download('wordnet')" in msg
    assert "apt-get install wordnet-base wordnet-sense-index" in msg
    assert not (tmp_path / "out" / "corpora" / "wordnet").exists()


def test_missing_wordnet_everywhere_is_a_dependency_error(tmp_path, monkeypatch):
    import nltk

    monkeypatch.setattr(nltk.data, "path", [str(tmp_path / "no-nltk-data")])
    monkeypatch.setenv("ALIGNLAB_WORDNET_DIR", str(tmp_path / "no-debian"))
    cached = wnmod._reader
    with pytest.raises(DependencyError) as e:
        wnmod.get_wordnet(refresh=True)
    msg = str(e.value)
    assert (
        "WordNet 3.0 not found" in msg and "nltk.download('wordnet')" in msg and "wordnet-sense-index" in msg
    )
    assert wnmod._reader is cached  # a failed reload leaves the loaded reader alone
    assert not wnmod.wordnet_available() or cached is not None


def test_reader_knows_the_shapesworld_senses(wn):
    from alignlab.data.shapes import SENSES

    for synset in SENSES:  # every sense ShapesWorld draws is a real WordNet 3.0 noun synset
        assert wn.synset(synset).pos() == "n"
    names = [s.name() for s in wnmod.synsets_of(wn, "bats")]
    assert names[0] == "bat.n.01" and "bat.n.05" in names
    assert wnmod.synsets_of(wn, "qwzxv") == []
    assert wnmod.get_wordnet() is wn  # loaded once, then cached
