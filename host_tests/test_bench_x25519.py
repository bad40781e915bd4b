"""`pnp bench`: the row "X25519 vs plain RFC ladder (wasm)" (pnpipsec's big-integer
ladder beside RFC 7748's pseudo-code transcribed literally, goal <= 0.7x) and the
round-robin sampling of the MicroPython script. No timing assertions: the figures
themselves live in the bench."""

import json
import os
import sys
import time
import types

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from pnp import bench


def test_rfc_baseline_is_x25519():
    # the baseline must compute X25519 (clamping, masking, non-canonical u included)
    ns = {}
    exec(bench.RFC_LADDER, ns)
    for i in range(4):
        k = os.urandom(32)
        u = os.urandom(32) if i < 3 else (2 ** 255 - 19 + 5).to_bytes(32, "little")
        want = X25519PrivateKey.from_private_bytes(k).exchange(X25519PublicKey.from_public_bytes(u))
        assert ns["x25519_rfc"](k, u) == want
    assert "(0 - swap) & (x_2 ^ x_3)" in bench.RFC_LADDER   # cswap by mask, as in the RFC


def test_rows_x25519_vs_rfc_ladder():
    rows = [r for r in bench.ROWS if r.operation == "X25519 vs plain RFC ladder (wasm)"]
    assert [(r.probe, r.baseline, r.budget) for r in rows] == [
        ("x25519_rfc/wasm", None, None),
        ("x25519/wasm", "x25519_rfc/wasm", 0.7),
    ]
    assert "x25519_rfc" in bench.PURE_CASES
    inputs = bench.Inputs()
    assert inputs.expected("x25519_rfc") == inputs.expected("x25519") == inputs.shared
    # both cases of the ratio go to the same MicroPython run
    keys = [k for r in rows for k in (r.probe, r.baseline) if k]
    assert {bench.DERIVED.get(k, k).split("/")[0] for k in keys} == {"x25519", "x25519_rfc"}


def test_render_shows_goal():
    ctx = bench.Context(1, 0.001, wasm=False)
    m = bench.Measurement(samples=[0.0066])
    b = bench.Measurement(samples=[0.01])
    ctx.cache = {"x25519/wasm": m, "x25519_rfc/wasm": b}
    rows = [r for r in bench.ROWS if r.operation == "X25519 vs plain RFC ladder (wasm)"]
    out = bench.render(bench.collect(ctx, rows), ctx)
    assert "0.66x plain RFC 7748 ladder, MicroPython wasm (budget ≤0.7x: ok)" in out
    ctx.cache["x25519/wasm"] = bench.Measurement(samples=[0.0075])
    assert "(budget ≤0.7x: OVER)" in bench.render(bench.collect(ctx, rows), ctx)


def test_wasm_script_samples_round_robin(monkeypatch, capsys):
    # WASM_SCRIPT on CPython with a stand-in for pnpwasm: every case checked first, then
    # one sample per case per round; a wrong result is reported, not timed
    order = []
    fake = types.ModuleType("pnpwasm")
    fake.perf_ms = lambda: time.perf_counter() * 1000.0
    monkeypatch.setitem(sys.modules, "pnpwasm", fake)
    cfg = {
        "globals": {"X": "01"},
        "expected": {"a": True, "b": True, "bad": True},
        "cases": {
            "a": "def fn():\n    ORDER.append('a')\n    return X == b'\\x01'\n",
            "b": "def fn():\n    ORDER.append('b')\n    return True\n",
            "bad": "def fn():\n    return False\n",
        },
        "reps": 3,
        "target_ms": 0.0,
    }
    monkeypatch.setattr(sys, "argv", ["bench", json.dumps(cfg)])
    g = {"__name__": "__main__", "ORDER": order}
    src = bench.WASM_SCRIPT.replace("ns = dict(G)", "ns = dict(G, ORDER=ORDER)")
    exec(src, g)
    line = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("PNPBENCH ")][-1]
    res = json.loads(line[len("PNPBENCH "):])
    assert len(res["a"]["samples_ms"]) == len(res["b"]["samples_ms"]) == 3
    assert res["bad"] == {"na": "WRONG RESULT (differs from cryptography)"}
    # check + calibration call per case, then rounds a b / b a / a b
    assert order == ["a", "a", "b", "b", "a", "b", "b", "a", "a", "b"]
