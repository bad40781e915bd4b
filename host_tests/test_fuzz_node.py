"""A fixed-seed slice of the receive-path fuzzer (host_tests/fuzz_node.py; `make fuzz`
runs the million): mutated IKE, ESP and marker datagrams from real captures into node
B while an established SA carries genuine datagrams both ways.

One run (module fixture, about 10 s) and one property per test, so a finding shows
which property broke and the others still report.
"""

import pytest

from host_tests import fuzz_node

SEED = 8
PACKETS = 30000


@pytest.fixture(scope="module")
def run():
    s = fuzz_node.Fuzzer(SEED, PACKETS).run()
    print(fuzz_node.brief(dict(s, verdict=fuzz_node.failures(s) or "ok")))
    return s


def test_no_exception_escapes_the_receive_path(run):
    """Node._datagram called directly: the runtime's receive loop would swallow an
    exception, but none may reach it (each finding: seed, packet index, datagram, stack)."""
    escaped = [f for f in run["findings"] if f["what"].startswith("exception")]
    assert not escaped, "\n".join("%s x%d (%s %s via %s, packet %d, seed %d): %s" % (
        f["exception"], f["count"], f["family"], f["kind"], f["mutators"], f["packet"], f["seed"],
        " <- ".join(reversed(f["traceback"]))) for f in escaped)


def test_the_legitimate_sa_delivers_every_genuine_datagram(run):
    g = run["genuine"]
    assert g["a_to_b_sent"] >= PACKETS // 50 and g["b_to_a_sent"] >= PACKETS // 50
    assert g["a_to_b_delivered"] == g["a_to_b_sent"] and g["b_to_a_delivered"] == g["b_to_a_sent"]
    assert not g["lost"] and not g["wrong"], (g["lost"][:3], g["wrong"][:3])
    assert not run["legit_breaks"]
    others = [f for f in run["findings"] if not f["what"].startswith("exception")]
    assert not others, others
    # the timers rekeyed the legitimate CHILD SA meanwhile, and delivery followed
    assert run["legit_chain"].get("B ChildRekeyed", 0) + run["legit_chain"].get("A ChildRekeyed", 0) >= 1


def test_tables_and_memory_stay_bounded(run):
    assert not run["tables_over"], run["tables_over"]
    for k, v in run["table_max"].items():
        assert v <= run["table_bounds"][k], k
    m = run["memory"]
    assert m["growth_settled_bytes"] < 2 << 20, m
    assert m["traced_peak"] < 16 << 20, m


def test_oversize_datagrams_are_not_kept(run):
    """65,000-byte datagrams of every shape: nothing stays allocated once half-open SAs
    they may have made expire, and one call never allocates more than a few copies."""
    ov = run["memory"]["oversize"]
    for name, v in ov.items():
        if not isinstance(v, dict):
            continue
        assert v["transient_peak_bytes_max"] < 8 * v["datagram_bytes"], (name, v)
    assert ov["released_after_40s_bytes"] >= -64 << 10, ov


def test_a_fair_share_reaches_deep_code(run):
    assert run["packets"] == PACKETS
    kinds = run["by_kind"]
    assert kinds["ike"] > PACKETS // 3 and kinds["esp"] > PACKETS // 5 and kinds["marker"] > PACKETS // 50
    assert run["by_path"]["port500"] > PACKETS // 20
    for m in ("bitflip", "truncate", "ike_len_lie", "pay_len_lie", "next_payload", "chain_swap",
              "esp_len_lie", "huge", "marker_add", "spi_swap", "valid_auth", "valid_proof"):
        assert run["by_mutator"].get(m, 0) > 0, m
    assert run["sizes"].get("huge_max", 0) >= 60000
    raw, sealed = run["reach"]["raw"], run["reach"]["sealed"]
    # unauthenticated input named live SPIs and got as far as the ICV checks
    assert run["live_spi_hits"]["raw"] > run["by_family"]["raw"] // 4
    assert raw.get("engine.drop_icv", 0) > 50 and raw.get("esp_drop.icv", 0) > 200
    assert raw.get("node.esp_drop", 0) > 500
    # an attacker's own SA: its requests and answers were handled, its ESP delivered
    assert run["ike_handled"].get("sealed request", 0) > 500
    assert run["ike_handled"].get("sealed answer", 0) > 20
    assert sealed.get("node.esp_in", 0) > 500 and sealed.get("node.proof_ok", 0) > 0
    ev = run["b_events"]["sealed"]
    for k in ("ChildUp", "ChildFailed", "IkeRekeyed", "NotifyReceived", "AuthFailed", "IkeUp"):
        assert ev.get(k, 0) > 0, k
    assert sum(run["replies"].values()) > 1000
