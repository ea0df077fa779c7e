"""`ingest DIR --materialize`: one process that ingests, then launches a Dagster run only when the run would change
something. A no-op launches no run and embeds nothing; an edit re-embeds only the changed chunks; a removed file
loses its chunks; a vector lost behind the pipeline's back is noticed and re-embedded."""

from __future__ import annotations

import json
from pathlib import Path

from psycopg import sql

from embeddings_pipeline.cli.runner import local_instance
from embeddings_pipeline.store.models import vector_table_of
from embeddings_pipeline.store.tenants import tenant_settings

DOCS = {
    "pumps.md": "# Pumps\n\nStation 7 runs the XJ-9000 impeller.\n\nSeals are replaced every spring.\n\n"
    "The night shift logs pressure hourly.\n",
    "dock.md": "# Dock\n\nThe loading dock opens at six.\n\nForklifts charge overnight in bay three.\n",
    "story.txt": "The lighthouse keeper wakes before dawn.\n\nA storm rolls in over the harbour.",
}


def _folder(root: Path) -> Path:
    root.mkdir()
    for name, body in DOCS.items():
        (root / name).write_text(body)
    return root


def _sync(cli, folder: Path) -> dict:
    return json.loads(cli("ingest", str(folder), "--tenant", "acme", "--materialize", "--json").stdout)


def _runs() -> int:
    return len(local_instance().get_runs())


def _status(cli) -> dict:
    return json.loads(cli("status", "--tenant", "acme", "--json").stdout)["tenants"][0]


def test_a_noop_launches_no_dagster_run_and_embeds_nothing(cli, tmp_path):
    folder = _folder(tmp_path / "notes")
    first = _sync(cli, folder)
    assert first["inserted"] == 3 and first["run"]["success"] and first["run"]["reason"] == "documents changed"
    chunks = _status(cli)["chunks"]
    assert first["run"]["embedded"] == chunks > 3
    runs = _runs()

    again = _sync(cli, folder)
    assert (again["inserted"], again["updated"], again["unchanged"], again["deleted"]) == (0, 0, 3, [])
    assert again["run"] is None  # nothing to embed, delete or switch: no run at all
    assert _runs() == runs
    out = cli("ingest", str(folder), "--tenant", "acme", "--materialize").stdout
    assert "up to date, no run needed" in out and _runs() == runs
    assert _status(cli)["missing"] == 0


def test_an_edit_re_embeds_only_its_chunks_and_a_removed_file_loses_them(cli, tmp_path):
    folder = _folder(tmp_path / "notes")
    _sync(cli, folder)
    before = _status(cli)
    (folder / "pumps.md").write_text(DOCS["pumps.md"].replace("every spring", "every autumn"))
    edited = _sync(cli, folder)
    assert edited["updated"] == 1 and edited["unchanged"] == 2
    assert edited["run"]["embedded"] == 1  # the one paragraph that changed; its neighbours keep their vectors
    assert _status(cli)["chunks"] == before["chunks"]

    (folder / "dock.md").unlink()
    runs = _runs()
    removed = _sync(cli, folder)
    # only a removal: its blocks, chunks and vectors go at once, in the ingesting process, with no Dagster run
    assert removed["deleted"] == ["dock.md"] and removed["run"] is None and _runs() == runs
    after = _status(cli)
    gone = before["chunks"] - after["chunks"]
    blocks_gone = before["blocks"] - after["blocks"]
    assert gone > 0 and removed["removed"] == {"documents": 1, "blocks": blocks_gone, "chunks": gone, "vectors": gone}
    assert after["documents"] == 2 and after["vectors"] == after["chunks"] and after["missing"] == 0
    hits = json.loads(cli("search", "forklifts charge", "--tenant", "acme", "--mode", "text", "--json").stdout)
    assert [h for h in hits["hits"] if h["doc_id"] == "dock.md"] == []
    assert _sync(cli, folder)["run"] is None and _runs() == runs


def test_a_removal_with_an_edit_goes_through_one_run(cli, tmp_path):
    folder = _folder(tmp_path / "notes")
    _sync(cli, folder)
    (folder / "dock.md").unlink()
    (folder / "story.txt").write_text(DOCS["story.txt"] + "\n\nThe keeper logs the storm.")
    both = _sync(cli, folder)
    assert both["deleted"] == ["dock.md"] and "removed" not in both
    assert both["run"]["success"] and both["run"]["embedded"] == 1 and both["run"]["deleted"] > 0
    after = _status(cli)
    assert after["documents"] == 2 and after["vectors"] == after["chunks"] and after["missing"] == 0


def test_a_vector_lost_behind_the_pipelines_back_makes_the_next_sync_run(cli, conn, schema, tmp_path):
    folder = _folder(tmp_path / "notes")
    _sync(cli, folder)
    key = tenant_settings(conn, schema, "acme").active_model_key
    vt = vector_table_of(conn, schema, key)
    assert vt is not None
    conn.execute(
        sql.SQL("DELETE FROM {} WHERE ctid IN (SELECT ctid FROM {} WHERE tenant_id = 'acme' LIMIT 1)").format(
            sql.Identifier(schema, vt), sql.Identifier(schema, vt)
        )
    )
    conn.commit()
    healed = _sync(cli, folder)
    assert healed["unchanged"] == 3 and healed["run"]["reason"] == "chunks without a current vector"
    assert healed["run"]["embedded"] == 1
    assert _sync(cli, folder)["run"] is None


def test_an_openai_model_can_count_tokens_with_a_local_tokenizer(provider):
    """`openai:NAME?tokenizer=all-MiniLM-L6-v2` (a server running that very model, e.g. `embeddings-pipeline serve`)
    splits with the model's own tokenizer, so it reads the same chunk set as the in-process model, never more
    tokens than the server accepts."""
    from embeddings_pipeline.pipeline.model_change import chunk_set_for
    from embeddings_pipeline.providers import load_provider

    remote = load_provider("openai:all-MiniLM-L6-v2?dimensions=384&max_tokens=256&tokenizer=all-MiniLM-L6-v2")
    text = "Pseudomonas aeruginosa PAO1 (ΔlasR) biofilms at 37°C."
    assert remote.tokenizer.count(text) == provider.tokenizer.count(text) > len(text.split())
    assert chunk_set_for(remote) == chunk_set_for(provider)
    plain = load_provider("openai:all-MiniLM-L6-v2?dimensions=384&max_tokens=256")
    assert plain.tokenizer.count(text) == len(text.split())  # the approximate whitespace count, as before


def test_materialize_all_runs_only_the_tenants_with_work(cli, tmp_path):
    """`materialize --all` over many tenants, most idle, starts a run only for those a run would change."""
    folder = _folder(tmp_path / "notes")
    for tenant in ("acme", "globex"):
        assert cli("ingest", str(folder), "--tenant", tenant).exit_code == 0
    runs = _runs()
    first = cli("materialize", "--all")
    assert first.exit_code == 0, first.output
    assert _runs() == runs + 2  # both were new
    (folder / "dock.md").write_text("# Dock\n\nThe loading dock now opens at seven.\n")
    assert cli("ingest", str(folder), "--tenant", "globex").exit_code == 0
    second = cli("materialize", "--all")
    assert second.exit_code == 0, second.output
    assert "1 of 2 tenants up to date: no run for them" in second.output
    assert _runs() == runs + 3 and local_instance().get_runs(limit=1)[0].tags["dagster/partition"] == "globex"
    third = cli("materialize", "--all")
    assert "2 of 2 tenants up to date" in third.output and _runs() == runs + 3
