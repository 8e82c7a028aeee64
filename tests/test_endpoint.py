"""An app's push settings besides its URL (``ccpush.endpoint``): the rules, as tables."""

from __future__ import annotations

import base64

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives.serialization import (
    BestAvailableEncryption,
    Encoding,
    PrivateFormat,
    load_pem_private_key,
)

from ccpush.endpoint import (
    BasicAuth,
    BearerAuth,
    ClientCertificate,
    Endpoint,
    auth_problems,
    certificate_problems,
    header_problems,
    problems,
)


def reasons(headers: list[tuple[str, str]], *, with_auth: bool = False) -> dict[str, str]:
    return {p.field: p.reason for p in header_problems(tuple(headers), with_auth=with_auth)}


@pytest.mark.parametrize(
    "name",
    ["X-Api-Key", "x-tenant", "Api_Key", "A", "X!#$%&'*+-.^_`|~9", "Authorization"],
)
def test_header_names_that_are_http_tokens_are_taken(name: str) -> None:
    assert reasons([(name, "v")]) == {}


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("X Api", "is not a header name"),
        ("X:Api", "is not a header name"),
        ("", "is not a header name"),
        ("Ünï", "is not a header name"),
        ("X-" + "a" * 200, "is not a header name"),
        ("Content-Type", "is reserved"),
        ("content-length", "is reserved"),
        ("HOST", "is reserved"),
        ("Transfer-Encoding", "is reserved"),
        ("Connection", "is reserved"),
        ("User-Agent", "is reserved"),
        ("webhook-id", "is reserved"),
        ("Webhook-Signature", "is reserved"),
        ("WEBHOOK-anything", "is reserved"),
        ("ccpush-test", "is reserved"),
        ("CCPush-Attempt", "is reserved"),
    ],
)
def test_header_names_refused_say_why(name: str, says: str) -> None:
    assert reasons([(name, "v")])[f"pushHeaders.{name}"].startswith(says)


def test_authorization_is_reserved_only_while_push_auth_is_set() -> None:
    assert reasons([("authorization", "Token x")]) == {}
    refused = reasons([("authorization", "Token x")], with_auth=True)
    assert "pushAuth" in refused["pushHeaders.authorization"]


@pytest.mark.parametrize(
    ("value", "taken"),
    [
        ("abc 123\t!~", True),
        ("", True),
        ("x" * 1024, True),
        ("x" * 1025, False),
        ("a\rb", False),
        ("a\nb", False),
        ("a\x00b", False),
        ("a\x1bb", False),
        ("é", False),
    ],
)
def test_header_values_are_one_printable_line(value: str, taken: bool) -> None:
    assert (reasons([("X-Key", value)]) == {}) is taken


def test_at_most_twenty_headers_and_none_twice() -> None:
    twenty = [(f"X-H{i}", "v") for i in range(20)]
    assert reasons(twenty) == {}
    assert reasons([*twenty, ("X-H20", "v")]) == {"pushHeaders": "at most 20 headers"}
    twice = reasons([("X-Key", "a"), ("x-key", "b")])
    assert twice == {"pushHeaders.x-key": "is given twice (header names are case-insensitive)"}


@pytest.mark.parametrize(
    ("auth", "fields"),
    [
        (BasicAuth("user", "pass"), set()),
        (BasicAuth("user", ""), set()),
        (BasicAuth("", "pass"), {"pushAuth.username"}),
        (BasicAuth("a:b", "pass"), {"pushAuth.username"}),
        (BasicAuth("user", "pa\nss"), {"pushAuth.password"}),
        (BearerAuth("tok.en-1"), set()),
        (BearerAuth(""), {"pushAuth.token"}),
        (BearerAuth("t\r\nX-Injected: 1"), {"pushAuth.token"}),
    ],
)
def test_credentials_rules(auth: BasicAuth | BearerAuth, fields: set[str]) -> None:
    assert {p.field for p in auth_problems(auth)} == fields


def test_request_headers_carry_the_apps_headers_and_authorization() -> None:
    basic = Endpoint(headers=(("X-Api-Key", "k1"),), auth=BasicAuth("alice", "s3cr:t"))
    assert basic.request_headers() == {
        "X-Api-Key": "k1",
        "Authorization": "Basic " + base64.b64encode(b"alice:s3cr:t").decode(),
    }
    bearer = Endpoint(auth=BearerAuth("tok-123"))
    assert bearer.request_headers() == {"Authorization": "Bearer tok-123"}
    assert Endpoint().request_headers() == {}


def test_json_round_trip_and_nothing_secret_in_repr_or_description() -> None:
    ca = trustme.CA()
    issued = ca.issue_cert("client.example")
    cert = ClientCertificate(
        issued.cert_chain_pems[0].bytes().decode(), issued.private_key_pem.bytes().decode()
    )
    endpoint = Endpoint(
        headers=(("X-Api-Key", "value-1"),),
        auth=BasicAuth("alice", "pw-2"),
        client_certificate=cert,
    )
    assert Endpoint.from_json(endpoint.to_json()) == endpoint
    shown = endpoint.described()
    assert shown.header_names == ("X-Api-Key",)
    assert (shown.auth, shown.username) == ("basic", "alice")
    assert shown.certificate is not None
    assert shown.certificate.subject == issued_subject(cert.cert_pem)
    for text in (repr(endpoint), repr(shown)):
        for secret in ("value-1", "pw-2", "PRIVATE KEY"):
            assert secret not in text


def issued_subject(cert_pem: str) -> str:
    return x509.load_pem_x509_certificate(cert_pem.encode()).subject.rfc4514_string()


def pem_pair(host: str = "client.example") -> tuple[str, str]:
    issued = trustme.CA().issue_cert(host)
    return issued.cert_chain_pems[0].bytes().decode(), issued.private_key_pem.bytes().decode()


def test_a_client_certificate_must_be_a_pem_pair_whose_key_matches() -> None:
    cert, key = pem_pair()
    other_cert, other_key = pem_pair("other.example")
    encrypted = (
        load_pem_private_key(key.encode(), None)
        .private_bytes(Encoding.PEM, PrivateFormat.PKCS8, BestAvailableEncryption(b"pass"))
        .decode()
    )
    cases = {
        (cert, key): [],
        (cert, other_key): ["clientCertificate.keyPem"],
        ("not a certificate", key): ["clientCertificate.certPem"],
        (cert, "not a key"): ["clientCertificate.keyPem"],
        (cert, encrypted): ["clientCertificate.keyPem"],
        (key, cert): ["clientCertificate.certPem"],
    }
    for (cert_pem, key_pem), fields in cases.items():
        found = certificate_problems(ClientCertificate(cert_pem, key_pem))
        assert [p.field for p in found] == fields, (cert_pem[:30], key_pem[:30])
    assert "passphrase" in certificate_problems(ClientCertificate(cert, encrypted))[0].reason
    assert certificate_problems(ClientCertificate(other_cert, other_key)) == []


def test_problems_gathers_every_part() -> None:
    cert, _ = pem_pair()
    endpoint = Endpoint(
        headers=(("Host", "x"),),
        auth=BearerAuth(""),
        client_certificate=ClientCertificate(cert, "nope"),
    )
    assert [p.field for p in problems(endpoint)] == [
        "pushHeaders.Host",
        "pushAuth.token",
        "clientCertificate.keyPem",
    ]
