"""Asset checks on `embeddings`: the alerting surface. Per-tenant checks run inside each materialization and are
partitioned by tenant (each result is recorded on its tenant's partition); the sweep runs across all tenants on a
schedule, to catch vectors nulled or deleted behind the pipeline's back, and again after tenant runs."""

from __future__ import annotations

import warnings

import dagster as dg
import psycopg

from ..pipeline.model_change import GateResult
from ..providers.base import ModelIdentity
from ..store import checks as facts
from .partitions import tenant_partitions
from .resources import EmbeddingModel, PipelineStore

ERROR, WARN = dg.AssetCheckSeverity.ERROR, dg.AssetCheckSeverity.WARN


def _tenant_check(name: str, description: str, blocking: bool = False) -> dg.AssetCheckSpec:
    """A check of one tenant partition of `embeddings`: each evaluation records its partition, so the checks tab
    shows every tenant's latest result (a Partitions tab, the Partition column) instead of whichever tenant ran
    last. Partitioned checks are Preview in Dagster 1.13. Its loader of the defs folder silences Dagster's warnings
    while it imports; a direct import of this module would print the PreviewWarning, so that one warning is filtered
    here the way Dagster documents (warnings.filterwarnings on dagster.PreviewWarning), scoped to these specs."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=dg.PreviewWarning)
        return dg.AssetCheckSpec(
            name, asset="embeddings", description=description, blocking=blocking, partitions_def=tenant_partitions
        )


CHECK_SPECS = [
    _tenant_check(
        "no_missing_vectors",
        "Every live chunk has a non-NULL vector for the model (ERROR, blocks downstream).",
        blocking=True,
    ),
    _tenant_check("no_stale_vectors", "Every vector's text hash is its chunk's."),
    _tenant_check("single_model", "All the tenant's vectors come from one model."),
    _tenant_check("vectors_well_formed", "Right dimension, no NaN, no zero vectors, sane norms."),
    _tenant_check("no_truncation", "No chunk is longer than the model reads."),
    _tenant_check(
        "quality_gate",
        "A new model ready to take over ranks the tenant's quality queries no worse than the active one (nDCG@10 "
        "within EMBEDDINGS_QUALITY_MAX_DROP); otherwise search stays on the active model.",
    ),
    _tenant_check(
        "source_rows_valid",
        "Every live source row of the tenant can be parsed (WARN): a row with an unknown format, a NULL body or "
        "updated_at, or a doc_id on several rows is skipped and listed in `document_errors`; the rest of the "
        "tenant is embedded.",
    ),
]


def _result(name: str, finding: facts.Finding, severity: dg.AssetCheckSeverity, tenant: str, **extra: object):
    found = "none" if finding.ok else f"{finding.count} (e.g. {', '.join(map(str, finding.examples[:3]))})"
    return dg.AssetCheckResult(
        check_name=name,
        passed=finding.ok,
        severity=severity,
        metadata={"tenant": tenant, "count": finding.count, "example_chunk_ids": finding.examples, **extra},
        description=_on(tenant, f"{name.replace('_', ' ')}: {found}"),
    )


def _fixed(value: object) -> dg.TextMetadataValue:
    """A figure of the model that never changes between evaluations: text, so the check's plots (and an alert's
    counts) show only what was found."""
    return dg.MetadataValue.text(str(value))


def _on(tenant: str, text: str) -> str:
    """Check results are per tenant partition: the description says which (the checks tab lists them)."""
    return f"tenant {tenant}: {text}"


def evaluate_tenant_checks(
    conn: psycopg.Connection,
    schema: str,
    identity: ModelIdentity,
    tenant: str,
    chunk_set: str,
    failure: str | None = None,
    gate: GateResult | None = None,
) -> list[dg.AssetCheckResult]:
    """The per-tenant checks of the model's chunk set, evaluated on the rows as they are now."""
    keys = facts.model_keys(conn, schema, identity, tenant)
    bad_rows = facts.document_errors(conn, schema, tenant)
    missing_extra = {
        "model_key": identity.model_key,
        "chunker_version": chunk_set,
        "document_errors": bad_rows.count,  # documents skipped before chunking: no chunk of theirs is missing
        **({"run_error": failure} if failure else {}),
    }
    return [
        _result(
            "no_missing_vectors",
            facts.missing_vectors(conn, schema, identity, tenant, chunk_set),
            ERROR,
            tenant,
            **missing_extra,
        ),  # fmt: skip
        _result("no_stale_vectors", facts.stale_vectors(conn, schema, identity, tenant, chunk_set), ERROR, tenant),
        dg.AssetCheckResult(
            check_name="single_model",
            passed=len(keys) <= 1,
            severity=WARN,
            metadata={"tenant": tenant, "model_keys": keys, "expected": identity.model_key},
            description=_on(tenant, f"vectors of {', '.join(keys) or 'no model'} (expected {identity.model_key})"),
        ),
        _result(
            "vectors_well_formed",
            facts.malformed_vectors(conn, schema, identity, tenant),
            ERROR,
            tenant,
            dims=_fixed(identity.dims),
        ),
        _result(
            "no_truncation",
            facts.truncated_chunks(conn, schema, identity, tenant, chunk_set),
            WARN,
            tenant,
            max_tokens=_fixed(identity.max_tokens),
        ),
        dg.AssetCheckResult(
            check_name="quality_gate",
            passed=gate is None or gate.passed,
            severity=ERROR,
            metadata={"tenant": tenant, "evaluated": gate is not None, **(gate.as_metadata() if gate else {})},
            description=_on(tenant, "no model change to gate" if gate is None else
                            f"nDCG@10 {gate.candidate_ndcg10:.4f} (new) vs {gate.active_ndcg10:.4f} (active)"),
        ),
        dg.AssetCheckResult(
            check_name="source_rows_valid",
            passed=bad_rows.ok,
            severity=WARN,
            metadata={"tenant": tenant, "count": bad_rows.count, "example_documents": bad_rows.examples},
            description=_on(tenant, f"{bad_rows.count} source rows skipped"),
        ),
    ]


