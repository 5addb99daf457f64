import numpy as np
import pytest

from ragworks.embeddings import HashingEmbedder, dense_available, get_embedder, resolve_embedder_name
from ragworks.errors import ConfigError


def test_auto_picks_minilm_only_with_the_dense_extra() -> None:
    assert resolve_embedder_name("auto") == ("minilm" if dense_available() else "none")
    assert get_embedder("none") is None


def test_unknown_embedder_lists_the_choices() -> None:
    with pytest.raises(ConfigError, match="minilm, hashing, none"):
        get_embedder("word2vec")


def test_hashing_embedder_is_deterministic_and_similarity_aware() -> None:
    emb = HashingEmbedder()
    a, b, c = emb.encode(["violin strings", "violins and strings", "volcanic magma"])
    np.testing.assert_allclose(emb.encode(["violin strings"])[0], a)
    assert float(a @ b) > float(a @ c)
    assert emb.embed_query("x") == pytest.approx(emb.embed_documents(["x"])[0])
    assert emb.encode([]).shape == (0, 384)
