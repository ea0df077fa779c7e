"""Side by side with CocoIndex on the same documents, model folder and embedded PostgreSQL, in fresh processes.

    .venv/bin/pip install -e '.[bench]'        # cocoindex (optional extra, never a runtime dependency)
    .venv/bin/python bench/peer.py [--n 1500] [--rounds 3] [--edit 10] [--delete 5]

The first `--n` SciFact documents are written as markdown files (`# title`, blank line, abstract). Each round
indexes a fresh copy on each side, then: nothing changed (no-op), `--edit` files changed (a sentence appended),
`--delete` files removed. Every step is one fresh process per side, ours and theirs interleaved (the side that
goes first alternates by round, so the machine's drift is shared alike):

- **ours**: `embeddings-pipeline ingest DIR --tenant T --materialize --json` (one process: ingest, then a Dagster
  run only if something is left to do), with `embeddings-pipeline serve` warm and the tenant embedding through
  its OpenAI-compatible `/v1/embeddings` (`openai:` provider, the bundled model's tokenizer), so no run loads
  the model;
- **theirs**: CocoIndex's idiomatic flow: `localfs.walk_dir` -> `RecursiveSplitter` (markdown) ->
  `SentenceTransformerEmbedder` on the same local model folder -> its Postgres target with an HNSW index
  (`declare_vector_index`), on the same embedded PostgreSQL (schema `coco`), internal state in its LMDB folder,
  `COCOINDEX_DISABLE_USAGE_TRACKING=1`; the model is loaded by the process when something is to embed.

Per step and side: wall seconds, CPU seconds (ours: the CLI process plus what the service spent meanwhile),
texts sent to the model, peak RSS of the process; after a delete, the rows left of the deleted files (must be 0).
Ratios are ours/theirs in the same round. One JSON object is printed (`--out` writes it too).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATASET = ROOT.parent / "shared" / "datasets" / "scifact"
STEPS = ("full", "noop", "edit", "delete")
SERVICE_TENANT = "peer-service"  # the service embeds with this tenant's model: the bundled one, in process
KEY_ENV = "PEER_SERVICE_TOKEN"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_coco":
        return coco_update(sys.argv[2:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1500, help="documents")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--edit", type=int, default=10, help="files changed in the edit step")
    ap.add_argument("--delete", type=int, default=5, help="files removed in the delete step")
    ap.add_argument("--chunk-size", type=int, default=1000, help="CocoIndex RecursiveSplitter chunk size (chars)")
    ap.add_argument("--chunk-overlap", type=int, default=200)
    ap.add_argument("--dataset", type=Path, default=DATASET)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="bench-peer-"))
    os.environ.update({"EMBEDDINGS_HOME": str(home), "DAGSTER_HOME": str(home / "dagster"),
                       "EMBEDDINGS_SCHEMA": "peer", "EMBEDDINGS_RATE_LIMIT": "0"})  # fmt: skip
    for name in ("EMBEDDINGS_SERVICE_URL", "EMBEDDINGS_MODEL", "EMBEDDINGS_DATABASE_URL"):
        os.environ.pop(name, None)
    sys.path.insert(0, str(ROOT))
    from embeddings_pipeline.store.server import start_embedded, stop_embedded

    os.environ["EMBEDDINGS_DATABASE_URL"] = start_embedded(home)
    try:
        result = run(args, home)
        text = json.dumps(result, indent=2)
        print(text)
        if args.out:
            args.out.write_text(text + "\n")
    finally:
        stop_embedded(home)
        shutil.rmtree(home, ignore_errors=True)


def write_corpus(dataset: Path, n: int, folder: Path) -> list[str]:
    """The first N documents of the BEIR corpus as markdown files; returns their file names."""
    folder.mkdir(parents=True)
    names = []
    with open(dataset / "corpus.jsonl") as fh:
        for line in fh:
            if len(names) == n:
                break
            row = json.loads(line)
            name = f"{row['_id']}.md"
            (folder / name).write_text(f"# {row['title'].strip()}\n\n{row['text'].strip()}\n")
            names.append(name)
    return names


def run(args: argparse.Namespace, home: Path) -> dict[str, object]:
    from embeddings_pipeline.providers.sentence_transformers import resolve_model_dir
    from embeddings_pipeline.store.session import Database
    from embeddings_pipeline.store.tenants import update_tenant
    from embeddings_pipeline.store.tokens import create_token

    corpus = home / "corpus"
    names = write_corpus(args.dataset, args.n, corpus)
    model_dir = resolve_model_dir("all-MiniLM-L6-v2")
    database = Database()
    with database.connect() as conn:
        update_tenant(conn, database.schema, SERVICE_TENANT)
        token = create_token(conn, database.schema, SERVICE_TENANT)[1]
    from serve import serving  # bench/serve.py: `serve` on a free port until /ready

    service = serving()
    with service as url:
        service_pid = service.proc.pid
        os.environ.update({"OPENAI_BASE_URL": f"{url}/v1", KEY_ENV: token})
        spec = f"openai:all-MiniLM-L6-v2?dimensions=384&max_tokens=256&tokenizer={model_dir}"
        rounds = []
        for r in range(args.rounds):
            tenant = f"ours-{r}"
            with database.connect() as conn:
                update_tenant(conn, database.schema, tenant, model=spec, key_env=KEY_ENV)
            ours_dir, theirs_dir = home / f"ours-{r}", home / f"theirs-{r}"
            shutil.copytree(corpus, ours_dir)
            shutil.copytree(corpus, theirs_dir)
            ours = Ours(tenant, ours_dir, service_pid, database)
            theirs = Theirs(f"docs_{r}", theirs_dir, home / f"coco-{r}", model_dir, args)
            edited = names[r * args.edit : (r + 1) * args.edit]
            deleted = names[-(r + 1) * args.delete :][: args.delete]
            steps: dict[str, dict[str, object]] = {}
            for step in STEPS:
                if step == "edit":
                    for folder in (ours_dir, theirs_dir):
                        edit_files(folder, edited, r)
                if step == "delete":
                    for folder in (ours_dir, theirs_dir):
                        for name in deleted:
                            (folder / name).unlink()
                order = (ours, theirs) if r % 2 == 0 else (theirs, ours)
                got = {side.name: side.step() for side in order}
                if step == "delete":
                    got["ours"]["left_of_deleted"] = ours.rows_of(deleted)
                    got["theirs"]["left_of_deleted"] = theirs.rows_of(deleted)
                got["ratio"] = ratios(got["ours"], got["theirs"])
                steps[step] = got
                print(f"round {r} {step}: {json.dumps(got)}", file=sys.stderr, flush=True)
            steps["tokens_full"] = {"ours": ours.tokens(), "theirs": theirs.tokens()}
            rounds.append(steps)
        service_rss_kb = peak_rss_kb_of(service_pid)
    return {"documents": len(names), "rounds": rounds, "median_ratio": medians(rounds),
            "service_peak_rss_mb": round(service_rss_kb / 1024, 1) if service_rss_kb else None,
            "cpus": os.cpu_count(), "model": str(model_dir), "ours_spec": spec,
            "theirs_splitter": {"chunk_size": args.chunk_size, "chunk_overlap": args.chunk_overlap}}  # fmt: skip


def edit_files(folder: Path, names: list[str], r: int) -> None:
    for name in names:
        path = folder / name
        path.write_text(path.read_text().rstrip("\n") + f" This abstract was revised in round {r}.\n")


def ratios(ours: dict[str, object], theirs: dict[str, object]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for key in ("wall_s", "cpu_s", "texts", "peak_rss_mb"):
        a, b = ours.get(key), theirs.get(key)
        out[key] = round(float(a) / float(b), 2) if isinstance(a, int | float) and b else None  # type: ignore[arg-type]
    return out


def medians(rounds: list[dict[str, dict[str, object]]]) -> dict[str, dict[str, float]]:
    out = {}
    for step in STEPS:
        out[step] = {}
        for key in ("wall_s", "cpu_s"):
            values = [r[step]["ratio"][key] for r in rounds if r[step]["ratio"][key] is not None]  # type: ignore[index]
            if values:
                out[step][key] = round(statistics.median(values), 2)
    return out


# --- measuring one fresh process ------------------------------------------------------------------------------------


class Rusage:
    """Wall and CPU seconds and peak RSS of one child process.

    The peak RSS is GNU time's `%M` when /usr/bin/time exists: Linux records a process's peak RSS across exec, so a
    child forked straight from this (larger) process would report at least this process's own peak."""

    TIME = Path("/usr/bin/time")

    @classmethod
    def run(cls, cmd: list[str], env: dict[str, str] | None = None) -> tuple[dict[str, float], str]:
        t0 = time.perf_counter()
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err, \
                tempfile.NamedTemporaryFile("r") as peak:  # fmt: skip
            wrapped = [str(cls.TIME), "-f", "%M", "-o", peak.name, *cmd] if cls.TIME.exists() else cmd
            proc = subprocess.Popen(wrapped, env=env, stdout=out, stderr=err, text=True)
            _, status, usage = os.wait4(proc.pid, 0)  # CPU: the child's and its reaped children's
            proc.returncode = os.waitstatus_to_exitcode(status)
            wall = time.perf_counter() - t0
            out.seek(0)
            err.seek(0)
            stdout, stderr = out.read(), err.read()
            measured = peak.read().split()
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd[:4])} ... failed ({proc.returncode}):\n{stderr[-3000:]}")
        peak_kb = int(measured[-1]) if measured and measured[-1].isdigit() else usage.ru_maxrss
        return {"wall_s": round(wall, 2), "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
                "peak_rss_mb": round(peak_kb / 1024, 1)}, stdout  # fmt: skip


