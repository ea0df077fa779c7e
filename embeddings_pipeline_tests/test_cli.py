"""The command line, run in-process with click's runner against the test database and the real model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from embeddings_pipeline.cli import main


@pytest.fixture()
def cli(schema):
    runner = CliRunner()

    def run(*args: str, ok: bool = True):
        result = runner.invoke(main, list(args), catch_exceptions=False)
        if ok:
            assert result.exit_code == 0, result.output
        return result

    return run


def _notes(tmp_path: Path) -> Path:
    root = tmp_path / "notes"
    (root / "runbooks").mkdir(parents=True)
    (root / "intro.md").write_text("# Intro\n\nThe warehouse opens at six.\n\n- docks\n- aisles\n")
    (root / "runbooks" / "fire.md").write_text("# Fire drill\n\nLeave through the east exit and meet at lot B.\n")
    (root / "plain.txt").write_text("Plain text first paragraph.\n\nSecond paragraph.")
    (root / "ignored.bin").write_bytes(b"\x00\x01")
    return root


def test_ingest_materialize_status_search(cli, tmp_path):
    root = _notes(tmp_path)
    out = cli("ingest", str(root), "--tenant", "acme").output
    assert "3 new" in out
    assert "3 unchanged" in cli("ingest", str(root), "--tenant", "acme").output
    (root / "intro.md").write_text("# Intro\n\nThe warehouse opens at seven.\n")
    assert "1 changed" in cli("ingest", str(root), "--tenant", "acme").output

    cli("materialize", "--tenant", "acme")
    status = json.loads(cli("status", "--json").output)
    (row,) = status["tenants"]
    assert set(row) == {
        "tenant",
        "documents",
        "blocks",
        "chunks",
        "vectors",
        "missing",
        "stale",
        "errors",
        "model_key",
        "chunker_version",
    }
    assert row["tenant"] == "acme" and row["documents"] == 3
    assert row["vectors"] == row["chunks"] > 0 and row["missing"] == row["stale"] == row["errors"] == 0

    hits = json.loads(cli("search", "where do we meet during a fire?", "--tenant", "acme", "-k", "2", "--json").output)
    assert hits["hits"][0]["doc_id"] == "runbooks/fire.md"
    assert {"doc_id", "text", "score", "chunk_id", "model_key", "run_id"} <= set(hits["hits"][0])


def test_materialize_requires_tenants_and_rejects_bad_ids(cli):
    assert cli("materialize", ok=False).exit_code != 0
    bad = cli("ingest", ".", "--tenant", "a...b", ok=False)
    assert bad.exit_code == 2 and "'...'" in bad.output


def test_demo_embeds_everything_then_nothing(cli):
    first = cli("demo").output
    assert "embedded" in first and "nothing new" not in first
    second = cli("demo").output
    assert "nothing new to embed" in second
    rows = json.loads(cli("status", "--json").output)["tenants"]
    assert {r["tenant"] for r in rows} == {"acme-robotics", "globex-health", "initech-finance"}
    for r in rows:
        assert r["documents"] >= 3 and r["vectors"] == r["chunks"] > 0 and r["missing"] == 0 and r["stale"] == 0


def _tiny_beir(tmp_path: Path) -> Path:
    root = tmp_path / "beir"
    (root / "qrels").mkdir(parents=True)
    corpus = [
        {"_id": "d1", "title": "Volcanoes", "text": "Lava erupts from volcanoes when magma rises."},
        {"_id": "d2", "title": "Bread", "text": "Yeast makes bread dough rise before baking."},
        {"_id": "d3", "title": "Tides", "text": "The moon's gravity causes ocean tides."},
        {"_id": "d4", "title": "Bees", "text": "Honey bees pollinate flowers and make honey."},
    ]
    (root / "corpus.jsonl").write_text("\n".join(json.dumps(r) for r in corpus) + "\n")
    queries = [
        {"_id": "q1", "text": "what makes bread rise?"},
        {"_id": "q2", "text": "why are there ocean tides?"},
        {"_id": "q3", "text": "unscored query"},
    ]
    (root / "queries.jsonl").write_text("\n".join(json.dumps(q) for q in queries) + "\n")
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td2\t1\nq2\td3\t1\n")
    return root


def test_eval_on_a_beir_folder(cli, tmp_path):
    folder = str(_tiny_beir(tmp_path))
    for mode in ("dense", "text", "hybrid"):
        result = json.loads(cli("eval", folder, "--tenant", "beir", "--mode", mode, "--json").output.splitlines()[-1])
        assert result == {"ndcg_at_10": 1.0, "recall_at_100": 1.0, "queries": 2, "protocol": "mteb", "mode": mode}


def test_tenants_set_and_show(cli):
    cli("tenants", "set", "acme", "--model", "ollama:nomic-embed-text", "--key-env", "ACME_KEY")
    shown = json.loads(cli("tenants", "show", "--json").output)
    (acme,) = shown["tenants"]
    assert (acme["tenant_id"], acme["model"], acme["key_env"]) == ("acme", "ollama:nomic-embed-text", "ACME_KEY")
    assert shown["default_model"] == "sentence-transformers:all-MiniLM-L6-v2"
    # a key pasted where its variable's name belongs is refused, and not stored
    refused = cli("tenants", "set", "acme", "--key-env", "sk-live-abc123/xyz", ok=False)
    assert refused.exit_code == 1 and "NAME of an environment variable" in refused.output
    assert "sk-live" not in cli("tenants", "show", "--json").output
    assert cli("tenants", "set", "acme", "--model", "nosuch:model", ok=False).exit_code == 1
    cli("tenants", "set", "acme", "--model", "")
    assert json.loads(cli("tenants", "show", "--json").output)["tenants"][0]["model"] is None
