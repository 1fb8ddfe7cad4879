"""protocol/dns.py: the A query and the parsing of its answer, on CPython and under micropython
(the same cases, compared result for result). Responses are built by tests/dns_responder.py,
written apart from the codec."""

import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import dns
from tests.dns_responder import a_record, parse_query, record, response, wire_name
from tests.mp_codecs import run, under_micropython

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
QUESTION = b"\xc0\x0c"  # a pointer to the question's name

labels = st.text(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-", min_size=1, max_size=20
)
names = st.lists(labels, min_size=1, max_size=5).map(".".join)
addresses = st.tuples(*[st.integers(0, 255)] * 4).map(lambda a: ".".join(map(str, a)))
ttls = st.integers(0, 2**32 - 1)


def answer_case(data, ident, name):
    return {"op": "dns_answer", "data": bytes(data).hex(), "id": ident, "name": name}


def both(cases, results):
    """The cases give the same results under micropython as here."""
    assert under_micropython(cases) == results


@pytest.mark.parametrize(
    "host, numeric",
    [
        ("192.168.1.10", True),
        ("::1", True),
        ("cs.example.com", False),
        ("1.2.3", False),
        ("1.2.3.256", False),
        ("1.2.3.x", False),
        ("1.2.3.²", False),
        ("", False),
    ],
)
def test_numeric_addresses_need_no_lookup(host, numeric):
    assert dns.is_numeric(host) is numeric


def test_query_matches_an_independent_parser_on_both_interpreters():
    cases, results = [], []

    @SETTINGS
    @given(ident=st.integers(0, 65535), name=names, dot=st.booleans())
    def check(ident, name, dot):
        case = {"op": "dns_query", "id": ident, "name": name + "." * dot}
        result = run(case)
        if len(name) > 253:
            assert result == "ValueError"
        else:
            # recursion desired, an A query for the name in lower case
            assert parse_query(bytes.fromhex(result)) == (ident, name.lower(), 0x0100, 1)
        cases.append(case)
        results.append(result)

    check()
    both(cases, results)


@pytest.mark.parametrize("name", ["", ".", "a..b", "x" * 64 + ".com", ".com", "é" * 32])
def test_bad_names_are_refused(name):
    with pytest.raises(ValueError):
        dns.query(1, name)


@st.composite
def answers(draw):
    """(response bytes, id, name asked, expected addresses, expected ttl): A records of the
    name, maybe behind a chain of CNAMEs, among records of other names and types, names
    written in another case and compressed or not."""
    ident = draw(st.integers(0, 65535))
    name = draw(names)
    asked = draw(st.sampled_from([name, name.upper(), name.lower()]))
    compress = draw(st.booleans())
    owner = QUESTION if compress else wire_name(name)
    records, expected_ttls = [], []
    for alias in draw(st.lists(names, max_size=3)):
        ttl = draw(ttls)
        records.append(record(owner, 5, ttl, wire_name(alias)))
        expected_ttls.append(ttl)
        owner = wire_name(alias)
    found = draw(st.lists(addresses, max_size=4))
    for address in found:
        ttl = draw(ttls)
        records.append(a_record(owner, address, ttl))
        expected_ttls.append(ttl)
    others = [
        a_record(wire_name("other.test"), "10.0.0.1", 5),  # another name
        record(owner, 28, 5, bytes(16)),  # AAAA
        record(owner, 1, 5, bytes(4), rclass=3),  # CHAOS class
    ]
    for other in draw(st.lists(st.sampled_from(others), max_size=3)):
        records.insert(draw(st.integers(0, len(records))), other)
    data = response(ident, wire_name(name), records)
    ttl = min(t if t < 2**31 else 0 for t in expected_ttls) if found else 0
    return data, ident, asked, found, ttl


def test_answers_give_their_addresses_and_smallest_ttl_on_both_interpreters():
    cases, results = [], []

    @SETTINGS
    @given(answers())
    def check(drawn):
        data, ident, asked, found, ttl = drawn
        case = answer_case(data, ident, asked)
        result = run(case)
        assert result == [found, ttl]
        cases.append(case)
        results.append(result)

    check()
    both(cases, results)


def test_what_answers_another_query_is_refused():
    qname = wire_name("cs.example")
    good = response(7, qname, [a_record(QUESTION, "192.0.2.1", 60)])
    assert dns.answer(good, 7, "cs.example") == (["192.0.2.1"], 60)
    refused = [
        (good, 8, "cs.example"),  # another id
        (good, 7, "cs.example.org"),  # another name
        (response(7, qname, flags=0x0100), 7, "cs.example"),  # a query, no response
        (response(7, qname, flags=0x8900), 7, "cs.example"),  # opcode 1
        (response(7, qname, qtype=28), 7, "cs.example"),  # the AAAA question
        (response(7, qname, [record(QUESTION, 1, 60, bytes(6))]), 7, "cs.example"),  # 6-byte A
        (b"\x00\x07\x81\x80\x00\x02" + good[6:], 7, "cs.example"),  # two questions
        (response(7, qname, [a_record(b"\xc0\x30", "1.2.3.4", 1)]), 7, "cs.example"),  # forward
    ]
    cases = [answer_case(*case) for case in refused]
    for case in cases:
        assert run(case) == "ValueError"
    for cut in range(len(good)):
        cases.append(answer_case(good[:cut], 7, "cs.example"))
        assert run(cases[-1]) == "ValueError"
    both(cases, ["ValueError"] * len(cases))


@pytest.mark.parametrize("rcode", [2, 3, 5])
def test_an_error_code_or_no_a_record_is_no_address(rcode):
    qname = wire_name("nowhere.test")
    assert dns.answer(response(9, qname, rcode=rcode), 9, "nowhere.test") == ([], 0)
    aaaa_only = response(9, qname, [record(QUESTION, 28, 60, bytes(16))])
    assert dns.answer(aaaa_only, 9, "nowhere.test") == ([], 0)


def test_a_loop_of_pointers_or_of_aliases_ends():
    qname = wire_name("loop.test")
    loop = response(1, qname, [a_record(b"\x01a\xc0\x25", "1.2.3.4", 1)])  # points at itself
    assert run(answer_case(loop, 1, "loop.test")) == "ValueError"
    aliases = [
        record(wire_name(f"{i}.test") if i else QUESTION, 5, 60, wire_name(f"{i + 1}.test"))
        for i in range(10)
    ]
    assert run(answer_case(response(1, qname, aliases), 1, "loop.test")) == "ValueError"
    itself = [record(QUESTION, 5, 60, QUESTION)] * 10  # loop.test, an alias of itself
    assert run(answer_case(response(1, qname, itself), 1, "loop.test")) == "ValueError"


def test_random_and_mutated_bytes_never_crash_the_parser():
    cases, results = [], []

    @SETTINGS
    @given(
        st.one_of(
            st.binary(max_size=80).map(lambda b: b"\x00\x07\x81\x80" + b),
            answers().flatmap(
                lambda a: st.tuples(st.integers(0, len(a[0]) - 1), st.integers(0, 255)).map(
                    lambda edit: a[0][: edit[0]] + bytes([edit[1]]) + a[0][edit[0] + 1 :]
                )
            ),
        ),
        names,
    )
    def check(data, name):
        case = answer_case(data, 7, name)
        result = run(case)
        if result != "ValueError":
            found, ttl = result
            assert all(socket.inet_aton(a) for a in found) and 0 <= ttl < 2**31
        cases.append(case)
        results.append(result)

    check()
    both(cases, results)