def cpu_seconds_of(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_kb_of(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


# --- our side -------------------------------------------------------------------------------------------------------


class Ours:
    name = "ours"

    def __init__(self, tenant: str, folder: Path, service_pid: int, database) -> None:
        self.tenant, self.folder, self.service_pid, self.database = tenant, folder, service_pid, database
        self.cli = str(Path(sys.executable).with_name("embeddings-pipeline"))

    def step(self) -> dict[str, object]:
        before = cpu_seconds_of(self.service_pid)
        got, out = Rusage.run([self.cli, "ingest", str(self.folder), "--tenant", self.tenant, "--materialize",
                               "--json"])  # fmt: skip
        service_cpu = cpu_seconds_of(self.service_pid) - before
        answer = json.loads(out)
        run = answer.get("run")
        got["cpu_s"] = round(got["cpu_s"] + service_cpu, 2)
        got["service_cpu_s"] = round(service_cpu, 2)
        got["texts"] = int(run["embedded"]) if run else 0
        got["dagster_run"] = bool(run)
        got["documents"] = {k: answer[k] if isinstance(answer[k], int) else len(answer[k])
                            for k in ("inserted", "updated", "unchanged", "deleted")}  # fmt: skip
        return got

    def rows_of(self, names: list[str]) -> int:
        """Live documents, blocks and chunks of the deleted files still held for the tenant."""
        from psycopg import sql

        with self.database.connect() as conn:
            s = self.database.schema
            q = sql.SQL(
                "SELECT (SELECT count(*) FROM {d} WHERE tenant_id = %(t)s AND doc_id = ANY(%(ids)s) "
                "AND deleted_at IS NULL) + (SELECT count(*) FROM {c} WHERE tenant_id = %(t)s "
                "AND doc_id = ANY(%(ids)s))"
            ).format(d=sql.Identifier(s, "documents"), c=sql.Identifier(s, "chunks"))
            return int(conn.execute(q, {"t": self.tenant, "ids": names}).fetchone()[0])

    def tokens(self) -> dict[str, int]:
        from psycopg import sql

        with self.database.connect() as conn:
            q = sql.SQL("SELECT count(*), sum(least(token_count, 256)) FROM {} WHERE tenant_id = %s").format(
                sql.Identifier(self.database.schema, "chunks")
            )
            n, tokens = conn.execute(q, (self.tenant,)).fetchone()
        return {"chunks": int(n), "model_tokens": int(tokens or 0)}


class Theirs:
    name = "theirs"

    def __init__(self, table: str, folder: Path, state: Path, model_dir: Path, args: argparse.Namespace) -> None:
        self.table, self.folder, self.state, self.model_dir, self.args = table, folder, state, model_dir, args
        self.url = asyncpg_url(os.environ["EMBEDDINGS_DATABASE_URL"])

    def step(self) -> dict[str, object]:
        env = {**os.environ, "COCOINDEX_DB": str(self.state), "COCOINDEX_DISABLE_USAGE_TRACKING": "1",
               "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}  # fmt: skip
        cmd = [sys.executable, "-P", __file__, "_coco", str(self.folder), self.table, str(self.model_dir), self.url,
               str(self.args.chunk_size), str(self.args.chunk_overlap)]  # fmt: skip
        got, out = Rusage.run(cmd, env)
        got["texts"] = json.loads(out.strip().splitlines()[-1])["texts"]
        return got

    def _rows(self, query: str, *params: object) -> list[tuple]:
        """QUERY with {table} standing for CocoIndex's table (a quoted identifier)."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(os.environ["EMBEDDINGS_DATABASE_URL"]) as conn:
            return conn.execute(sql.SQL(query).format(table=sql.Identifier("coco", self.table)), params).fetchall()

    def rows_of(self, names: list[str]) -> int:
        paths = [str(self.folder / name) for name in names]  # CocoIndex keeps the file's path as walked
        return int(self._rows("SELECT count(*) FROM {table} WHERE filename = ANY(%s)", paths)[0][0])

    def tokens(self) -> dict[str, int]:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(self.model_dir / "tokenizer.json"))
        tok.no_truncation()
        tok.no_padding()
        texts = [r[0] for r in self._rows("SELECT text FROM {table}")]
        return {"chunks": len(texts), "model_tokens": sum(min(len(e.ids), 256) for e in tok.encode_batch(texts))}


def asyncpg_url(url: str) -> str:
    """The embedded server's libpq URL (`postgresql://postgres:@/postgres?host=DIR`) as asyncpg reads it."""
    return url.replace("postgres:@", "postgres@", 1)


def coco_update(argv: list[str]) -> None:
    """One CocoIndex update of FOLDER into coco.TABLE (a fresh process); prints {"texts": N} last."""
    import pathlib
    from collections.abc import AsyncIterator
    from dataclasses import make_dataclass
    from typing import Annotated

    import asyncpg
    import cocoindex as coco
    from cocoindex.connectors import localfs, postgres
    from cocoindex.ops.sentence_transformers import SentenceTransformerEmbedder
    from cocoindex.ops.text import RecursiveSplitter
    from cocoindex.resources.chunk import Chunk
    from cocoindex.resources.file import FileLike, PatternFilePathMatcher
    from cocoindex.resources.id import IdGenerator
    from numpy.typing import NDArray

    folder, table_name, model_dir, url, chunk_size, chunk_overlap = argv
    sent = [0]
    pg_db = coco.ContextKey[asyncpg.Pool]("peer_db")
    embedder_key = coco.ContextKey[SentenceTransformerEmbedder]("embedder", detect_change=True)
    splitter = RecursiveSplitter()

    @coco.lifespan
    async def lifespan(builder: coco.EnvironmentBuilder) -> AsyncIterator[None]:
        async with asyncpg.create_pool(url) as pool:
            builder.provide(pg_db, pool)
            builder.provide(embedder_key, SentenceTransformerEmbedder(model_dir, device="cpu"))
            yield

    # built with real types, not this module's postponed annotations, so CocoIndex can read them
    DocEmbedding = make_dataclass("DocEmbedding", [
        ("id", int), ("filename", str), ("chunk_start", int), ("chunk_end", int), ("text", str),
        ("embedding", Annotated[NDArray, embedder_key]),
    ])  # fmt: skip

    @coco.fn
    async def process_chunk(chunk: Chunk, filename: pathlib.PurePath, id_gen: IdGenerator,
                            table: postgres.TableTarget[DocEmbedding]) -> None:  # fmt: skip
        sent[0] += 1
        table.declare_row(row=DocEmbedding(
            id=await id_gen.next_id(chunk.text), filename=str(filename), chunk_start=chunk.start.char_offset,
            chunk_end=chunk.end.char_offset, text=chunk.text,
            embedding=await coco.use_context(embedder_key).embed(chunk.text),
        ))  # fmt: skip

    @coco.fn(memo=True)
    async def process_file(file: FileLike, table: postgres.TableTarget[DocEmbedding]) -> None:
        text = await file.read_text()
        chunks = splitter.split(text, chunk_size=int(chunk_size), chunk_overlap=int(chunk_overlap),
                                language="markdown")  # fmt: skip
        await coco.map(process_chunk, chunks, file.file_path.path, IdGenerator(), table)

    @coco.fn
    async def app_main(sourcedir: pathlib.Path) -> None:
        table = await postgres.mount_table_target(
            pg_db, table_name=table_name,
            table_schema=await postgres.TableSchema.from_class(DocEmbedding, primary_key=["id"]),
            pg_schema_name="coco",
        )  # fmt: skip
        table.declare_vector_index(column="embedding", method="hnsw")
        files = localfs.walk_dir(sourcedir, recursive=True,
                                 path_matcher=PatternFilePathMatcher(included_patterns=["**/*.md"]))  # fmt: skip
        await coco.mount_each(process_file, files.items(), table)

    app = coco.App(coco.AppConfig(name=f"Peer_{table_name}"), app_main, sourcedir=pathlib.Path(folder))
    app.update_blocking()
    print(json.dumps({"texts": sent[0]}))


if __name__ == "__main__":
    main()
