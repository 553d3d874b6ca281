"""The config reference: every key documented, docs/CONFIG.md current, `rehearse config show`."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from cluster.cli import main
from cluster.config import ExperimentConfig, reference_markdown
from core.configdoc import entries, field_docs

ROOT = Path(__file__).resolve().parents[2]


def test_every_key_has_its_meaning_written_down() -> None:
    es = entries(ExperimentConfig())
    assert len(es) > 200
    assert [e.key for e in es if not e.doc] == []


def test_docs_config_md_is_current() -> None:
    page = (ROOT / "docs" / "CONFIG.md").read_text()
    assert page == reference_markdown(), "run: rehearse config docs --out docs/CONFIG.md"


def test_field_docs_reads_google_style_attributes() -> None:
    @dataclasses.dataclass
    class Section:
        """A section.

        Attributes:
            a, b: two keys
                with one text.
            c / d: two more.
            e: a text that says f: g, which is not a key.
        Returns:
            nothing (the section ended).
        """

        a: int = 0
        b: int = 0
        c: int = 0
        d: int = 0
        e: int = 0

    docs = field_docs(Section)
    assert docs["a"] == docs["b"] == "two keys with one text."
    assert docs["c"] == docs["d"] == "two more."
    assert docs["e"] == "a text that says f: g, which is not a key."


def test_config_show_prints_every_key_with_its_value_and_default(capsys) -> None:
    assert main(["config", "show", "--set", "learner.lr_lora=5e-5"]) == 0
    out = capsys.readouterr().out
    for e in entries(ExperimentConfig()):
        assert f"\n{e.key}: " in "\n" + out, e.key
    assert "learner.lr_lora: 5.0e-05    (default 0.0001)" in out


def test_config_docs_check_and_bad_arguments(tmp_path, capsys) -> None:
    stale = tmp_path / "CONFIG.md"
    stale.write_text("old")
    assert main(["config", "docs", "--out", str(stale), "--check"]) == 1
    assert stale.read_text() == "old"  # --check never writes
    assert main(["config", "docs", "--out", str(stale)]) == 0
    assert main(["config", "docs", "--out", str(stale), "--check"]) == 0
    assert main(["config", "show", "--check"]) == 2
    assert "belong to 'rehearse config docs'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["config", "list"])
