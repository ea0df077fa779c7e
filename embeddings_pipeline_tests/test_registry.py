"""Model specs: provider, name and options; options that change vectors change the model identity."""

from __future__ import annotations

import pytest

from embeddings_pipeline.providers import ProviderError, load_provider, parse_model_spec


def test_specs_parse_with_options():
    assert parse_model_spec("all-MiniLM-L6-v2").provider == "sentence-transformers"
    spec = parse_model_spec("openai:text-embedding-3-small?dimensions=256&query_prefix=q: ")
    assert (spec.provider, spec.name, spec.options) == (
        "openai",
        "text-embedding-3-small",
        {"dimensions": 256, "query_prefix": "q: "},
    )
    assert parse_model_spec("ollama:nomic-embed-text:v1.5").name == "nomic-embed-text:v1.5"


@pytest.mark.parametrize(
    "bad, message",
    [
        ("cohere:embed-v3", "unknown provider"),
        ("ollama:", "names no model"),
        ("sentence-transformers:all-MiniLM-L6-v2?dimensions=5", "unknown option 'dimensions'"),
        ("openai:m?dimensions=-3", "positive integer"),
    ],
)
def test_bad_specs_are_refused_clearly(bad, message):
    with pytest.raises(ProviderError, match=message):
        parse_model_spec(bad)


def test_prefixes_are_part_of_the_identity_and_of_the_text_sent(provider):
    prefixed = load_provider("sentence-transformers:all-MiniLM-L6-v2?passage_prefix=passage: &query_prefix=query: ")
    assert prefixed.identity.passage_prefix == "passage: " and prefixed.identity.query_prefix == "query: "
    assert prefixed.identity.model_key != provider.identity.model_key
    assert prefixed.identity.revision == provider.identity.revision  # same weights, other vectors
    plain, with_prefix = provider.embed_documents(["dock"]), prefixed.embed_documents(["dock"])
    assert float(plain[0] @ with_prefix[0]) < 0.999
    assert float(prefixed.embed_documents(["passage: dock"])[0] @ plain[0]) < 0.999
    assert (provider.embed_documents(["passage: dock"])[0] == with_prefix[0]).all()
