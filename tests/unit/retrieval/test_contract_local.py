from pathlib import Path

import pytest
from langchain_core.retrievers import BaseRetriever

from ragworks.retrieval import LocalIndex, get_retriever
from ragworks.testing.contracts import CONTRACT_CORPUS, RetrieverContract


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("contract") / "index"
    index = LocalIndex(embeddings="hashing")
    index.upsert(CONTRACT_CORPUS)
    index.save(path)
    return path


class TestLocalRetrieverHybrid(RetrieverContract):
    @pytest.fixture
    def retriever(self, index_dir: Path) -> BaseRetriever:
        return get_retriever({"type": "local", "index": str(index_dir), "k": 3})


class TestLocalRetrieverBM25(RetrieverContract):
    @pytest.fixture
    def retriever(self, index_dir: Path) -> BaseRetriever:
        return get_retriever({"type": "local", "index": str(index_dir), "k": 3, "mode": "bm25"})


# A retriever named by import path, as users plug in any LangChain retriever.
def make_contract_retriever(index: str) -> BaseRetriever:
    return get_retriever({"type": "local", "index": index, "k": 3})


class TestLangChainPlugin(RetrieverContract):
    @pytest.fixture
    def retriever(self, index_dir: Path) -> BaseRetriever:
        return get_retriever(
            {"type": f"langchain:{__name__}:make_contract_retriever", "options": {"index": str(index_dir)}}
        )


def test_unimportable_or_malformed_langchain_retrievers_are_config_errors() -> None:
    from ragworks.errors import ConfigError

    with pytest.raises(ConfigError, match=r"Cannot import LangChain retriever 'nomodule_xyz:thing'"):
        get_retriever({"type": "langchain:nomodule_xyz:thing"})
    with pytest.raises(ConfigError, match="langchain:<module>:<attr>"):
        get_retriever({"type": "langchain:just_a_module"})
    with pytest.raises(ConfigError, match="not a LangChain BaseRetriever"):
        get_retriever({"type": "langchain:json:dumps", "options": {"obj": 1}})

