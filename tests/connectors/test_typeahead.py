"""The typeahead connector through GET /v1/typeahead/{category} and POST /v1/do/typeahead/Search,
on both execution paths, plus its configured files and the parts that need no HTTP."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest
from spiff.connector.typeahead.v1 import typeahead_pb2, typeahead_pb2_grpc

from connectors.typeahead import TypeaheadService, _datasets, _index
from connectors.typeahead._index import fold
from tests.conftest import AppFactory, client_for
from tests.connectors.typeahead_app import serve

pytestmark = pytest.mark.anyio

HEADER = "Spiff-Connector-Proxy-Api-Key"
BIG = 12345678901234567890123


async def suggest(client: httpx.AsyncClient, url: str) -> list[dict[str, Any]]:
    """GET a typeahead URL (written as the backend writes it); it must answer a JSON array."""
    response = await client.get(url)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    results = response.json()
    assert isinstance(results, list)
    assert all(isinstance(item, dict) for item in results)
    return results


async def search(client: httpx.AsyncClient, **params: Any) -> tuple[int, dict[str, Any]]:
    response = await client.post("/v1/do/typeahead/Search", json=params)
    payload: dict[str, Any] = response.json()
    assert payload["command_response_version"] == 2
    return response.status_code, payload


def names(results: list[dict[str, Any]]) -> list[str]:
    return [item["name"] for item in results]


def assert_sorted_by_name(results: list[dict[str, Any]]) -> None:
    keys = [fold(item["name"]) for item in results]
    assert keys == sorted(keys)


@pytest.fixture(params=["local", "remote"])
def path(request: pytest.FixtureRequest) -> str:
    param: str = request.param
    return param


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    fruits = tmp_path / "fruits.json"
    fruits.write_text(
        json.dumps(
            [
                {"name": "banana", "color": "yellow"},
                {"name": "Apple", "color": "red", "id": BIG},
                "Apricot",
                {"name": "Äkta bär", "color": "blue", "tags": ["nordic"], "price": 1.5},
            ],
            ensure_ascii=False,
        ),
        encoding="utf-8",
    )
    people = tmp_path / "people.csv"
    people.write_text(
        "\ufefffull_name,email\nZoë Ångström,zoe@example.com\nAda Lovelace,ada@example.com\n"
        '"Hopper, Grace",grace@example.com\n\n',
        encoding="utf-8",
    )
    return {"fruits": fruits, "people:full_name": people}


# The bundled categories, through the default shim -----------------------------------------------


async def test_cities_match_a_prefix_ignoring_case_sorted_by_name(proxy):
    results = await suggest(proxy, "/v1/typeahead/cities?prefix=san&limit=100")
    assert len(results) == 100
    assert all(fold(name).startswith("san") for name in names(results))
    assert_sorted_by_name(results)
    assert set(results[0]) == {"name", "state", "country", "country_code"}
    for prefix in ("SAN", "San", "sAn", "%20san"):
        assert await suggest(proxy, f"/v1/typeahead/cities?prefix={prefix}&limit=100") == results


async def test_cities_carry_state_and_country(proxy):
    results = await suggest(proxy, "/v1/typeahead/cities?prefix=Chicago&limit=100")
    assert {
        "name": "Chicago",
        "state": "Illinois",
        "country": "United States",
        "country_code": "US",
    } in results
    zurich = await suggest(proxy, "/v1/typeahead/cities?prefix=Z%C3%BCrich&limit=1")
    assert zurich == [{"name": "Zürich", "state": "Zürich", "country": "Switzerland", "country_code": "CH"}]
    # GeoNames' admin1 codes for Japan are not ISO 3166-2 codes (its "40" is ISO's Fukuoka):
    # no state rather than a wrong one.
    tokyo = await suggest(proxy, "/v1/typeahead/cities?prefix=tokyo&limit=1")
    assert tokyo == [{"name": "Tokyo", "state": "", "country": "Japan", "country_code": "JP"}]


@pytest.mark.parametrize(
    ("city", "state", "country"),
    [
        ("Casablanca", "Casablanca-Settat", "MA"),
        ("Cork", "Munster", "IE"),
        ("Dili", "Díli", "TL"),
        ("Glasgow", "Scotland", "GB"),
        ("Kampala", "Central", "UG"),
        ("Lusaka", "Lusaka", "ZM"),
        ("Ouagadougou", "Centre", "BF"),
    ],
)
async def test_states_of_countries_whose_admin1_codes_are_iso(proxy, city, state, country):
    assert country in _datasets.ISO_ADMIN1_COUNTRIES
    results = await suggest(proxy, f"/v1/typeahead/cities?prefix={city}&limit=1000")
    found = [(item["name"], item["state"]) for item in results if item["country_code"] == country]
    assert found[0] == (city, state)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        pytest.param("New%20York", "New York City", id="percent-20"),
        pytest.param("New+York", "New York City", id="plus"),
        pytest.param("new york", "New York City", id="raw-space"),
        pytest.param("S%C3%A3o%20Paulo", "São Paulo", id="percent-utf8"),
        pytest.param("sao paulo", "São Paulo", id="without-accent"),
        pytest.param("SÃO PAULO", "São Paulo", id="raw-unicode-upper"),
        pytest.param("%C3%89vry", "Évry", id="percent-e-acute"),
        pytest.param("winston salem", "Winston-Salem", id="space-for-hyphen"),
        pytest.param("saint john%E2%80%99s", "Saint John\N{RIGHT SINGLE QUOTATION MARK}s", id="apostrophe"),
    ],
)
async def test_prefixes_are_url_decoded_and_folded(proxy, query, expected):
    results = await suggest(proxy, f"/v1/typeahead/cities?prefix={query}&limit=100")
    assert expected in names(results)


async def test_trailing_space_is_kept(proxy):
    results = await suggest(proxy, "/v1/typeahead/cities?prefix=newark&limit=100")
    assert "Newark" in names(results)
    spaced = await suggest(proxy, "/v1/typeahead/cities?prefix=new%20&limit=1000")
    assert spaced
    assert "Newark" not in names(spaced)
    assert all(fold(name).startswith("new ") for name in names(spaced))


async def test_countries_are_found_by_common_and_iso_names(proxy):
    korea = await suggest(proxy, "/v1/typeahead/countries?prefix=kor")
    assert names(korea) == ["North Korea", "South Korea"]
    assert korea[1] == {
        "name": "South Korea",
        "iso_name": "Korea, Republic of",
        "alpha_2": "KR",
        "alpha_3": "KOR",
        "numeric": "410",
        "flag": "🇰🇷",
    }
    united = await suggest(proxy, "/v1/typeahead/countries?prefix=United&limit=100")
    assert names(united)[:3] == ["United Arab Emirates", "United Kingdom", "United States"]
    assert_sorted_by_name(united)
    assert names(await suggest(proxy, "/v1/typeahead/countries?prefix=viet")) == ["Vietnam"]


async def test_states_are_first_level_subdivisions(proxy):
    georgia = await suggest(proxy, "/v1/typeahead/states?prefix=georgia")
    assert georgia == [
        {
            "name": "Georgia",
            "country": "United States",
            "country_code": "US",
            "code": "US-GA",
            "type": "State",
        }
    ]
    assert names(await suggest(proxy, "/v1/typeahead/states?prefix=ile%20de")) == ["Île-de-France"]
    # Paris the department (FR-75) is a second-level subdivision.
    assert await suggest(proxy, "/v1/typeahead/states?prefix=paris") == []
    # ISO 3166-2's bracketed alternative names are left out.
    assert {"name": "Wales", "country": "United Kingdom"}.items() <= (
        await suggest(proxy, "/v1/typeahead/states?prefix=wales")
    )[0].items()


async def test_category_names_ignore_case(proxy):
    assert await suggest(proxy, "/v1/typeahead/Countries?prefix=fra") == [
        {
            "name": "France",
            "iso_name": "France",
            "alpha_2": "FR",
            "alpha_3": "FRA",
            "numeric": "250",
            "flag": "🇫🇷",
        }
    ]


async def test_limit_defaults_to_100_and_is_capped_at_1000(proxy):
    assert len(await suggest(proxy, "/v1/typeahead/cities?prefix=s")) == 100
    assert len(await suggest(proxy, "/v1/typeahead/cities?prefix=s&limit=3")) == 3
    capped = await suggest(proxy, "/v1/typeahead/cities?prefix=s&limit=5000")
    assert len(capped) == 1000
    assert_sorted_by_name(capped)
    assert await suggest(proxy, "/v1/typeahead/cities?prefix=s&limit=0") == []
    status, payload = await search(proxy, category="cities", prefix="s", limit=5000)
    assert status == 200
    assert len(payload["command_response"]["body"]) == 1000
    assert payload["spiff__logs"] == ["limit 5000 is above 1000; answering at most 1000 entries."]


@pytest.mark.parametrize("limit", ["-1", "abc", "1.5", "99999999999"])
async def test_bad_limit_is_a_json_400(proxy, limit):
    response = await proxy.get(f"/v1/typeahead/cities?prefix=s&limit={limit}")
    assert response.status_code == 400
    assert response.json()["error"]["error_code"] == "InvalidParameters"
    assert "limit" in response.json()["error"]["message"]


async def test_negative_limit_through_do_is_invalid_parameters(proxy):
    status, payload = await search(proxy, category="cities", prefix="s", limit=-1)
    assert status == 400
    assert payload["error"] == {
        "error_code": "InvalidParameters",
        "message": "Invalid parameters for typeahead/Search: limit must be at least 0.",
    }


@pytest.mark.parametrize(
    "query",
    [
        pytest.param("", id="empty"),
        pytest.param("prefix=", id="empty-value"),
        pytest.param("prefix=%20%20", id="spaces"),
        pytest.param('prefix={"name":"Ben &limit=100', id="ampersand-truncated-json"),
        pytest.param('prefix={"name": "Nowhere at all", "state": ""}&limit=100', id="json-no-match"),
        pytest.param("prefix=[1,2]&limit=100", id="json-array"),
        pytest.param('prefix="Paris"&limit=100', id="json-string"),
        pytest.param('prefix={"name": 5}&limit=100', id="json-name-not-text"),
        pytest.param("prefix=" + "a" * 20_000 + "&limit=100", id="very-long"),
        pytest.param("prefix=" + '{"a":' * 1900 + "&limit=100", id="deeply-nested-json"),
        pytest.param("prefix=%ZZ%&limit=100", id="bad-percent-escape"),
        pytest.param("prefix=%00%01&limit=100", id="control-characters"),
        pytest.param("prefix=%F0%9F%87%AB%F0%9F%87%B7&limit=100", id="emoji"),
        pytest.param("prefix=%FF%FE&limit=100", id="invalid-utf8"),
        pytest.param("prefix=%E2%80%94&limit=100", id="only-a-dash"),
    ],
)
async def test_odd_prefixes_answer_an_empty_array(proxy, query):
    assert await suggest(proxy, f"/v1/typeahead/cities?{query}") == []


async def test_unicode_prefixes_find_unicode_names(proxy):
    results = await suggest(proxy, "/v1/typeahead/cities?prefix=%C5%81%C3%B3d%C5%BA&limit=5")  # Łódź
    assert "Łódź" in names(results)
    assert names(await suggest(proxy, "/v1/typeahead/cities?prefix=lodz&limit=5")) == names(results)


async def test_a_stored_item_answers_that_item(proxy):
    springfields = await suggest(proxy, "/v1/typeahead/cities?prefix=springfield&limit=100")
    chosen = next(item for item in springfields if item["state"] == "Missouri")
    # What the widget sends back when a form re-opens: JSON.stringify(item), unencoded.
    again = await suggest(proxy, f"/v1/typeahead/cities?prefix={json.dumps(chosen)}&limit=100")
    assert again == [chosen]
    by_name = {"name": "Springfield"}
    assert len(await suggest(proxy, f"/v1/typeahead/cities?prefix={json.dumps(by_name)}&limit=100")) > 1
    wrong_state = {**chosen, "state": "Nowhere"}
    assert await suggest(proxy, f"/v1/typeahead/cities?prefix={json.dumps(wrong_state)}") == []


async def test_unknown_category_answers_an_empty_array_with_a_log_line(proxy, caplog):
    caplog.set_level(logging.WARNING, logger="connectors.typeahead")
    assert await suggest(proxy, "/v1/typeahead/planets?prefix=mar") == []
    status, payload = await search(proxy, category="planets", prefix="mar")
    assert (status, payload["command_response"]["body"], payload["error"]) == (200, [], None)
    assert payload["spiff__logs"] == [
        "There is no typeahead category 'planets'; this proxy has cities, countries, states."
    ]
    assert "unknown category 'planets'" in caplog.text


async def test_search_command_answers_the_array_as_its_body(proxy):
    status, payload = await search(proxy, category="countries", prefix="norw")
    assert status == 200
    assert payload["command_response"] == {
        "body": [
            {
                "name": "Norway",
                "iso_name": "Norway",
                "alpha_2": "NO",
                "alpha_3": "NOR",
                "numeric": "578",
                "flag": "🇳🇴",
            }
        ],
        "mimetype": "application/json",
        "http_status": 200,
        "headers": {},
    }
    assert payload["spiff__logs"] == []


async def test_missing_category_is_invalid_parameters(proxy):
    status, payload = await search(proxy, prefix="a")
    assert status == 400
    assert payload["error"]["error_code"] == "InvalidParameters"


async def test_typeahead_route_needs_no_api_key_but_do_does(make_app: AppFactory):
    async with client_for(make_app(api_key="k")) as client:
        assert names(await suggest(client, "/v1/typeahead/countries?prefix=fin")) == ["Finland"]
        denied = await client.post("/v1/do/typeahead/Search", json={"category": "countries", "prefix": "fin"})
        assert (denied.status_code, denied.json()) == (401, {"error": "Unauthorized"})
        allowed = await client.post(
            "/v1/do/typeahead/Search", json={"category": "countries", "prefix": "fin"}, headers={HEADER: "k"}
        )
        assert allowed.status_code == 200
        assert names(allowed.json()["command_response"]["body"]) == ["Finland"]


async def test_grpc_stub(grpc_channel):
    stub = typeahead_pb2_grpc.TypeaheadServiceStub(grpc_channel)  # type: ignore[no-untyped-call]
    reply = await stub.Search(typeahead_pb2.SearchRequest(category="cities", prefix="reykjav"), timeout=10)
    assert json.loads(reply.results.json) == [
        {"name": "Reykjavík", "state": "", "country": "Iceland", "country_code": "IS"}
    ]


async def test_first_queries_wait_for_the_index():
    _datasets._bundled.clear()
    service = TypeaheadService(files="")
    request = typeahead_pb2.SearchRequest(category="cities", prefix="san", limit=5)
    replies = await asyncio.gather(*(service.Search(request, None) for _ in range(4)))
    results = {reply.results.json for reply in replies}
    assert len(results) == 1
    assert len(json.loads(results.pop())) == 5


async def test_unreadable_dataset_is_dataset_unavailable(path, caplog):
    service = TypeaheadService(files="")

    def broken() -> Any:
        raise FileNotFoundError(2, "No such file or directory")

    service._sources["cities"] = broken
    service._ready.pop("cities", None)
    async with serve(service, path) as client:
        response = await client.get("/v1/typeahead/cities?prefix=san")
        assert response.status_code == 500
        assert response.json() == {
            "error": {
                "error_code": "DatasetUnavailable",
                "message": "The cities dataset could not be loaded; the proxy's log has the details.",
            }
        }
    assert "the cities dataset could not be loaded" in caplog.text


# Configured categories ------------------------------------------------------------------------


async def test_configured_json_and_csv_categories(path, files):
    async with serve(TypeaheadService(files=files), path) as client:
        fruits = await suggest(client, "/v1/typeahead/fruits?prefix=a")
        assert fruits == [
            {"name": "Äkta bär", "color": "blue", "tags": ["nordic"], "price": 1.5},
            {"name": "Apple", "color": "red", "id": BIG},
            {"name": "Apricot"},
        ]
        assert type(fruits[1]["id"]) is int
        assert names(await suggest(client, "/v1/typeahead/FRUITS?prefix=BAN")) == ["banana"]
        people = await suggest(client, "/v1/typeahead/people?prefix=")
        assert people == []
        assert await suggest(client, "/v1/typeahead/people?prefix=zoe") == [
            {"full_name": "Zoë Ångström", "email": "zoe@example.com"}
        ]
        assert await suggest(client, "/v1/typeahead/people?prefix=hopper,%20g") == [
            {"full_name": "Hopper, Grace", "email": "grace@example.com"}
        ]
        chosen = {"full_name": "Ada Lovelace", "email": "ada@example.com"}
        assert await suggest(client, f"/v1/typeahead/people?prefix={json.dumps(chosen)}") == [chosen]
        # The bundled categories are still there.
        assert names(await suggest(client, "/v1/typeahead/countries?prefix=fin")) == ["Finland"]
        _, payload = await search(client, category="nothing", prefix="a")
        assert payload["spiff__logs"] == [
            "There is no typeahead category 'nothing'; "
            "this proxy has cities, countries, fruits, people, states."
        ]


async def test_configured_category_replaces_a_bundled_one(path, tmp_path):
    cities = tmp_path / "cities.csv"
    cities.write_text("name,state,country\nSpringfield,Unknown,Nowhere\n", encoding="utf-8")
    async with serve(TypeaheadService(files=f"cities={cities}"), path) as client:
        assert await suggest(client, "/v1/typeahead/cities?prefix=spr") == [
            {"name": "Springfield", "state": "Unknown", "country": "Nowhere"}
        ]


def test_files_come_from_the_environment(monkeypatch, files):
    spec = ",".join(f"{name}={file}" for name, file in files.items())
    monkeypatch.setenv("CONNECTOR_PROXY_TYPEAHEAD_FILES", f" {spec} ,")
    service = TypeaheadService()
    assert service.categories == ["cities", "countries", "fruits", "people", "states"]


def test_cities_dataset_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("CONNECTOR_PROXY_TYPEAHEAD_CITIES_MIN_POPULATION", "5000")
    TypeaheadService(files="")
    for bad in ("2000", "many"):
        monkeypatch.setenv("CONNECTOR_PROXY_TYPEAHEAD_CITIES_MIN_POPULATION", bad)
        with pytest.raises(
            ValueError, match="CONNECTOR_PROXY_TYPEAHEAD_CITIES_MIN_POPULATION must be one of"
        ):
            TypeaheadService(files="")
    with pytest.raises(ValueError, match="must be one of 500, 1000, 5000, 15000"):
        TypeaheadService(files="", cities_min_population=100)


async def test_a_larger_cities_dataset_finds_smaller_places():
    service = TypeaheadService(files="", cities_min_population=5000)
    request = typeahead_pb2.SearchRequest(category="cities", prefix="reykjav", limit=10)
    found = json.loads((await service.Search(request, None)).results.json)
    assert len(found) >= 1
    assert "Reykjavík" in names(found)


@pytest.mark.parametrize(
    ("file_name", "content", "problem"),
    [
        pytest.param("a.json", "[{", "is malformed: Expecting property name", id="bad-json"),
        pytest.param("a.json", '{"name": "x"}', "holds a JSON dict, not an array", id="object"),
        pytest.param("a.json", '[{"name": "x"}, 5]', "item 1 is a JSON int, not an object", id="item"),
        pytest.param("a.json", '[{"label": "x"}]', "item 0 has no 'name' text to search", id="no-key"),
        pytest.param("a.json", '[{"name": ""}]', "item 0 has no 'name' text to search", id="empty-name"),
        pytest.param("a.json", '[{"name": 5}]', "item 0 has no 'name' text to search", id="name-number"),
        pytest.param("a.json", '[{"name": NaN}]', "is malformed: NaN is not valid JSON", id="nan"),
        pytest.param("a.csv", "label\nx\n", "line 2 has no 'name' text to search", id="csv-no-column"),
        pytest.param("a.csv", "name,b\nx\n", "line 2 has 1 fields, the header 2", id="csv-ragged"),
        pytest.param("a.csv", "name,name\nx,y\n", "names a column twice", id="csv-duplicate"),
        pytest.param("a.csv", "", "has no header row", id="csv-empty"),
        pytest.param("a.csv", 'name\n"x\n', "is malformed: unexpected end of data", id="csv-quote"),
        pytest.param("a.txt", "name\nx\n", "its name must end in .json or .csv", id="extension"),
        pytest.param("a.json", b'["caf\xe9"]', "is not UTF-8 text: invalid", id="latin-1"),
        pytest.param("missing.json", None, "cannot be read: No such file or directory", id="missing"),
    ],
)
def test_a_malformed_file_fails_at_construction(tmp_path, file_name, content, problem):
    file = tmp_path / file_name
    if isinstance(content, bytes):
        file.write_bytes(content)
    elif content is not None:
        file.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match="the category 'things'") as failure:
        TypeaheadService(files=f"things={file}")
    assert str(file) in str(failure.value)
    assert problem in str(failure.value)


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        pytest.param("fruits", "'fruits' is not category=path", id="no-equals"),
        pytest.param("fr uits=/x.json", "the category name 'fr uits' must be", id="bad-name"),
        pytest.param("=/x.json", "the category name '' must be", id="no-name"),
        pytest.param("fruits=", "the category 'fruits' has no file", id="no-path"),
        pytest.param("fruits:=/x.json", "the category 'fruits' has an empty search key", id="no-key"),
        pytest.param("a=/x.json,A=/y.json", "the category 'A' is configured twice", id="twice"),
    ],
)
def test_a_bad_files_setting_fails_at_construction(spec, problem):
    with pytest.raises(ValueError, match="CONNECTOR_PROXY_TYPEAHEAD_FILES") as failure:
        TypeaheadService(files=spec)
    assert problem in str(failure.value)


# Pieces ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "folded"),
    [
        ("São Paulo", "sao paulo"),
        ("  Winston-Salem", "winston salem"),
        ("ÆRØSKØBING", "aeroskobing"),
        ("Łódź", "lodz"),
        ("Straße", "strasse"),
        ("New  York ", "new york "),
        ("Saint John\N{RIGHT SINGLE QUOTATION MARK}s", "saint john's"),
        ("İstanbul", "istanbul"),
        ("東京", "東京"),
    ],
)
def test_fold(text, folded):
    assert fold(text) == folded


@pytest.mark.parametrize("chunk", [1, 3, 7, 1 << 20])
def test_object_values_reads_in_chunks(chunk):
    text = ' {"1": {"a": "}{\\"x"}, "2" :\n[1, 2] ,"3":{} } '
    reader_values = list(_datasets._object_values(io.StringIO(text), chunk))
    assert reader_values == [{"a": '}{"x'}, [1, 2], {}]
    assert list(_datasets._object_values(io.StringIO(" { } "), chunk)) == []


@pytest.mark.parametrize(
    "text", ["", "[1]", '{"1": {"a": 1}', '{"1" {"a": 1}}', '{"1": {"a": 1} "2": {}}', '{"1": {']
)
def test_object_values_rejects_malformed_json(text):
    with pytest.raises(ValueError):  # noqa: PT011 - json.JSONDecodeError or the reader's own
        list(_datasets._object_values(io.StringIO(text), 4))


@pytest.mark.parametrize("separator", ["", ","])
def test_packed_strings(separator):
    items = ["", "a", "Zoë", "東京", "", "🇫🇷"]
    packed = _index._Packed(items, separator=separator)
    assert len(packed) == len(items)
    assert [packed[i] for i in range(len(items))] == items
    assert packed.span(1, 4) == separator.join(items[1:4])
    assert packed.span(3, 3) == ""
    assert len(_index._Packed([])) == 0
