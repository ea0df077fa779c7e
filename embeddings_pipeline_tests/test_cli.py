"""The command line, run in-process with click's runner against the test database and the real model."""

from __future__ import annotations

import json
from pathlib import Path

from embeddings_pipeline.cli import main


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
        "documents_not_chunked",
        "document_errors",
        "last_success_at",
        "last_success_run_id",
        "seconds_since_success",
    }
    assert row["tenant"] == "acme" and row["documents"] == 3
    assert row["last_success_run_id"] and 0 <= row["seconds_since_success"] < 600
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


def test_search_output_names_score_chunk_model_and_refuses_an_empty_query(cli, tmp_path):
    root = _notes(tmp_path)
    cli("ingest", str(root), "--tenant", "acme")
    cli("materialize", "--tenant", "acme")
    for blank in ("", "   "):
        refused = cli("search", blank, "--tenant", "acme", ok=False)
        assert refused.exit_code == 2 and "QUERY is empty" in refused.output
    hits = json.loads(cli("search", "fire drill exit", "--tenant", "acme", "--json").output)
    assert hits["mode"] == "hybrid" and hits["score"] == "RRF" and hits["model_key"]
    for mode, header in (("dense", "cosine"), ("text", "BM25"), ("hybrid", "RRF")):
        args = ("search", "fire drill exit", "--tenant", "acme", "--mode", mode)
        first = json.loads(cli(*args, "--json").output)["hits"][0]
        out = cli(*args).output
        assert header in out.splitlines()[2], out  # the score column's header names the score
        assert first["chunk_id"] in out and f"{mode} search, model {hits['model_key']}" in out
        assert (f"run {first['run_id']}" in out) == bool(first["run_id"]), out  # text hits know no run


def test_cut_at_word_and_tables_keep_whole_ids_off_a_terminal(cli, tmp_path):
    from embeddings_pipeline.cli.search import cut_at_word

    assert cut_at_word("alpha beta gamma", 11) == "alpha beta…"
    assert cut_at_word("alpha  beta\n gamma", 100) == "alpha beta gamma"
    assert cut_at_word("x" * 30, 10) == "x" * 9 + "…"
    long_id = "deeply/nested/" * 12 + "document-with-a-very-long-name.md"
    folder = tmp_path / "long"
    (folder / long_id).parent.mkdir(parents=True)
    (folder / long_id).write_text("# Long\n\nA document far down.\n")
    cli("ingest", str(folder), "--tenant", "team[redacted]")
    table = cli("documents", "list", "--tenant", "team[redacted]").output
    assert long_id in table and "team[redacted]" in table  # whole, and no rich markup swallowed


def test_version_and_help_with_examples(cli):
    import click

    assert cli("--version").output.strip() == "embeddings-pipeline, version 0.1.0"

    def walk(command, path):
        yield command, path
        for name, sub in getattr(command, "commands", {}).items():
            yield from walk(sub, [*path, name])

    for command, path in walk(main, []):
        assert (command.help or "").strip(), f"{path} has no help"
        assert "..." not in click.testing.CliRunner().invoke(main, [*path, "--help"]).output.split("\n\n")[1][-4:]
    for path in (["ingest"], ["search"], ["materialize"], ["status"], ["tenants", "delete"]):
        assert "Examples:" in cli(*path, "--help").output, path


def test_bad_configuration_is_one_line_not_a_traceback(cli, monkeypatch, tmp_path):
    monkeypatch.setenv("EMBEDDINGS_SCHEMA", "Bad-Schema")
    result = cli("status", ok=False)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.strip() == (
        "Error: EMBEDDINGS_SCHEMA='Bad-Schema' is not a plain SQL identifier ([a-z_][a-z0-9_]*, at most 63 chars)"
    )
    monkeypatch.undo()


def test_bad_source_relation_is_one_line(cli, monkeypatch):
    monkeypatch.setenv("EMBEDDINGS_SOURCE_RELATION", "a.b.c")
    result = cli("status", ok=False)
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1
    assert "EMBEDDINGS_SOURCE_RELATION='a.b.c' is not `name` or `schema.name`" in result.output


def test_a_refused_provider_key_is_one_clear_line(cli, monkeypatch, tmp_path):
    from .standin_server import StandinServer

    root = _notes(tmp_path)
    cli("ingest", str(root), "--tenant", "acme")
    with StandinServer(dims=8, api_key="sk-right-key", leaky_errors=True) as srv:
        monkeypatch.setenv("OPENAI_BASE_URL", srv.openai_url)
        monkeypatch.setenv("ACME_KEY", "sk-wrong-SECRETVALUE-0a1b")
        cli("tenants", "set", "acme", "--model", "openai:text-embedding-3-small", "--key-env", "ACME_KEY")
        refused = cli("search", "fire", "--tenant", "acme", "--mode", "dense", ok=False)
        monkeypatch.setenv("OPENAI_BASE_URL", srv.url)  # no /v1: a 404 whose message echoes the key, redacted
        echoed = cli("search", "fire", "--tenant", "acme", "--mode", "dense", ok=False)
        status = cli("status")  # the model cannot be reached: status says so and goes on
    assert "model unavailable" in status.stderr and "Bearer [redacted]" in status.stderr
    for result, status in ((refused, "HTTP 401"), (echoed, "HTTP 404")):
        assert result.exit_code == 1 and "Traceback" not in result.output, result.output
        (line,) = result.output.strip().splitlines()
        assert line.startswith("Error: embedding provider: ") and status in line and "SECRETVALUE" not in line
    assert "the API key in environment variable ACME_KEY was refused" in refused.output
    assert "Bearer [redacted]" in echoed.output  # not eaten as rich markup


def test_db_commands_answer_json(conn, schema, cli):
    from embeddings_pipeline.store.migrations import LATEST_VERSION

    migrated = json.loads(cli("db", "migrate", "--json").output)
    assert migrated == {"schema": schema, "applied": [], "version": LATEST_VERSION}  # the fixture migrated it
    url = json.loads(cli("db", "url", "--json").output)
    assert url["embedded"] is False and url["url"]  # the tests point EMBEDDINGS_DATABASE_URL at their server

