"""No credential from the endpoint URL (user info), an Authorization header or an API key reaches any output: not
the exception (nor anything in its cause/context chain), not a log record, not a Dagster event, compute log or run
database, not the CLI's output, not a table. The stand-in server answers 401/400/500/timeouts/resets and, as a
misbehaving gateway would, echoes the Authorization header it received in its error messages."""

from __future__ import annotations

import base64
import logging
import os
import traceback
from pathlib import Path

import dagster as dg
import pytest
from click.testing import CliRunner

from embeddings_pipeline.cli import main
from embeddings_pipeline.pipeline import model_change, steps
from embeddings_pipeline.providers.openai import OpenAICompatibleProvider
from embeddings_pipeline.providers.resilience import CircuitBreaker, ProviderCallError, RetryPolicy
from embeddings_pipeline.retry import causes
from embeddings_pipeline.store.scope import Scope
from embeddings_pipeline.store.tenants import update_tenant

from .helpers import seed
from .standin_server import StandinServer

USER, PASSWORD = "svc-Q9user", "urlpass-S3CRET-71x"
KEY = "sk-live-KEY-S3CRET-c0ffee"
BASIC = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()  # what httpx sends for URL user info
SECRETS = (USER, PASSWORD, KEY, BASIC, f"{USER}:{PASSWORD}")


def base_url(srv: StandinServer, creds: str) -> str:
    """The stand-in's /v1 with user info in it ("url") or without ("key": the key is the only credential)."""
    return srv.openai_url.replace("http://", f"http://{USER}:{PASSWORD}@") if creds == "url" else srv.openai_url


def assert_clean(*texts: object) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in str(text), f"{secret!r} leaked into: {str(text)[:2000]}"


def chain_texts(exc: BaseException) -> list[str]:
    """Everything an exception can show: its formatted traceback (with every chained exception) and the text and
    repr of each exception along __cause__ and __context__."""
    texts = ["".join(traceback.format_exception(exc))]
    for e in causes(exc):
        texts += [str(e), repr(e), str(getattr(e, "args", ""))]
    for e in causes(exc, follow_context=False):
        texts.append(repr(e.__context__))
    return texts


FAULTS = {
    "500": lambda srv: setattr(srv.faults, "error_rate", 1.0),
    "401": lambda srv: setattr(srv, "api_key", "sk-the-key-the-server-wants"),
    "400": lambda srv: setattr(srv, "bad_input", "POISON"),
    "timeout": lambda srv: setattr(srv.faults, "hang", 2.0),
    "reset": lambda srv: setattr(srv.faults, "reset_rate", 1.0),
}


@pytest.mark.parametrize("creds", ["url", "key"])
@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_provider_errors_carry_no_credential(monkeypatch, caplog, creds, fault):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("SECRETS_TEST_KEY", KEY)
    with StandinServer(leaky_errors=True) as srv:
        provider = OpenAICompatibleProvider(
            "text-embedding-3-small",
            base_url=base_url(srv, creds),
            api_key_env="SECRETS_TEST_KEY",
            dimensions=8,
            timeout=0.5,
            policy=RetryPolicy(attempts=2, base_delay=0.01),
            breaker=CircuitBreaker(f"test {fault}"),
        )
        FAULTS[fault](srv)
        with pytest.raises(ProviderCallError) as info:
            provider.embed_documents(["POISON"])
        provider.close()
        sent = [a for a in srv.auth_seen if a]
    assert sent, "the request carried a credential"
    assert_clean(repr(provider), *chain_texts(info.value), caplog.text, *(r.getMessage() for r in caplog.records))
    assert "127.0.0.1" in str(info.value)  # still says where it went wrong


