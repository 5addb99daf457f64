import pytest

from ragworks.errors import ConfigError
from ragworks.retrieval.filters import compile_filters, parse_filter_arg

META = {"source": "a.md", "year": 2021, "lang": "en"}


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"source": "a.md"}, True),
        ({"source": "b.md"}, False),
        ({"source": ["b.md", "a.md"]}, True),
        ({"year >=": 2021}, True),
        ({"year >": 2021}, False),
        ({"year <": 2022, "lang": "en"}, True),
        ({"lang !=": "en"}, False),
        ({"lang NOT": "fr"}, True),
        ({"lang NOT IN": ["fr", "de"]}, True),
        ({"missing >": 1}, False),
    ],
)
def test_filters(filters: dict, expected: bool) -> None:
    predicate = compile_filters(filters)
    assert predicate is not None and predicate(META) is expected


def test_comparison_needs_a_number() -> None:
    with pytest.raises(ConfigError, match="needs a number"):
        compile_filters({"year >=": "2020"})


@pytest.mark.parametrize(
    ("arg", "item"),
    [
        ("source=a.md", ("source", "a.md")),
        ("year>=2020", ("year >=", 2020)),
        ("score<0.5", ("score <", 0.5)),
        ("type=md,html", ("type", ["md", "html"])),
        ("lang!=fr", ("lang !=", "fr")),
    ],
)
def test_parse_cli_filters(arg: str, item: tuple) -> None:
    assert parse_filter_arg(arg) == item


def test_unparseable_filter_says_how_to_write_it() -> None:
    with pytest.raises(ConfigError, match="FIELD=VALUE"):
        parse_filter_arg("justaword")
