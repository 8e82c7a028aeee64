"""A refused push address says which setting would allow it (loopback and private only),
and development mode allows exactly this machine's loopback addresses."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from ccpush.guard import (
    ALLOWED_NETWORKS_SETTING,
    LOOPBACK_NETWORKS,
    TargetPolicy,
    check_address,
    check_target,
    how_to_allow,
)
from ccpush.settings import Settings, env_name
from tests.api_client import Api
from tests.fakedns import FakeDNS
from tests.helpers import make_service

NOTHING = TargetPolicy()
LOCAL = (
    "CCPUSH_ALLOWED_TARGET_NETWORKS=127.0.0.0/8 allows it, or ccpush serve --dev for local testing"
)


@pytest.mark.parametrize(
    ("address", "hint"),
    [
        ("127.0.0.1", LOCAL),
        ("127.3.4.5", LOCAL),
        ("::1", "CCPUSH_ALLOWED_TARGET_NETWORKS=::1/128 allows it, or ccpush serve --dev for"
                " local testing"),
        ("::ffff:127.0.0.1", LOCAL),  # IPv4-mapped: the IPv4 address is what is reached
        ("10.1.2.3", "CCPUSH_ALLOWED_TARGET_NETWORKS=10.1.2.3/32 (or a network holding it)"
                     " allows it"),
        ("172.16.0.9", "CCPUSH_ALLOWED_TARGET_NETWORKS=172.16.0.9/32 (or a network holding it)"
                       " allows it"),
        ("192.168.1.20", "CCPUSH_ALLOWED_TARGET_NETWORKS=192.168.1.20/32 (or a network holding"
                         " it) allows it"),
        ("100.64.1.1", "CCPUSH_ALLOWED_TARGET_NETWORKS=100.64.1.1/32 (or a network holding it)"
                       " allows it"),
        ("fd12:3456::1", "CCPUSH_ALLOWED_TARGET_NETWORKS=fd12:3456::1/128 (or a network holding"
                         " it) allows it"),
        ("64:ff9b::a01:203", "CCPUSH_ALLOWED_TARGET_NETWORKS=10.1.2.3/32 (or a network holding"
                             " it) allows it"),  # NAT64: reaches the IPv4 address
        ("2002:a01:203::1", None),  # 6to4: through a relay, not at 10.1.2.3
        ("169.254.169.254", None),  # cloud metadata: never suggested
        ("100.100.100.200", None),
        ("fd00:ec2::254", None),
        ("169.254.1.1", None),  # link-local, multicast, documentation...: no receiver there
        ("224.0.0.1", None),
        ("192.0.2.1", None),
        ("0.1.2.3", None),
        ("93.184.216.34", None),  # global: nothing to allow
    ],
)  # fmt: skip
def test_how_to_allow_an_address(address: str, hint: str | None) -> None:
    assert how_to_allow(ipaddress.ip_address(address)) == hint


def test_the_hint_names_the_setting_that_opens_networks() -> None:
    assert env_name("allowed_target_networks") == ALLOWED_NETWORKS_SETTING


@pytest.mark.parametrize(
    ("url", "refusal"),
    [
        ("http://127.0.0.1:9000/cdr", f"loopback address 127.0.0.1; {LOCAL}"),
        ("http://[::ffff:127.0.0.1]/", f"loopback address 127.0.0.1 (as IPv4-mapped"
                                       f" ::ffff:7f00:1); {LOCAL}"),
        ("http://0177.0.0.1/", f"loopback address 127.0.0.1 (written 0177.0.0.1); {LOCAL}"),
        ("http://local.test/", f"local.test resolves to loopback address 127.0.0.1; {LOCAL}"),
        ("http://office.test/", "office.test resolves to private address 10.20.0.7;"
                                " CCPUSH_ALLOWED_TARGET_NETWORKS=10.20.0.7/32 (or a network"
                                " holding it) allows it"),
        ("http://169.254.169.254/", "link-local address 169.254.169.254 (cloud metadata)"),
        ("gopher://127.0.0.1/", "scheme 'gopher': a push address must be http or https"),
    ],
)  # fmt: skip
async def test_the_configuration_check_says_how_to_allow_what_it_refuses(
    url: str, refusal: str
) -> None:
    dns = FakeDNS({"local.test": [["127.0.0.1"]], "office.test": [["10.20.0.7"]]})
    assert await check_target(url, NOTHING, dns) == refusal


def test_outside_the_allowed_networks_names_the_setting() -> None:
    only = TargetPolicy.parse("10.0.0.0/8", only_allowed=True)
    assert check_address("93.184.216.34", only) == (
        "address 93.184.216.34 is outside the allowed target networks"
        " (CCPUSH_ALLOWED_TARGET_NETWORKS)"
    )


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("127.0.0.1", True),
        ("127.255.0.9", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("10.0.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),
    ],
)
def test_development_mode_allows_only_this_machine(address: str, allowed: bool) -> None:
    dev = Settings(dev=True, allowed_target_networks="")
    assert (check_address(address, dev.target_policy) is None) is allowed
    assert check_address(address, Settings(allowed_target_networks="").target_policy) is not None
    assert tuple(map(str, LOOPBACK_NETWORKS)) == ("127.0.0.0/8", "::1/128")


def test_development_mode_keeps_the_allowed_networks() -> None:
    dev = Settings(dev=True, allowed_target_networks="10.20.0.0/16")
    assert check_address("10.20.1.1", dev.target_policy) is None
    assert check_address("127.0.0.1", dev.target_policy) is None


async def test_the_api_refuses_a_loopback_address_saying_how_to_allow_it(
    tmp_path: Path, db_url: str
) -> None:
    service = make_service(tmp_path, db_url, allowed_target_networks="")
    await service.start(dispatch=False)
    try:
        async with Api(service).client() as admin:
            made = await admin.post("/v1/apps", json={"name": "x", "pushUrl": "http://127.0.0.1/"})
    finally:
        await service.stop()
    assert made.status_code == 422
    [problem] = made.json()["error"]["problems"]
    assert problem == {
        "field": "pushUrl",
        "reason": f"cannot be pushed to: loopback address 127.0.0.1; {LOCAL}",
    }