def test_a_failing_materialization_leaks_nothing_to_dagster_the_cli_or_tables(conn, schema, monkeypatch, caplog):
    """Through the CLI on the local instance: the step's error (the provider's probe fails with 500) is stored in
    the run database and the compute logs under DAGSTER_HOME; every file there is searched."""
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("EMBEDDINGS_RETRY_ATTEMPTS", "2")
    monkeypatch.setenv("EMBEDDINGS_RETRY_BASE_DELAY", "0.01")
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with StandinServer(leaky_errors=True) as srv:
        monkeypatch.setenv("OPENAI_BASE_URL", base_url(srv, "url"))
        update_tenant(conn, schema, "acme", model="openai:text-embedding-3-small?dimensions=8")
        seed(conn, schema, "acme", {"a.txt": "The crane in bay two is serviced monthly."}, fmt="text")
        srv.faults.error_rate = 1.0
        result = CliRunner().invoke(main, ["materialize", "--tenant", "acme"], catch_exceptions=False)
        assert srv.faults_injected["500"] > 0
    assert result.exit_code != 0
    assert "500" in result.output or "failed" in result.output

    from embeddings_pipeline.cli.runner import local_instance

    instance = local_instance()
    (run,) = instance.get_runs()
    events = [dg.serialize_value(e) for e in instance.all_logs(run.run_id)]
    assert any("HTTP 500" in e for e in events)  # the failure itself was recorded
    files = [p for p in Path(os.environ["DAGSTER_HOME"]).rglob("*") if p.is_file()]
    assert any(p.suffix == ".db" for p in files)
    stored = {str(p): p.read_bytes().decode("utf-8", "replace") for p in files}
    assert_clean(result.output, caplog.text, *events, *stored.values(), *_all_rows(conn, schema))


def test_embedding_errors_keep_the_reason_without_the_credential(conn, schema, monkeypatch, caplog):
    """Batches that fail after the probe succeeded (500, and a 400 whose message echoes the Authorization header)
    are recorded in embedding_errors: with the server's reason, without any credential."""
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("SECRETS_TEST_KEY", KEY)
    seed(conn, schema, "acme", {"a.txt": "POISON\n\nThe dock door sticks in winter."}, fmt="text")
    scope = Scope(conn, schema, "acme")
    messages: list[str] = []
    with StandinServer(leaky_errors=True, bad_input="POISON") as srv:
        for creds in ("key", "url"):
            provider = OpenAICompatibleProvider(
                "text-embedding-3-small",
                base_url=base_url(srv, creds),
                api_key_env="SECRETS_TEST_KEY",
                dimensions=8,
                policy=RetryPolicy(attempts=2, base_delay=0.01),
                breaker=CircuitBreaker(f"test {creds}"),
            )
            plan = model_change.plan(scope, target=provider)
            steps.build_blocks(scope)
            steps.build_chunks(scope, plan)
            provider.load()  # the probe succeeds
            for error_next in (2, 0):  # first POISON's batch meets a 500 on every attempt, then the server's 400
                srv.faults.error_next = error_next
                with pytest.raises(steps.EmbeddingIncomplete) as info:
                    steps.fill(scope, provider, plan.chunk_set, "run-1", commit_every=1)
                assert_clean(*chain_texts(info.value))
                messages += [r[0] for r in conn.execute(f"SELECT message FROM {schema}.embedding_errors").fetchall()]  # noqa: S608
    assert any("HTTP 500" in m for m in messages) and any("HTTP 400" in m for m in messages)
    for scheme in ("Bearer", "Basic"):  # the echo of each credential arrived, redacted
        assert any(f"(request authorization: {scheme} [redacted])" in m for m in messages)
    assert_clean(caplog.text, *messages, *_all_rows(conn, schema))


def _all_rows(conn, schema) -> list[str]:
    """Every row of every table in the schema, as JSON text."""
    tables = [
        r[0]
        for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s AND table_type = 'BASE TABLE'",
            (schema,),
        ).fetchall()
    ]
    rows = []
    for name in tables:
        rows += [r[0] for r in conn.execute(f'SELECT row_to_json(t)::text FROM "{schema}"."{name}" t').fetchall()]  # noqa: S608
    return rows
