"""What happens when a tenant's model changes: the one module that owns that policy.

- **Which model a tenant embeds with** (`embedding_provider`): its own override (`tenants set --model`) or the
  default (EMBEDDINGS_MODEL); a backfill of a registered model (`backfill --model KEY`) embeds with that model.
- **Which model it searches with** (`search_provider`): its *active* model. A new model is filled side by side
  and search never reads it before it covers every chunk (blue/green), so search never mixes models.
- **The chunk set each model needs** (`chunk_set_for`): chunk texts depend on the chunker, the tokenizer and the
  limit they were split for, and the tenant's overflow policy, not on the model. Models sharing a tokenizer share
  chunks; a model that splits differently gets its own set. While a change is in progress the active model's set
  is kept up to date beside the new one (`ModelPlan.serving_set`), so new content stays searchable.
- **When the new model takes over** (`take_over`): at 100% coverage, and, if the tenant has quality queries, only
  when it ranks them no worse than the active model (`quality_gate`, nDCG@10 within EMBEDDINGS_QUALITY_MAX_DROP).
- **How it takes over** (`activate`, the only switch): build the model's HNSW index if it has none, make
  (model, chunk set) the tenant's active pair in one transaction, drop the chunk set search read until then.
  `models activate` (by hand, past a failed gate) goes through `activate_by_hand`, which checks coverage first.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..config import Settings
from ..providers import EmbeddingProvider, ProviderError, load_provider
from ..search.evaluate import dense_ndcg10
from ..store import content, quality, tenants, vector_tables, vectors
from ..store.models import chunk_set_of, spec_of, vector_table_of
from ..store.scope import Scope
from ..text.chunks import CHUNKER_VERSION

log = logging.getLogger(__name__)

# (model spec or None for the default, NAME of the env var holding the key or None) -> provider
ProviderLoader = Callable[[str | None, str | None], EmbeddingProvider]


def default_loader(spec: str | None = None, key_env: str | None = None) -> EmbeddingProvider:
    """The provider of `spec` (default: EMBEDDINGS_MODEL), batch size EMBEDDINGS_BATCH_SIZE, on the CPU."""
    settings = Settings.from_env()
    return load_provider(spec or settings.model_spec, settings.batch_size, "cpu", key_env)


# --- which model, which chunk set ---------------------------------------------------------------------------------


def chunk_set_for(provider: EmbeddingProvider, overflow: str = "split") -> str:
    """The chunk set `provider` reads: chunker, tokenizer, token limit and (unless 'split') the overflow policy."""
    chunk_set = f"{CHUNKER_VERSION}:{provider.tokenizer.name}:{provider.identity.max_tokens}"
    return chunk_set if overflow == "split" else f"{chunk_set}:{overflow}"


def overflow_of(chunk_set: str) -> str:
    return "truncate" if chunk_set.endswith(":truncate") else "split"


def target_chunk_set(scope: Scope, provider: EmbeddingProvider) -> str:
    """The chunk set `provider` embeds for this tenant now (its tokenizer, limit and the tenant's policy)."""
    return chunk_set_for(provider, tenants.chunk_overflow(*scope))


def embedding_provider(
    scope: Scope, load: ProviderLoader = default_loader, model_key: str | None = None
) -> EmbeddingProvider:
    """The model the tenant is embedded with: its override (and key reference), else the default; for a
    backfill of a registered model (`model_key`), that model."""
    return _provider(scope, tenants.tenant_settings(*scope), load, model_key)


def search_provider(scope: Scope, load: ProviderLoader = default_loader) -> EmbeddingProvider:
    """The model search uses: the tenant's ACTIVE model (its own model when it has none active yet)."""
    settings = tenants.tenant_settings(*scope)
    own = _provider(scope, settings, load)
    if settings.active_model_key is None or settings.active_model_key == own.identity.model_key:
        return own
    return _provider(scope, settings, load, settings.active_model_key)


def _provider(
    scope: Scope, settings: tenants.TenantSettings, load: ProviderLoader, model_key: str | None = None
) -> EmbeddingProvider:
    """The tenant's own model, or the registered model `model_key`, with the tenant's key reference."""
    spec = spec_of(scope.conn, scope.schema, model_key) if model_key else settings.model
    return load(spec, settings.key_env)


@dataclass(frozen=True)
class ModelPlan:
    """One run's answer to "which models, which chunk sets" for one tenant, read once at the start of a step."""

    target: EmbeddingProvider  # the model this run embeds with
    chunk_set: str  # the chunk set it embeds
    active_model_key: str | None  # the model search uses now (None: the tenant has none yet)
    active_chunk_set: str | None
    active: EmbeddingProvider | None  # its provider (None: no active model, or it cannot be loaded)
    takes_over: bool = True  # False for a backfill of a model that is not the tenant's own: it fills, never serves
    active_problem: str = ""  # why the active model could not be loaded

    @property
    def changing(self) -> bool:
        """A model change is in progress: search reads another (model, chunk set) pair than this run fills."""
        return self.active_model_key is not None and (self.active_model_key, self.active_chunk_set) != (
            self.target.identity.model_key,
            self.chunk_set,
        )

    @property
    def serving_set(self) -> str | None:
        """The chunk set search reads, when it is not the one this run builds (it is kept beside it)."""
        if self.active_chunk_set is None or self.active_chunk_set == self.chunk_set:
            return None
        return self.active_chunk_set

    @property
    def serving(self) -> EmbeddingProvider | None:
        """The active model's provider when this code can keep its chunk set current (a set built by an older
        chunker stays as it is until the switch)."""
        active, kept = self.active, self.active_chunk_set
        if active is None or kept is None or active.identity.model_key != self.active_model_key:
            return None
        return active if chunk_set_for(active, overflow_of(kept)) == kept else None

    def refreshes_serving(self) -> bool:
        """Whether the active model should embed what changed in its own set during this change."""
        return self.changing and self.serving is not None


def plan(
    scope: Scope,
    load: ProviderLoader = default_loader,
    backfill_of: str | None = None,
    *,
    target: EmbeddingProvider | None = None,
) -> ModelPlan:
    """Which model this run embeds with (`target` when given, e.g. a wrapped provider in a test), which chunk
    set, and which model and set search reads meanwhile."""
    settings = tenants.tenant_settings(*scope)  # read once: the run holds the tenant's lock
    target = target or _provider(scope, settings, load, backfill_of)
    key = target.identity.model_key
    takes_over = backfill_of is None or _provider(scope, settings, load).identity.model_key == backfill_of
    active, problem = None, ""
    if settings.active_model_key == key:
        active = target
    elif settings.active_model_key is not None:
        try:
            active = _provider(scope, settings, load, settings.active_model_key)
        except ProviderError as exc:
            problem = f"the active model cannot be loaded, its chunk set is left as is: {exc}"
            log.warning("tenant %r: %s", scope.tenant_id, problem)
    return ModelPlan(
        target=target,
        chunk_set=chunk_set_for(target, settings.chunk_overflow),
        active_model_key=settings.active_model_key,
        active_chunk_set=settings.active_chunk_set,
        active=active,
        takes_over=takes_over,
        active_problem=problem,
    )


# --- the quality gate and the switch ------------------------------------------------------------------------------


def max_drop() -> float:
    """EMBEDDINGS_QUALITY_MAX_DROP: how much lower (absolute nDCG@10) the new model may score; default 0.02."""
    return float(os.environ.get("EMBEDDINGS_QUALITY_MAX_DROP", "0.02"))


@dataclass(frozen=True)
class GateResult:
    queries: int
    candidate_model: str
    candidate_ndcg10: float
    active_model: str
    active_ndcg10: float
    max_drop: float
    note: str = ""  # e.g. the active model could not be scored (its provider is down): it counts as 0

    @property
    def passed(self) -> bool:
        return self.candidate_ndcg10 >= self.active_ndcg10 - self.max_drop

    def as_metadata(self) -> dict[str, object]:
        return {
            "quality_gate_passed": self.passed,
            "quality_queries": self.queries,
            "quality_candidate_ndcg10": round(self.candidate_ndcg10, 5),
            "quality_active_ndcg10": round(self.active_ndcg10, 5),
            "quality_active_model": self.active_model,
            "quality_max_drop": self.max_drop,
            **({"quality_note": self.note} if self.note else {}),
        }


def quality_gate(scope: Scope, plan: ModelPlan) -> GateResult | None:
    """Score the target (on its chunk set) and the active model (on the active set) on the tenant's quality
    queries. None when there is nothing to compare: no quality queries, no active model (the tenant's first
    model), or the target is already active."""
    active = plan.active
    if active is None or plan.active_model_key != active.identity.model_key or not plan.changing:
        return None
    queries = quality.queries_of(*scope)
    if not queries:
        return None
    candidate = dense_ndcg10(scope.conn, scope.schema, scope.tenant_id, plan.target, plan.chunk_set, queries)
    try:
        score = dense_ndcg10(scope.conn, scope.schema, scope.tenant_id, active, plan.active_chunk_set, queries)
        note = ""
    except ProviderError as exc:  # moving away from a provider that is gone must stay possible
        score, note = 0.0, f"the active model could not be scored, counted as 0: {exc}"
    return GateResult(
        queries=len(queries),
        candidate_model=plan.target.identity.model_key,
        candidate_ndcg10=candidate,
        active_model=active.identity.model_key,
        active_ndcg10=score,
        max_drop=max_drop(),
        note=note,
    )


def take_over(scope: Scope, plan: ModelPlan) -> GateResult | None:
    """Called when the target covers every chunk of its set: it becomes the tenant's active model unless it
    only fills (a backfill of another model) or fails the quality gate. Returns the gate's result, if any."""
    if not plan.takes_over:
        return None
    gate = quality_gate(scope, plan)
    if gate is not None and not gate.passed:
        log.warning("tenant %r stays on %s: %s fails the quality gate (%s)", scope.tenant_id, gate.active_model,
                    gate.candidate_model, gate.as_metadata())  # fmt: skip
        return gate
    activate(scope, plan.target.identity.model_key, plan.chunk_set)
    return gate


def activate(scope: Scope, model_key: str, chunk_set: str) -> bool:
    """Switch the tenant's search to (model_key, chunk_set): the model's HNSW index is built in bulk first if it
    has none (a model that served nobody fills without one), then the pair switches in one transaction and the
    chunk set search read until now is dropped (its vectors stay until the model is retired). Returns whether
    anything changed."""
    vector_tables.ensure_search_index(scope.conn, scope.schema, model_key)
    if not tenants.activate_model(*scope, model_key, chunk_set):
        return False
    content.drop_chunk_sets(*scope, [chunk_set])
    return True


class ActivationRefused(RuntimeError):
    """`models activate` of a model that does not cover a tenant: nothing was switched."""


def activate_by_hand(conn, schema: str, model_key: str, tenant_ids: Sequence[str]) -> dict[str, str]:
    """Switch every tenant to `model_key` now (e.g. past a failed quality gate). Every tenant is checked before
    any is switched: refused unless the model covers 100% of the tenant's chunk set. Returns tenant -> chunk set."""
    vt = vector_table_of(conn, schema, model_key)
    if vt is None:
        raise ActivationRefused(f"model {model_key!r} has no vectors; see `embeddings-pipeline models list`")
    sets: dict[str, str] = {}
    for tenant in tenant_ids:
        chunk_set = chunk_set_of(conn, schema, tenant, model_key)
        total, current = vectors.coverage(conn, schema, vt, tenant, chunk_set or "")
        if chunk_set is None or total == 0 or current < total:
            raise ActivationRefused(
                f"tenant {tenant!r}: model {model_key} covers {current} of {total} chunks; fill it first "
                f"(`embeddings-pipeline backfill --tenant {tenant} --model {model_key}`); nothing was switched"
            )
        sets[tenant] = chunk_set
    for tenant, chunk_set in sets.items():
        activate(Scope(conn, schema, tenant), model_key, chunk_set)
    return sets