# Dagster shows an unpartitioned check of a partitioned asset as evaluated only while its latest evaluation is newer
# than the asset's latest materialization of any partition: after any tenant's run the sweep read "Not evaluated"
# until its next scheduled run. So automation also sweeps when that is so (check_passed/check_failed are false:
# the same test the UI makes) and a tenant ran since automation last asked, at most once a minute and never beside
# a running tenant or sweep. A sweep that crashed is retried only after the next tenant run, never in a loop. The
# schedule (EMBEDDINGS_SWEEP_CRON) still sweeps for what changes behind the pipeline's back.
SWEEP_FOLLOW_CRON = "* * * * *"
SWEEP_AUTOMATION = (
    dg.AutomationCondition.cron_tick_passed(SWEEP_FOLLOW_CRON)
    & ~(dg.AutomationCondition.check_passed() | dg.AutomationCondition.check_failed())
    & dg.AutomationCondition.any_deps_match(dg.AutomationCondition.newly_updated()).since(
        dg.AutomationCondition.newly_requested()
    )
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label("not evaluated since a tenant ran (at most once a minute)")


@dg.asset_check(
    asset="embeddings",
    name="missing_vectors_sweep",
    automation_condition=SWEEP_AUTOMATION,
    description="All tenants: live chunks whose vector is missing or NULL, e.g. written behind the pipeline's back, "
    "and live documents never chunked (a failed run, a provider down, a source row that cannot be parsed).",
)
def missing_vectors_sweep(store: PipelineStore, model: EmbeddingModel) -> dg.AssetCheckResult:
    default_key = model.provider().identity.model_key
    with store.connect() as conn:
        found = facts.sweep(conn, store.schema, default_key)
    total = sum(found.missing.values())
    return dg.AssetCheckResult(
        passed=not found.missing and not found.damage,
        severity=ERROR,
        description=f"{total} missing vectors in {len(found.missing)} tenants"
        + (f"; damaged storage: {'; '.join(found.damage)}" if found.damage else ""),
        metadata={
            "missing_total": sum(found.missing.values()),
            "tenants_affected": len(found.missing),
            "missing_by_tenant": dg.MetadataValue.json(found.missing),
            "documents_not_chunked_by_tenant": dg.MetadataValue.json(found.not_chunked),
            "document_errors_by_tenant": dg.MetadataValue.json(found.document_errors),
            "default_model_key": default_key,
            **({"storage_damage": "; ".join(found.damage)} if found.damage else {}),
        },
    )
