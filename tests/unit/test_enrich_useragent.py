"""User agent enrichment with ua-parser: browser, OS, device, bot flag, cache."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.stages.enrich.useragent import UserAgentEnricher
from tests.factories import make_event

CHROME_WINDOWS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/130.0.0.0 Safari/537.36"
)
SAFARI_IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1"
)
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"


@pytest.fixture(scope="module")
def enricher() -> UserAgentEnricher:
    return UserAgentEnricher(cache_size=100)


def _ua(enricher: UserAgentEnricher, user_agent: str | None) -> Any:
    event = make_event(source={"ip": "81.2.69.160", "port": 1, "user_agent": user_agent})
    return enricher.enrich(event).get("user_agent")


def test_desktop_browser(enricher: UserAgentEnricher) -> None:
    assert _ua(enricher, CHROME_WINDOWS) == {
        "name": "Chrome",
        "version": "130.0.0.0",
        "os_name": "Windows",
        "os_version": "10",
        "device": None,
        "is_bot": False,
    }


def test_mobile_browser_has_a_device(enricher: UserAgentEnricher) -> None:
    ua = _ua(enricher, SAFARI_IPHONE)
    assert (ua["name"], ua["version"]) == ("Mobile Safari", "17.5")
    assert (ua["os_name"], ua["os_version"]) == ("iOS", "17.5")
    assert ua["device"] == "iPhone"
    assert ua["is_bot"] is False


def test_crawler_is_a_bot(enricher: UserAgentEnricher) -> None:
    ua = _ua(enricher, GOOGLEBOT)
    assert ua["name"] == "Googlebot"
    assert ua["is_bot"] is True


def test_http_library_is_named_but_not_a_bot(enricher: UserAgentEnricher) -> None:
    ua = _ua(enricher, "python-requests/2.32.3")
    assert (ua["name"], ua["version"], ua["is_bot"]) == ("Python Requests", "2.32", False)


def test_unknown_or_missing_user_agent(enricher: UserAgentEnricher) -> None:
    assert _ua(enricher, "Mozilla/5.0") == {
        "name": None,
        "version": None,
        "os_name": None,
        "os_version": None,
        "device": None,
        "is_bot": False,
    }
    assert _ua(enricher, None) is None
    assert _ua(enricher, "") is None


def test_parses_are_cached() -> None:
    enricher = UserAgentEnricher(cache_size=10)
    for _ in range(3):
        _ua(enricher, CHROME_WINDOWS)
    info = enricher.parse.cache_info()
    assert (info.misses, info.hits) == (1, 2)
